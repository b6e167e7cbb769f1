"""Cluster leader routing (docs/cluster.md): against a real 3-node `weft
serve` cluster started here, the client sends a partition's requests to its
raft leader (counted on the nodes' own stats) and keeps producing through a
kill -9 of that leader, every acknowledged record read back; against a
stand-in node that answers ``not_leader`` (as a node does when it did not
run a request), the redirect is followed, cached, bounded, and off with
``follow_leader=False``. Sync and async."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import WEFT_BIN, Node, unique

import weft
from weft._leaders import key_partition, murmur2


class ClusterNode:
    def __init__(self, node_id: int, data_dir: Path, ports: list[int]) -> None:
        self.id = node_id
        self.data_dir = data_dir
        self.port, self.http_port, self.cluster_port = ports
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"weft-node{node_id}.log"

    @property
    def tcp(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self, peers: str) -> None:
        args = [
            WEFT_BIN, "serve", "--data-dir", str(self.data_dir),
            "--tcp-addr", f"127.0.0.1:{self.port}", "--disable", "udp",
            "--http-addr", f"127.0.0.1:{self.http_port}",
            "--node-id", str(self.id), "--cluster-addr", f"127.0.0.1:{self.cluster_port}", "--cluster-peers", peers,
        ]
        env = {k: v for k, v in os.environ.items() if k not in ("WEFT_CONFIG", "WEFT_ADDR", "WEFT_TOKEN")}
        # Fast ticks keep elections short on a loaded machine (as tests/support/cluster.rs).
        env.update(WEFT_LOG="warn", WEFT_CLUSTER_TICK_MS="50")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env)

    def wait_listening(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.id} exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {self.id} did not listen within 60 s")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9 of the process this test started, by its pid."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def produce_calls(self) -> int:
        """This node's own count of log.produce requests it answered."""
        with weft.Client(self.tcp, follow_leader=False) as c:
            return int(c.stats().get("endpoint.log.produce.calls", 0))


def wait_for(what: str, f: Any, limit_s: float = 60) -> Any:
    """Poll until f() gives a truthy value; a bound against hangs, not a timing assertion."""
    deadline = time.monotonic() + limit_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            v = f()
            if v:
                return v
        except weft.WeftError as e:
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {limit_s} s (last error: {last})")


def distinct_ports(n: int) -> list[int]:
    """n free loopback ports, distinct (all held open while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def start_cluster(base: Path, attempt: int) -> list[ClusterNode]:
    nodes = []
    ports = distinct_ports(9)
    for i in (1, 2, 3):
        d = base / f"a{attempt}n{i}"
        d.mkdir()
        n = ClusterNode(i, d, ports[3 * i - 3 : 3 * i])
        nodes.append(n)
    peers = ",".join(f"{n.id}=127.0.0.1:{n.cluster_port}" for n in nodes)
    try:
        for n in nodes:
            n.start(peers)
        for n in nodes:
            n.wait_listening()

        def registered() -> bool:
            for n in nodes:
                if not n.alive():
                    raise RuntimeError(f"node {n.id} exited: {n.log.read_text()[-2000:]}")
            with weft.Client(nodes[0].tcp, follow_leader=False, timeout=5) as c:
                s = c.call("cluster.status")
            return sum(1 for x in s["nodes"] if x.get("native_addr")) == 3

        wait_for("three nodes registered with their native address", registered)
    except BaseException:
        for n in nodes:
            n.kill()
        raise
    return nodes


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ClusterNode]]:
    base = tmp_path_factory.mktemp("weft-cluster")
    nodes: list[ClusterNode] = []
    for attempt in range(3):
        try:
            nodes = start_cluster(base, attempt)
            break
        except RuntimeError as e:
            # A port picked free was taken meanwhile (other processes share
            # loopback): start again on new ports; anything else fails.
            if "Address already in use" not in str(e) or attempt == 2:
                raise
    try:
        yield nodes
    finally:
        for n in nodes:
            n.kill()


def partition_leader(nodes: list[ClusterNode], topic: str, partition: int) -> ClusterNode | None:
    """The partition's leader as some live node sees it (every node hosts a replica)."""
    for n in nodes:
        if not n.alive():
            continue
        with weft.Client(n.tcp, follow_leader=False, timeout=5) as c:
            s = c.call("cluster.status")
        for p in s["partitions"]:
            if p["topic"] == topic and p["partition"] == partition and p.get("leader"):
                return next((x for x in nodes if x.id == p["leader"] and x.alive()), None)
    return None


def make_topic(nodes: list[ClusterNode], partitions: int) -> str:
    topic = unique("pyc")
    with weft.Client(nodes[0].tcp) as c:
        wait_for("topic created", lambda: c.create_topic(topic, partitions=partitions))
    for p in range(partitions):
        wait_for(f"a leader for {topic}/{p}", lambda: partition_leader(nodes, topic, p))
    return topic


def test_requests_go_to_the_partition_leader(cluster: list[ClusterNode]) -> None:
    topic = make_topic(cluster, 1)
    leader = partition_leader(cluster, topic, 0)
    assert leader is not None
    follower = next(n for n in cluster if n is not leader)
    before = {n.id: n.produce_calls() for n in cluster}
    values = [f"v{i}".encode() for i in range(20)]
    with weft.Client(follower.tcp) as c:
        acked: list[int] = []
        for v in values:
            (r,) = c.produce(topic, [{"value": v, "partition": 0}])
            assert r.error is None and r.offset is not None
            acked.append(r.offset)
        assert c.leader_cache[(topic, 0)] == leader.tcp
        assert c.leader_calls == 20 and c.redirects == 0
        got = c.fetch(topic, 0, acked[0], max_records=100)
        assert [x.value for x in got.records][: len(values)] == values
    after = {n.id: n.produce_calls() for n in cluster}
    # The leader answered every produce; the node the client was given none.
    assert after[leader.id] - before[leader.id] == 20
    assert after[follower.id] == before[follower.id]

    # follow_leader=False: the same produces stay on the node given.
    with weft.Client(follower.tcp, follow_leader=False) as c:
        for v in values[:5]:
            assert c.produce(topic, [{"value": v, "partition": 0}])[0].error is None
        assert c.leader_cache == {} and c.leader_calls == 0
    assert follower.produce_calls() - after[follower.id] == 5


def test_murmur2_matches_kafka() -> None:
    """Kafka's own murmur2 vectors (UtilsTest.testMurmur2, as signed ints)."""
    cases = {
        b"21": -973932308,
        b"foobar": -790332482,
        b"a-little-bit-long-string": -985981536,
        b"a-little-bit-longer-string": -1486304829,
        b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        b"abc": 479470107,
    }
    for data, want in cases.items():
        assert murmur2(data) == want & 0xFFFFFFFF, data


def test_keyed_records_are_placed_like_the_server(cluster: list[ClusterNode]) -> None:
    """The client hashes keys as the node does (murmur2), so a keyed produce
    goes to its partition's leader; the node's answer says the same partition."""
    topic = make_topic(cluster, 3)
    follower = next(n for n in cluster if n is not partition_leader(cluster, topic, 0))
    with weft.Client(follower.tcp) as c:
        for i in range(30):
            key = f"key-{i}".encode()
            (r,) = c.produce(topic, [(key, b"x")])
            assert r.error is None and r.partition == key_partition(key, 3), (key, r)
        assert {p for (t, p) in c.leader_cache if t == topic} == {0, 1, 2}


def test_async_client_routes_too(cluster: list[ClusterNode]) -> None:
    topic = make_topic(cluster, 1)
    leader = partition_leader(cluster, topic, 0)
    assert leader is not None
    follower = next(n for n in cluster if n is not leader)

    async def main() -> None:
        async with weft.AsyncClient(follower.tcp) as c:
            rs = await asyncio.gather(*(c.produce(topic, [{"value": b"a%d" % i, "partition": 0}]) for i in range(10)))
            assert all(r[0].error is None for r in rs)
            assert c.leader_cache[(topic, 0)] == leader.tcp and c.leader_calls == 10
            assert await c.offsets(topic, 0, "latest") >= 10

    asyncio.run(main())


# ---- not_leader from a stand-in node ------------------------------------------


class StandIn:
    """A node that refuses produce with weft-cluster's not_leader shape."""

    def __init__(self, answers: list[str | None | bool]) -> None:
        # Each produce takes the next answer: an address (not_leader naming
        # it), None (not_leader, leader unknown) or True (accept); the last repeats.
        self.answers = answers
        self.produces = 0
        svc = weft.Service("stand-in")

        @svc.endpoint("log.produce")
        def produce(body: Any) -> Any:
            a = self.answers[min(self.produces, len(self.answers) - 1)]
            self.produces += 1
            if a is True:
                return {"results": [{"partition": 0, "offset": 1000 + self.produces, "timestamp_ms": 1} for _ in body["records"]]}
            d = {"group": 42, "leader": 2 if a else 0, "addr": a}
            raise weft.ServerError("not the leader", {"kind": "not_leader", **d, "not_leader": d}, code="not_leader")

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.svc = svc
        self.addr = asyncio.run_coroutine_threadsafe(svc.start("tcp://127.0.0.1:0"), self.loop).result(10)[0]

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.svc.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("weft-single") / "data")
    n.data_dir.mkdir()
    n.start()
    yield n
    n.stop()


def test_not_leader_is_followed_and_cached(single: Node) -> None:
    topic = unique("pyr")
    with weft.Client(single.tcp) as c:
        c.create_topic(topic)
    s = StandIn([single.tcp])
    try:
        with weft.Client(s.addr) as c:
            for i in range(5):
                (r,) = c.produce(topic, [{"value": b"r%d" % i, "partition": 0}])
                assert r.error is None and r.offset == i  # the real node's offsets
            # One refusal, then straight to the leader.
            assert s.produces == 1 and c.redirects == 1 and c.leader_calls == 5
            assert c.leader_cache == {(topic, 0): single.tcp}
            got = c.fetch(topic, 0, 0)
            assert [x.value for x in got.records] == [b"r%d" % i for i in range(5)]
        with weft.Client(s.addr, follow_leader=False) as c:
            with pytest.raises(weft.NotLeader) as e:
                c.produce(topic, [{"value": b"no", "partition": 0}])
            assert e.value.details["addr"] == single.tcp and isinstance(e.value, weft.Unavailable)
    finally:
        s.close()


def test_not_leader_without_address_retries_here_bounded(single: Node) -> None:
    s = StandIn([None, None, True])
    try:
        with weft.Client(s.addr) as c:
            (r,) = c.produce("t", [{"value": b"x", "partition": 0}])
            assert r.offset == 1003 and c.redirects == 2 and s.produces == 3
    finally:
        s.close()
    s = StandIn([None])
    try:
        with weft.Client(s.addr, max_redirects=3) as c:
            with pytest.raises(weft.NotLeader):
                c.produce("t", [{"value": b"x", "partition": 0}])
            assert s.produces == 4  # the first try and three hops
    finally:
        s.close()


def test_async_not_leader_redirect(single: Node) -> None:
    topic = unique("pya")
    with weft.Client(single.tcp) as c:
        c.create_topic(topic)
    s = StandIn([single.tcp])

    async def main() -> None:
        async with weft.AsyncClient(s.addr) as c:
            (r,) = await c.produce(topic, [{"value": b"y", "partition": 0}])
            assert r.error is None and r.offset == 0 and c.redirects == 1
            assert c.leader_cache == {(topic, 0): single.tcp}
        async with weft.AsyncClient(s.addr, follow_leader=False) as c:
            with pytest.raises(weft.NotLeader):
                await c.produce(topic, [{"value": b"y", "partition": 0}])

    try:
        asyncio.run(main())
    finally:
        s.close()


def test_tls_client_never_follows_plain_text() -> None:
    c = weft.AsyncClient("tls://127.0.0.1:7403")
    assert not c._follows("tcp://127.0.0.1:7400")
    assert c._follows("tls://127.0.0.1:7404")
    assert not c._follows("tls://127.0.0.1:7403")  # itself: no hop
    assert weft.AsyncClient("tcp://127.0.0.1:7400")._follows("tcp://127.0.0.1:7401")


# ---- kill -9 of the leader (last: it leaves the cluster with two nodes) ----------


def test_leader_kill_keeps_producing(cluster: list[ClusterNode]) -> None:
    topic = make_topic(cluster, 1)
    leader = partition_leader(cluster, topic, 0)
    assert leader is not None
    follower = next(n for n in cluster if n is not leader)
    acked: dict[int, bytes] = {}
    unknown = 0
    with weft.Client(follower.tcp, timeout=15) as c:

        def produce_until(n_acked: int) -> None:
            nonlocal unknown
            for attempt in range(2000):  # bounded
                if len(acked) >= n_acked:
                    return
                v = b"k%d" % attempt + b"-%d" % len(acked)
                try:
                    (r,) = c.produce(topic, [{"value": v, "partition": 0}])
                except (weft.ConnectionLost, weft.Timeout, weft.ServerTimeout, weft.Unavailable, weft.ShuttingDown):
                    # Fate unknown or refused: not counted as acknowledged.
                    # ShuttingDown: a proposal whose deadline passes during the
                    # election is dropped by the node's driver, and the caller
                    # can see the dropped reply as shutting_down instead of
                    # timeout (weft-cluster node.rs, call() vs the pending sweep).
                    unknown += 1
                    continue
                if r.error is None and r.offset is not None:
                    acked[r.offset] = v
            raise AssertionError(f"only {len(acked)} acknowledged")

        produce_until(30)
        assert c.leader_cache[(topic, 0)] == leader.tcp
        leader.kill()
        produce_until(60)
        new = partition_leader(cluster, topic, 0)
        assert new is not None and new is not leader
        # The cache moved off the dead node (to the new leader once learned)...
        assert c.leader_cache.get((topic, 0)) in (None, new.tcp)
        # ...and once asked again, produces go to the new leader.
        assert c.refresh_leaders()[(topic, 0)] == new.tcp
        before, calls = new.produce_calls(), c.leader_calls
        for i in range(5):
            (r,) = c.produce(topic, [{"value": b"after-%d" % i, "partition": 0}])
            assert r.error is None and r.offset is not None
            acked[r.offset] = b"after-%d" % i
        if new is not follower:
            assert c.leader_calls == calls + 5 and new.produce_calls() - before == 5
        # Every acknowledged record is there, at its offset.
        end = max(acked) + 1
        got: dict[int, bytes] = {}
        off = 0
        for _ in range(1000):  # bounded
            if off >= end:
                break
            f = c.fetch(topic, 0, off, max_records=500)
            for rec in f.records:
                got[rec.offset] = rec.value or b""
            off = f.records[-1].offset + 1 if f.records else off
        missing = {o: v for o, v in acked.items() if got.get(o) != v}
        assert not missing, f"acknowledged records missing or different: {missing}"
