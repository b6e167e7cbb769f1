#![no_main]
//! The cluster's decoders must never panic or allocate by a claimed length,
//! whatever the bytes: the transport's frame decoder (raft messages from a
//! peer), a partition entry's records (decided at apply on every replica),
//! and a group's raft WAL read back at open. Whatever decodes re-encodes
//! (frames: to an encoding of stable length; entries: to the same
//! records). A partition snapshot (from the leader) decodes or is refused.
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
#[path = "common/halves.rs"]
mod halves;
use weft_cluster::codec::{encode, FrameDecoder};
use weft_cluster::partition::{check_snapshot, decode_entry, encode_batch};
use weft_cluster::storage::{Disk, GroupStorage, MemDisk};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);

    // Transport frames, fed in two parts split where the first byte says.
    let mut dec = FrameDecoder::new(64 * 1024);
    let mut buf = BytesMut::new();
    'feed: for part in halves::halves(data) {
        buf.extend_from_slice(part);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    // Protobuf has many encodings of one message (fields
                    // repeated or merged, unknown fields, kept in a HashMap
                    // and so written in any order): the re-encoding decodes,
                    // and encoding what it decodes to has the same length.
                    let mut out = BytesMut::new();
                    encode(&frame, &mut out).expect("decoded frames re-encode");
                    let first = out.clone();
                    let back = FrameDecoder::new(u32::MAX).decode(&mut out).expect("round trip").expect("whole frame");
                    let mut again = BytesMut::new();
                    encode(&back, &mut again).expect("re-encodes");
                    assert_eq!(first.len(), again.len(), "encoding is stable after one round");
                }
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }

    // A partition entry: what decodes re-encodes (as a batch) to the same records.
    if let Ok(records) = decode_entry(data) {
        let again = encode_batch(&records);
        assert_eq!(decode_entry(&again).expect("re-encoded entry decodes"), records);
    }

    if let Ok((_, producers)) = check_snapshot(data) {
        assert!(producers <= data.len() / 28, "more producers than the bytes hold");
    }

    // A group's raft WAL: opening it either replays or refuses it.
    let mut disk = MemDisk::new();
    if disk.append(data).is_ok() && disk.sync().is_ok() {
        let _ = GroupStorage::open(Box::new(disk), 1 << 20);
    }
});
