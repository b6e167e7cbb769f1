//! Certificates reloaded under live connections (docs/security.md,
//! "Reload"): an open native TLS connection keeps working across a
//! rotation to a new CA while new connections get the new certificate; a
//! bad file and an expired certificate are refused on reload and leave the
//! old one in force; an expired client certificate is refused. HTTPS on the
//! gateway (`http.tls`) rotates with them; with WEFT_PEERS=1 it is checked
//! with real peers: curl --cacert, Python's ssl module and openssl s_client.

use std::path::Path;
use std::process::Command;

use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

mod common;
mod support;
use support::{text, Node};

/// A CA, a server certificate for 127.0.0.1/localhost, a valid client
/// certificate (CN alice), and expired server and client certificates, in
/// `dir`.
fn make_certs(dir: &Path, ca_name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let leaf = |name: &str, cn: &str, client: bool, expired: bool| {
        let sans = if client { vec![] } else { vec!["127.0.0.1".to_owned(), "localhost".to_owned()] };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        if expired {
            p.not_before = date_time_ymd(2019, 1, 1);
            p.not_after = date_time_ymd(2020, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    leaf("server", "127.0.0.1", false, false);
    leaf("client", "alice", true, false);
    leaf("expired_server", "127.0.0.1", false, true);
    leaf("expired_client", "alice", true, true);
}

/// Put `from`'s server certificate, key and CA where the node reads them.
fn install(from: &Path, live: &Path, server: &str) {
    std::fs::copy(from.join(format!("{server}.pem")), live.join("server.pem")).unwrap();
    std::fs::copy(from.join(format!("{server}.key")), live.join("server.key")).unwrap();
    std::fs::copy(from.join("ca.pem"), live.join("ca.pem")).unwrap();
}

fn weft(args: &[&str]) -> Result<String, String> {
    let o = Command::new(common::WEFT).args(args).env_remove("WEFT_ADDR").env_remove("WEFT_TOKEN").output().unwrap();
    if o.status.success() { Ok(text(&o.stdout)) } else { Err(text(&o.stderr)) }
}

/// A new native TLS connection trusting `ca`, optionally with a client
/// certificate.
fn tls_ping(addr: &str, ca: &Path, client: Option<(&Path, &Path)>) -> Result<String, String> {
    let ca = ca.to_str().unwrap();
    let mut a = vec!["ping", "--addr", addr, "--ca", ca, "--timeout-ms", "5000"];
    let (c, k);
    if let Some((cert, key)) = client {
        (c, k) = (cert.to_str().unwrap().to_owned(), key.to_str().unwrap().to_owned());
        a.extend(["--cert", &c, "--key", &k]);
    }
    weft(&a)
}

fn peers() -> bool {
    std::env::var("WEFT_PEERS").is_ok_and(|v| v == "1")
}

fn curl(url: &str, ca: &Path) -> Result<String, String> {
    let o = Command::new("curl").args(["-sS", "--max-time", "10", "--cacert"]).arg(ca).arg(url).output().unwrap();
    if o.status.success() { Ok(text(&o.stdout)) } else { Err(text(&o.stderr)) }
}

fn python_ssl(port: u16, ca: &Path) -> String {
    let py = std::env::var("WEFT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while True:
            b = s.recv(4096)
            if not b: break
            out += b
        print(s.version(), out.split(b"\r\n")[0].decode())
"#;
    let o = Command::new(py).args(["-c", script, &port.to_string()]).arg(ca).output().unwrap();
    assert!(o.status.success(), "python ssl failed: {}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn certificates_rotate_under_live_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two, live) = (tmp.path().join("one"), tmp.path().join("two"), tmp.path().join("live"));
    make_certs(&one, "CA one");
    make_certs(&two, "CA two");
    std::fs::create_dir_all(&live).unwrap();
    install(&one, &live, "server");
    let tls_port = common::free_port();
    let quic_port = common::free_port();
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    let (cert, key, ca) = (s(&live.join("server.pem")), s(&live.join("server.key")), s(&live.join("ca.pem")));
    let node = Node::start_with(
        &[
            "--enable",
            "tls",
            "--tls-addr",
            &format!("127.0.0.1:{tls_port}"),
            "--enable",
            "quic",
            "--quic-addr",
            &format!("127.0.0.1:{quic_port}"),
            "--client-auth",
            "optional",
        ],
        &[("WEFT_TLS_CERT", &cert), ("WEFT_TLS_KEY", &key), ("WEFT_TLS_CLIENT_CA", &ca), ("WEFT_HTTP_TLS", "true")],
    );
    let tls = format!("tls://127.0.0.1:{tls_port}");
    let quic = format!("quic://127.0.0.1:{quic_port}");
    let https = format!("https://127.0.0.1:{}/healthz", node.http_port);
    tls_ping(&tls, &one.join("ca.pem"), None).unwrap();

    // A connection opened before the rotation.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let old = rt.block_on(async {
        let cfg = weft_net::ClientConfig {
            tls: weft_net::TlsClientConfig { ca: Some(one.join("ca.pem")), ..Default::default() },
            ..weft_net::ClientConfig::default()
        };
        weft_net::Client::connect(tls.parse::<weft_net::Target>().unwrap(), cfg).await.unwrap()
    });
    rt.block_on(async { old.call::<_, serde_json::Value>("weft.ping", &()).await.unwrap() });

    // Rotate to another CA and reload.
    install(&two, &live, "server");
    let rep: serde_json::Value = serde_json::from_str(&node.ok(&["config", "reload", "--json"])).unwrap();
    assert_eq!(rep["ok"], true, "{rep}");
    assert_eq!(rep["certificates"], 3, "native TLS, QUIC and HTTPS: {rep}");
    // The old connection keeps its session; new ones get the new certificate.
    rt.block_on(async { old.call::<_, serde_json::Value>("weft.info", &()).await.unwrap() });
    let e = tls_ping(&tls, &one.join("ca.pem"), None).unwrap_err();
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    tls_ping(&tls, &two.join("ca.pem"), None).unwrap();
    // QUIC too.
    tls_ping(&quic, &two.join("ca.pem"), None).unwrap();
    assert!(tls_ping(&quic, &one.join("ca.pem"), None).is_err(), "QUIC must serve the new certificate");
    // mTLS with the new CA's client certificate; an expired one is refused.
    tls_ping(&tls, &two.join("ca.pem"), Some((&two.join("client.pem"), &two.join("client.key")))).unwrap();
    let e = tls_ping(&tls, &two.join("ca.pem"), Some((&two.join("expired_client.pem"), &two.join("expired_client.key")))).unwrap_err();
    assert!(e.to_lowercase().contains("expired"), "an expired client certificate must be refused clearly: {e}");

    // A bad file: refused, the old (two) stays in force.
    std::fs::write(live.join("server.pem"), "not a certificate\n").unwrap();
    let e = node.weft(&["config", "reload"]);
    assert!(!e.status.success());
    let err = text(&e.stderr);
    assert!(err.contains("server.pem") && err.contains("old configuration stays"), "{err}");
    tls_ping(&tls, &two.join("ca.pem"), None).unwrap();
    // An expired server certificate: refused with the reason, old stays.
    install(&two, &live, "expired_server");
    let err = text(&node.weft(&["config", "reload"]).stderr);
    assert!(err.contains("expired"), "{err}");
    tls_ping(&tls, &two.join("ca.pem"), None).unwrap();
    let stats = node.ok(&["stats"]);
    assert!(stats.lines().any(|l| l == "reload.failures 2"), "{stats}");

    // SIGHUP does the same as the endpoint.
    install(&two, &live, "server");
    let before = stats.lines().find(|l| l.starts_with("reload.count ")).unwrap().to_owned();
    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = node.ok(&["stats"]);
        if !now.lines().any(|l| l == before) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "SIGHUP did not reload");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    rt.block_on(async { old.call::<_, serde_json::Value>("weft.ping", &()).await.unwrap() });
    rt.block_on(old.shutdown());

    // HTTPS, with real peers.
    if peers() {
        assert_eq!(curl(&https, &two.join("ca.pem")).unwrap().trim(), r#"{"status":"ok"}"#);
        assert!(curl(&https, &one.join("ca.pem")).is_err(), "the old CA must not verify the new certificate");
        let py = python_ssl(node.http_port, &two.join("ca.pem"));
        assert!(py.contains("HTTP/1.1 200"), "{py}");
        let o = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", node.http_port), "-CAfile"])
            .arg(two.join("ca.pem"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let out = text(&o.stdout);
        assert!(out.contains("Verify return code: 0 (ok)"), "{out}");
    } else {
        eprintln!("WEFT_PEERS unset: curl, Python ssl and openssl s_client against HTTPS skipped");
    }
}
