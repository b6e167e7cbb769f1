//! The table's write-ahead log: record codec (pure, fuzzed) and replay rules.
//!
//! File: an 8-byte magic `WEFTTW01`, then records
//! `[len u32 LE][crc32c(body) u32 LE][body: msgpack WalRecord]`.
//! A record is written whole and fsynced before its write is acknowledged.
//!
//! Replay (`scan`) stops at the first bad record. It is a *torn tail*, cut
//! off, when nothing after it can be a record the writer finished: the
//! record runs past the end of the file, or the rest of the file is zeros
//! (blocks allocated but never written), or its CRC fails and it is the last
//! record. Anything else (a bad CRC with data after it, a CRC-valid body that
//! does not decode, indexes not increasing) is `Corrupt`: the file was
//! damaged after it was written, and silently cutting it would lose
//! acknowledged writes.

use serde::{Deserialize, Serialize};

use crate::types::WriteCommand;

pub const MAGIC: &[u8; 8] = b"WEFTTW01";
pub const HEADER_BYTES: usize = 8;

/// One logged command and its index (the state's `applied_index` after it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalRecord {
    pub index: u64,
    pub cmd: WriteCommand,
}

/// Why a record does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record length {len} over the limit {max}")]
    TooLong { len: u64, max: u64 },
    #[error("record of length 0")]
    Empty,
    #[error("CRC mismatch")]
    Crc,
    #[error("record body does not decode: {0}")]
    Body(String),
}

/// Encode one record (header and body) onto `out`.
pub fn encode_record(rec: &WalRecord, out: &mut Vec<u8>) {
    // Encoding plain structs of bytes and integers into a Vec cannot fail.
    let body = rmp_serde::to_vec(rec).unwrap_or_default();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// Decode the record at the start of `buf`: `Ok(None)` if `buf` ends before
/// the record does, else the record and the bytes it took. Never allocates
/// more than the body in `buf`; a length over `max_len` is refused before
/// anything else.
pub fn decode_record(buf: &[u8], max_len: u64) -> Result<Option<(WalRecord, usize)>, RecordError> {
    let Some(header) = buf.get(..8) else { return Ok(None) };
    let mut len4 = [0u8; 4];
    len4.copy_from_slice(&header[..4]);
    let mut crc4 = [0u8; 4];
    crc4.copy_from_slice(&header[4..8]);
    let len = u64::from(u32::from_le_bytes(len4));
    if len > max_len {
        return Err(RecordError::TooLong { len, max: max_len });
    }
    if len == 0 {
        return Err(RecordError::Empty);
    }
    let end = 8 + len as usize;
    let Some(body) = buf.get(8..end) else { return Ok(None) };
    if crc32c::crc32c(body) != u32::from_le_bytes(crc4) {
        return Err(RecordError::Crc);
    }
    let rec: WalRecord = rmp_serde::from_slice(body).map_err(|e| RecordError::Body(e.to_string()))?;
    Ok(Some((rec, end)))
}

/// Result of scanning a WAL image.
#[derive(Debug)]
pub struct Scan {
    pub records: Vec<WalRecord>,
    /// Bytes of good data (header + whole records); the file is cut here.
    pub good_len: u64,
    /// Why the scan stopped early at `good_len`, if it did (a torn tail).
    pub torn: Option<String>,
}

/// Scan failure: the file is damaged, not merely torn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub offset: u64,
    pub detail: String,
}

/// Scan a whole WAL file image (magic first). An empty image is a new log.
pub fn scan(image: &[u8], max_len: u64) -> Result<Scan, ScanError> {
    if image.len() < HEADER_BYTES {
        // A crash while the header was written: nothing was ever logged after it.
        if MAGIC.starts_with(image) {
            return Ok(Scan { records: Vec::new(), good_len: 0, torn: (!image.is_empty()).then(|| "partial header".into()) });
        }
        return Err(ScanError { offset: 0, detail: "bad magic".into() });
    }
    if &image[..HEADER_BYTES] != MAGIC {
        return Err(ScanError { offset: 0, detail: "bad magic".into() });
    }
    let mut pos = HEADER_BYTES;
    let mut records: Vec<WalRecord> = Vec::new();
    loop {
        let rest = &image[pos..];
        if rest.is_empty() {
            return Ok(Scan { records, good_len: pos as u64, torn: None });
        }
        let torn = |why: String| Ok(Scan { records: Vec::new(), good_len: pos as u64, torn: Some(why) });
        match decode_record(rest, max_len) {
            Ok(Some((rec, used))) => {
                if records.last().is_some_and(|l| l.index >= rec.index) {
                    return Err(ScanError { offset: pos as u64, detail: format!("record index {} not increasing", rec.index) });
                }
                records.push(rec);
                pos += used;
            }
            Ok(None) => return torn("record runs past the end of the file".into()).map(|s| Scan { records, ..s }),
            Err(e) => {
                if rest.iter().all(|&b| b == 0) {
                    return torn("zeros at the end of the file".into()).map(|s| Scan { records, ..s });
                }
                let last = match &e {
                    RecordError::Crc => {
                        let mut len4 = [0u8; 4];
                        len4.copy_from_slice(&rest[..4]);
                        8 + u32::from_le_bytes(len4) as usize == rest.len()
                    }
                    _ => false,
                };
                if last {
                    return torn("CRC mismatch in the last record".into()).map(|s| Scan { records, ..s });
                }
                return Err(ScanError { offset: pos as u64, detail: e.to_string() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::Bytes;

    fn rec(i: u64) -> WalRecord {
        WalRecord {
            index: i,
            cmd: WriteCommand::Put { key: Bytes::from(format!("k{i}")), value: Bytes::from(vec![b'v'; i as usize * 3]) },
        }
    }

    fn image(n: u64) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for i in 1..=n {
            encode_record(&rec(i), &mut out);
        }
        out
    }

    #[test]
    fn round_trip_and_every_truncation_is_a_clean_prefix() {
        let img = image(5);
        let s = scan(&img, 1 << 20).unwrap();
        assert_eq!(s.records, (1..=5).map(rec).collect::<Vec<_>>());
        assert!(s.torn.is_none());
        for cut in 0..img.len() {
            let s = scan(&img[..cut], 1 << 20).unwrap();
            // Every record kept is whole and in order; the cut point is a record boundary.
            assert_eq!(s.records, (1..=s.records.len() as u64).map(rec).collect::<Vec<_>>());
            assert!(s.good_len as usize <= cut);
            let again = scan(&img[..s.good_len as usize], 1 << 20).unwrap();
            assert_eq!(again.records.len(), s.records.len());
            assert!(again.torn.is_none());
        }
    }

    #[test]
    fn zeros_and_last_crc_are_torn_middle_crc_is_corrupt() {
        let mut img = image(3);
        img.extend_from_slice(&[0u8; 100]);
        let s = scan(&img, 1 << 20).unwrap();
        assert_eq!(s.records.len(), 3);
        assert!(s.torn.is_some());

        let mut img = image(3);
        let n = img.len();
        img[n - 1] ^= 0xff; // last record's body
        let s = scan(&img, 1 << 20).unwrap();
        assert_eq!(s.records.len(), 2);
        assert!(s.torn.is_some());

        let mut img = image(3);
        img[HEADER_BYTES + 9] ^= 0xff; // first record's body, two records after it
        let e = scan(&img, 1 << 20).unwrap_err();
        assert_eq!(e.offset, HEADER_BYTES as u64);
    }

    /// Writes the fuzz seeds (`cargo test -p weft-table --lib write_fuzz_seeds -- --ignored`).
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        use crate::types::*;
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/seeds/table_wal");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(format!("{dir}/image3"), image(3)).unwrap();
        let b = |s: &str| Bytes::from(s.to_string());
        let cmds = [
            WriteCommand::Delete { key: b("k1") },
            WriteCommand::DeleteRange(KeyRange { from: b("a"), to: Some(b("z")), prefix: Some(b("k")) }),
            WriteCommand::Compact { revision: 2 },
            WriteCommand::Txn(Txn {
                compares: vec![Compare::version_eq(b("k1"), 1), Compare::absent(b("k9"))],
                success: vec![
                    Op::Put { key: b("k9"), value: b("{\"a\":1}") },
                    Op::Get { key: b("k1") },
                    Op::Range(RangeSpec { prefix: Some(b("k")), limit: Some(2), ..Default::default() }),
                ],
                failure: vec![Op::Delete { key: b("k1") }],
            }),
        ];
        for (i, cmd) in cmds.into_iter().enumerate() {
            let mut out = Vec::new();
            encode_record(&WalRecord { index: i as u64 + 1, cmd }, &mut out);
            std::fs::write(format!("{dir}/record{i}"), &out).unwrap();
        }
    }

    #[test]
    fn huge_length_is_refused_before_allocation() {
        let mut img = MAGIC.to_vec();
        img.extend_from_slice(&u32::MAX.to_le_bytes());
        img.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(decode_record(&img[8..], 1024), Err(RecordError::TooLong { len: u32::MAX as u64, max: 1024 }));
        assert!(scan(&img, 1024).is_err());
        assert!(scan(b"NOTAWAL!", 1024).is_err());
    }
}
