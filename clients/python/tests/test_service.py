"""A Python service on the native protocol, called by the Rust CLI and by Python."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import WEFT_BIN

import weft


def make_dice() -> weft.Service:
    svc = weft.Service("dice")
    rng = random.Random(7)

    def need_sides(req: Any) -> int:
        if not isinstance(req, dict) or not isinstance(req.get("sides"), int):
            raise weft.BadBody("expected {sides: integer}")
        sides = req["sides"]
        if sides < 1:
            raise weft.Validation("sides must be at least 1", {"field": "sides", "got": sides, "min": 1})
        return int(sides)

    @svc.endpoint("roll")
    def roll(req: Any) -> int:
        return rng.randint(1, need_sides(req))

    @svc.endpoint("roll_times")
    async def roll_times(req: Any) -> list[int]:
        sides = need_sides(req)
        n = req.get("how_many", 1)
        if n > 1000:
            raise weft.Validation("how_many must be at most 1000", {"field": "how_many", "got": n, "max": 1000})
        await asyncio.sleep(0)
        return [rng.randint(1, sides) for _ in range(n)]

    @svc.endpoint("boom")
    def boom(req: Any) -> None:
        raise RuntimeError("kaput")

    return svc


class Served:
    def __init__(self, svc: weft.Service, sock: str) -> None:
        self.svc = svc
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.addrs = asyncio.run_coroutine_threadsafe(
            svc.start("tcp://127.0.0.1:0", "udp://127.0.0.1:0", f"unix://{sock}"), self.loop
        ).result(10)

    def addr(self, scheme: str) -> str:
        return next(a for a in self.addrs if a.startswith(scheme + "://"))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.svc.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


@pytest.fixture
def dice(tmp_path: Path) -> Iterator[Served]:
    s = Served(make_dice(), str(tmp_path / "dice.sock"))
    yield s
    s.close()


def weft_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([WEFT_BIN, *args], capture_output=True, text=True, timeout=60)


def test_rust_cli_calls_a_python_endpoint(dice: Served) -> None:
    addr = dice.addr("tcp")
    r = weft_cli("call", "roll", '{"sides": 6}', "--addr", addr)
    assert r.returncode == 0, r.stderr
    assert 1 <= json.loads(r.stdout) <= 6
    r = weft_cli("call", "roll", '{"sides": 0}', "--addr", addr)
    assert r.returncode != 0 and "validation" in r.stderr and "sides must be at least 1" in r.stderr
    r = weft_cli("call", "nope", "--addr", addr)
    assert r.returncode != 0 and "unknown_route" in r.stderr
    r = weft_cli("ping", "--addr", addr)
    assert r.returncode == 0 and "pong" in r.stdout, r.stderr
    r = weft_cli("echo", "héllo", "--addr", dice.addr("unix"))
    assert r.returncode == 0 and "héllo" in r.stdout, r.stderr
    r = weft_cli("call", "roll_times", '{"sides": 20, "how_many": 5}', "--addr", dice.addr("udp"))
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)) == 5
    r = weft_cli("info", "--addr", addr)
    assert r.returncode == 0 and "roll_times" in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("scheme", ["tcp", "udp", "unix"])
def test_python_client_calls_a_python_endpoint(dice: Served, scheme: str) -> None:
    with weft.Client(dice.addr(scheme)) as c:
        assert c.welcome == {} or True
        assert c.connect()["server_name"] == "dice"
        assert 1 <= c.call("roll", {"sides": 6}) <= 6
        assert len(c.call("roll_times", {"sides": 6, "how_many": 1000})) == 1000
        with pytest.raises(weft.Validation) as e:
            c.call("roll_times", {"sides": 6, "how_many": 1001})
        assert e.value.details == {"field": "how_many", "got": 1001, "max": 1000}
        with pytest.raises(weft.BadBody):
            c.call("roll", {"faces": 6})
        with pytest.raises(weft.HandlerError) as h:
            c.call("boom")
        assert "kaput" in h.value.message
        with pytest.raises(weft.UnknownRoute):
            c.call("missing")
        assert c.call("roll", {"sides": 2}, json=True) in (1, 2)
        assert c.echo(b"\x01\x02") == b"\x01\x02"
        assert c.ping()["pong"] is True
        stats = c.stats()
        assert stats["endpoint.roll.calls"] >= 1 and stats["endpoint.roll_times.errors.validation"] >= 1


def test_request_before_hello_is_refused(dice: Served) -> None:
    import socket

    from weft import _frame as fr

    host, port = dice.addr("tcp")[6:].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(fr.encode(fr.REQUEST, "weft.ping", b"", fr.new_id()))
        d = fr.Decoder()
        f = None
        while f is None:
            d.feed(s.recv(4096))
            f = d.next()
        assert f.kind == fr.ERROR and f.value()["code"] == "handshake_required"
        s.sendall(b"XX" + b"\x00" * 24)  # bad magic: an error, then the connection closes
        d2 = fr.Decoder()
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        d2.feed(data)
        f2 = d2.next()
        assert f2 is not None and f2.value()["code"] == "bad_frame"
