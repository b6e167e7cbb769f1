#![no_main]
//! Decode a FieldDesc then a value of that type (full and masked) from
//! arbitrary bytes, in both byte orders; re-encode what decodes.

use libfuzzer_sys::fuzz_target;

#[path = "common/alloc_guard.rs"]
mod alloc_guard;
use weft_pva::proto::types::decode_desc;
use weft_pva::proto::value::{BitSet, decode_masked, decode_value, encode_value};
use weft_pva::proto::{ByteOrder, Reader, SendCache, TypeCache, Value, Writer};

fuzz_target!(|data: &[u8]| {
    let _guard = alloc_guard::Guard::for_input(data);
    for order in [ByteOrder::Little, ByteOrder::Big] {
        let mut r = Reader::new(data, order);
        let mut cache = TypeCache::new();
        let Ok(desc) = decode_desc(&mut r, &mut cache) else { continue };
        let mut r2 = r.clone();
        if let Ok(v) = decode_value(&mut r, &desc, &mut cache) {
            let mut w = Writer::new(order);
            let _ = encode_value(&mut w, &desc, &v, &mut SendCache::disabled());
        }
        if let Ok(bits) = BitSet::decode(&mut r2) {
            let mut v = Value::default_for(&desc);
            let _ = decode_masked(&mut r2, &desc, &mut v, &bits, &mut cache);
        }
    }
});
