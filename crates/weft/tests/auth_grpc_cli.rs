//! The query CLI (`weft table`, `weft kv`, `weft query`) over gRPC with
//! `weft serve --auth` (docs/security.md, "gRPC"): `--token` and
//! `WEFT_TOKEN` travel as `authorization: Bearer` metadata. Without a token
//! a put fails UNAUTHENTICATED and says how to pass one; the admin token
//! works; a read-only token's put is PERMISSION_DENIED and its get works.

#![allow(clippy::unwrap_used)] // a failing unwrap is the test failing

use std::process::{Command, Output};

mod common;
mod support;
use support::{text, Node};

/// `weft ARGS` against `node` with `WEFT_TOKEN` set to `token` (or unset).
fn with_env_token(node: &Node, token: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(common::WEFT);
    c.args(args).args(["--addr", &node.addr(), "--grpc-addr", &node.grpc_addr()]).env_remove("WEFT_ADDR").env_remove("WEFT_CONFIG").env_remove("WEFT_TOKEN");
    if let Some(t) = token {
        c.env("WEFT_TOKEN", t);
    }
    c.output().unwrap()
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn query_cli_sends_its_token_over_grpc() {
    let node = Node::start_with(&["--auth"], &[]);
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    let a = admin.as_str();
    ok(node.weft(&["auth", "role", "add", "treader", "--grant", "read:table:t", "--token", a]));
    ok(node.weft(&["auth", "user", "add", "rita", "--role", "treader", "--token", a]));
    let v: serde_json::Value = serde_json::from_str(&ok(node.weft(&["auth", "token", "create", "rita", "--json", "--token", a]))).unwrap();
    let reader = v["secret"].as_str().unwrap().to_owned();

    // No token: UNAUTHENTICATED, with how to pass one.
    let o = with_env_token(&node, None, &["table", "create", "t"]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("unauthenticated") && err.contains("--token"), "{err}");

    // The admin token, by --token and by WEFT_TOKEN.
    ok(node.weft(&["table", "create", "t", "--token", a]));
    ok(with_env_token(&node, Some(a), &["kv", "put", "t", "k", "1"]));
    let o = with_env_token(&node, None, &["kv", "put", "t", "k", "2"]);
    assert!(text(&o.stderr).contains("unauthenticated"), "{}", text(&o.stderr));

    // A reader: its put is refused, its get and query work.
    let o = node.weft(&["kv", "put", "t", "k", "3", "--token", &reader]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("permission_denied") || err.contains("permission denied"), "{err}");
    let got = ok(with_env_token(&node, Some(&reader), &["kv", "get", "t", "k", "--json"]));
    assert!(got.contains('1'), "{got}");
    ok(with_env_token(&node, Some(&reader), &["query", "GET t 'k'"]));
    // The refused put reached the audit log under rita.
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    assert!(audit.lines().any(|l| l.contains("\"surface\":\"grpc\"") && l.contains("forbidden") && l.contains("rita")), "{audit}");
}
