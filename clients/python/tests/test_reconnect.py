"""A server killed and restarted under a client: the same client carries on."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Node

import weft


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "data")
    n.data_dir.mkdir()
    n.start()
    yield n
    n.stop()


@pytest.mark.parametrize("transport", ["tcp", "unix", "tls"])
def test_reconnects_after_kill_and_restart(own_node: Node, transport: str) -> None:
    addr = getattr(own_node, transport)
    tls = own_node.tls_options() if transport == "tls" else None
    with weft.Client(addr, tls=tls, timeout=2, connect_timeout=1) as c:
        first = c.ping()
        assert first["pong"]
        own_node.kill()
        with pytest.raises((weft.ConnectionError, weft.Timeout)):
            c.ping()
        own_node.start()
        # the next call reconnects (with back-off) on the same client object
        deadline = time.monotonic() + 30
        while True:
            try:
                assert c.ping()["pong"]
                break
            except (weft.ConnectionError, weft.Timeout):
                assert time.monotonic() < deadline
        assert c.echo("after") == "after"


def test_a_call_made_while_down_waits_for_the_restart(own_node: Node) -> None:
    with weft.Client(own_node.tcp, timeout=60) as c:
        c.ping()
        assert c.connected
        own_node.kill()
        deadline = time.monotonic() + 30
        while c.connected:  # the client sees the drop; the call below finds no connection
            assert time.monotonic() < deadline
            time.sleep(0.01)
        result: list[object] = []

        def call() -> None:
            try:
                result.append(c.echo("waited"))
            except BaseException as e:  # noqa: BLE001 - recorded for the assertion
                result.append(e)

        th = threading.Thread(target=call)
        th.start()
        time.sleep(0.5)
        own_node.start()
        th.join(90)
        assert result == ["waited"]


def test_call_in_flight_when_the_connection_drops_is_lost_not_resent(own_node: Node) -> None:
    with weft.Client(own_node.tcp, timeout=60) as c:
        c.create_topic("drop")
        errors: list[BaseException] = []

        def long_poll() -> None:
            try:
                c.fetch("drop", 0, 0, wait_ms=30_000)
            except BaseException as e:  # noqa: BLE001 - recorded for the assertion
                errors.append(e)

        th = threading.Thread(target=long_poll)
        th.start()
        deadline = time.monotonic() + 30
        # the fetch is written (registered and sent in one step) and waits on the server
        while not (c.aio._conn is not None and len(c.aio._conn.pending) == 1):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        own_node.kill()
        th.join(30)
        assert len(errors) == 1 and isinstance(errors[0], weft.ConnectionLost)
        own_node.start()
        assert c.ping()["pong"]


def test_goaway_on_graceful_stop_then_reconnect(own_node: Node) -> None:
    with weft.Client(own_node.tcp, timeout=30) as c:
        c.ping()
        own_node.stop()  # SIGTERM: drains, sends goaway, closes
        own_node.start()
        assert c.ping()["pong"]


def test_refused_by_the_allow_list_is_unauthorized_at_once(tmp_path: Path) -> None:
    n = Node(tmp_path / "data", env={"WEFT_TCP_ALLOW": "10.0.0.0/8"})
    n.data_dir.mkdir()
    n.start()
    try:
        with weft.Client(n.tcp, timeout=30, connect_timeout=30) as c:
            # final, not retried: a retried refusal would end as ConnectionError at the deadline
            with pytest.raises(weft.Unauthorized):
                c.ping()
        with weft.Client(n.unix) as ok:  # other listeners have their own lists
            assert ok.ping()["pong"]
    finally:
        n.stop()
