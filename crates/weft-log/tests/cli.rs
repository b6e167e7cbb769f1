//! The offline tool: verify and dump a data directory.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use weft_log::cli::{LogCmd, run};
use weft_log::*;

#[tokio::test]
async fn verify_and_dump() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), cfg()).await.unwrap();
        log.create_topic("t", None).await.unwrap();
        log.produce("t", vec![ProduceRecord::keyed("k", "v").with_header("h", "x")]).await.unwrap();
        log.close().await.unwrap();
    }
    run(LogCmd::Verify { dir: dir.path().to_path_buf() }, false).await.unwrap();
    let seg = dir.path().join("topics/t/0/00000000000000000000.log");
    run(LogCmd::Dump { file: seg.clone(), limit: 10 }, false).await.unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&seg, b).unwrap();
    let e = run(LogCmd::Verify { dir: dir.path().to_path_buf() }, false).await.unwrap_err();
    assert!(matches!(e, LogError::Corrupt { .. }), "{e}");
}
