//! `weft serve` with TLS and QUIC as users run it: development
//! certificates generated once into the data directory and reused, client
//! commands over tls:// and quic:// with --ca, and mTLS with the files of
//! `weft tls init`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, WEFT};

fn weft(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).env_remove("WEFT_ADDR").env_remove("WEFT_TLS_CA").output().unwrap()
}

struct Node {
    child: Child,
    tls: String,
    quic: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Node {
    let (tcp, tls, quic) = (free_port(), free_port(), free_port());
    let mut c = Command::new(WEFT);
    c.args(["serve", "--data-dir"])
        .arg(data)
        .args(["--tcp-addr", &format!("127.0.0.1:{tcp}"), "--disable", "udp", "--disable", "http", "--disable", "unix"])
        .args(["--enable", "tls", "--enable", "quic", "--tls-addr", &format!("127.0.0.1:{tls}"), "--quic-addr", &format!("127.0.0.1:{quic}")])
        .args(extra)
        .env_remove("WEFT_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    let node = Node { child: c.spawn().unwrap(), tls: format!("tls://127.0.0.1:{tls}"), quic: format!("quic://127.0.0.1:{quic}") };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if weft(&["ping", "--addr", &format!("tcp://127.0.0.1:{tcp}"), "--timeout-ms", "500"]).status.success() {
            return node;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("weft serve did not come up");
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn serve_generates_dev_certificates_once_and_clients_use_tls_and_quic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ca = data.join("tls/ca.pem");
    let ca = ca.to_str().unwrap();
    let first_cert;
    {
        let node = start(&data, &[], &[]);
        first_cert = std::fs::read(data.join("tls/server.pem")).unwrap();
        for addr in [&node.tls, &node.quic] {
            let out = ok(weft(&["ping", "--addr", addr, "--ca", ca]));
            assert!(out.contains("pong"), "{out}");
            assert_eq!(ok(weft(&["echo", "--addr", addr, "--ca", ca, "through the tunnel"])).trim(), "through the tunnel");
            // The node lists both in its transports.
            let info = ok(weft(&["info", "--addr", addr, "--ca", ca]));
            assert!(info.contains("tls://") && info.contains("quic://"), "{info}");
        }
        // Without the CA the server is not trusted.
        assert!(!weft(&["ping", "--addr", &node.tls, "--timeout-ms", "3000"]).status.success());
    }
    // A restart reuses the same certificate.
    let _node = start(&data, &[], &[]);
    assert_eq!(std::fs::read(data.join("tls/server.pem")).unwrap(), first_cert);
}

#[test]
fn mtls_with_the_files_of_tls_init() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = ok(weft(&["tls", "init", "--dir", certs.to_str().unwrap(), "--client-cn", "cli-tester"]));
    assert!(out.contains("CN=cli-tester"), "{out}");
    let p = |f: &str| certs.join(f).to_str().unwrap().to_owned();
    let node = start(
        &dir.path().join("data"),
        &["--client-auth", "require"],
        &[("WEFT_TLS_CERT", &p("server.pem")), ("WEFT_TLS_KEY", &p("server.key")), ("WEFT_TLS_CLIENT_CA", &p("ca.pem"))],
    );
    for addr in [&node.tls, &node.quic] {
        // No client certificate: refused.
        assert!(!weft(&["ping", "--addr", addr, "--ca", &p("ca.pem"), "--timeout-ms", "3000"]).status.success(), "{addr}");
        let out = ok(weft(&["ping", "--addr", addr, "--ca", &p("ca.pem"), "--cert", &p("client.pem"), "--key", &p("client.key")]));
        assert!(out.contains("pong"), "{out}");
    }
}
