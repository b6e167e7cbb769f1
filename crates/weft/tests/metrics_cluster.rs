//! Issue #15 item 1, the cluster's families: three real `weft serve` nodes
//! on loopback; each node's `/metrics` has the metadata group's raft state
//! (`weft_raft_*{group="0",kind="meta"}`): exactly one node says it leads,
//! every node agrees on the term and the leader, commit lag is there; after
//! kill -9 of the leader the survivors elect a new one in a higher term and
//! count the election and the leader change. With WEFT_PEERS=1 `promtool
//! check metrics` passes on every node's exposition. Children ended by pid.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{procs, start_cluster, until, Proc};

const META: &str = r#"{group="0",kind="meta"}"#;

fn exposition(p: &Proc) -> Option<String> {
    let (code, body) = p.http("GET", "/metrics", "")?;
    (code == 200).then_some(body)
}

/// Every sample of the exposition: series (name and labels) -> value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
        .collect()
}

fn meta(m: &BTreeMap<String, f64>, family: &str) -> Option<f64> {
    m.get(&format!("{family}{META}")).copied()
}

/// One scrape per node id.
type Scrapes = BTreeMap<u64, BTreeMap<String, f64>>;

/// The live nodes' scrapes once they agree: one leader, one term, one leader id.
/// Returns (leader id, term, scrapes by node id).
fn agreed(ps: &[Proc]) -> Option<(u64, f64, Scrapes)> {
    let mut all = BTreeMap::new();
    for p in ps.iter().filter(|p| p.child.is_some()) {
        all.insert(p.id, samples(&exposition(p)?));
    }
    let leaders: Vec<u64> = all.iter().filter(|(_, m)| meta(m, "weft_raft_is_leader") == Some(1.0)).map(|(id, _)| *id).collect();
    let [leader] = leaders[..] else { return None };
    let term = meta(&all[&leader], "weft_raft_term")?;
    let agree = all.values().all(|m| meta(m, "weft_raft_term") == Some(term) && meta(m, "weft_raft_leader_id") == Some(leader as f64));
    agree.then_some((leader, term, all))
}

fn promtool_check(body: &str) {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        return;
    }
    let mut c = Command::new("promtool").args(["check", "metrics"]).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    c.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(o.status.success(), "promtool check metrics: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

#[test]
fn raft_metrics_follow_the_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    start_cluster(&mut ps);

    let (leader, term, before) = until("one metadata leader in every node's /metrics", || agreed(&ps));
    assert!(term >= 1.0);
    for (id, m) in &before {
        let (commit, applied) = (meta(m, "weft_raft_commit_index").unwrap(), meta(m, "weft_raft_applied_index").unwrap());
        assert!(commit >= 1.0, "node {id}: commit {commit}");
        assert_eq!(meta(m, "weft_raft_commit_lag"), Some(commit - applied), "node {id}");
        assert!(meta(m, "weft_raft_leader_changes_total").unwrap() >= 1.0, "node {id} saw no leader");
    }
    assert!(meta(&before[&leader], "weft_raft_elections_total").unwrap() >= 1.0, "the leader never campaigned");
    for p in &ps {
        promtool_check(&exposition(p).unwrap());
    }

    // kill -9 the leader: the survivors elect another in a higher term.
    ps.iter_mut().find(|p| p.id == leader).unwrap().kill();
    let (next, next_term, after) = until("a new metadata leader on the survivors", || agreed(&ps).filter(|(l, _, _)| *l != leader));
    assert!(next_term > term, "term {next_term} after {term}");
    assert_eq!(after.len(), 2);
    for (id, m) in &after {
        let changes = meta(m, "weft_raft_leader_changes_total").unwrap();
        assert!(changes > meta(&before[id], "weft_raft_leader_changes_total").unwrap(), "node {id} counted no leader change");
    }
    let elections = |m: &BTreeMap<String, f64>| meta(m, "weft_raft_elections_total").unwrap();
    assert!(elections(&after[&next]) > elections(&before[&next]), "the new leader {next} counted no election");
}
