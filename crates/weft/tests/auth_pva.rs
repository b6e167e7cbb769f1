//! pvAccess on the node's roles (docs/security.md, "pvAccess"), driven by
//! the real peer p4p (pvxs): `weft serve --auth` with the demo PVs and
//! `auth.pva_trust_ca_user`. p4p authenticates with method `ca` and the
//! account name of this process; the matrix: that name is no Weft user
//! (anonymous, no anonymous role: get and put refused), a user without a
//! pv role (refused), with a read role (get ok, put refused), with a write
//! role (put ok). The refusals reach p4p as RemoteError with a clear text,
//! are counted and written to the audit log (surface `pva`). A p4p
//! monitor whose read role is revoked gets no further update: the next one
//! is replaced by an error status that ends it (RemoteError, then Finished).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

mod common;
mod support;
use support::{free_port, python, text, Node};

const PV: &str = "weft:demo:setpoint";

fn peers_enabled(test: &str) -> bool {
    if std::env::var("WEFT_PEERS").as_deref() == Ok("1") {
        return true;
    }
    println!("skipped {test}: set WEFT_PEERS=1 (and run scripts/peers/pva.sh) to run it against p4p");
    false
}

fn account() -> String {
    let o = std::process::Command::new("id").arg("-un").output().unwrap();
    text(&o.stdout).trim().to_owned()
}

/// One p4p get and one put of `value` (a fresh client each time): what
/// each answered, `ok <value>` or `<ExceptionType>: <message>`.
fn p4p_get_put(udp: u16, value: f64) -> (String, String) {
    let code = format!(
        r#"
import json
from p4p.client.thread import Context
ctx = Context("pva")
out = {{}}
try:
    out["get"] = "ok %s" % float(ctx.get("{PV}", timeout=5))
except Exception as e:
    out["get"] = type(e).__name__ + ": " + str(e)
try:
    ctx.put("{PV}", {value}, timeout=5)
    out["put"] = "ok"
except Exception as e:
    out["put"] = type(e).__name__ + ": " + str(e)
ctx.close()
print(json.dumps(out))
"#
    );
    let mut c = std::process::Command::new(python());
    c.arg("-c").arg(&code).env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}")).env("EPICS_PVA_AUTO_ADDR_LIST", "NO").env_remove("EPICS_PVA_NAME_SERVERS");
    let o = c.output().expect("WEFT_PEERS=1 but the venv's python does not run (scripts/peers/pva.sh)");
    assert!(o.status.success(), "p4p script failed: {}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&o.stdout).lines().last().unwrap_or_default()).unwrap();
    (v["get"].as_str().unwrap().to_owned(), v["put"].as_str().unwrap().to_owned())
}

#[test]
fn pva_gets_and_puts_follow_the_roles() {
    if !peers_enabled("pva_gets_and_puts_follow_the_roles") {
        return;
    }
    let (pva_tcp, pva_udp) = (free_port(), free_port());
    let (tcp_s, udp_s) = (pva_tcp.to_string(), pva_udp.to_string());
    let node = Node::start_with(
        &["--auth"],
        &[
            ("WEFT_PVA_ENABLED", "true"),
            ("WEFT_PVA_DEMO", "true"),
            ("WEFT_AUTH_PVA_TRUST_CA_USER", "true"),
            ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1"),
            ("EPICS_PVAS_SERVER_PORT", &tcp_s),
            ("EPICS_PVAS_BROADCAST_PORT", &udp_s),
            ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO"),
            ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1"),
        ],
    );
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    let admin_ok = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--token", &admin]);
        node.ok(&a)
    };
    let me = account();

    // The PV server is up when p4p finds the PV (refused or not).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (get, put) = loop {
        let (g, p) = p4p_get_put(pva_udp, 1.5);
        if !g.starts_with("TimeoutError") {
            break (g, p);
        }
        assert!(Instant::now() < deadline, "p4p never found {PV}: {g}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // 1. No Weft user of that name and no anonymous role: both refused.
    let want_get = format!("RemoteError: access denied: read access to {PV} for user {me}");
    assert!(get.starts_with(&want_get), "{get}");
    assert!(get.contains("no Weft user of that name") && get.contains("auth.pva_anonymous_role"), "says why: {get}");
    assert!(put.starts_with(&format!("RemoteError: access denied: write access to {PV}")), "{put}");

    // 2. A user without a pv role: refused, as forbidden.
    admin_ok(&["auth", "user", "add", &me]);
    let (get, put) = p4p_get_put(pva_udp, 1.5);
    assert!(get.starts_with(&want_get) && get.contains(&format!("{me} may not read pv:{PV}")), "{get}");
    assert!(put.contains(&format!("{me} may not write pv:{PV}")), "{put}");

    // 3. A read role: get works, put is refused and changes nothing.
    admin_ok(&["auth", "role", "add", "pvread", "--grant", "read:pv:weft:demo:*"]);
    admin_ok(&["auth", "user", "assign", &me, "pvread"]);
    let (get, put) = p4p_get_put(pva_udp, 2.5);
    assert!(get.starts_with("ok "), "{get}");
    let before = get.clone();
    assert!(put.starts_with("RemoteError: access denied: write access") && put.contains("may not write"), "{put}");

    // 4. A write role: the put lands.
    admin_ok(&["auth", "role", "add", "pvwrite", "--grant", "write:pv:weft:demo:*"]);
    admin_ok(&["auth", "user", "assign", &me, "pvwrite"]);
    let (get, put) = p4p_get_put(pva_udp, 3.5);
    assert_eq!(get, before, "the refused put of step 3 changed nothing");
    assert_eq!(put, "ok");
    let (get, _) = p4p_get_put(pva_udp, 3.5);
    assert_eq!(get, "ok 3.5");

    // Counted, and in the audit log with the surface, the identity and the PV.
    let stats = admin_ok(&["stats"]);
    let stat = |k: &str| -> u64 {
        stats.lines().find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(' ')).map(|v| v.trim().parse().unwrap())).unwrap_or_else(|| panic!("no {k} in {stats}"))
    };
    assert!(stat("pva.access_denied") >= 5, "{stats}");
    assert!(stat("auth.denied.forbidden") >= 3, "{stats}");
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    let pva: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &serde_json::Value| v["surface"] == "pva").collect();
    assert!(pva.iter().any(|v| v["outcome"] == "unauthenticated" && v["resource"] == format!("pv:{PV}") && v["action"] == "read"), "{audit}");
    assert!(pva.iter().any(|v| v["outcome"] == "forbidden" && v["identity"] == format!("{me} (pva ca)") && v["action"] == "write"), "{audit}");
    assert!(pva.iter().all(|v| v["peer"].as_str().unwrap().starts_with("127.0.0.1:")), "{audit}");
}

/// A p4p monitor of `PV` in a child process: one JSON line per event on
/// stdout (`{"kind": "value", "v": ...}` or the exception's type and
/// text); it runs until its stdin closes. Lines arrive on the channel.
struct P4pMonitor {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl P4pMonitor {
    fn start(udp: u16) -> Self {
        let code = format!(
            r#"
import json, sys
from p4p.client.thread import Context
ctx = Context("pva")
def cb(v):
    if isinstance(v, Exception):
        print(json.dumps({{"kind": type(v).__name__, "msg": str(v)}}), flush=True)
    else:
        print(json.dumps({{"kind": "value", "v": float(v)}}), flush=True)
sub = ctx.monitor("{PV}", cb, notify_disconnect=True)
sys.stdin.read()
sub.close()
ctx.close()
"#
        );
        let mut child = std::process::Command::new(python())
            .arg("-c")
            .arg(&code)
            .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}"))
            .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
            .env_remove("EPICS_PVA_NAME_SERVERS")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("WEFT_PEERS=1 but the venv's python does not run (scripts/peers/pva.sh)");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&l) {
                    let _ = tx.send(v);
                }
            }
        });
        Self { child, lines }
    }

    /// The next event other than a (re)connection notice, within 30 s.
    fn next(&self) -> serde_json::Value {
        loop {
            let v = self.lines.recv_timeout(Duration::from_secs(30)).expect("no event from the p4p monitor");
            if v["kind"] != "Disconnected" {
                return v;
            }
        }
    }
}

impl Drop for P4pMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn pva_monitor_ends_when_its_read_role_is_revoked() {
    if !peers_enabled("pva_monitor_ends_when_its_read_role_is_revoked") {
        return;
    }
    let (pva_tcp, pva_udp) = (free_port(), free_port());
    let (tcp_s, udp_s) = (pva_tcp.to_string(), pva_udp.to_string());
    let node = Node::start_with(
        &["--auth"],
        &[
            ("WEFT_PVA_ENABLED", "true"),
            ("WEFT_PVA_DEMO", "true"),
            ("WEFT_AUTH_PVA_TRUST_CA_USER", "true"),
            ("EPICS_PVAS_INTF_ADDR_LIST", "127.0.0.1"),
            ("EPICS_PVAS_SERVER_PORT", &tcp_s),
            ("EPICS_PVAS_BROADCAST_PORT", &udp_s),
            ("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO"),
            ("EPICS_PVAS_BEACON_ADDR_LIST", "127.0.0.1"),
        ],
    );
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    let admin_ok = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--token", &admin]);
        node.ok(&a)
    };
    let me = account();
    // The subscriber (p4p, as this account) reads; a writer (weft pv put
    // with USER=pvwriter, the name our client sends) puts.
    admin_ok(&["auth", "role", "add", "pvread", "--grant", "read:pv:weft:demo:*"]);
    admin_ok(&["auth", "role", "add", "pvwrite", "--grant", "write:pv:weft:demo:*"]);
    admin_ok(&["auth", "user", "add", &me, "--role", "pvread"]);
    admin_ok(&["auth", "user", "add", "pvwriter", "--role", "pvwrite"]);
    let put = |v: &str| {
        let o = std::process::Command::new(common::WEFT)
            .args(["pv", "put", PV, v])
            .env("USER", "pvwriter")
            .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{pva_udp}"))
            .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
            .output()
            .unwrap();
        assert!(o.status.success(), "weft pv put {v}: {}", text(&o.stderr));
    };

    let mon = P4pMonitor::start(pva_udp);
    let first = mon.next();
    assert_eq!(first["kind"], "value", "{first}");
    put("4.5");
    let update = mon.next();
    assert_eq!(update, serde_json::json!({"kind": "value", "v": 4.5}), "updates flow while the role is held");

    // Revoked: the next update is not sent, the monitor ends with an error.
    admin_ok(&["auth", "role", "remove", "pvread"]);
    put("5.5");
    let end = mon.next();
    assert_ne!(end["kind"], "value", "an update after the revocation was sent: {end}");
    let msg = end["msg"].as_str().unwrap_or_default();
    assert!(msg.contains(&format!("access denied: read access to {PV} for user {me}")) && msg.contains("monitor ended"), "{end}");
    // p4p then closes the subscription (Finished), and no value follows,
    // even after one more put.
    let fin = mon.next();
    assert_eq!(fin["kind"], "Finished", "{fin}");
    put("6.5");
    let after = mon.lines.recv_timeout(Duration::from_millis(500));
    assert!(after.is_err(), "the monitor went on after its end: {after:?}");

    let stats = admin_ok(&["stats"]);
    assert!(stats.lines().any(|l| l == "pva.monitors_revoked 1"), "{stats}");
    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"surface\":\"pva\"") && l.contains("\"outcome\":\"forbidden\"") && l.contains("\"action\":\"read\"") && l.contains(&format!("{me} (pva ca)"))),
        "{audit}"
    );
}
