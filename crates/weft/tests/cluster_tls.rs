//! mTLS between cluster nodes (docs/cluster.md, "TLS between nodes"): three
//! `weft serve --auth` processes with cluster certificates of one CA form a
//! cluster, elect, replicate a produce, and a node without a replica
//! forwards a produce and a fetch over the cluster port as its node
//! identity (the nodes hold no token: without that identity the forwarded
//! requests would be `unauthenticated`). A fourth process posing as node 1
//! with another CA's certificate is refused by the nodes it dials (counted
//! in `cluster.peers_refused`) and the cluster carries on; a certificate
//! that does not name the node's own id stops `weft serve` at start. A
//! fourth node then joins with its certificate and catches up.
//! Real processes, ended by pid.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::Value;

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{procs, until, Proc};

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem: PathBuf,
}

fn ca(dir: &Path, name: &str) -> Ca {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    let pem = dir.join(format!("{name}.pem"));
    std::fs::write(&pem, cert.pem()).unwrap();
    Ca { cert, key, pem }
}

/// A node certificate (SAN `node-<id>`, both key usages) and key; the
/// `WEFT_CLUSTER_TLS_*` variables for it.
fn node_cert(dir: &Path, ca: &Ca, file: &str, id: u64) -> Vec<(String, String)> {
    let mut p = CertificateParams::new(vec![format!("node-{id}")]).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, format!("node-{id}"));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let (c, k) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    let s = |p: &Path| p.display().to_string();
    vec![("WEFT_CLUSTER_TLS_CERT".into(), s(&c)), ("WEFT_CLUSTER_TLS_KEY".into(), s(&k)), ("WEFT_CLUSTER_TLS_CA".into(), s(&ca.pem))]
}

/// `weft ARGS --token TOKEN` against `p`: stdout, or stderr on failure.
fn with(p: &Proc, token: &str, args: &[&str]) -> Result<String, String> {
    let mut a = args.to_vec();
    a.extend(["--token", token]);
    let o = p.weft(&a);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if o.status.success() { Ok(text(&o.stdout)) } else { Err(text(&o.stderr)) }
}

fn stat(p: &Proc, token: &str, key: &str) -> Option<u64> {
    with(p, token, &["stats"]).ok()?.lines().find_map(|l| l.strip_prefix(&format!("{key} "))?.trim().parse().ok())
}

/// A record value as `weft call` prints it (bytes as numbers, or a string).
fn values(fetched: &Value) -> Vec<String> {
    let text = |v: &Value| match v.as_array() {
        Some(b) => String::from_utf8(b.iter().map(|x| x.as_u64().unwrap() as u8).collect()).unwrap(),
        None => v.as_str().unwrap_or_default().to_owned(),
    };
    fetched["records"].as_array().map(|rs| rs.iter().map(|r| text(&r["value"])).collect()).unwrap_or_default()
}

#[test]
fn nodes_speak_mtls_forward_as_nodes_and_refuse_another_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let cluster_ca = ca(&certs, "cluster-ca");
    let mut ps = procs(tmp.path(), 1..=3);
    let peers = ps.iter().map(|p| format!("{}={}", p.id, p.cluster_addr())).collect::<Vec<_>>().join(",");
    for p in ps.iter_mut() {
        p.env.extend(node_cert(&certs, &cluster_ca, &format!("n{}", p.id), p.id));
        p.env.push(("WEFT_AUTH_ENABLED".into(), "true".into()));
        // No token of their own: forwarded requests must pass as the node identity.
        p.env.push(("WEFT_TOKEN".into(), String::new()));
        p.start(&peers);
    }

    // Forms and elects over mTLS: the bootstrap admin token is itself a
    // metadata commit, and every node registers.
    let admin = until("an admin token on some node", || ps.iter().find_map(|p| std::fs::read_to_string(p.dir.join("admin.token")).ok())).trim().to_owned();
    until("a metadata leader and three registered nodes", || {
        let s: Value = serde_json::from_str(&with(&ps[0], &admin, &["cluster", "status", "--json"]).ok()?).ok()?;
        (s["meta_leader"].is_u64() && s["nodes"].as_array()?.iter().filter(|n| n["native_addr"].is_string()).count() == 3).then_some(())
    });
    for p in &ps {
        assert_eq!(stat(p, &admin, "cluster.peers_refused"), Some(0), "node {} refused a peer of its own cluster", p.id);
        assert_eq!(stat(p, &admin, "cluster.handshakes_shed"), Some(0), "node {} shed a connection of its own cluster", p.id);
        assert!(stat(p, &admin, "cluster.handshakes_pending").is_some_and(|n| n <= 64), "node {}", p.id);
    }

    // A topic on two of the three nodes; the third forwards.
    with(&ps[0], &admin, &["topic", "create", "sec", "--partitions", "1", "--replicas", "2", "--json"]).unwrap();
    let replicas: Vec<u64> = until("the partition's replicas", || {
        let s: Value = serde_json::from_str(&with(&ps[0], &admin, &["cluster", "status", "--json"]).ok()?).ok()?;
        let p = s["partitions"].as_array()?.iter().find(|p| p["topic"] == "sec" && p["leader"].is_u64())?;
        Some(p["replicas"].as_array()?.iter().map(|v| v.as_u64().unwrap()).collect())
    });
    let outsider = ps.iter().position(|p| !replicas.contains(&p.id)).unwrap();
    let produced = until("a produce through the node without a replica", || {
        with(&ps[outsider], &admin, &["call", "log.produce", r#"{"topic":"sec","records":[{"partition":0,"value":"over-mtls"}]}"#]).ok()
    });
    assert!(produced.contains("\"offset\""), "{produced}");
    // Replicated: each replica's own copy holds it; the outsider's fetch is forwarded.
    for p in &ps {
        let got = until(&format!("the record read through node {}", p.id), || {
            let f: Value = serde_json::from_str(&with(p, &admin, &["call", "log.fetch", r#"{"topic":"sec","partition":0,"offset":0}"#]).ok()?).ok()?;
            let v = values(&f);
            (!v.is_empty()).then_some(v)
        });
        assert_eq!(got, vec!["over-mtls"], "node {}", p.id);
    }
    assert!(stat(&ps[outsider], &admin, "cluster.forwarded").unwrap() >= 2);

    // A table on two nodes: the third's statements go the same way (cluster.local.query).
    let aql = |p: &Proc, q: &str| -> Option<Value> { serde_json::from_str(&with(p, &admin, &["call", "query.execute", &serde_json::json!({ "aql": q }).to_string()]).ok()?).ok() };
    until("table created", || aql(&ps[0], "CREATE TABLE sect REPLICAS 2"));
    let hosts: Vec<u64> = until("the table placed", || {
        let m: Value = serde_json::from_str(&with(&ps[0], &admin, &["call", "cluster.meta"]).ok()?).ok()?;
        Some(m["tables"]["sect"]["replicas"].as_array()?.iter().map(|v| v.as_u64().unwrap()).collect::<Vec<u64>>()).filter(|r| r.len() == 2)
    });
    let t_out = ps.iter().position(|p| !hosts.contains(&p.id)).unwrap();
    until("a put through the node without a table replica", || aql(&ps[t_out], "SET sect 'k' = 'v'"));
    let r = aql(&ps[t_out], "GET sect 'k'").unwrap();
    assert_eq!(r["kvs"][0]["value"], "v", "{r}");
    assert!(stat(&ps[t_out], &admin, "cluster.tables_forwarded").unwrap() >= 2);

    // Node 1's impostor with another CA's certificate (it dials 2 and 3, the
    // higher ids): refused at the TLS handshake on both sides.
    let other_ca = ca(&certs, "other-ca");
    let mut impostor = procs(&tmp.path().join("impostor"), 1..=1).pop().unwrap();
    std::fs::create_dir_all(tmp.path().join("impostor")).unwrap();
    impostor.env.extend(node_cert(&certs, &other_ca, "impostor", 1));
    let their_peers = format!("1={},2={},3={}", impostor.cluster_addr(), ps[1].cluster_addr(), ps[2].cluster_addr());
    impostor.start(&their_peers);
    until("nodes 2 and 3 refusing the impostor", || (stat(&ps[1], &admin, "cluster.peers_refused")? >= 1 && stat(&ps[2], &admin, "cluster.peers_refused")? >= 1).then_some(()));
    let imp = until("the impostor's own stats", || {
        let o = impostor.weft(&["stats"]);
        o.status.success().then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    assert!(imp.lines().any(|l| l == "cluster.peers_connected 0"), "{imp}");
    // The cluster carries on: a second produce through the outsider.
    let again = until("a produce after the impostor", || {
        with(&ps[outsider], &admin, &["call", "log.produce", r#"{"topic":"sec","records":[{"partition":0,"value":"still"}]}"#]).ok()
    });
    assert!(again.contains("\"offset\""), "{again}");
    let s: Value = serde_json::from_str(&with(&ps[0], &admin, &["cluster", "status", "--json"]).unwrap()).unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 3, "{s}");
    drop(impostor);

    // A fourth node joins under TLS (added, then started with --cluster-join) and catches up.
    std::fs::create_dir_all(tmp.path().join("joiner")).unwrap();
    let mut n4 = procs(&tmp.path().join("joiner"), 4..=4).pop().unwrap();
    n4.env.extend(node_cert(&certs, &cluster_ca, "n4ok", 4));
    n4.env.push(("WEFT_AUTH_ENABLED".into(), "true".into()));
    n4.env.push(("WEFT_TOKEN".into(), String::new()));
    n4.env.push(("WEFT_CLUSTER_JOIN".into(), "true".into()));
    with(&ps[1], &admin, &["cluster", "add-node", "4", &n4.cluster_addr(), "--roles", "control,data"]).unwrap();
    n4.start("");
    until("node 4 caught up over mTLS", || {
        let m: Value = serde_json::from_str(&with(&n4, &admin, &["call", "cluster.meta"]).ok()?).ok()?;
        m["topics"]["sec"].is_object().then_some(())
    });
    assert_eq!(stat(&n4, &admin, "cluster.peers_refused"), Some(0));

    // A certificate naming node 4 cannot start node 1.
    let wrong = node_cert(&certs, &cluster_ca, "n4", 4);
    let o = Command::new(common::WEFT)
        .args(["serve", "--data-dir"])
        .arg(tmp.path().join("wrong"))
        .args(["--tcp-addr", &format!("127.0.0.1:{}", common::free_port()), "--disable", "udp", "--http-addr", &format!("127.0.0.1:{}", common::free_port())])
        .args(["--node-id", "1", "--cluster-addr", &format!("127.0.0.1:{}", common::free_port()), "--cluster-peers", &format!("1=127.0.0.1:{}", common::free_port())])
        .args(["--cluster-tls-cert", &wrong[0].1, "--cluster-tls-key", &wrong[1].1, "--cluster-tls-ca", &wrong[2].1])
        .env_remove("WEFT_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("node-1"), "{err}");
}
