//! Server-side cost of one native request (decode, route, handle, encode),
//! without sockets: `cargo bench -p weft-perf`. CI builds this, it does not
//! time it; numbers go to docs/BENCHMARKS.md, "Per-request cost".

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use weft_log::FsyncPolicy;

fn requests(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let node = match rt.block_on(weft_perf::node(FsyncPolicy::Never)) {
        Ok(n) => n,
        Err(e) => panic!("set-up: {e}"),
    };
    let ping = weft_perf::ping_request();
    let produce = match weft_perf::produce_request(1024) {
        Ok(p) => p,
        Err(e) => panic!("set-up: {e}"),
    };
    let mut out = BytesMut::with_capacity(4096);
    c.bench_function("ping", |b| b.iter(|| rt.block_on(weft_perf::round(&node, &ping, &mut out))));
    c.bench_function("produce 1 record of 1 KiB, fsync never", |b| {
        b.iter(|| rt.block_on(weft_perf::round(&node, &produce, &mut out)))
    });
}

criterion_group!(benches, requests);
criterion_main!(benches);
