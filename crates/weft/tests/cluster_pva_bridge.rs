//! A pvAccess PV bridged to a replicated topic on a cluster (issue #12 item 8,
//! docs/bridge.md "On a cluster"): the bridge goes through the record plane,
//! so a put on one node's PV is a replicated record every node reads, a
//! record produced through any node reaches the PV on every bridging node,
//! and puts keep working after the partition leader is killed. Three real
//! `weft serve` processes, two of them serving the PV, ended by pid.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{partition_leader, procs, replicas, start_cluster, until, Proc};
use common::{free_port, WEFT};

const PV: &str = "t:cluster:sp";

/// The pvAccess ports of one node: (server TCP, search UDP).
struct Pva {
    tcp: u16,
    udp: u16,
}

impl Pva {
    fn server_env(&self) -> Vec<(String, String)> {
        vec![
            ("EPICS_PVAS_INTF_ADDR_LIST".into(), "127.0.0.1".into()),
            ("EPICS_PVAS_SERVER_PORT".into(), self.tcp.to_string()),
            ("EPICS_PVAS_BROADCAST_PORT".into(), self.udp.to_string()),
            ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST".into(), "NO".into()),
            ("EPICS_PVAS_BEACON_ADDR_LIST".into(), "127.0.0.1".into()),
        ]
    }

    /// `weft pv ...` against this node's pvAccess server only.
    fn pv(&self, args: &[&str]) -> Output {
        Command::new(WEFT)
            .arg("pv")
            .args(args)
            .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{}", self.udp))
            .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
            .output()
            .unwrap()
    }

    /// The PV's value as `weft pv get` prints it (`NAME VALUE`).
    fn value(&self) -> Option<String> {
        let o = self.pv(&["get", PV]);
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().rsplit(' ').next().unwrap_or_default().to_owned())
    }
}

fn consume_all(p: &Proc) -> Vec<String> {
    let o = p.weft(&["consume", "sp", "--from-beginning"]);
    String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn a_pv_bridged_to_a_replicated_topic_serves_every_node_and_survives_its_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    let conf = tmp.path().join("pva.toml");
    std::fs::write(&conf, format!("[pva]\nenabled = true\nbridges = [{{ pv = \"{PV}\", topic = \"sp\", kind = \"double\" }}]\n")).unwrap();
    let pvas: Vec<Pva> = (0..2).map(|_| Pva { tcp: free_port(), udp: free_port() }).collect();
    for (p, pva) in ps.iter_mut().zip(&pvas) {
        p.env = pva.server_env();
        p.env.push(("WEFT_CONFIG".into(), conf.display().to_string()));
    }
    start_cluster(&mut ps);

    // The bridges made the topic through the metadata group: replicated on all three.
    until("the bridge's topic replicated on three nodes", || ps[2].status().map(|s| replicas(&s, "sp", 0)).filter(|r| r.len() == 3));
    for pva in &pvas {
        until("the PV served", || pva.value());
    }

    // A put through node 1's PV is a replicated record: node 3 (no PV) reads it.
    let o = until("a put through node 1", || Some(pvas[0].pv(&["put", PV, "12.5"])).filter(|o| o.status.success()));
    assert!(o.status.success());
    until("the put read on node 3", || (consume_all(&ps[2]) == ["12.5"]).then_some(()));
    // ... and reaches node 2's PV through the topic.
    until("node 2's PV follows node 1's put", || (pvas[1].value()? == "12.5").then_some(()));

    // A record produced through node 3 reaches both PVs.
    let o = ps[2].weft_in(&["produce", "sp", "--partition", "0"], "33\n");
    assert!(o.status.success(), "produce: {}", String::from_utf8_lossy(&o.stderr));
    for pva in &pvas {
        until("the record reaches the PV", || (pva.value()? == "33").then_some(()));
    }

    // kill -9 of the partition's leader; the surviving PV node still takes puts.
    let leader = until("the partition leader", || partition_leader(&ps, "sp", 0));
    ps[leader as usize - 1].kill();
    let (alive, other) = if leader == 1 { (1, 2) } else { (0, if leader == 2 { 2 } else { 1 }) };
    until("a put after the leader died", || Some(pvas[alive].pv(&["put", PV, "44.5"])).filter(|o| o.status.success()));
    until("the put read after the failover", || consume_all(&ps[other]).last().filter(|v| *v == "44.5").map(|_| ()));
    let all = consume_all(&ps[other]);
    assert_eq!(&all[..2], ["12.5", "33"], "acknowledged records kept in order: {all:?}");
    assert!(all.iter().filter(|v| *v == "44.5").count() >= 1, "{all:?}");
}
