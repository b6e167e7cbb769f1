//! `cluster.max_commands_per_pass`: commands queued while the driver is
//! busy are taken at most that many (after the one that woke it) per Ready
//! pass; a pass that leaves more queued counts in `cluster.passes_cut`, and
//! every command still commits. One real node over loopback.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use weft_cluster::{ClusterConfig, ClusterNode, MetaCommand, MetaResponse, RaftTuning, Role};

fn stat(node: &ClusterNode, key: &str) -> u64 {
    node.gauges().into_iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_u64()).unwrap_or_else(|| panic!("no stat {key}"))
}

// A current-thread runtime: every proposal below is queued (try_send at
// its first poll) before the driver task runs again.
#[tokio::test]
async fn commands_past_the_per_pass_bound_wait_for_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let cfg = ClusterConfig {
        node_id: 1,
        addr: addr.clone(),
        peers: BTreeMap::from([(1, addr)]),
        roles: vec![Role::Control, Role::Data],
        join: false,
        native_addr: None,
        data_dir: dir.path().to_path_buf(),
        tick_ms: 20,
        max_frame_bytes: 16 << 20,
        propose_timeout_ms: 10_000,
        max_pending: 1024,
        tuning: RaftTuning { election_ticks: 10, heartbeat_ticks: 2, max_commands_per_pass: 2, ..Default::default() },
        log: None,
    };
    let node = ClusterNode::start(cfg).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.status().await.ok().and_then(|s| s.meta_leader).is_none() {
        assert!(Instant::now() < deadline, "no metadata leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = stat(&node, "cluster.passes_cut");

    const N: usize = 20;
    let cmds: Vec<MetaCommand> = (0..N).map(|i| MetaCommand::CreateTopic { name: format!("t{i}"), partitions: 1, replicas: 1, config: Default::default() }).collect();
    let mut futs: Vec<Pin<Box<dyn Future<Output = weft_cluster::Result<MetaResponse>> + '_>>> = cmds.iter().map(|c| Box::pin(node.propose_meta(c)) as _).collect();
    let mut done: Vec<Option<weft_cluster::Result<MetaResponse>>> = (0..N).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, d) in futs.iter_mut().zip(done.iter_mut()) {
            if d.is_none() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    *d = Some(r);
                }
            }
        }
        if done.iter().all(Option::is_some) { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    for (i, d) in done.into_iter().enumerate() {
        assert!(matches!(d, Some(Ok(MetaResponse::Topic(_)))), "command {i}: {d:?}");
    }
    assert_eq!(node.local_meta().topics.len(), N);
    // A pass takes at most 3 (one woke the driver, 2 more): the first 6
    // passes each leave some of the 20 queued.
    let cut = stat(&node, "cluster.passes_cut") - before;
    assert!(cut >= 6, "passes cut: {cut}");
    assert_eq!(stat(&node, "cluster.pending"), 0);
    node.shutdown();
}
