"""The examples run: the Python dice service with the Python dice client, the
echo client and the producer against `weft serve`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import WEFT_BIN, Node, free_port, unique

import weft

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, env=ENV, input=stdin
    )


def test_dice_service_and_client_examples() -> None:
    port = free_port()
    addr = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "dice_service.py"), addr], env=dict(ENV, DICE_SEED="7"), stdout=subprocess.PIPE
    )
    try:
        with weft.Client(addr, connect_timeout=30) as c:
            c.connect()
        r = run(str(EXAMPLES / "dice_client.py"), addr)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[0] == f"connected to {addr}"
        assert lines[5].startswith("roll {sides: 0} -> refused (validation): sides must be at least 1")
        assert lines[6].startswith("roll_times {sides: 6, how_many: 1001} -> refused (validation)")
        r = run(str(EXAMPLES / "dice_client.py"), addr, "guess", "6", "9")
        assert "refused (validation): guess must be between 1 and 6" in r.stdout, r.stdout + r.stderr
        # the Rust CLI against the Python example service
        r2 = subprocess.run([WEFT_BIN, "call", "roll", '{"sides": 6}', "--addr", addr], capture_output=True, text=True)
        assert r2.returncode == 0 and 1 <= int(r2.stdout) <= 6, r2.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_echo_client_and_producer_examples(node: Node) -> None:
    r = run(str(EXAMPLES / "echo_client.py"), node.tcp, "héllo")
    assert r.returncode == 0, r.stderr
    assert 'echo "héllo" -> error server error: unknown_route' in r.stdout
    assert 'weft.echo "héllo" -> "héllo"' in r.stdout
    t = unique("exorders")
    r = run(str(EXAMPLES / "producer.py"), node.tcp, t, stdin="k1:first\nk2:second\nk1:third\n")
    assert r.returncode == 0, r.stderr
    assert len([ln for ln in r.stdout.splitlines() if "-> partition" in ln]) == 3
    # the consumer example prints them, then leaves on Ctrl-C
    # SIGINT back to its default in the child: a test suite started in the
    # background by a non-interactive shell (CI) inherits SIGINT ignored, and
    # Python then installs no KeyboardInterrupt handler, so Ctrl-C would do
    # nothing (the cause of this test's 120 s timeouts in CI-like runs).
    p = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "consumer.py"), node.tcp, t, unique("exgroup")],
        env=ENV, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert p.stdout is not None
    got = [p.stdout.readline() for _ in range(3)]
    p.send_signal(signal.SIGINT)
    # A bound, not a timing check: leaving commits and leaves the group, and
    # each of those calls may wait out its own timeout on a loaded machine.
    try:
        code = p.wait(120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert code == 0
    assert sorted(ln.split(": ", 1)[1].strip() for ln in got) == ["first", "second", "third"]
    time.sleep(0)
