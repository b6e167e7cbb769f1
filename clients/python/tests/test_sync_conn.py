"""The synchronous client's own blocking connection (weft._sync): the calling
thread writes and reads itself; threads share the connection (one reads at a
time and hands answers to the others); timeouts, drops and typed errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Node, unique

import weft


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "data")
    n.data_dir.mkdir()
    n.start()
    yield n
    n.stop()


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_calls_take_the_blocking_connection(node: Node, transport: str) -> None:
    with weft.Client(getattr(node, transport)) as c:
        t = unique("sync")
        assert c.ping()["pong"] is True
        conn = c._sc
        c.create_topic(t, partitions=1)  # a coroutine of the asyncio client, run on this thread
        assert [r.offset for r in c.produce(t, [b"a", b"b"])] == [0, 1]
        assert t in c.topics()
        with pytest.raises(weft.NotFound):
            c.describe_topic(unique("missing"))
        # one connection, the blocking one: nothing went through the event loop's
        assert c._sc is conn and c.aio._conn is None
        assert c.connected and "features" in c.welcome


def test_a_long_poll_holds_the_reader_role_and_others_are_answered(node: Node) -> None:
    with weft.Client(node.tcp, timeout=30) as c:
        t = unique("lp")
        c.create_topic(t, partitions=1)
        got: list[object] = []

        def long_poll() -> None:
            got.append(c.call("log.fetch", {"topic": t, "partition": 0, "offset": 0, "wait_ms": 20_000}))

        th = threading.Thread(target=long_poll)
        th.start()
        deadline = time.monotonic() + 10
        while not c._sc or not c._sc.reading:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # the reader is the long poll's thread: it reads this thread's answers too
        t0 = time.monotonic()
        for i in range(50):
            assert c.echo(i) == i
        assert time.monotonic() - t0 < 10
        c.produce(t, [b"wake"])  # the long poll's answer
        th.join(30)
        assert len(got) == 1 and got[0]["records"][0]["value"] == b"wake"  # type: ignore[index]


def test_timeout_leaves_the_connection_usable(node: Node) -> None:
    with weft.Client(node.tcp) as c:
        t = unique("to")
        c.create_topic(t, partitions=1)
        conn = c._sc
        with pytest.raises(weft.Timeout):
            c.call("log.fetch", {"topic": t, "partition": 0, "offset": 0, "wait_ms": 3_000}, timeout=0.3)
        assert c.ping()["pong"] is True and c._sc is conn


def test_call_in_flight_on_the_blocking_connection_is_lost_not_resent(own_node: Node) -> None:
    with weft.Client(own_node.tcp, timeout=60) as c:
        c.create_topic("drop")
        errors: list[BaseException] = []

        def long_poll() -> None:
            try:
                c.call("log.fetch", {"topic": "drop", "partition": 0, "offset": 0, "wait_ms": 30_000})
            except BaseException as e:  # noqa: BLE001 - recorded for the assertion
                errors.append(e)

        th = threading.Thread(target=long_poll)
        th.start()
        deadline = time.monotonic() + 30
        while not (c._sc is not None and len(c._sc.pending) == 1):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        own_node.kill()
        th.join(30)
        assert len(errors) == 1 and isinstance(errors[0], weft.ConnectionLost)
        assert not c.connected
        own_node.start()
        assert c.ping()["pong"]
