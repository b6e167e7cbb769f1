//! The produce route's bodies by hand (weft_wire::fastbody, issue #18): a
//! `log.produce` request as clients send it (a map of `topic`, `records` and
//! the optional fields, each record a map of its fields, byte fields `bin`)
//! and its answer when every record was stored. Anything else (an unknown
//! or repeated key, a struct sent as an array, a value of another type,
//! `acks`, a per-record error) is left to serde, which decodes or refuses it
//! as it always did.

use bytes::Bytes;
use weft_wire::fastbody::{Reader, Writer};
use weft_wire::FastBody;

use weft_log::{PartitionId, ProduceRecord};

use crate::dto::{ProduceIn, ProduceResponse};

/// Reads a field `Option<T>`: nil is `None`.
fn optional<T>(r: &mut Reader<'_>, read: impl FnOnce(&mut Reader<'_>) -> Option<T>) -> Option<Option<T>> {
    if r.nil() {
        return Some(None);
    }
    read(r).map(Some)
}

fn bytes(r: &mut Reader<'_>) -> Option<Bytes> {
    r.bin()
}

/// Sets `slot` once: a key seen twice is serde's error to give.
fn once<T>(slot: &mut Option<T>, v: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(v);
    Some(())
}

fn record(r: &mut Reader<'_>) -> Option<ProduceRecord> {
    let n = r.map_len()?;
    let (mut partition, mut key, mut value, mut headers, mut timestamp_ms) = (None, None, None, None, None);
    for _ in 0..n {
        match r.key()? {
            b"partition" => once(&mut partition, optional(r, |r| r.uint().and_then(|v| u32::try_from(v).ok()))?)?,
            b"key" => once(&mut key, optional(r, bytes)?)?,
            b"value" => once(&mut value, optional(r, bytes)?)?,
            b"headers" => {
                let len = r.array_len()?;
                // As for records: the count is not trusted for capacity.
                let mut hs = Vec::with_capacity(len.min(16));
                for _ in 0..len {
                    if r.array_len()? != 2 {
                        return None;
                    }
                    let name = r.str()?.to_owned();
                    hs.push((name, bytes(r)?));
                }
                once(&mut headers, hs)?
            }
            b"timestamp_ms" => once(&mut timestamp_ms, optional(r, |r| r.int())?)?,
            _ => return None,
        }
    }
    Some(ProduceRecord {
        partition: partition.flatten().map(PartitionId),
        key: key.flatten(),
        value: value.flatten(),
        headers: headers.unwrap_or_default(),
        timestamp_ms: timestamp_ms.flatten(),
    })
}

impl FastBody for ProduceIn {
    fn decode_msgpack(body: &Bytes) -> Option<Self> {
        let mut r = Reader::new(body);
        let n = r.map_len()?;
        let (mut topic, mut records, mut producer_id, mut sequence) = (None, None, None, None);
        for _ in 0..n {
            match r.key()? {
                b"topic" => once(&mut topic, r.str()?.to_owned())?,
                b"records" => {
                    let len = r.array_len()?;
                    // The count is the sender's word: room for a few, then
                    // grown as records actually decode.
                    let mut rs = Vec::with_capacity(len.min(64));
                    for _ in 0..len {
                        rs.push(record(&mut r)?);
                    }
                    once(&mut records, rs)?
                }
                b"producer_id" => once(&mut producer_id, optional(&mut r, |r| r.uint())?)?,
                b"sequence" => once(&mut sequence, optional(&mut r, |r| r.uint())?)?,
                _ => return None,
            }
        }
        if !r.at_end() {
            return None;
        }
        Some(ProduceIn {
            topic: topic?,
            records: records?,
            producer_id: producer_id.flatten(),
            sequence: sequence.flatten(),
            acks: Default::default(),
        })
    }
}

// The answer's keys as msgpack fixstr (marker 0xa0 | length, then the name).
const RESULTS: &[u8] = b"\xa7results";
const PARTITION: &[u8] = b"\xa9partition";
const OFFSET: &[u8] = b"\xa6offset";
const TIMESTAMP_MS: &[u8] = b"\xactimestamp_ms";

impl FastBody for ProduceResponse {
    fn encode_msgpack(&self, w: &mut Writer) -> bool {
        let Ok(n) = u32::try_from(self.results.len()) else { return false };
        if self.results.iter().any(|r| r.error.is_some()) {
            return false;
        }
        w.map_len(1);
        w.raw(RESULTS);
        w.array_len(n);
        for r in &self.results {
            let fields = u32::from(r.partition.is_some()) + u32::from(r.offset.is_some()) + u32::from(r.timestamp_ms.is_some());
            w.map_len(fields);
            if let Some(p) = r.partition {
                w.raw(PARTITION);
                w.uint(u64::from(p));
            }
            if let Some(o) = r.offset {
                w.raw(OFFSET);
                w.uint(o);
            }
            if let Some(t) = r.timestamp_ms {
                w.raw(TIMESTAMP_MS);
                w.int(t);
            }
        }
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dto::{Acks, Produce, ProduceResult, RecordIn, SharedBytes};
    use weft_wire::BodyFormat;

    /// A small deterministic generator (xorshift), so failures replay.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn maybe<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
            if self.below(2) == 0 { None } else { Some(f(self)) }
        }
    }

    fn int_of(rng: &mut Rng) -> u64 {
        [0, 1, 127, 128, 255, 256, 65535, 65536, u64::from(u32::MAX), u64::from(u32::MAX) + 1, u64::MAX, rng.next()][rng.below(12) as usize]
    }

    fn produce_of(rng: &mut Rng) -> Produce {
        let records = (0..rng.below(4))
            .map(|_| RecordIn {
                partition: rng.maybe(|r| int_of(r) as u32),
                key: rng.maybe(|r| SharedBytes::from(vec![1u8; r.below(40) as usize])),
                value: rng.maybe(|r| SharedBytes::from(vec![2u8; [0, 31, 32, 255, 256, 1024, 70000][r.below(7) as usize]])),
                headers: (0..rng.below(3)).map(|i| (format!("h{i}é"), SharedBytes::from(vec![3u8; i as usize]))).collect(),
                timestamp_ms: rng.maybe(|r| int_of(r) as i64),
            })
            .collect();
        Produce {
            topic: "t".repeat(rng.below(40) as usize),
            records,
            producer_id: rng.maybe(int_of),
            sequence: rng.maybe(int_of),
            acks: if rng.below(4) == 0 { Acks::Leader } else { Acks::All },
        }
    }

    fn serde(body: &Bytes) -> Option<ProduceIn> {
        BodyFormat::MsgPack.decode_shared(body).ok()
    }

    #[test]
    fn what_clients_send_decodes_as_serde_decodes_it() {
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut taken = 0;
        for _ in 0..2000 {
            let p = produce_of(&mut rng);
            let body = BodyFormat::MsgPack.encode(&p).unwrap();
            let fast = ProduceIn::decode_msgpack(&body);
            let want = ProduceIn::from(p.clone());
            assert_eq!(serde(&body).as_ref(), Some(&want));
            match &fast {
                Some(f) => {
                    assert_eq!(f, &want);
                    taken += 1;
                }
                // Only `acks` (not the default) is left to serde.
                None => assert_eq!(p.acks, Acks::Leader, "{p:?}"),
            }
        }
        assert!(taken > 1000, "{taken}");
        // The value shares the body's buffer.
        let p = Produce { topic: "t".into(), records: vec![RecordIn { value: Some(vec![9u8; 1024].into()), ..Default::default() }], ..Default::default() };
        let body = BodyFormat::MsgPack.encode(&p).unwrap();
        let v = ProduceIn::decode_msgpack(&body).unwrap().records[0].value.clone().unwrap();
        let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
        assert!(range.contains(&(v.as_ptr() as usize)));
    }

    #[test]
    fn a_damaged_body_decodes_as_serde_decodes_it_or_is_left_to_serde() {
        let mut rng = Rng(0x2545f4914f6cdd1d);
        let mut refused = 0;
        for _ in 0..20000 {
            let p = produce_of(&mut rng);
            let mut b = rmp_serde::to_vec_named(&p).unwrap();
            for _ in 0..=rng.below(3) {
                let i = rng.below(b.len() as u64 + 1) as usize;
                match rng.below(3) {
                    0 if i < b.len() => b[i] = rng.next() as u8,
                    1 if i < b.len() => {
                        b.remove(i);
                    }
                    _ => b.insert(i, rng.next() as u8),
                }
            }
            let body = Bytes::from(b);
            match ProduceIn::decode_msgpack(&body) {
                Some(f) => assert_eq!(Some(f), serde(&body), "{body:?}"),
                None => refused += 1,
            }
        }
        assert!(refused > 0);
    }

    #[test]
    fn the_fuzz_seeds_take_the_hand_path() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/produce_body");
        let mut seen = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let body = Bytes::from(std::fs::read(e.unwrap().path()).unwrap());
            let fast = ProduceIn::decode_msgpack(&body).unwrap();
            assert_eq!(Some(fast), serde(&body));
            seen += 1;
        }
        assert!(seen >= 3);
    }

    #[test]
    fn shapes_it_leaves_to_serde() {
        let p = Produce { topic: "t".into(), records: vec![RecordIn::default()], ..Default::default() };
        let named = rmp_serde::to_vec_named(&p).unwrap();
        // Structs as arrays (rmp_serde's compact form) decode through serde.
        let compact = Bytes::from(rmp_serde::to_vec(&p).unwrap());
        assert!(ProduceIn::decode_msgpack(&compact).is_none());
        assert_eq!(serde(&compact), Some(ProduceIn::from(p.clone())));
        // An unknown field: serde refuses it (deny_unknown_fields).
        let mut extra = serde_json::to_value(&p).unwrap();
        extra["surprise"] = serde_json::json!(1);
        let extra = Bytes::from(rmp_serde::to_vec_named(&extra).unwrap());
        assert!(ProduceIn::decode_msgpack(&extra).is_none());
        assert!(serde(&extra).is_none());
        // Trailing bytes after the map.
        let mut trailing = named.clone();
        trailing.push(0xc0);
        assert!(ProduceIn::decode_msgpack(&Bytes::from(trailing)).is_none());
        // A missing field.
        let no_records = Bytes::from(rmp_serde::to_vec_named(&serde_json::json!({"topic": "t"})).unwrap());
        assert!(ProduceIn::decode_msgpack(&no_records).is_none());
        assert!(serde(&no_records).is_none());
        // A count far past the body is refused without allocating for it.
        let huge = Bytes::from_static(&[0x82, 0xa5, b't', b'o', b'p', b'i', b'c', 0xa1, b't', 0xa7, b'r', b'e', b'c', b'o', b'r', b'd', b's', 0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(ProduceIn::decode_msgpack(&huge).is_none());
        assert!(serde(&huge).is_none());
    }

    #[test]
    fn answers_encode_as_rmp_serde_encodes_them() {
        let mut rng = Rng(7);
        for _ in 0..2000 {
            let results = (0..rng.below(5))
                .map(|_| ProduceResult {
                    partition: rng.maybe(|r| int_of(r) as u32),
                    offset: rng.maybe(int_of),
                    timestamp_ms: rng.maybe(|r| int_of(r) as i64),
                    error: None,
                })
                .collect();
            let a = ProduceResponse { results };
            let mut w = Writer::new();
            assert!(a.encode_msgpack(&mut w));
            assert_eq!(BodyFormat::MsgPack.encode_fast(&a).unwrap(), Bytes::from(rmp_serde::to_vec_named(&a).unwrap()));
        }
        // A per-record error goes through serde, and still encodes.
        let e = ProduceResponse {
            results: vec![ProduceResult { partition: None, offset: None, timestamp_ms: None, error: Some(weft_wire::ErrorBody::new(weft_wire::ErrorCode::Validation, "x")) }],
        };
        assert!(!e.encode_msgpack(&mut Writer::new()));
        assert_eq!(BodyFormat::MsgPack.encode_fast(&e).unwrap(), Bytes::from(rmp_serde::to_vec_named(&e).unwrap()));
    }
}
