//! Identity from the HTTPS client certificate (docs/security.md, "HTTP
//! gateway"): with `http.tls` and `tls.client_auth = optional`, a request
//! without a token that presented a certificate the client CA verified is
//! the user the certificate names (CN, else first SAN), on REST and on a
//! WebSocket (WSS) upgrade; a token wins over the certificate. Real peers:
//! curl --cert for REST, Python's ssl module for the WSS upgrade.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

mod common;
mod support;
use support::{text, Node};

/// A CA, a server certificate for 127.0.0.1, and client certificates with
/// CN alice (a user with a read role) and CN mallory (no such user).
fn make_certs(dir: &Path) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let leaf = |name: &str, cn: &str, client: bool| {
        let sans = if client { vec![] } else { vec!["127.0.0.1".to_owned()] };
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    };
    leaf("server", "127.0.0.1", false);
    leaf("alice", "alice", true);
    leaf("mallory", "mallory", true);
}

/// curl over HTTPS, with a client certificate and/or a bearer token: (status, body).
fn curl(dir: &Path, method: &str, url: &str, cert: Option<&str>, token: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "--max-time", "10", "-X", method, "-w", "\n%{http_code}", "--cacert"]).arg(dir.join("ca.pem"));
    if let Some(name) = cert {
        c.arg("--cert").arg(dir.join(format!("{name}.pem"))).arg("--key").arg(dir.join(format!("{name}.key")));
    }
    if let Some(t) = token {
        c.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    if method == "POST" {
        c.args(["-H", "Content-Type: application/json", "--data", r#"{"records":[{"value":"aGk="}]}"#]);
    }
    let o = c.arg(url).output().expect("WEFT_PEERS=1 but curl is missing");
    assert!(o.status.success(), "curl {url}: {}", text(&o.stderr));
    let out = text(&o.stdout);
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

/// A WebSocket upgrade of `/ui/ws` over TLS with Python's ssl module,
/// optionally with a client certificate: the response's status line.
fn wss_upgrade(port: u16, dir: &Path, cert: Option<&str>) -> String {
    let py = std::env::var("WEFT_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2] + "/ca.pem")
if sys.argv[3]:
    ctx.load_cert_chain(sys.argv[2] + "/" + sys.argv[3] + ".pem", sys.argv[2] + "/" + sys.argv[3] + ".key")
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        s.sendall(b"GET /ui/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        out = b""
        while b"\r\n" not in out:
            b = s.recv(4096)
            if not b: break
            out += b
        print(out.split(b"\r\n")[0].decode())
"#;
    let o = Command::new(py).args(["-c", script, &port.to_string(), dir.to_str().unwrap(), cert.unwrap_or("")]).output().unwrap();
    assert!(o.status.success(), "python ssl failed: {}", text(&o.stderr));
    text(&o.stdout).trim().to_owned()
}

#[test]
fn https_client_certificate_names_the_user() {
    if std::env::var("WEFT_PEERS").as_deref() != Ok("1") {
        println!("skipped https_client_certificate_names_the_user: set WEFT_PEERS=1 to run it with curl and Python's ssl");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    make_certs(dir);
    let s = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    let node = Node::start_with(
        &["--auth", "--client-auth", "optional"],
        &[("WEFT_TLS_CERT", &s("server.pem")), ("WEFT_TLS_KEY", &s("server.key")), ("WEFT_TLS_CLIENT_CA", &s("ca.pem")), ("WEFT_HTTP_TLS", "true")],
    );
    let admin = std::fs::read_to_string(node.data_dir().join("admin.token")).unwrap().trim().to_owned();
    let admin_ok = |args: &[&str]| {
        let mut a = args.to_vec();
        a.extend(["--token", &admin]);
        node.ok(&a)
    };
    admin_ok(&["topic", "create", "orders"]);
    admin_ok(&["auth", "role", "add", "reader", "--grant", "read:topic:orders*", "--grant", "read:endpoint:ui"]);
    admin_ok(&["auth", "user", "add", "alice", "--role", "reader"]);
    let base = format!("https://127.0.0.1:{}", node.http_port);
    let topic = format!("{base}/v1/topics/orders");
    let records = format!("{topic}/records");

    // The certificate names alice: she reads, and may not write.
    let (code, body) = curl(dir, "GET", &topic, Some("alice"), None);
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl(dir, "POST", &records, Some("alice"), None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("alice may not write topic:orders"), "{body}");
    // No certificate and no token: 401.
    let (code, _) = curl(dir, "GET", &topic, None, None);
    assert_eq!(code, 401);
    // A verified certificate naming no user: 401, saying so.
    let (code, body) = curl(dir, "GET", &topic, Some("mallory"), None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("certificate names \\\"mallory\\\", which is not a user"), "{body}");
    // A token wins over the certificate: the admin may write.
    let (code, body) = curl(dir, "POST", &records, Some("alice"), Some(&admin));
    assert_eq!(code, 200, "{body}");

    // WSS: the upgrade is checked with the certificate's identity.
    assert_eq!(wss_upgrade(node.http_port, dir, Some("alice")), "HTTP/1.1 101 Switching Protocols");
    assert!(wss_upgrade(node.http_port, dir, None).starts_with("HTTP/1.1 401"));
    assert!(wss_upgrade(node.http_port, dir, Some("mallory")).starts_with("HTTP/1.1 401"));

    // Removing the user revokes the certificate's access at the next request.
    admin_ok(&["auth", "user", "remove", "alice"]);
    let (code, _) = curl(dir, "GET", &topic, Some("alice"), None);
    assert_eq!(code, 401);

    let audit = std::fs::read_to_string(node.data_dir().join("audit.log")).unwrap();
    assert!(audit.lines().any(|l| l.contains(r#""surface":"http""#) && l.contains(r#""identity":"alice (certificate)""#) && l.contains(r#""outcome":"forbidden""#)), "{audit}");
    assert!(audit.lines().any(|l| l.contains(r#""identity":"mallory (certificate)""#) && l.contains(r#""outcome":"unauthenticated""#)), "{audit}");
}
