//! Auth rules replicated through the metadata group (docs/security.md,
//! "Cluster"): three `weft serve --auth` processes; exactly one bootstraps
//! the rules and writes `admin.token`, which then works on every node; a
//! token made on node 1 authenticates on node 3; revoked on node 2, node 1
//! refuses it (as soon as node 1 has applied the revocation: polled, with
//! a bound against hangs); the change's audit line names the actor.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "support/cluster.rs"]
mod cluster;
use cluster::{procs, until, Proc};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `weft ARGS --token TOKEN` against `p`: stdout, or stderr on failure.
fn with(p: &Proc, token: &str, args: &[&str]) -> Result<String, String> {
    let mut a = args.to_vec();
    a.extend(["--token", token]);
    let o = p.weft(&a);
    if o.status.success() { Ok(text(&o.stdout)) } else { Err(text(&o.stderr)) }
}

#[test]
fn auth_rules_are_replicated_across_the_cluster() {
    let tmp = tempfile::tempdir().unwrap();
    let mut ps = procs(tmp.path(), 1..=3);
    let peers = ps.iter().map(|p| format!("{}={}", p.id, p.cluster_addr())).collect::<Vec<_>>().join(",");
    for p in ps.iter_mut() {
        p.env.push(("WEFT_AUTH_ENABLED".into(), "true".into()));
        p.start(&peers);
    }

    // One node bootstraps the rules: its admin token works everywhere.
    let admin = until("an admin token on some node", || ps.iter().find_map(|p| std::fs::read_to_string(p.dir.join("admin.token")).ok())).trim().to_owned();
    for p in &ps {
        until(&format!("node {} accepts the admin token", p.id), || with(p, &admin, &["auth", "whoami", "--json"]).ok());
    }
    let holders = ps.iter().filter(|p| p.dir.join("admin.token").exists()).count();
    assert_eq!(holders, 1, "exactly one node bootstraps the cluster's rules");
    // The nodes that lost the bootstrap race drop their pending token once
    // they see the winner's rules (after a retry pause), so wait for it.
    until("every pending admin token settled", || ps.iter().all(|p| !p.dir.join("admin.token.pending").exists()).then_some(()));

    // Made on node 1 ...
    with(&ps[0], &admin, &["auth", "role", "add", "info", "--grant", "read:endpoint:weft.info"]).unwrap();
    with(&ps[0], &admin, &["auth", "user", "add", "carl", "--role", "info"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&with(&ps[0], &admin, &["auth", "token", "create", "carl", "--json"]).unwrap()).unwrap();
    let (token, id) = (v["secret"].as_str().unwrap().to_owned(), v["id"].as_str().unwrap().to_owned());
    with(&ps[0], &token, &["info"]).unwrap();
    // ... used on node 3 (once node 3 has applied it).
    until("node 3 accepts carl's token", || with(&ps[2], &token, &["info"]).ok());
    // The roles came along: carl may not administer.
    let e = with(&ps[2], &token, &["auth", "user", "list"]).unwrap_err();
    assert!(e.contains("forbidden"), "{e}");

    // Revoked on node 2 ...
    with(&ps[1], &admin, &["auth", "token", "revoke", &id]).unwrap();
    assert!(with(&ps[1], &token, &["info"]).unwrap_err().contains("unauthenticated"), "refused where it was revoked");
    // ... refused on node 1 once applied there.
    let e = until("node 1 refuses the revoked token", || with(&ps[0], &token, &["info"]).err());
    assert!(e.contains("unauthenticated"), "{e}");
    let listed = with(&ps[2], &admin, &["auth", "token", "list", "--json"]).unwrap();
    assert!(!listed.contains(&id), "{listed}");

    // The node that took the change audited it, with the actor.
    let audit = std::fs::read_to_string(ps[1].dir.join("audit.log")).unwrap();
    let line: serde_json::Value = audit.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|l| l["action"] == "token.revoke").unwrap_or_else(|| panic!("{audit}"));
    assert_eq!(line["resource"], id.as_str());
    assert!(line["actor"].as_str().unwrap().starts_with("admin (token "), "{line}");
    // Every node keeps the rules as a cache for its next start.
    until("state caches without the token", || {
        ps.iter().all(|p| std::fs::read_to_string(p.dir.join("auth/state.json")).is_ok_and(|s| s.contains("carl") && !s.contains(&id))).then_some(())
    });
}
