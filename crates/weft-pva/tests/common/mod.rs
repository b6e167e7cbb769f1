//! Helpers shared by the issue-17 tests: the peers gate and running a
//! Python (p4p / pvapy) snippet against a server on loopback.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

pub fn peers_enabled(test: &str) -> bool {
    if std::env::var("WEFT_PEERS").as_deref() == Ok("1") {
        return true;
    }
    println!("skipped {test}: set WEFT_PEERS=1 to run interop tests against p4p/pvapy");
    false
}

pub fn repo() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&p).unwrap_or(p)
}

pub fn python() -> PathBuf {
    let p = std::env::var("WEFT_PYTHON").map(PathBuf::from).unwrap_or_else(|_| repo().join(".venv/bin/python"));
    assert!(p.exists(), "WEFT_PEERS=1 but python {} is missing (run scripts/peers/pva.sh)", p.display());
    p
}

/// Output of a finished Python snippet.
pub struct PyOut {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `code` with the venv's python, searching the server whose UDP port is `udp`.
pub async fn run_py(code: &str, udp: u16, extra_env: &[(&str, &str)]) -> PyOut {
    let mut c = Command::new(python());
    c.arg("-c")
        .arg(code)
        .env("EPICS_PVA_ADDR_LIST", format!("127.0.0.1:{udp}"))
        .env("EPICS_PVA_AUTO_ADDR_LIST", "NO")
        .env_remove("EPICS_PVA_NAME_SERVERS")
        .kill_on_drop(true);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), c.output())
        .await
        .expect("python timed out")
        .expect("python failed to start");
    PyOut {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The last stdout line as JSON (asserting success).
pub fn json(o: &PyOut) -> serde_json::Value {
    assert!(o.ok, "python failed: {}\n{}", o.stderr, o.stdout);
    let line = o.stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("python printed {:?}: {e}", o.stdout))
}
