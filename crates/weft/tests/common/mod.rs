//! Helpers shared by the binary's test files.
#![allow(dead_code)] // each test binary uses part of it

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A loopback port free for both TCP and UDP at the time of the call
/// (several transports of one node share it: tcp+udp, tls+quic).
pub fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
