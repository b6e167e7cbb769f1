"""A Python service and a Rust one are interchangeable: the dice roller of
docs/examples.md served by the Rust example (crates/weft-service/examples)
and by clients/python/examples/dice_service.py answers the same calls with
the same shapes and the same error DTOs.

The Rust examples come from WEFT_EXAMPLES (default target/debug/examples;
clients/test.sh builds them with `cargo build -p weft-service --example dice_server --example echo_server`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, free_port

import weft

EXAMPLES = Path(os.environ.get("WEFT_EXAMPLES") or ROOT / "target" / "debug" / "examples")
PY_EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"), DICE_SEED="7")
need_rust = pytest.mark.skipif(
    not (EXAMPLES / "dice_server").exists(), reason=f"no Rust examples in {EXAMPLES} (WEFT_EXAMPLES)"
)


def serve(cmd: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    addr = f"tcp://127.0.0.1:{free_port()}"
    p = subprocess.Popen([*cmd, addr], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with weft.Client(addr, connect_timeout=30) as c:
        c.connect()
    return p, addr


@pytest.fixture
def dice_pair() -> Iterator[dict[str, str]]:
    rust, raddr = serve([str(EXAMPLES / "dice_server")])
    py, paddr = serve([sys.executable, str(PY_EXAMPLES / "dice_service.py")])
    yield {"rust": raddr, "python": paddr}
    for p in (rust, py):
        p.send_signal(signal.SIGTERM)
        p.wait(30)


def outcome(c: weft.Client, route: str, body: Any) -> Any:
    try:
        return ("ok", c.call(route, body))
    except weft.ServerError as e:
        return ("error", e.code, e.details)


@need_rust
def test_rust_and_python_dice_services_answer_alike(dice_pair: dict[str, str]) -> None:
    calls: list[tuple[str, Any]] = [
        ("roll", {"sides": 0}),
        ("roll_times", {"sides": 6, "how_many": 1001}),
        ("roll_times", {"sides": 0, "how_many": 3}),
        ("guess", {"sides": 6, "guess": 9}),
        ("guess", {"sides": 6, "guess": 0}),
        ("nope", {}),
    ]
    with weft.Client(dice_pair["rust"]) as r, weft.Client(dice_pair["python"]) as p:
        for route, body in calls:
            assert outcome(r, route, body) == outcome(p, route, body), (route, body)
        # the wrong shape is bad_body on both (messages differ: serde's and ours)
        for c in (r, p):
            with pytest.raises(weft.BadBody):
                c.call("roll", {"faces": 6})
            assert 1 <= c.call("roll", {"sides": 6}) <= 6
            rolls = c.call("roll_times", {"sides": 20, "how_many": 1000})
            assert len(rolls) == 1000 and all(1 <= x <= 20 for x in rolls)
            g = c.call("guess", {"sides": 6, "guess": 3})
            assert set(g) == {"rolled", "correct"} and g["correct"] == (g["rolled"] == 3)
            assert {"roll", "roll_times", "guess", "weft.ping"} <= set(c.info()["endpoints"])


@need_rust
def test_python_clients_against_the_rust_examples() -> None:
    rust, addr = serve([str(EXAMPLES / "echo_server")])
    try:
        r = subprocess.run(
            [sys.executable, str(PY_EXAMPLES / "echo_client.py"), addr, "héllo"],
            capture_output=True, text=True, timeout=60, env=ENV,
        )
        assert r.returncode == 0, r.stderr
        assert 'echo "héllo" -> "héllo" (5 chars)' in r.stdout
    finally:
        rust.send_signal(signal.SIGTERM)
        rust.wait(30)
