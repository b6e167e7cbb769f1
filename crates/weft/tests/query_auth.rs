//! Per-table and per-topic checks on the native `query.*` routes and
//! `POST /v1/query` with `weft serve --auth` (docs/security.md): the
//! caller's identity runs through the gRPC service's check, refusals are
//! `forbidden` (HTTP 403), audited and counted per surface; a BATCH is
//! refused whole and writes nothing; FROM TOPIC needs read on the topic.

use std::process::Command;

use serde_json::{Value, json};

mod common;
mod support;
use support::{Node, text};

/// `weft ARGS --token TOKEN` against the node: stdout, else Err(stderr).
fn as_(node: &Node, token: &str, args: &[&str]) -> Result<String, String> {
    let mut a = args.to_vec();
    a.extend(["--token", token]);
    let o = node.weft(&a);
    if o.status.success() { Ok(text(&o.stdout)) } else { Err(text(&o.stderr)) }
}

/// `query.execute` over the native protocol: the JSON answer, or the error text.
fn native(node: &Node, token: &str, aql: &str) -> Result<Value, String> {
    as_(node, token, &["call", "query.execute", &json!({ "aql": aql }).to_string()]).map(|s| serde_json::from_str(&s).unwrap())
}

/// `POST /v1/query` with curl and a Bearer token: the status and the JSON body.
fn http(node: &Node, token: &str, aql: &str) -> (u16, Value) {
    let o = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: application/json"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--data-binary", &json!({ "aql": aql }).to_string()])
        .arg(format!("http://127.0.0.1:{}/v1/query", node.http_port))
        .output()
        .unwrap();
    assert!(o.status.success(), "curl: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let (body, status) = out.trim_end().rsplit_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

fn token(node: &Node, admin: &str, user: &str) -> String {
    let v: Value = serde_json::from_str(&as_(node, admin, &["auth", "token", "create", user, "--json"]).unwrap()).unwrap();
    v["secret"].as_str().unwrap().to_owned()
}

/// The value of `key` in table `t`, read by the admin (None: absent).
fn value(node: &Node, admin: &str, t: &str, key: &str) -> Option<String> {
    let r = native(node, admin, &format!("GET {t} '{key}'")).unwrap();
    r["kvs"].as_array().unwrap().first().map(|kv| kv["value"].to_string())
}

#[test]
fn per_table_and_topic_checks_native_and_http() {
    let node = Node::start_with(&["--auth"], &[]);
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    let a = admin.as_str();
    for aql in ["CREATE TABLE a", "CREATE TABLE b", "SET a 'k' = 'v1'", "SET b 'k' = 'secret'"] {
        native(&node, a, aql).unwrap();
    }
    as_(&node, a, &["topic", "create", "orders", "--partitions", "1"]).unwrap();
    let file = node.dir.path().join("orders.txt");
    std::fs::write(&file, "{\"total\": 50}\n{\"total\": 150}\n{\"total\": 250}\n").unwrap();
    as_(&node, a, &["produce", "orders", "--file", file.to_str().unwrap(), "--partition", "0"]).unwrap();
    as_(&node, a, &["auth", "role", "add", "areader", "--grant", "read:table:a"]).unwrap();
    as_(&node, a, &["auth", "role", "add", "awriter", "--grant", "write:table:a"]).unwrap();
    as_(&node, a, &["auth", "role", "add", "oreader", "--grant", "read:topic:orders"]).unwrap();
    as_(&node, a, &["auth", "user", "add", "rita", "--role", "areader"]).unwrap();
    as_(&node, a, &["auth", "user", "add", "walt", "--role", "awriter"]).unwrap();
    as_(&node, a, &["auth", "user", "add", "olga", "--role", "oreader"]).unwrap();
    let (rita, walt, olga) = (token(&node, a, "rita"), token(&node, a, "walt"), token(&node, a, "olga"));

    // ---- native: weft call query.execute --token ----
    let r = native(&node, &rita, "GET a 'k'").unwrap();
    assert_eq!(r["kvs"][0]["value"], "v1", "{r}");
    let r = native(&node, &rita, "RANGE a PREFIX ''").unwrap();
    assert_eq!(r["count"], 1, "{r}");
    let e = native(&node, &rita, "SET a 'k' = 'rita'").unwrap_err();
    assert!(e.contains("forbidden") && e.contains("rita may not write table:a"), "{e}");
    let e = native(&node, &rita, "GET b 'k'").unwrap_err();
    assert!(e.contains("forbidden") && e.contains("table:b"), "{e}");
    native(&node, &walt, "SET a 'k2' = 'walt'").unwrap();
    assert_eq!(value(&node, a, "a", "k2").as_deref(), Some("\"walt\""));
    // A BATCH naming a table the caller may not use is refused whole.
    let e = native(&node, &walt, "BATCH { SET a 'k3' = 'x'; SET b 'k3' = 'y' }").unwrap_err();
    assert!(e.contains("forbidden") && e.contains("table:b"), "{e}");
    let e = native(&node, &rita, "BATCH { GET a 'k'; SET a 'k4' = 'z' }").unwrap_err();
    assert!(e.contains("forbidden") && e.contains("write table:a"), "{e}");
    assert_eq!((value(&node, a, "a", "k3"), value(&node, a, "b", "k3"), value(&node, a, "a", "k4")), (None, None, None));
    // FROM TOPIC needs read on the topic.
    let from = "FROM TOPIC orders PARTITION 0 OFFSET 0 LIMIT 10 WHERE total > 100";
    let e = native(&node, &rita, from).unwrap_err();
    assert!(e.contains("forbidden") && e.contains("topic:orders"), "{e}");
    let r = native(&node, &olga, from).unwrap();
    assert_eq!(r["count"], 2, "{r}");
    let e = native(&node, &olga, "GET a 'k'").unwrap_err();
    assert!(e.contains("forbidden"), "{e}");
    // CREATE and DROP TABLE, and COMPACT, need admin.
    for aql in ["CREATE TABLE c", "DROP TABLE a", "COMPACT a"] {
        let e = native(&node, &walt, aql).unwrap_err();
        assert!(e.contains("forbidden") && e.contains("admin"), "{aql}: {e}");
    }
    // query.batch is checked the same way.
    let e = as_(&node, &rita, &["call", "query.batch", &json!({ "aql": "BATCH { SET a 'k5' = 1 }" }).to_string()]).unwrap_err();
    assert!(e.contains("forbidden"), "{e}");
    assert_eq!(value(&node, a, "a", "k5"), None);

    // ---- HTTP: POST /v1/query with Authorization: Bearer ----
    let (s, r) = http(&node, &rita, "GET a 'k'");
    assert_eq!((s, r["kvs"][0]["value"].as_str()), (200, Some("v1")), "{r}");
    assert_eq!(http(&node, &rita, "RANGE a FROM 'a' TO 'z'").0, 200);
    let (s, r) = http(&node, &rita, "SET a 'k' = 'rita'");
    assert_eq!((s, r["code"].as_str()), (403, Some("forbidden")), "{r}");
    let (s, r) = http(&node, &rita, "GET b 'k'");
    assert_eq!((s, r["code"].as_str()), (403, Some("forbidden")), "{r}");
    assert_eq!(http(&node, &walt, "SET a 'k6' = 'walt'").0, 200);
    assert_eq!(value(&node, a, "a", "k6").as_deref(), Some("\"walt\""));
    let (s, r) = http(&node, &walt, "BATCH { SET a 'k7' = 'x'; SET b 'k7' = 'y' }");
    assert_eq!((s, r["code"].as_str()), (403, Some("forbidden")), "{r}");
    assert_eq!((value(&node, a, "a", "k7"), value(&node, a, "b", "k7")), (None, None));
    assert_eq!(http(&node, &rita, from).0, 403);
    let (s, r) = http(&node, &olga, from);
    assert_eq!((s, r["count"].as_u64()), (200, Some(2)), "{r}");
    assert_eq!(http(&node, &walt, "DROP TABLE a").0, 403);
    assert_eq!(value(&node, a, "a", "k").as_deref(), Some("\"v1\""), "nothing rita tried was written");

    // The admin compacts a (single node): reads below answer compacted.
    let c = native(&node, a, "COMPACT a REVISION 3").unwrap();
    assert_eq!((c["kind"].as_str(), c["revision"].as_u64()), (Some("compact"), Some(3)), "{c}");
    let e = native(&node, &rita, "GET a 'k' AT REVISION 1").unwrap_err();
    assert!(e.contains("out_of_range") && e.contains("compacted"), "{e}");

    // ---- gRPC through the CLI (weft query --token) agrees ----
    assert!(as_(&node, &rita, &["query", "GET a 'k'"]).unwrap().contains("v1"));
    let e = as_(&node, &rita, &["query", "GET b 'k'"]).unwrap_err();
    assert!(e.to_ascii_lowercase().contains("permission"), "{e}");

    // Audited and counted per surface.
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    let lines: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (surface, resource) in [("native", "table:b"), ("native", "topic:orders"), ("http", "table:a"), ("http", "table:b")] {
        assert!(
            lines.iter().any(|l| l["surface"] == surface && l["outcome"] == "forbidden" && l["resource"] == resource),
            "no {surface} refusal on {resource} in {audit}"
        );
    }
    let o = Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{}/metrics", node.http_port)]).output().unwrap();
    let metrics = text(&o.stdout);
    for surface in ["native", "http"] {
        assert!(metrics.contains(&format!(r#"weft_auth_events_total{{surface="{surface}",outcome="forbidden"}}"#)), "{surface}: {metrics}");
    }
}
