//! Helpers shared by the binary's test files.
#![allow(dead_code)] // each test binary uses part of it

pub const WEFT: &str = env!("CARGO_BIN_EXE_weft");

/// A loopback port free for both TCP and UDP at the time of the call
/// (several transports of one node share it: tcp+udp, tls+quic).
///
/// Picked below the kernel's ephemeral range (32768 and up on Linux), not
/// with bind(0): a port bind(0) hands out is in that range, and between the
/// call and the node's bind the kernel may give the same port to one of the
/// many outgoing connections a cluster test makes (CLI calls, raft
/// transport), so the node could not listen and the test timed out. Ports
/// are walked from a per-process starting point so that concurrent test
/// binaries rarely try the same ones.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let seed = (std::process::id().wrapping_mul(7919) ^ nanos) % SPAN;
        let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN);
}

/// Waits for `child` to exit, at most `within`; past it the child is killed
/// (by its pid) and reaped, and None is returned.
pub fn wait_exit(child: &mut std::process::Child, within: std::time::Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().expect("waiting for a child process") {
            return Some(s);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `weft serve ARGS` with `env` added (WEFT_CONFIG removed), for a
/// configuration it must refuse at start: its stderr. Panics when it does
/// not exit within 60 s (it started serving) or exits 0.
pub fn serve_refusal(args: &[&str], env: &[(&str, &str)]) -> String {
    let mut c = std::process::Command::new(WEFT)
        .arg("serve")
        .args(args)
        .env_remove("WEFT_CONFIG")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("weft serve starts");
    let status = wait_exit(&mut c, std::time::Duration::from_secs(60)).unwrap_or_else(|| panic!("weft serve {args:?} with {env:?} did not exit"));
    let mut err = String::new();
    std::io::Read::read_to_string(c.stderr.as_mut().expect("piped stderr"), &mut err).expect("stderr is text");
    assert!(!status.success(), "weft serve {args:?} with {env:?} started: {err}");
    err
}
