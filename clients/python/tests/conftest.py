"""A real `weft serve` per test module, on free loopback ports and a temp data dir.

WEFT_BIN names the binary (default: target/debug/weft of this checkout)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import weft  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
WEFT_BIN = os.environ.get("WEFT_BIN") or str(ROOT / "target" / "debug" / "weft")


def free_port(udp_too: bool = False) -> int:
    """A port free for TCP (and UDP when asked) right now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if udp_too:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


class Node:
    """One `weft serve` process; kill() and start() keep its ports and data."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.env = env or {}
        self.port = free_port(udp_too=True)
        self.tls_port = free_port()
        self.http_port = free_port()
        self.sock = str(data_dir / "weft.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"weft-{self.port}.log"

    @property
    def tcp(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def udp(self) -> str:
        return f"udp://127.0.0.1:{self.port}"

    @property
    def unix(self) -> str:
        return f"unix://{self.sock}"

    @property
    def tls(self) -> str:
        return f"tls://127.0.0.1:{self.tls_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def tls_options(self, client_cert: bool = True) -> weft.TlsOptions:
        d = self.data_dir / "tls"
        if client_cert:
            return weft.TlsOptions(ca=str(d / "ca.pem"), cert=str(d / "client.pem"), key=str(d / "client.key"))
        return weft.TlsOptions(ca=str(d / "ca.pem"))

    def start(self) -> None:
        args = [
            WEFT_BIN, "serve",
            "--data-dir", str(self.data_dir),
            "--tcp-addr", f"127.0.0.1:{self.port}",
            "--udp-addr", f"127.0.0.1:{self.port}",
            "--unix-path", self.sock,
            "--enable", "tls", "--tls-addr", f"127.0.0.1:{self.tls_port}", "--client-auth", "require",
            "--http-addr", f"127.0.0.1:{self.http_port}",
            "--fsync", "never",
        ]
        env = dict(os.environ, WEFT_LOG="warn", **self.env)
        self.proc = subprocess.Popen(args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weft serve exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.tls_port), timeout=1):
                    pass
                if os.path.exists(self.sock):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("weft serve did not start listening within 60 s")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("weft") / "data")
    n.data_dir.mkdir()
    n.start()
    yield n
    n.stop()


@pytest.fixture
def client(node: Node) -> Iterator[weft.Client]:
    with weft.Client(node.tcp) as c:
        yield c


_seq = [0]


def unique(prefix: str) -> str:
    _seq[0] += 1
    return f"{prefix}-{os.getpid()}-{_seq[0]}"
