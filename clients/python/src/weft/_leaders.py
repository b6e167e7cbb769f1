"""Cluster leader routing, without I/O (docs/cluster.md, "not_leader" and
"cluster.status"): which partition a request is for, the leader cache, and
the answers that fill it.

A request for one partition of a replicated topic (``log.produce``,
``log.fetch``, ``log.offsets``) is sent to that partition's raft group
leader when the cache knows it, as Kafka clients send to the partition
leader. The cache learns from two sources: ``cluster.status`` (each
partition's raft group and leader, each node's native address) and the
``details`` of a ``not_leader`` answer (``group``, ``leader``, ``addr``).
Any node still answers correctly (followers forward), so a stale entry
costs a hop, never a wrong answer."""

from __future__ import annotations

from typing import Any

from ._addr import parse_address

#: Routes whose body names one partition (or whose records can be placed on
#: one), and so one raft group.
PARTITION_ROUTES = frozenset({"log.produce", "log.fetch", "log.offsets"})

#: Routes bound to the node that was called: group membership lives in that
#: node's coordinator (docs/cluster.md, "Consumer groups"), so a redirect
#: elsewhere would find no member. A not_leader on them is raised as is.
NODE_BOUND_ROUTES = frozenset({"log.group.join", "log.group.heartbeat", "log.group.leave", "log.group.fetch"})


def murmur2(data: bytes) -> int:
    """MurmurHash2, 32 bits, Kafka's seed: the hash Weft places keyed records
    with (docs/log.md, docs/storage.md)."""
    m = 0x5BD1E995
    mask = 0xFFFFFFFF
    h = (0x9747B28C ^ len(data)) & mask
    n4 = len(data) - len(data) % 4
    for i in range(0, n4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & mask
        k ^= k >> 24
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = data[n4:]
    if len(tail) >= 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h


def key_partition(key: bytes, partitions: int) -> int:
    """The partition of a keyed record without an explicit partition:
    ``(murmur2(key) & 0x7fffffff) % partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % max(partitions, 1)


class LeaderCache:
    """(topic, partition) -> raft group -> the group leader's native address."""

    def __init__(self) -> None:
        self.groups: dict[tuple[str, int], int] = {}
        self.leaders: dict[int, str] = {}
        self.partitions: dict[str, int] = {}

    def partition_of(self, route: str, body: Any) -> tuple[str, int] | None:
        """The one partition a request is for, when the client can tell."""
        if route not in PARTITION_ROUTES or not isinstance(body, dict):
            return None
        topic = body.get("topic")
        if not isinstance(topic, str):
            return None
        if route != "log.produce":
            p = body.get("partition")
            return (topic, p) if isinstance(p, int) and not isinstance(p, bool) else None
        records = body.get("records")
        if not isinstance(records, list) or not records:
            return None
        seen: set[int] = set()
        for r in records:
            if not isinstance(r, dict):
                return None
            p = r.get("partition")
            if isinstance(p, int) and not isinstance(p, bool):
                seen.add(p)
                continue
            key = r.get("key")
            n = self.partitions.get(topic)
            # Keyless records go to a partition the node picks per call.
            if not isinstance(key, bytes) or n is None:
                return None
            seen.add(key_partition(key, n))
        return (topic, seen.pop()) if len(seen) == 1 else None

    def leader_for(self, tp: tuple[str, int]) -> str | None:
        g = self.groups.get(tp)
        return None if g is None else self.leaders.get(g)

    def learn_not_leader(self, tp: tuple[str, int] | None, details: Any) -> str | None:
        """Take a not_leader's details; returns the leader's address when given."""
        if not isinstance(details, dict):
            return None
        inner = details.get("not_leader")
        d = inner if isinstance(inner, dict) and "group" not in details else details
        group = d.get("group")
        addr = d.get("addr")
        if not isinstance(group, int):
            return addr if isinstance(addr, str) and _valid(addr) else None
        if tp is not None:
            self.groups[tp] = group
        if isinstance(addr, str) and _valid(addr):
            self.leaders[group] = addr
            return addr
        self.leaders.pop(group, None)
        return None

    def learn_status(self, status: Any) -> None:
        """Take a ``cluster.status`` answer: partitions' groups and leaders,
        nodes' native addresses. Entries it does not name are kept."""
        if not isinstance(status, dict):
            return
        addrs: dict[int, str] = {}
        for n in status.get("nodes") or ():
            if isinstance(n, dict) and isinstance(n.get("id"), int) and isinstance(n.get("native_addr"), str):
                if _valid(n["native_addr"]):
                    addrs[n["id"]] = n["native_addr"]
        counts: dict[str, int] = {}
        for p in status.get("partitions") or ():
            if not isinstance(p, dict):
                continue
            topic, part, group, leader = p.get("topic"), p.get("partition"), p.get("group"), p.get("leader")
            if not (isinstance(topic, str) and isinstance(part, int) and isinstance(group, int)):
                continue
            counts[topic] = max(counts.get(topic, 0), part + 1)
            self.groups[(topic, part)] = group
            if isinstance(leader, int) and leader in addrs:
                self.leaders[group] = addrs[leader]
            elif isinstance(leader, int) and leader != 0:
                self.leaders.pop(group, None)
        self.partitions.update(counts)

    def forget_addr(self, addr: str) -> None:
        """A leader that could not be reached: route its groups through the
        node the client was given until the cache learns again."""
        for g in [g for g, a in self.leaders.items() if a == addr]:
            del self.leaders[g]

    def snapshot(self) -> dict[tuple[str, int], str]:
        return {tp: self.leaders[g] for tp, g in self.groups.items() if g in self.leaders}


def _valid(addr: str) -> bool:
    try:
        parse_address(addr)
    except ValueError:
        return False
    return True
