#![no_main]
//! The table WAL scanner and record decoder must never panic or allocate by
//! a claimed length, whatever the bytes. Each input is scanned as a WAL image
//! and as a record; it is also tried with its record header fixed up (length
//! and CRC), so the msgpack `WalRecord` decoder behind the CRC is exercised.
//! Whatever decodes must re-encode to the same record, and applying decoded
//! commands to a table state (and restoring the input as a snapshot) must
//! not panic either.
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_table::{TableState, WriteCommand, WriteResult};
use weft_table::wal::{self, WalRecord};

const MAX: u64 = 1 << 20;

fn check_record(data: &[u8], state: &mut TableState) {
    if let Ok(Some((rec, used))) = wal::decode_record(data, MAX) {
        assert!(used <= data.len());
        let mut again = Vec::new();
        wal::encode_record(&rec, &mut again);
        let (back, n) = wal::decode_record(&again, MAX).expect("re-encoded record decodes").expect("whole");
        assert_eq!(n, again.len());
        assert_eq!(back, rec);
        let _ = state.apply(rec.index, &rec.cmd);
    }
}

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let mut state = TableState::new();
    if let Ok(scan) = wal::scan(data, MAX) {
        assert!(scan.good_len as usize <= data.len());
        let again = wal::scan(&data[..scan.good_len as usize], MAX).expect("the good prefix scans");
        assert_eq!(again.records, scan.records);
        for WalRecord { index, cmd } in &scan.records {
            let _ = state.apply(*index, cmd);
        }
    }
    check_record(data, &mut state);
    if data.len() > 8 {
        let mut fixed = data.to_vec();
        let len = (fixed.len() - 8) as u32;
        fixed[..4].copy_from_slice(&len.to_le_bytes());
        let crc = crc32c::crc32c(&fixed[8..]);
        fixed[4..8].copy_from_slice(&crc.to_le_bytes());
        check_record(&fixed, &mut state);
    }
    let _ = TableState::restore(data);
    if let Ok(cmd) = WriteCommand::decode(data) {
        assert_eq!(WriteCommand::decode(&cmd.encode()).expect("re-encoded command decodes"), cmd);
        let _ = state.apply(1 << 40, &cmd);
    }
    let _ = WriteResult::decode(data);
});
