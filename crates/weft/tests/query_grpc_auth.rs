//! The gRPC query API with `weft serve --auth` (docs/security.md, "gRPC"),
//! from Python grpcio with `authorization` metadata
//! (tests/py/query_grpc_auth.py): no credentials, a wrong token, an expired
//! token and a revoked API key answer UNAUTHENTICATED; a reader's SET (also
//! inside BATCH and Session) and reads of another table answer
//! PERMISSION_DENIED, its GET works; a writer's SET works; health answers
//! without credentials. Refusals reach the audit log.
//! Needs WEFT_PEERS=1 and scripts/peers/grpc.sh (grpcio in the venv).

#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

mod common;
mod support;
use support::{python, text, Node};


/// `weft ARGS --token TOKEN`: stdout, or Err(stderr).
fn as_(node: &Node, token: &str, args: &[&str]) -> Result<String, String> {
    let mut a = args.to_vec();
    a.extend(["--token", token]);
    let o = node.weft(&a);
    if o.status.success() { Ok(text(&o.stdout)) } else { Err(text(&o.stderr)) }
}

#[test]
fn grpcio_with_auth() {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        eprintln!("skipped: set WEFT_PEERS=1 (scripts/peers/grpc.sh installs grpcio)");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let node = Node::start_with(&["--auth"], &[]);
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    let a = admin.as_str();
    as_(&node, a, &["auth", "role", "add", "treader", "--grant", "read:table:t"]).unwrap();
    as_(&node, a, &["auth", "role", "add", "twriter", "--grant", "write:table:t"]).unwrap();
    as_(&node, a, &["auth", "user", "add", "rita", "--role", "treader"]).unwrap();
    as_(&node, a, &["auth", "user", "add", "walt", "--role", "twriter"]).unwrap();
    let create = |args: &[&str]| -> (String, String) {
        let v: serde_json::Value = serde_json::from_str(&as_(&node, a, args).unwrap()).unwrap();
        (v["secret"].as_str().unwrap().to_owned(), v["id"].as_str().unwrap().to_owned())
    };
    let (writer, _) = create(&["auth", "token", "create", "walt", "--json"]);
    let (reader, _) = create(&["auth", "token", "create", "rita", "--json"]);
    let (key, _) = create(&["auth", "key", "create", "walt", "--json"]);
    let (revoked_key, revoked_id) = create(&["auth", "key", "create", "walt", "--json"]);
    as_(&node, a, &["auth", "key", "revoke", &revoked_id]).unwrap();
    let (expired, _) = create(&["auth", "token", "create", "walt", "--ttl-s", "1", "--json"]);
    let mut wrong = writer.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'A' { 'Q' } else { 'A' });
    // Wait (bounded) until the short token has expired.
    let deadline = Instant::now() + Duration::from_secs(30);
    while as_(&node, &expired, &["ping"]).is_ok() {
        assert!(Instant::now() < deadline, "the 1 s token never expired");
        std::thread::sleep(Duration::from_millis(200));
    }

    let (_stubs, out) = support::query_stubs();

    let run = Command::new(python())
        .arg(root.join("crates/weft/tests/py/query_grpc_auth.py"))
        .env("GRPC_ADDR", node.grpc_addr())
        .env("STUBS", &out)
        .env("ADMIN", &admin)
        .env("WRITER", &writer)
        .env("READER", &reader)
        .env("KEY", &key)
        .env("REVOKED_KEY", &revoked_key)
        .env("EXPIRED", &expired)
        .env("WRONG", &wrong)
        .output()
        .unwrap();
    let stdout = text(&run.stdout);
    eprintln!("{stdout}");
    assert!(run.status.success(), "query_grpc_auth.py failed:\n{stdout}\n{}", text(&run.stderr));
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");

    // The refusals are in the audit log under surface "grpc".
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    let lines: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for outcome in ["unauthenticated", "forbidden"] {
        assert!(lines.iter().any(|l| l["surface"] == "grpc" && l["outcome"] == outcome), "no grpc/{outcome} in {audit}");
    }
    assert!(lines.iter().any(|l| l["surface"] == "grpc" && l["resource"] == "table:other"), "{audit}");
}
