//! A `weft serve` child for the CLI tests (cli_options, commands, readme).
#![allow(dead_code)] // each test binary uses part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use crate::common::{free_port, WEFT};

pub mod frames;

pub struct Node {
    pub child: Child,
    pub port: u16,
    pub http_port: u16,
    /// The gRPC query API's port (`--grpc-addr`); commands run through
    /// [`Node::weft`] reach it through WEFT_GRPC_ADDR.
    pub grpc_port: u16,
    pub dir: tempfile::TempDir,
}

impl Node {
    pub fn start() -> Node {
        Self::start_with(&[], &[])
    }

    /// A node in a fresh temp dir on free ports, with extra flags and
    /// environment variables.
    pub fn start_with(extra: &[&str], env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let http_port = free_port();
        let grpc_port = free_port();
        let mut c = Command::new(WEFT);
        c.args(["serve", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--tcp-addr", &format!("127.0.0.1:{port}"), "--udp-addr", &format!("127.0.0.1:{port}")])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--grpc-addr", &format!("127.0.0.1:{grpc_port}")])
            .args(extra)
            .env_remove("WEFT_CONFIG")
            .env_remove("WEFT_ADDR")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        let node = Node { child, port, http_port, grpc_port, dir };
        node.wait_ready();
        node
    }

    pub fn addr(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `127.0.0.1:PORT` of the TCP (and UDP) listener, for raw sockets.
    pub fn tcp_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The node's Unix socket.
    pub fn sock(&self) -> PathBuf {
        self.data_dir().join("weft.sock")
    }

    /// Whether the node answers a ping over TCP.
    pub fn ping(&self) -> bool {
        run(&["ping", "--addr", &self.addr(), "--timeout-ms", "1000"]).status.success()
    }

    /// One numeric stat, read over `via` (an address), so a test counting
    /// one transport's connections can read it over another.
    pub fn stat_via(&self, via: &str, key: &str) -> u64 {
        let o = run(&["stats", "--addr", via]);
        text(&o.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(' ')).map(|v| v.trim().parse::<u64>().unwrap()))
            .unwrap_or_else(|| panic!("no {key} in stats: {o:?}"))
    }

    /// The child's resident set size (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let o = run(&["ping", "--addr", &self.addr(), "--timeout-ms", "500"]);
            // With auth on (--auth) a ping without a token is refused: the
            // node is up all the same.
            if o.status.success() || text(&o.stderr).contains("unauthenticated") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("weft serve did not come up");
    }

    /// `127.0.0.1:PORT` of the gRPC query API.
    pub fn grpc_addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// `weft ARGS --addr <this node>` (and WEFT_GRPC_ADDR for the query commands).
    pub fn weft(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        let addr = self.addr();
        a.extend(["--addr", &addr]);
        Command::new(WEFT).args(&a).env_remove("WEFT_ADDR").env_remove("WEFT_CONFIG").env("WEFT_GRPC_ADDR", self.grpc_addr()).output().unwrap()
    }

    /// Like [`Node::weft`], asserting success; stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.weft(args);
        assert!(o.status.success(), "weft {args:?} failed: {}", text(&o.stderr));
        text(&o.stdout)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn run(args: &[&str]) -> Output {
    Command::new(WEFT).args(args).env_remove("WEFT_ADDR").env_remove("WEFT_CONFIG").output().unwrap()
}

pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(WEFT).args(args).current_dir(dir).env_remove("WEFT_ADDR").env_remove("WEFT_CONFIG").output().unwrap()
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The repo's venv python (`WEFT_PYTHON`), where the peer scripts install
/// the Python peers (grpcio, p4p, ...).
pub fn python() -> std::path::PathBuf {
    std::env::var_os("WEFT_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

/// grpcio stubs of proto/weft/query/v1 generated by grpcio-tools: the temp
/// dir (keep it alive) and the folder to put on the Python path. The package
/// is named `weftq`: the venv may hold the `weft` Python client, which would
/// shadow a generated `weft.query.v1`.
pub fn query_stubs() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let stubs = tempfile::tempdir().unwrap();
    let src = stubs.path().join("src/weftq");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::copy(root.join("proto/weft/query/v1/query.proto"), src.join("query.proto")).unwrap();
    let out = stubs.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let protoc = std::process::Command::new(python())
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(stubs.path().join("src"))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg("weftq/query.proto")
        .output()
        .unwrap();
    assert!(protoc.status.success(), "grpc_tools.protoc: {}", text(&protoc.stderr));
    (stubs, out)
}
