//! The README's "Using it" section runs as written: every ```sh block, in
//! order, in a fresh directory, with `weft` on PATH meaning the built
//! binary. A block of `weft serve` is started in the background (the
//! user's other terminal); the others run under `bash -e -o pipefail` and
//! must exit 0. The node listens on free ports: the README's 7400/7480/7402
//! are rewritten to them, and WEFT_TCP_ADDR / WEFT_ADDR / WEFT_GRPC_ADDR point there.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{free_port, WEFT};

struct Bg(Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The ```sh blocks of the section titled `title`.
fn sh_blocks(readme: &str, title: &str) -> Vec<String> {
    let start = readme.find(&format!("\n## {title}\n")).unwrap_or_else(|| panic!("no section {title:?} in the README"));
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    let mut blocks = vec![];
    let mut cur: Option<String> = None;
    for line in rest[..end].lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```sh") => cur = Some(String::new()),
            (Some(_), "```") => blocks.extend(cur.take()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

#[test]
fn readme_using_it_runs_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let blocks = sh_blocks(&readme, "Using it");
    assert!(blocks.len() >= 2, "expected a serve block and a client block: {blocks:?}");

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(WEFT, bin.join("weft")).unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let (port, http, grpc) = (free_port(), free_port(), free_port());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let env = [
        ("PATH", path),
        ("WEFT_TCP_ADDR", format!("127.0.0.1:{port}")),
        ("WEFT_UDP_ADDR", format!("127.0.0.1:{port}")),
        ("WEFT_HTTP_ADDR", format!("127.0.0.1:{http}")),
        ("WEFT_ADDR", format!("tcp://127.0.0.1:{port}")),
        // grpc.addr for the node and the query commands' --grpc-addr alike.
        ("WEFT_GRPC_ADDR", format!("127.0.0.1:{grpc}")),
    ];
    let shell = |script: &str| {
        let mut c = Command::new("bash");
        c.args(["-e", "-o", "pipefail", "-c", script]).current_dir(&work).env_remove("WEFT_CONFIG").envs(env.iter().map(|(k, v)| (k, v)));
        c
    };

    let mut background = vec![];
    for block in blocks {
        let block = block.replace("127.0.0.1:7400", &format!("127.0.0.1:{port}")).replace("127.0.0.1:7480", &format!("127.0.0.1:{http}"))
            .replace("127.0.0.1:7402", &format!("127.0.0.1:{grpc}"));
        let commands: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).collect();
        if commands.iter().all(|l| l.trim_start().starts_with("weft serve")) {
            for c in commands {
                let child = shell(&format!("exec {c}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
                background.push(Bg(child));
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while !shell("weft ping --timeout-ms 500").output().unwrap().status.success() {
                assert!(Instant::now() < deadline, "the README's weft serve did not come up");
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        let out = shell(&block).output().unwrap();
        assert!(
            out.status.success(),
            "README block failed ({}):\n{block}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(!background.is_empty(), "the README starts no node");
}
