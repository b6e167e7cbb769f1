#![no_main]
//! OSDMap / incremental / CRUSH / MonMap decoders and placement on
//! arbitrary bytes: typed errors only, bounded work.
use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_rados::proto::crush::CrushMap;
use weft_rados::proto::monmap::MonMap;
use weft_rados::proto::osdmap::OsdMap;

const BASE: &[u8] = include_bytes!("../../crates/weft-rados/tests/data/osdmap.bin");

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    let _ = MonMap::decode(data);
    if let Ok(c) = CrushMap::decode(data) {
        for x in 0..4 {
            let _ = c.do_rule(0, x, 3, &[0x10000; 4], Some(1));
        }
    }
    if let Ok(m) = OsdMap::decode(data) {
        for id in m.pools.keys().take(2) {
            let _ = m.map_object(*id, "obj", "ns");
        }
    }
    // as an incremental on top of a real map
    if let Ok(mut m) = OsdMap::decode(BASE) {
        if m.apply_incremental(data).is_ok() {
            let _ = m.map_object(1, "obj", "");
        }
    }
});
