//! msgr2 on-wire compression (msgr2.1 feature COMPRESSION, Ceph 17+):
//! the algorithms, their byte formats as Ceph's compressor plugins write
//! them, and the negotiated per-connection state.
//!
//! After AUTH_SIGNATURE, a client whose peer advertises the feature sends
//! COMPRESSION_REQUEST (`bool is_compress, vector<u32> methods`), the server
//! answers COMPRESSION_DONE (`bool is_compress, u32 method`). From then on
//! a frame whose segments add up to at least the threshold is sent with
//! each segment compressed on its own and preamble flag
//! `FRAME_EARLY_DATA_COMPRESSED`; crcs and encryption cover the compressed
//! bytes. Formats (what Ceph's plugins produce and accept):
//! - snappy: raw snappy (varint length, then the stream), no framing;
//! - lz4: `le32 n`, then n pairs `(le32 raw_len, le32 compressed_len)`,
//!   then the n LZ4 blocks, each allowed to refer back into the earlier
//!   ones' output (`LZ4_compress_fast_continue`);
//! - zstd: `le32 raw_len` then one zstd frame.
//!
//! Decompression never allocates more than the caller's bound: every
//! format states its output length up front, which is checked first.

use std::sync::atomic::{AtomicU64, Ordering};

/// `Compressor::CompressionAlgorithm` values on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Snappy,
    Zstd,
    Lz4,
}

impl Algorithm {
    pub const fn wire(self) -> u32 {
        match self {
            Algorithm::Snappy => 1,
            Algorithm::Zstd => 3,
            Algorithm::Lz4 => 4,
        }
    }
    /// Ceph's ids: 0 none, 1 snappy, 2 zlib, 3 zstd, 4 lz4, 5 brotli.
    /// Ours are the ones with a maintained Rust crate (zstd only when built
    /// with the `zstd` feature).
    pub fn from_wire(v: u32) -> Option<Algorithm> {
        match v {
            1 => Some(Algorithm::Snappy),
            3 if cfg!(feature = "zstd") => Some(Algorithm::Zstd),
            4 => Some(Algorithm::Lz4),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Snappy => "snappy",
            Algorithm::Zstd => "zstd",
            Algorithm::Lz4 => "lz4",
        }
    }
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.trim().to_ascii_lowercase().as_str() {
            "snappy" => Some(Algorithm::Snappy),
            "zstd" if cfg!(feature = "zstd") => Some(Algorithm::Zstd),
            "lz4" => Some(Algorithm::Lz4),
            _ => None,
        }
    }
}

/// Ceph's `ms_osd_compress_min_size` default: frames whose segments add up
/// to less are sent as they are.
pub const DEFAULT_MIN_SIZE: usize = 1024;
/// Ceph's `compressor_zstd_level` default.
const ZSTD_LEVEL: i32 = 1;
/// LZ4 blocks may refer back this far into earlier output.
const LZ4_WINDOW: usize = 64 * 1024;

/// What the client asks for (from `rados.compression`, `--compression` or
/// ceph.conf's `ms_osd_compress_mode` / `ms_osd_compression_algorithm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionConfig {
    /// Methods offered, preferred first; empty = compression off.
    pub methods: Vec<Algorithm>,
    /// Frames below this many bytes (all segments) are not compressed.
    pub min_size: usize,
    /// Compress on secure-mode connections too (Ceph's `ms_compress_secure`,
    /// off by default: compressing before encrypting leaks length hints).
    pub secure: bool,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        CompressionConfig { methods: Vec::new(), min_size: DEFAULT_MIN_SIZE, secure: false }
    }
}

impl CompressionConfig {
    pub fn off() -> Self {
        Self::default()
    }
    pub fn with(alg: Algorithm) -> Self {
        CompressionConfig { methods: vec![alg], ..Self::default() }
    }
    pub fn enabled(&self) -> bool {
        !self.methods.is_empty()
    }
}

/// Why a compressed segment could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    #[error("{alg} segment declares {len} bytes of output, over the limit of {max}")]
    TooLarge { alg: &'static str, len: u64, max: usize },
    #[error("{alg} segment is malformed: {reason}")]
    Corrupt { alg: &'static str, reason: String },
    #[error("{alg} compression failed: {reason}")]
    Compress { alg: &'static str, reason: String },
}

fn corrupt(alg: Algorithm, reason: impl std::fmt::Display) -> CompressError {
    CompressError::Corrupt { alg: alg.name(), reason: reason.to_string() }
}

/// Compresses one segment in Ceph's format for `alg`.
pub fn compress(alg: Algorithm, input: &[u8]) -> Result<Vec<u8>, CompressError> {
    match alg {
        Algorithm::Snappy => snap::raw::Encoder::new()
            .compress_vec(input)
            .map_err(|e| CompressError::Compress { alg: alg.name(), reason: e.to_string() }),
        Algorithm::Lz4 => {
            let len = u32::try_from(input.len())
                .map_err(|_| CompressError::Compress { alg: alg.name(), reason: "segment over 4 GiB".into() })?;
            let block = lz4_flex::block::compress(input);
            let clen = block.len() as u32; // at most a bound of `len`, itself < 4 GiB
            let mut out = Vec::with_capacity(12 + block.len());
            // one block: Ceph writes one per buffer of its bufferlist
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&clen.to_le_bytes());
            out.extend_from_slice(&block);
            Ok(out)
        }
        Algorithm::Zstd => zstd_compress(input),
    }
}

#[cfg(feature = "zstd")]
fn zstd_compress(input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let len = u32::try_from(input.len())
        .map_err(|_| CompressError::Compress { alg: "zstd", reason: "segment over 4 GiB".into() })?;
    let frame = zstd::bulk::compress(input, ZSTD_LEVEL)
        .map_err(|e| CompressError::Compress { alg: "zstd", reason: e.to_string() })?;
    let mut out = Vec::with_capacity(4 + frame.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame);
    Ok(out)
}

#[cfg(not(feature = "zstd"))]
fn zstd_compress(_input: &[u8]) -> Result<Vec<u8>, CompressError> {
    let _ = ZSTD_LEVEL;
    Err(CompressError::Compress { alg: "zstd", reason: "built without the zstd feature".into() })
}

/// Decompresses one segment; `max` bounds the output (and so the
/// allocation) before any work is done.
pub fn decompress(alg: Algorithm, input: &[u8], max: usize) -> Result<Vec<u8>, CompressError> {
    let too_large = |len: u64| CompressError::TooLarge { alg: alg.name(), len, max };
    match alg {
        Algorithm::Snappy => {
            let len = snap::raw::decompress_len(input).map_err(|e| corrupt(alg, e))?;
            if len > max {
                return Err(too_large(len as u64));
            }
            let mut out = vec![0u8; len];
            let n = snap::raw::Decoder::new().decompress(input, &mut out).map_err(|e| corrupt(alg, e))?;
            out.truncate(n);
            Ok(out)
        }
        Algorithm::Lz4 => lz4_decompress(input, max),
        Algorithm::Zstd => zstd_decompress(input, max),
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn lz4_decompress(input: &[u8], max: usize) -> Result<Vec<u8>, CompressError> {
    let alg = Algorithm::Lz4;
    let count = le32(input, 0).ok_or_else(|| corrupt(alg, "no block count"))? as usize;
    // each block needs 8 header bytes: a count the input cannot hold is
    // refused before anything is sized by it
    let head = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(4))
        .filter(|&n| n <= input.len())
        .ok_or_else(|| corrupt(alg, format!("{count} blocks do not fit in {} bytes", input.len())))?;
    let mut blocks = Vec::with_capacity(count);
    let mut total: u64 = 0;
    for i in 0..count {
        let raw = le32(input, 4 + i * 8).ok_or_else(|| corrupt(alg, "short header"))? as usize;
        let clen = le32(input, 8 + i * 8).ok_or_else(|| corrupt(alg, "short header"))? as usize;
        total += raw as u64;
        blocks.push((raw, clen));
    }
    if total > max as u64 {
        return Err(CompressError::TooLarge { alg: alg.name(), len: total, max });
    }
    let mut out: Vec<u8> = Vec::with_capacity(total as usize);
    let mut at = head;
    for (raw, clen) in blocks {
        let end = at.checked_add(clen).filter(|&e| e <= input.len()).ok_or_else(|| corrupt(alg, "block past the end"))?;
        let src = input.get(at..end).ok_or_else(|| corrupt(alg, "block past the end"))?;
        // continue mode: earlier output (up to 64 KiB back) is the dictionary
        let dict_from = out.len().saturating_sub(LZ4_WINDOW);
        let block = lz4_flex::block::decompress_with_dict(src, raw, &out[dict_from..]).map_err(|e| corrupt(alg, e))?;
        if block.len() != raw {
            return Err(corrupt(alg, format!("block gave {} bytes, header says {raw}", block.len())));
        }
        out.extend_from_slice(&block);
        at = end;
    }
    if at != input.len() {
        return Err(corrupt(alg, format!("{} bytes after the last block", input.len() - at)));
    }
    Ok(out)
}

#[cfg(feature = "zstd")]
fn zstd_decompress(input: &[u8], max: usize) -> Result<Vec<u8>, CompressError> {
    let alg = Algorithm::Zstd;
    let len = le32(input, 0).ok_or_else(|| corrupt(alg, "no length prefix"))? as usize;
    if len > max {
        return Err(CompressError::TooLarge { alg: alg.name(), len: len as u64, max });
    }
    let frame = input.get(4..).unwrap_or_default();
    // capacity = the declared length: a frame that decodes to more fails
    // instead of growing the buffer
    let out = zstd::bulk::decompress(frame, len).map_err(|e| corrupt(alg, e))?;
    if out.len() != len {
        return Err(corrupt(alg, format!("decoded {} bytes, prefix says {len}", out.len())));
    }
    Ok(out)
}

#[cfg(not(feature = "zstd"))]
fn zstd_decompress(_input: &[u8], _max: usize) -> Result<Vec<u8>, CompressError> {
    Err(corrupt(Algorithm::Zstd, "built without the zstd feature"))
}

/// Counters of one or many connections' compressed frames (shared by the
/// connections of a client; plain atomics, no I/O).
#[derive(Debug, Default)]
pub struct CompressionStats {
    /// Frames sent compressed, and their segment bytes before / after.
    pub tx_frames: AtomicU64,
    pub tx_raw_bytes: AtomicU64,
    pub tx_wire_bytes: AtomicU64,
    /// Frames at or above the threshold that went out uncompressed
    /// because compressing failed.
    pub tx_failed: AtomicU64,
    /// Frames received compressed, and their segment bytes before / after.
    pub rx_frames: AtomicU64,
    pub rx_wire_bytes: AtomicU64,
    pub rx_raw_bytes: AtomicU64,
    /// Connections on which compression was negotiated.
    pub sessions: AtomicU64,
}

/// A snapshot of `CompressionStats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompressionCounts {
    pub tx_frames: u64,
    pub tx_raw_bytes: u64,
    pub tx_wire_bytes: u64,
    pub tx_failed: u64,
    pub rx_frames: u64,
    pub rx_wire_bytes: u64,
    pub rx_raw_bytes: u64,
    pub sessions: u64,
}

impl CompressionStats {
    pub fn snapshot(&self) -> CompressionCounts {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CompressionCounts {
            tx_frames: g(&self.tx_frames),
            tx_raw_bytes: g(&self.tx_raw_bytes),
            tx_wire_bytes: g(&self.tx_wire_bytes),
            tx_failed: g(&self.tx_failed),
            rx_frames: g(&self.rx_frames),
            rx_wire_bytes: g(&self.rx_wire_bytes),
            rx_raw_bytes: g(&self.rx_raw_bytes),
            sessions: g(&self.sessions),
        }
    }
    pub(crate) fn add(a: &AtomicU64, n: usize) {
        a.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The negotiated state of one connection.
#[derive(Debug, Clone)]
pub struct Negotiated {
    pub alg: Algorithm,
    pub min_size: usize,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn algs() -> Vec<Algorithm> {
        let mut v = vec![Algorithm::Snappy, Algorithm::Lz4];
        if cfg!(feature = "zstd") {
            v.push(Algorithm::Zstd);
        }
        v
    }

    fn sample(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i / 7 % 13) as u8 ^ (i % 3) as u8).collect()
    }

    #[test]
    fn round_trip_every_algorithm_and_size() {
        for alg in algs() {
            for n in [0usize, 1, 17, 4096, 70_000, 300_000] {
                let data = sample(n);
                let c = compress(alg, &data).unwrap();
                if n >= 4096 {
                    assert!(c.len() < data.len() / 2, "{alg:?} {n}: {} bytes", c.len());
                }
                assert_eq!(decompress(alg, &c, n).unwrap(), data, "{alg:?} {n}");
                if n > 0 {
                    // one byte less of room is refused, typed, before decoding
                    assert!(matches!(decompress(alg, &c, n - 1), Err(CompressError::TooLarge { .. })), "{alg:?} {n}");
                }
            }
        }
    }

    #[test]
    fn wire_ids_and_names() {
        assert_eq!(Algorithm::from_wire(1), Some(Algorithm::Snappy));
        assert_eq!(Algorithm::from_wire(4), Some(Algorithm::Lz4));
        assert_eq!(Algorithm::from_wire(2), None); // zlib
        assert_eq!(Algorithm::from_wire(5), None); // brotli
        assert_eq!(Algorithm::parse("LZ4"), Some(Algorithm::Lz4));
        assert_eq!(Algorithm::parse("zlib"), None);
        for a in algs() {
            assert_eq!(Algorithm::from_wire(a.wire()), Some(a));
            assert_eq!(Algorithm::parse(a.name()), Some(a));
        }
    }

    #[test]
    fn lz4_multi_block_with_back_references() {
        // what Ceph writes for a two-buffer bufferlist: the second block
        // compressed against the first (continue mode)
        let a = sample(5000);
        let b = a.clone(); // fully predictable from the dictionary
        let ca = lz4_flex::block::compress(&a);
        let cb = lz4_flex::block::compress_with_dict(&b, &a);
        assert!(cb.len() < 100, "dictionary not used: {}", cb.len());
        let mut wire = Vec::new();
        wire.extend_from_slice(&2u32.to_le_bytes());
        for (raw, c) in [(a.len(), ca.len()), (b.len(), cb.len())] {
            wire.extend_from_slice(&(raw as u32).to_le_bytes());
            wire.extend_from_slice(&(c as u32).to_le_bytes());
        }
        wire.extend_from_slice(&ca);
        wire.extend_from_slice(&cb);
        let out = decompress(Algorithm::Lz4, &wire, 10_000).unwrap();
        assert_eq!(&out[..5000], &a[..]);
        assert_eq!(&out[5000..], &b[..]);
    }

    #[test]
    fn bombs_and_garbage_are_typed_errors() {
        // a 2 GiB claim in a few bytes: refused without allocating
        let mut snappy = Vec::new();
        let mut v: u64 = 1 << 31;
        while v >= 0x80 {
            snappy.push((v as u8) | 0x80);
            v >>= 7;
        }
        snappy.push(v as u8);
        assert!(matches!(decompress(Algorithm::Snappy, &snappy, 1 << 20), Err(CompressError::TooLarge { .. })));
        let mut lz4 = vec![];
        lz4.extend_from_slice(&1u32.to_le_bytes());
        lz4.extend_from_slice(&u32::MAX.to_le_bytes());
        lz4.extend_from_slice(&0u32.to_le_bytes());
        assert!(matches!(decompress(Algorithm::Lz4, &lz4, 1 << 20), Err(CompressError::TooLarge { .. })));
        // a block count the input cannot hold
        assert!(matches!(decompress(Algorithm::Lz4, &u32::MAX.to_le_bytes(), 1 << 20), Err(CompressError::Corrupt { .. })));
        for alg in algs() {
            for junk in [&b""[..], b"\x01", b"\x05\x00\x00\x00abc", &[0xff; 40]] {
                let _ = decompress(alg, junk, 1 << 16); // Err or small Ok, never a panic
            }
            // a header that lies about the length
            let mut c = compress(alg, &sample(1000)).unwrap();
            if alg != Algorithm::Snappy {
                let at = if alg == Algorithm::Lz4 { 4 } else { 0 };
                c[at..at + 4].copy_from_slice(&900u32.to_le_bytes());
                assert!(decompress(alg, &c, 1 << 16).is_err(), "{alg:?}");
            }
        }
    }
}
