//! Every leaf command of `weft`, end to end through the real binary.
//!
//! The list of commands comes from clap's tree (`weft __commands`), and
//! `every_command_has_a_case` fails when a command has no case in
//! [`CASES`]: a new command without an end-to-end test fails CI. Most
//! cases run against a `weft serve` child (with its ekosis listener for
//! `eko`) and a `weft pv serve` child; `rados` ones against the Ceph test
//! cluster, only with WEFT_PEERS=1.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

mod common;
mod support;
use support::{run, text, Node, WEFT};

struct Ctx {
    node: Node,
    eko: String,
    pv: PvServer,
    tmp: tempfile::TempDir,
}

impl Ctx {
    fn ok(&self, args: &[&str]) -> String {
        self.node.ok(args)
    }
    /// A command expected to fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.node.weft(args);
        assert!(!o.status.success(), "weft {args:?} should have failed: {}", text(&o.stdout));
        text(&o.stderr)
    }
    fn eko(&self, args: &[&str]) -> String {
        let mut a = vec!["eko", "--addr", &self.eko];
        a.extend(args);
        ok(run(&a), &a)
    }
    fn pv(&self, args: &[&str]) -> String {
        let o = self.pv.client(args).output().unwrap();
        ok(o, args)
    }
    fn file(&self, name: &str, body: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    }
}

fn ok(o: Output, args: &[&str]) -> String {
    assert!(o.status.success(), "weft {args:?} failed: {}{}", text(&o.stderr), text(&o.stdout));
    text(&o.stdout)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// `weft pv serve` on free loopback ports, and clients pointed at it.
struct PvServer {
    child: Child,
    tcp: u16,
    udp: u16,
}

impl PvServer {
    fn start() -> PvServer {
        let (tcp, udp) = (common::free_port(), common::free_port());
        let mut child = Command::new(WEFT)
            .args(["pv", "serve", "--tcp-port", &tcp.to_string(), "--udp-port", &udp.to_string(), "--bind", "127.0.0.1"])
            .envs(Self::env(udp))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // `weft pv serve` says what it serves once it listens.
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with("serving weft:demo:*"), "{first}");
        PvServer { child, tcp, udp }
    }
    fn env(udp: u16) -> Vec<(&'static str, String)> {
        vec![
            ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1".into()),
            ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO".into()),
            ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1".into()),
            ("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}")),
            ("EPICS_PVA_AUTO_ADDR_LIST", "NO".into()),
            ("EPICS_PVA_BROADCAST_PORT", udp.to_string()),
        ]
    }
    fn client(&self, args: &[&str]) -> Command {
        let mut c = Command::new(WEFT);
        c.arg("pv").args(args).envs(Self::env(self.udp));
        c
    }
}

impl Drop for PvServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn segment_file(data: &Path, topic: &str) -> PathBuf {
    let dir = data.join("log/topics").join(topic).join("0");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "log"))
        .unwrap_or_else(|| panic!("no segment in {}", dir.display()))
}

type Case = fn(&Ctx);

/// One case per leaf command, run in this order against one node.
const CASES: &[(&str, Case)] = &[
    ("serve", |c| assert!(c.ok(&["info", "--json"]).contains("\"transports\""))),
    ("ping", |c| assert!(c.ok(&["ping"]).starts_with("pong from weft"))),
    ("echo", |c| assert_eq!(c.ok(&["echo", "hello there"]), "hello there\n")),
    ("call", |c| assert_eq!(json(&c.ok(&["call", "weft.echo", "\"hi\""])), "hi")),
    ("info", |c| {
        let i = json(&c.ok(&["info", "--json"]));
        assert!(i["endpoints"].as_array().unwrap().iter().any(|e| e == "log.produce"));
        assert!(c.ok(&["info"]).lines().any(|l| l.starts_with("transports") && l.contains("tcp://")));
    }),
    ("liveness", |c| assert_eq!(c.ok(&["liveness"]).trim(), "no heartbeats received")),
    // The shared node is single (no cluster flags); tests/cluster_basic.rs runs these on a cluster.
    ("cluster status", |c| assert!(c.fails(&["cluster", "status"]).contains("not in cluster mode"))),
    ("cluster add-node", |c| assert!(c.fails(&["cluster", "add-node", "4", "127.0.0.1:1"]).contains("not in cluster mode"))),
    ("cluster remove-node", |c| assert!(c.fails(&["cluster", "remove-node", "4"]).contains("not in cluster mode"))),
    ("config show", |_c| {
        let o = run(&["config", "show", "--data-dir", "/tmp/x"]);
        assert!(text(&o.stdout).lines().any(|l| l.starts_with("data_dir") && l.contains("# flag --data-dir")));
    }),
    ("config running", |c| {
        let e = json(&c.ok(&["config", "running", "--json"]));
        let dd = e.as_array().unwrap().iter().find(|e| e["key"] == "data_dir").unwrap();
        assert_eq!(dd["source"], "flag --data-dir");
    }),
    ("topic create", |c| {
        assert!(c.ok(&["topic", "create", "e2e", "--partitions", "1"]).contains("created topic e2e with 1 partition"));
        c.ok(&["topic", "create", "gone"]);
    }),
    ("topic list", |c| assert!(json(&c.ok(&["topic", "list", "--json"])).as_array().unwrap().iter().any(|t| t == "e2e"))),
    ("topic describe", |c| assert_eq!(json(&c.ok(&["topic", "describe", "e2e", "--json"]))["config"]["partitions"], 1)),
    ("topic alter", |c| {
        c.ok(&["topic", "alter", "e2e", "--retention-ms", "3600000"]);
        assert_eq!(json(&c.ok(&["topic", "describe", "e2e", "--json"]))["config"]["retention_ms"], 3_600_000);
    }),
    ("topic delete", |c| {
        c.ok(&["topic", "delete", "gone"]);
        assert!(c.fails(&["topic", "describe", "gone"]).contains("gone"));
    }),
    ("produce", |c| {
        let f = c.file("in.txt", "k1:one\nk2:two\nk3:three\n");
        let o = c.node.weft(&["produce", "e2e", "--key-separator", ":", "--file", f.to_str().unwrap()]);
        assert!(o.status.success() && text(&o.stderr).contains("produced 3 record(s)"), "{}", text(&o.stderr));
    }),
    ("consume", |c| {
        assert_eq!(c.ok(&["consume", "e2e", "--from-beginning", "--key-separator", "="]), "k1=one\nk2=two\nk3=three\n");
        // as a group member: commits its position
        assert_eq!(c.ok(&["consume", "e2e", "--group", "g1", "--from-beginning", "--max-records", "2"]).lines().count(), 2);
    }),
    ("group list", |c| {
        let t = c.ok(&["group", "list"]);
        assert!(t.starts_with("group ") && t.lines().any(|l| l.starts_with("g1 ")), "{t}");
        assert_eq!(json(&c.ok(&["group", "list", "--json"]))[0]["group"], "g1");
    }),
    ("group describe", |c| {
        let d = json(&c.ok(&["group", "describe", "g1", "--json"]));
        assert_eq!(d["offsets"][0]["committed"], 2);
        let t = c.ok(&["group", "describe", "g1"]);
        assert!(t.lines().any(|l| l.starts_with("e2e ") && l.contains(" 2 ")), "{t}");
    }),
    ("group reset-offsets", |c| {
        c.ok(&["group", "reset-offsets", "g1", "--topic", "e2e", "--to-earliest"]);
        // from the start again: all three records
        assert_eq!(c.ok(&["consume", "e2e", "--group", "g1"]).lines().count(), 3);
    }),
    ("group delete", |c| {
        assert_eq!(c.ok(&["consume", "e2e", "--group", "gone", "--max-records", "1"]).lines().count(), 1);
        assert_eq!(json(&c.ok(&["group", "delete", "gone", "--json"]))["ok"], true);
        let o = c.node.weft(&["group", "describe", "gone"]);
        assert!(!o.status.success() && text(&o.stderr).contains("unknown"), "{}", text(&o.stderr));
        assert_eq!(c.ok(&["group", "delete", "g1"]).trim(), "deleted group g1");
    }),
    ("log verify", |c| {
        let dir = c.node.data_dir();
        assert!(run(&["log", "verify", dir.to_str().unwrap()]).status.success());
        // --json: one object per segment, the e2e topic's among them, all ok
        let out = ok(run(&["log", "verify", dir.to_str().unwrap(), "--json"]), &["log", "verify"]);
        let segs: Vec<serde_json::Value> = out.lines().map(json).collect();
        assert!(segs.iter().all(|s| s["ok"] == true), "{out}");
        assert!(segs.iter().any(|s| s["topic"] == "e2e" && s["records"].as_u64() >= Some(3)), "{out}");
    }),
    ("log dump", |c| {
        let seg = segment_file(&c.node.data_dir(), "e2e");
        let out = ok(run(&["log", "dump", seg.to_str().unwrap()]), &["log", "dump"]);
        let first = json(out.lines().next().unwrap());
        assert_eq!((first["key"].as_str(), first["value"].as_str()), (Some("k1"), Some("one")));
    }),
    ("stats", |c| assert!(c.ok(&["stats"]).lines().any(|l| l.starts_with("period.log.produce.call_count")))),
    // Auth is off on this node: the auth.* endpoints still manage the rules
    // it will apply once on (tests/auth.rs runs them with auth on).
    ("config reload", |c| {
        let r = json(&c.ok(&["config", "reload", "--json"]));
        assert_eq!((r["ok"].as_bool(), r["certificates"].as_u64()), (Some(true), Some(0)), "{r}");
        assert!(c.ok(&["config", "reload"]).starts_with("reloaded: "));
    }),
    ("auth whoami", |c| assert_eq!(json(&c.ok(&["auth", "whoami", "--json"]))["auth_enabled"], false)),
    ("auth role add", |c| assert_eq!(c.ok(&["auth", "role", "add", "ro", "--grant", "read:topic:t*"]).trim(), "role ro added")),
    ("auth role grant", |c| assert!(c.ok(&["auth", "role", "grant", "ro", "read:queue:*"]).contains("granted"))),
    ("auth role list", |c| assert_eq!(json(&c.ok(&["auth", "role", "list", "--json"]))[0]["grants"][1], "read:queue:*")),
    ("auth user add", |c| assert_eq!(c.ok(&["auth", "user", "add", "ann", "--role", "ro"]).trim(), "user ann added")),
    ("auth user assign", |c| {
        c.ok(&["auth", "role", "add", "ro2"]);
        assert_eq!(c.ok(&["auth", "user", "assign", "ann", "ro2"]).trim(), "user ann has role ro2");
        assert_eq!(json(&c.ok(&["auth", "user", "list", "--json"]))[0]["roles"][1], "ro2");
    }),
    ("auth user list", |c| assert_eq!(json(&c.ok(&["auth", "user", "list", "--json"]))[0]["name"], "ann")),
    ("auth token create", |c| assert!(c.ok(&["auth", "token", "create", "ann", "--ttl-s", "60"]).starts_with("wt."))),
    ("auth token list", |c| assert_eq!(json(&c.ok(&["auth", "token", "list", "--json"]))[0]["user"], "ann")),
    ("auth token revoke", |c| {
        let id = json(&c.ok(&["auth", "token", "list", "--json"]))[0]["id"].as_str().unwrap().to_owned();
        assert!(c.ok(&["auth", "token", "revoke", &id]).contains("revoked"));
        assert!(c.fails(&["auth", "token", "revoke", &id]).contains("not_found"));
    }),
    ("auth key create", |c| assert!(json(&c.ok(&["auth", "key", "create", "ann", "--json"]))["secret"].as_str().unwrap().starts_with("wk."))),
    ("auth key list", |c| assert_eq!(json(&c.ok(&["auth", "key", "list", "--json"]))[0]["user"], "ann")),
    ("auth key revoke", |c| {
        let id = json(&c.ok(&["auth", "key", "list", "--json"]))[0]["id"].as_str().unwrap().to_owned();
        assert!(c.ok(&["auth", "key", "revoke", &id]).contains("revoked"));
    }),
    ("auth user remove", |c| assert_eq!(c.ok(&["auth", "user", "remove", "ann"]).trim(), "user ann removed")),
    ("auth role remove", |c| assert_eq!(c.ok(&["auth", "role", "remove", "ro"]).trim(), "role ro removed")),
    ("log-level", |c| {
        assert!(c.ok(&["log-level", "debug"]).starts_with("log filter debug (was "));
        assert_eq!(json(&c.ok(&["log-level", "info", "--json"]))["previous"], "debug");
        assert!(c.fails(&["log-level", "=="]).contains("bad log filter"));
    }),
    ("errors", |c| assert_eq!(json(&c.ok(&["errors", "--json"])), serde_json::json!([]))),
    ("errors clear", |c| assert_eq!(c.ok(&["errors", "clear"]).trim(), "no error states")),
    // The node serves no queued endpoint or sender of its own: ls is empty
    // and the rest refuse an unknown name with a clear error.
    ("queue ls", |c| assert_eq!(c.ok(&["queue", "ls"]).trim(), "no queues")),
    ("queue show", |c| assert!(c.fails(&["queue", "show", "nope"]).contains("nope"))),
    ("queue pause", |c| assert!(c.fails(&["queue", "pause", "nope"]).contains("nope"))),
    ("queue resume", |c| assert!(c.fails(&["queue", "resume", "nope"]).contains("nope"))),
    ("queue errors", |c| assert!(c.fails(&["queue", "errors", "nope"]).contains("nope"))),
    ("queue inspect", |c| assert!(c.fails(&["queue", "inspect", "nope", "u1"]).contains("nope"))),
    ("queue pop", |c| assert!(c.fails(&["queue", "pop", "nope", "u1"]).contains("nope"))),
    ("queue reprocess", |c| assert!(c.fails(&["queue", "reprocess", "nope", "--all"]).contains("nope"))),
    ("queue clear", |c| assert!(c.fails(&["queue", "clear", "nope"]).contains("nope"))),
    ("queue set", |c| assert!(c.fails(&["queue", "set", "nope", "--max-uncommitted", "5"]).contains("nope"))),
    ("queue watch", |c| assert!(c.fails(&["queue", "watch", "nope"]).contains("nope"))),
    ("sender ls", |c| assert_eq!(json(&c.ok(&["sender", "ls", "--json"])), serde_json::json!([]))),
    ("sender show", |c| assert!(c.fails(&["sender", "show", "nope"]).contains("nope"))),
    ("sender pause", |c| assert!(c.fails(&["sender", "pause", "nope", "--what", "accepting"]).contains("nope"))),
    ("sender resume", |c| assert!(c.fails(&["sender", "resume", "nope"]).contains("nope"))),
    ("sender errors", |c| assert!(c.fails(&["sender", "errors", "nope", "-n", "3"]).contains("nope"))),
    ("sender inspect", |c| assert!(c.fails(&["sender", "inspect", "nope", "u1"]).contains("nope"))),
    ("sender pop", |c| assert!(c.fails(&["sender", "pop", "nope", "u1"]).contains("nope"))),
    ("sender reprocess", |c| assert!(c.fails(&["sender", "reprocess", "nope", "u1"]).contains("nope"))),
    ("sender clear", |c| assert!(c.fails(&["sender", "clear", "nope"]).contains("nope"))),
    ("sender set", |c| assert!(c.fails(&["sender", "set", "nope", "--max-uncommitted", "5"]).contains("nope"))),
    // No sender: the current states are none, and --count 0 waits for no change.
    ("sender watch", |c| assert_eq!(c.ok(&["sender", "watch", "--count", "0"]).trim(), "")),
    ("eko heartbeat", |c| assert_eq!(c.eko(&["heartbeat"]).trim(), "ACK")),
    ("eko call", |c| {
        let r = json(&c.eko(&["call", "weft.echo", "\"via ekosis\""]));
        assert_eq!((r["status"].as_i64(), r["data"].as_str()), (Some(0), Some("via ekosis")));
    }),
    ("eko stats", |c| assert_eq!(json(&c.eko(&["stats"]))["status"], 0)),
    ("eko errors", |c| assert_eq!(json(&c.eko(&["errors"]))["status"], 0)),
    ("pv serve", |c| assert!(c.pv.tcp > 0)),
    ("pv get", |c| assert!(json(&c.pv(&["get", "weft:demo:setpoint", "--json"]))["value"].is_object())),
    ("pv put", |c| {
        c.pv(&["put", "weft:demo:setpoint", "2.5"]);
        assert_eq!(json(&c.pv(&["get", "weft:demo:setpoint", "--json"]))["value"]["value"], 2.5);
    }),
    ("pv monitor", |c| assert_eq!(c.pv(&["monitor", "weft:demo:counter", "-n", "2", "--json"]).lines().count(), 2)),
    ("pv info", |c| assert!(c.pv(&["info", "weft:demo:enum"]).contains("enum_t"))),
    ("pv call", |c| assert_eq!(json(&c.pv(&["call", "weft:demo:add", "a=1", "b=2", "--json"]))["value"]["value"], 3.0)),
    ("pv list", |c| {
        let channels = c.pv(&["list", &format!("127.0.0.1:{}", c.pv.tcp)]);
        assert!(channels.lines().any(|l| l == "weft:demo:counter"), "{channels}");
        // Without a server: listens for beacons and ends at the timeout.
        c.pv(&["list", "-w", "0.5"]);
    }),
    ("tls init", |c| {
        let d = c.tmp.path().join("tls");
        ok(run(&["tls", "init", "--dir", d.to_str().unwrap()]), &["tls", "init"]);
        for f in ["ca.pem", "server.pem", "client.pem"] {
            assert!(std::fs::read_dir(&d).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(f)), "{f}");
        }
    }),
    ("top", |c| {
        assert!(c.ok(&["top", "--once"]).contains("e2e"));
        let v = json(&c.ok(&["top", "--json", "--interval-ms", "100"]));
        assert!(v["topics"].as_array().unwrap().iter().any(|t| t["name"] == "e2e"), "{v}");
    }),
    ("completions", |c| {
        let f = c.tmp.path().join("weft.bash");
        std::fs::write(&f, ok(run(&["completions", "bash"]), &["completions"])).unwrap();
        assert!(Command::new("bash").arg("-n").arg(&f).status().unwrap().success(), "bash -n on the completion");
        assert!(ok(run(&["completions", "zsh"]), &["completions"]).contains("#compdef weft"));
        assert!(ok(run(&["completions", "fish"]), &["completions"]).contains("complete -c weft"));
    }),
    ("man", |c| {
        let page = ok(run(&["man"]), &["man"]);
        assert!(page.starts_with(".ie") || page.contains(".TH weft 1"));
        for leaf in leaves() {
            let roff = format!("weft {}", leaf.replace('-', "\\-"));
            assert!(page.contains(&roff), "the man page does not mention {leaf}");
        }
        let d = c.tmp.path().join("man");
        ok(run(&["man", "--dir", d.to_str().unwrap()]), &["man"]);
        assert!(d.join("weft.1").exists() && d.join("weft-topic-create.1").exists());
    }),
    // The query API's commands talk gRPC to the node (WEFT_GRPC_ADDR, set by Node::weft).
    ("table create", |c| {
        assert_eq!(c.ok(&["table", "create", "e2e_t"]).trim(), "created table e2e_t");
        assert_eq!(json(&c.ok(&["table", "create", "e2e_gone", "--json"]))["tables"][0], "e2e_gone");
        assert!(c.fails(&["table", "create", "e2e_t"]).contains("ALREADY_EXISTS"));
    }),
    ("kv put", |c| {
        assert!(c.ok(&["kv", "put", "e2e_t", "a", r#"{"n": 1}"#]).starts_with("revision 1 "));
        assert_eq!(json(&c.ok(&["kv", "put", "e2e_t", "b", "2", "--text", "--json"]))["revision"], 2);
        assert!(c.fails(&["kv", "put", "e2e_t", "b", "x", "--if-absent"]).contains("FAILED_PRECONDITION"));
        c.ok(&["kv", "put", "e2e_t", "a", r#"{"n": 5}"#, "--if-version", "1"]);
    }),
    ("kv get", |c| {
        assert_eq!(c.ok(&["kv", "get", "e2e_t", "a"]).trim(), r#"{"n":5}"#);
        assert_eq!(c.ok(&["kv", "get", "e2e_t", "a", "--revision", "1"]).trim(), r#"{"n":1}"#);
        // --serializable (a single node reads its own state either way)
        assert_eq!(c.ok(&["kv", "get", "e2e_t", "a", "--serializable"]).trim(), r#"{"n":5}"#);
        assert_eq!(c.ok(&["kv", "range", "e2e_t", "--from", "a", "--to", "c", "--limit", "1", "--serializable"]), c.ok(&["kv", "range", "e2e_t", "--from", "a", "--to", "c", "--limit", "1"]));
        assert_eq!(c.ok(&["kv", "history", "e2e_t", "a", "--limit", "1", "--serializable"]).lines().count(), 1);
        let g = json(&c.ok(&["kv", "get", "e2e_t", "b", "--json"]));
        assert_eq!((g["kvs"][0]["value"].as_str(), g["kvs"][0]["version"].as_u64()), (Some("2"), Some(1)));
        assert_eq!(c.ok(&["kv", "get", "e2e_t", "nope"]).trim(), "(not found)");
    }),
    ("kv range", |c| {
        let r = c.ok(&["kv", "range", "e2e_t", "--from", "a", "--to", "c", "--limit", "1"]);
        assert!(r.starts_with("a\t") && r.trim_end().ends_with("(more)"), "{r}");
        let r = json(&c.ok(&["kv", "range", "e2e_t", "--prefix", "b", "--json"]));
        assert_eq!(r["kvs"].as_array().map(Vec::len), Some(1));
    }),
    ("kv history", |c| {
        let h = json(&c.ok(&["kv", "history", "e2e_t", "a", "--json"]));
        let revs: Vec<u64> = h["kvs"].as_array().unwrap().iter().map(|k| k["mod_revision"].as_u64().unwrap()).collect();
        assert_eq!(revs, vec![3, 1]);
        assert_eq!(c.ok(&["kv", "history", "e2e_t", "a", "--limit", "1"]).lines().count(), 1);
    }),
    ("kv watch", |c| {
        // From revision 1: the history replays, bounded by --count.
        let w = c.ok(&["kv", "watch", "e2e_t", "a", "--start-revision", "1", "--count", "2", "--json"]);
        let revs: Vec<u64> = w.lines().map(|l| json(l)["revision"].as_u64().unwrap()).collect();
        assert_eq!(revs, vec![1, 3]);
        let w = c.ok(&["kv", "watch", "e2e_t", "--prefix", "b", "--start-revision", "1", "--count", "1"]);
        assert!(w.starts_with("PUT b 2 (revision 2)"), "{w}");
        // Nothing new: --timeout ends the watch, successfully.
        assert_eq!(c.ok(&["kv", "watch", "e2e_t", "zz", "--timeout", "200"]), "");
    }),
    ("kv del", |c| {
        assert!(c.ok(&["kv", "del", "e2e_t", "b"]).contains("(1 key(s))"));
        assert!(c.fails(&["kv", "del", "e2e_t", "b", "--if-exists"]).contains("FAILED_PRECONDITION"));
        assert_eq!(json(&c.ok(&["kv", "del", "e2e_t", "b", "--json"]))["count"], 0);
    }),
    ("query", |c| {
        let r = json(&c.ok(&["query", "FILTER e2e_t WHERE n > 1", "--json"]));
        assert_eq!(r["kvs"][0]["key"], "a");
        let b = c.ok(&["query", "BATCH { IF VERSION(e2e_t, 'a') = 9 THEN { DELETE e2e_t 'a' } ELSE { GET e2e_t 'a' } }"]);
        assert!(b.starts_with("compare failed: ELSE ran"), "{b}");
        let e = c.fails(&["query", "GET e2e_t"]);
        assert!(e.contains("INVALID_ARGUMENT") && e.contains("1:10"), "{e}");
        // The same executor on the native protocol and HTTP.
        let n = json(&c.ok(&["call", "query.execute", r#"{"aql": "GET e2e_t 'a'"}"#]));
        assert_eq!(n["kvs"][0]["value"], r#"{"n":5}"#);
        let body = r#"{"aql": "GET e2e_t"}"#;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", c.node.http_port)).unwrap();
        use std::io::{Read, Write};
        write!(s, "POST /v1/query HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 400") && out.contains("INVALID_ARGUMENT") && out.contains("\"column\":\"10\""), "{out}");
    }),
    ("table list", |c| {
        assert_eq!(c.ok(&["table", "list"]).lines().collect::<Vec<_>>(), vec!["e2e_gone", "e2e_t"]);
        assert_eq!(json(&c.ok(&["table", "list", "--json"]))["count"], 2);
    }),
    ("table drop", |c| {
        assert_eq!(c.ok(&["table", "drop", "e2e_gone"]).trim(), "dropped table e2e_gone");
        assert!(c.fails(&["table", "drop", "e2e_gone"]).contains("NOT_FOUND"));
    }),
];

/// The Ceph cases, with WEFT_PEERS=1 only: (command, args after `rados`).
const RADOS_CASES: &[&str] = &[
    "rados lspools",
    "rados mkpool",
    "rados rmpool",
    "rados put",
    "rados get",
    "rados stat",
    "rados rm",
    "rados ls",
    "rados setxattr",
    "rados getxattr",
    "rados listxattr",
    "rados setomapval",
    "rados listomapvals",
    "rados bench",
    "rados cleanup",
    "rados df",
    "rados status",
    "rados mksnap",
    "rados lssnap",
    "rados rollback",
    "rados rmsnap",
];

fn leaves() -> Vec<String> {
    text(&run(&["__commands"]).stdout).lines().map(str::to_owned).collect()
}

#[test]
fn every_command_has_a_case() {
    let have: BTreeSet<&str> = CASES.iter().map(|(n, _)| *n).chain(RADOS_CASES.iter().copied()).collect();
    let leaves = leaves();
    assert!(leaves.len() > 40, "weft __commands: {leaves:?}");
    let missing: Vec<&String> = leaves.iter().filter(|l| !have.contains(l.as_str())).collect();
    assert!(missing.is_empty(), "commands without an end-to-end case in tests/commands.rs: {missing:?}");
    // Not an error: a build without a feature (`rados`) has fewer commands.
    let absent: Vec<&&str> = have.iter().filter(|h| !leaves.iter().any(|l| l == *h)).collect();
    if !absent.is_empty() {
        eprintln!("cases for commands this build does not have (skipped): {absent:?}");
    }
}

#[test]
fn every_command_works_end_to_end() {
    let eko_port = common::free_port();
    let eko_addr = format!("127.0.0.1:{eko_port}");
    let node = Node::start_with(&[], &[("WEFT_EKOSIS_TCP", &eko_addr)]);
    let ctx = Ctx { node, eko: format!("tcp://{eko_addr}"), pv: PvServer::start(), tmp: tempfile::tempdir().unwrap() };
    for (name, case) in CASES {
        let started = Instant::now();
        case(&ctx);
        eprintln!("ok {name} ({} ms)", started.elapsed().as_millis());
    }
}

struct Ceph {
    conf: String,
    pool: String,
}

fn ceph() -> Option<Ceph> {
    if std::env::var("WEFT_PEERS").ok().as_deref() != Some("1") {
        eprintln!("skipped: set WEFT_PEERS=1 to run the rados commands against the Ceph test cluster");
        return None;
    }
    let shared = std::env::var("WEFT_SHARED").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let script = shared.join("scripts/ceph/ceph-up.sh");
    let out = Command::new("bash").arg(&script).output().unwrap_or_else(|e| panic!("running {script:?}: {e}"));
    assert!(out.status.success(), "ceph-up.sh failed: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let get = |k: &str| stdout.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(str::to_owned);
    Some(Ceph { conf: get("CEPH_CONF").expect("CEPH_CONF"), pool: get("CEPH_POOL").unwrap_or_else(|| "test".into()) })
}

#[test]
fn rados_commands_against_ceph() {
    let Some(c) = ceph() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rados = |args: &[&str]| -> String {
        let mut a = vec!["rados", "-c", &c.conf, "-p", &c.pool];
        a.extend(args);
        ok(run(&a), &a)
    };
    let obj = format!("weft-e2e-{}", std::process::id());
    let input = tmp.path().join("in");
    std::fs::write(&input, b"object body").unwrap();
    let output = tmp.path().join("out");
    assert!(rados(&["lspools"]).lines().any(|l| l == c.pool));
    assert!(json(&rados(&["lspools", "--json"])).as_array().unwrap().iter().any(|p| p["name"] == c.pool.as_str()));
    let pool2 = format!("weft-e2e-pool-{}", std::process::id());
    assert!(rados(&["mkpool", &pool2, "8"]).contains("successfully created pool"));
    assert!(rados(&["lspools"]).lines().any(|l| l == pool2));
    assert!(rados(&["rmpool", &pool2]).contains("successfully deleted pool"));
    rados(&["put", &obj, input.to_str().unwrap()]);
    rados(&["get", &obj, output.to_str().unwrap()]);
    assert_eq!(std::fs::read(&output).unwrap(), b"object body");
    assert!(rados(&["stat", &obj]).contains("size 11"));
    assert_eq!(json(&rados(&["stat", &obj, "--json"]))["size"], 11);
    assert!(rados(&["ls"]).lines().any(|l| l == obj));
    rados(&["setxattr", &obj, "color", "blue"]);
    assert_eq!(rados(&["getxattr", &obj, "color"]), "blue");
    assert!(rados(&["listxattr", &obj]).lines().any(|l| l == "color"));
    // The positional KEY, not the --key secret (it used to fail with a base64 error).
    rados(&["setomapval", &obj, "k1", "v1"]);
    let vals = rados(&["listomapvals", &obj]);
    assert!(vals.lines().next() == Some("k1") && vals.contains("v1"), "{vals}");
    assert_eq!(json(&rados(&["listomapvals", &obj, "--json"])), serde_json::json!({"k1": "v1"}));
    rados(&["rm", &obj]);
    assert!(!rados(&["ls"]).lines().any(|l| l == obj));
    let bench = rados(&["bench", "1", "write", "-b", "4096", "-t", "2", "--no-cleanup"]);
    assert!(!bench.is_empty());
    assert!(rados(&["ls"]).lines().any(|l| l.starts_with("weft_bench_")));
    rados(&["cleanup"]);
    assert!(!rados(&["ls"]).lines().any(|l| l.starts_with("weft_bench_")));
    // Pool snapshots: v1, snapshot, v2; reading at the snapshot gives v1, rollback restores it.
    let snap = format!("e2e-snap-{}", std::process::id());
    std::fs::write(&input, b"v1").unwrap();
    rados(&["put", &obj, input.to_str().unwrap()]);
    rados(&["mksnap", &snap]);
    assert!(rados(&["lssnap"]).contains(&snap));
    std::fs::write(&input, b"v2").unwrap();
    rados(&["put", &obj, input.to_str().unwrap()]);
    rados(&["-s", &snap, "get", &obj, output.to_str().unwrap()]);
    assert_eq!(std::fs::read(&output).unwrap(), b"v1");
    rados(&["rollback", &obj, &snap]);
    rados(&["get", &obj, output.to_str().unwrap()]);
    assert_eq!(std::fs::read(&output).unwrap(), b"v1");
    rados(&["rmsnap", &snap]);
    assert!(!rados(&["lssnap"]).contains(&snap));
    rados(&["rm", &obj]);
    // df and status answer from the monitors (the test cluster runs no mgr: zero
    // pool statistics, no PG states, and status says so instead of waiting).
    assert!(json(&rados(&["df", "--json"])).is_object());
    assert!(rados(&["status"]).contains("mon:"));
}
