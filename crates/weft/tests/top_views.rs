//! `weft top --once` against real `weft serve` processes: the tables and
//! pvAccess panels on a single node with a table and a served PV (values
//! put through pvAccess, a live monitor), and the cluster panel on a
//! 3-node cluster (metadata leader, partition and table leaders, replicas,
//! high watermarks), each checked against what the nodes answer on their
//! own endpoints. Children are ended by pid (Node, Proc and Monitor drop).
#![allow(clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};

use serde_json::Value;

#[path = "support/cluster.rs"]
mod cluster;
mod common;
mod support;
use cluster::{procs, start_cluster, until};
use common::free_port;
use support::{text, Node, WEFT};

/// One test at a time: both pick free ports before their children bind
/// them, and a port handed to both would keep a node from starting.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `weft pv monitor` child, killed by pid on drop.
struct Monitor(Child);

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stats(node: &Node) -> Value {
    serde_json::from_str(&node.ok(&["call", "weft.stats", "{}"])).unwrap()
}

fn query(node: &Node, aql: &str) {
    node.ok(&["call", "query.execute", &serde_json::json!({ "aql": aql }).to_string()]);
}

/// The line of `out` whose first word is `first`.
fn row<'a>(out: &'a str, first: &str) -> Vec<&'a str> {
    let line = out.lines().find(|l| l.split_whitespace().next() == Some(first));
    line.unwrap_or_else(|| panic!("no row {first:?} in\n{out}")).split_whitespace().collect()
}

#[test]
fn single_node_tables_and_pvs() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let pvs = dir.path().join("pvs.toml");
    std::fs::write(&pvs, "[[pv]]\nname = \"t:top:temp\"\ntype = \"double\"\nvalue = 21.5\nwritable = true\n").unwrap();
    let conf = dir.path().join("w.toml");
    std::fs::write(&conf, format!("[pva]\nenabled = true\npvs_file = {:?}\n", pvs.display().to_string())).unwrap();
    let (pva_tcp, pva_udp) = (free_port(), free_port());
    let epics: Vec<(&str, String)> = vec![
        ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1".into()),
        ("EPICS_PVAS_SERVER_PORT", pva_tcp.to_string()),
        ("EPICS_PVAS_BROADCAST_PORT", pva_udp.to_string()),
        ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO".into()),
        ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1".into()),
        ("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{pva_udp}")),
        ("EPICS_PVA_AUTO_ADDR_LIST", "NO".into()),
    ];
    let env: Vec<(&str, &str)> = epics.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let node = Node::start_with(&["--config", conf.to_str().unwrap()], &env);
    let pv = |args: &[&str]| Command::new(WEFT).arg("pv").args(args).envs(epics.iter().map(|(k, v)| (*k, v.as_str()))).output().unwrap();

    // A table with three keys, one of them written twice.
    query(&node, "CREATE TABLE settings");
    for (k, v) in [("a", "1"), ("b", "2"), ("c", "3"), ("a", "4")] {
        query(&node, &format!("SET settings '{k}' = '{v}'"));
    }

    // A monitor on the PV, then two puts it sees.
    let o = until("the PV served", || Some(pv(&["get", "t:top:temp"])).filter(|o| o.status.success()));
    assert!(text(&o.stdout).trim().ends_with(" 21.5"), "{o:?}");
    let _monitor = Monitor(
        Command::new(WEFT)
            .args(["pv", "monitor", "t:top:temp"])
            .envs(epics.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    until("the monitor open", || (stats(&node)["pva.monitors_open"].as_u64() == Some(1)).then_some(()));
    for v in ["22.75", "30.25"] {
        let o = pv(&["put", "t:top:temp", v]);
        assert!(o.status.success(), "{o:?}");
    }
    let s = until("both updates sent", || Some(stats(&node)).filter(|s| s["pva.monitor_updates"].as_u64() >= Some(3)));

    let out = node.ok(&["top", "--once", "--interval-ms", "300"]);
    // TABLE KIND LEADER REVISION KEYS SIZE(2 words) WRITES/S WATCHERS
    let t = row(&out, "settings");
    let revision = s["table.settings.revision"].to_string();
    assert_eq!(t[1..5], ["local", "-", revision.as_str(), "3"], "{out}");
    assert_eq!(s["table.settings.keys"], 3);
    // pvAccess: the monitor and its updates as the node counts them, the PV's value as last put
    let pva = out.lines().find(|l| l.starts_with("pvAccess")).unwrap_or_else(|| panic!("no pvAccess line in\n{out}"));
    assert!(pva.contains("monitors 1") && pva.contains(&format!("updates {} ", s["pva.monitor_updates"])), "{pva}");
    let p = row(&out, "t:top:temp");
    assert_eq!((p[2], p[3]), ("rw", "30.25"), "{out}");
    assert!(p[1].contains("NTScalar"), "{out}");
    // no cluster here: no cluster panel
    assert!(!out.contains("cluster node") && !out.contains("PARTITION"), "{out}");
}

#[test]
fn cluster_view_names_the_leaders() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut ps = procs(dir.path(), 1..=3);
    start_cluster(&mut ps);
    until("topic created", || ps[0].json(&["call", "cluster.create_topic", r#"{"name":"orders","partitions":2,"replicas":3}"#]));
    until("table created", || ps[1].call("query.execute", r#"{"aql":"CREATE TABLE cfg"}"#).ok());
    until("a table write", || ps[2].call("query.execute", r#"{"aql":"SET cfg 'k' = 'v'"}"#).ok());
    for i in 0..5 {
        until("a produce", || ps[i % 3].call("cluster.produce", &format!(r#"{{"topic":"orders","partition":0,"value":"r{i}"}}"#)).ok());
    }
    // Watch from partition 0's leader: it knows the in-sync set.
    let on = until("orders/0 led, its five records committed and the table led", || {
        let s = ps[0].status()?;
        let p0 = s["partitions"].as_array()?.iter().find(|p| p["topic"] == "orders" && p["partition"] == 0)?;
        let leader = p0["leader"].as_u64()?;
        let s = ps[leader as usize - 1].status()?;
        let p0 = s["partitions"].as_array()?.iter().find(|p| p["topic"] == "orders" && p["partition"] == 0)?;
        let in_sync = p0["in_sync"].as_array()?.len();
        (p0["high_watermark"].as_u64()? >= 5 && in_sync == 3 && s["tables"][0]["leader"].is_u64()).then_some(leader as usize - 1)
    });
    let node = &ps[on];
    // The leaders seen before and after the view; a view taken between two
    // equal statuses must show them (a leader change in between: look again).
    let (out, status) = until("a view between two equal statuses", || {
        let before = node.status()?;
        let o = node.weft(&["top", "--once", "--interval-ms", "300"]);
        assert!(o.status.success(), "{o:?}");
        let after = node.status()?;
        let key = |s: &Value| (s["meta_leader"].clone(), s["partitions"].to_string(), s["tables"][0]["leader"].clone());
        (key(&before) == key(&after)).then(|| (text(&o.stdout), after))
    });
    let meta_leader = status["meta_leader"].as_u64().unwrap();
    let summary = out.lines().find(|l| l.starts_with("cluster node")).unwrap_or_else(|| panic!("no cluster line in\n{out}"));
    assert!(summary.starts_with(&format!("cluster node {}  meta leader {meta_leader}  up 3/3", node.id)), "{summary}");
    assert!(summary.contains("under-replicated 0"), "{summary}");
    // NODE ROLES VOTE LIVE LAST-CONTACT(2 words) METADATA ADDR
    for id in 1..=3u64 {
        let r = row(&out, &id.to_string());
        assert_eq!(&r[1..4], ["control,data", "voter", "up"], "{out}");
        assert_eq!(r[6] == "leader", id == meta_leader, "node {id}: {out}");
        assert_eq!(*r.last().unwrap(), ps[id as usize - 1].addr(), "{out}");
    }
    // PARTITION LEADER REPLICAS IN-SYNC HIGH-WATER /S LAG
    for part in status["partitions"].as_array().unwrap() {
        let r = row(&out, &format!("orders/{}", part["partition"]));
        assert_eq!(r[1], part["leader"].as_u64().map_or("-".into(), |l| l.to_string()), "{out}");
        let mut replicas: Vec<u64> = r[2].split(',').map(|x| x.parse().unwrap()).collect();
        replicas.sort_unstable();
        assert_eq!(replicas, vec![1, 2, 3], "{out}");
        assert_eq!(r[4], part["high_watermark"].as_u64().map_or("-".into(), |h| h.to_string()), "{out}");
        // the in-sync set is known on the partition's leader only
        let in_sync: Vec<String> = part["in_sync"].as_array().unwrap().iter().map(|x| x.to_string()).collect();
        if in_sync.is_empty() {
            assert!(r[3] == "?" || r[3] == "-", "{out}");
        } else {
            assert_eq!(r[3], in_sync.join(","), "{out}");
        }
    }
    let p0 = row(&out, "orders/0");
    assert!(p0[4].parse::<u64>().unwrap() >= 5, "five records committed on orders/0: {out}");
    // the partition appliers here (`apply` of cluster.status): a rate over
    // the interval and the queue now
    // applier records/s R  bytes/s B UNIT  queued N entries (B UNIT)
    let applier = out.lines().find(|l| l.starts_with("applier records/s ")).unwrap_or_else(|| panic!("no applier line in\n{out}"));
    let a: Vec<&str> = applier.split_whitespace().collect();
    assert!(a[2].parse::<f64>().is_ok() && a[3] == "bytes/s" && a[6] == "queued" && a[7].parse::<u64>().is_ok() && a[8] == "entries", "{applier}");
    assert!(status["apply"]["records"].as_u64().unwrap() >= 5, "this node applied the five records: {status}");
    // TABLE KIND LEADER(2 words: "L (1,2,3)") REVISION KEYS ...
    let t = row(&out, "cfg");
    let table = &status["tables"][0];
    assert_eq!((t[1], t[2]), ("replicated", &*table["leader"].to_string()), "{out}");
    if table["keys"].is_u64() {
        assert_eq!((t[4], t[5]), (&*table["revision"].to_string(), "1"), "the replica here has the one key: {out}");
    }
    // Another node dies: both partitions (three replicas each) are
    // under-replicated, as `cluster.status` says, on every node left, the
    // partitions' leaders or not.
    let victim = (on + 1) % 3;
    ps[victim].kill();
    for p in ps.iter().filter(|p| p.id != ps[victim].id) {
        let out = until("weft top counting both partitions under-replicated", || {
            let o = p.weft(&["top", "--once", "--interval-ms", "100"]);
            let out = text(&o.stdout);
            out.lines().any(|l| l.starts_with("cluster node") && l.contains("  up 2/3") && l.contains("under-replicated 2")).then_some(out)
        });
        let json = until("weft top --json", || p.json(&["top", "--once", "--json", "--interval-ms", "100"]));
        let rows = json["cluster"]["partitions"].as_array().unwrap_or_else(|| panic!("no partitions in {json}"));
        assert!(rows.len() == 2 && rows.iter().all(|r| r["under_replicated"] == true), "node {}: {json}\n{out}", p.id);
    }
}
