//! Generates the client of etcd's KV service from proto/etcd/kv.proto (a
//! minimal subset written from etcd's published API, for query-bench only),
//! with protox: no protoc binary on the build machine. Weft's own
//! weft.query.v1 code is weft-api's (`weft_api::pb`), not generated twice.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let file = root.join("etcd/kv.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(fds)?;
    Ok(())
}
