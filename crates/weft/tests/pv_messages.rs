#![cfg(feature = "pva")]
//! `weft pv put` prints what the server says about the put (CMD_MESSAGE),
//! on stderr: here the demo server's warning for a clamped setpoint.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        // Only the server this test started, by its handle.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pv_put_prints_server_warnings() {
    let weft = env!("CARGO_BIN_EXE_weft");
    let mut server = Command::new(weft)
        .args(["pv", "serve", "--tcp-port", "0", "--udp-port", "0", "--bind", "127.0.0.1"])
        .env("EPICS_PVAS_AUTO_BEACON_ADDR_LIST", "NO")
        .env_remove("EPICS_PVA_ADDR_LIST")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start weft pv serve");
    let out = server.stdout.take().expect("piped stdout");
    let server = Kill(server);
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).expect("server banner");
    // "serving weft:demo:* on tcp 127.0.0.1:P udp 127.0.0.1:U"
    let udp = line.trim().rsplit(' ').next().expect("udp address").to_string();
    let put = Command::new(weft)
        .args(["pv", "put", "weft:demo:setpoint", "50"])
        .env("EPICS_PVA_ADDR_LIST", &udp)
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .output()
        .expect("run weft pv put");
    let stderr = String::from_utf8_lossy(&put.stderr);
    assert!(put.status.success(), "{line}: {stderr}");
    assert!(
        stderr.contains("weft:demo:setpoint: warning: value 50 clamped to 10 (control limits -10 .. 10)"),
        "stderr: {stderr}"
    );
    assert!(String::from_utf8_lossy(&put.stdout).contains("10"), "the clamped value is shown");
    drop(server);
}
