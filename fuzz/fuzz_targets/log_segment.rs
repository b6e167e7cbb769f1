#![no_main]
//! Recovery of an active segment from whatever bytes a crash (or a broken
//! disk) left in the file must never panic; it keeps a prefix of the file
//! made of whole batches with valid CRCs. Reading that back gives records
//! with increasing offsets or a typed error, never a panic. (A batch whose
//! CRC matches but whose records are malformed cannot come from a crash:
//! every write path validates batches before they are stored.)
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_log::segment::{log_file_name, Segment};
use weft_log::storage::read_all;
use weft_log::{BatchesDecoder, MemStorage, OpenFiles, Offset, Storage};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let mem = Arc::new(MemStorage::new());
    let storage: &MemStorage = &mem;
    let dir = Path::new("/p");
    storage.create_dir_all(dir).expect("mem dir");
    let path = dir.join(log_file_name(Offset(0)));
    let f = storage.open(&path, true).expect("mem file");
    f.write_all_at(data, 0).expect("mem write");
    drop(f);
    let files = Arc::new(OpenFiles::new(mem.clone(), 4));
    let Ok((seg, _report)) = Segment::open_active(&files, dir, Offset(0), None) else { return };
    let kept = read_all(storage, &path, u64::MAX).expect("mem read");
    assert!(data.starts_with(&kept), "recovery only truncates");
    let mut last = None;
    for r in BatchesDecoder::new(Bytes::from(kept), Offset(0), usize::MAX) {
        let Ok(r) = r else { break };
        assert!(last.is_none_or(|l| r.offset > l), "offsets increase");
        last = Some(r.offset);
    }
    assert!(last.is_none_or(|l| l < seg.next_offset));
});
