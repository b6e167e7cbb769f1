"""The log: topics, produce with per-record results, fetch, offsets, consumer groups."""

from __future__ import annotations

import time

import pytest
from conftest import Node, unique

import weft


def test_topics_lifecycle(client: weft.Client) -> None:
    t = unique("orders")
    d = client.create_topic(t, partitions=3, retention_ms=3_600_000)
    assert d["name"] == t and d["config"]["partitions"] == 3
    assert t in client.topics()
    d = client.describe_topic(t)
    assert len(d["partitions"]) == 3
    d = client.alter_topic(t, partitions=4, retention_ms=-1)
    assert d["config"]["partitions"] == 4
    assert client.delete_topic(t) is True
    assert t not in client.topics()
    with pytest.raises(weft.NotFound):
        client.delete_topic(t)


def test_produce_results_fetch_and_offsets(client: weft.Client) -> None:
    t = unique("events")
    client.create_topic(t, partitions=2)
    before = int(time.time() * 1000) - 1
    results = client.produce(
        t,
        [
            b"plain",
            ("k1", "v1"),
            weft.ProducerRecord(value=b"\x00\x01", key=b"k2", headers=[("h", b"x"), ("h", b"y")], partition=1),
            {"value": "dict", "partition": 0, "timestamp_ms": before},
            weft.ProducerRecord(value=None, key=b"tomb", partition=0),
        ],
    )
    assert [r.ok for r in results] == [True] * 5
    assert results[2].partition == 1
    assert results[3].partition == 0 and results[3].timestamp_ms == before
    # the same key always lands on the same partition
    again = client.produce(t, [("k1", "v1-again")])
    assert again[0].partition == results[1].partition
    p0 = client.fetch(t, 0, 0)
    p1 = client.fetch(t, 1, 0)
    recs = p0.records + p1.records
    assert len(recs) == 6
    hdr = [r for r in p1.records if r.key == b"k2"][0]
    assert hdr.value == b"\x00\x01" and hdr.headers == [("h", b"x"), ("h", b"y")]
    tomb = [r for r in p0.records if r.key == b"tomb"][0]
    assert tomb.value is None
    assert p1.next_offset == p1.high_watermark == len(p1.records)
    assert client.offsets(t, 1, "earliest") == 0
    assert client.offsets(t, 1, "latest") == len(p1.records)
    assert client.offsets(t, 0, before) == 0
    # max_records and a partition that does not exist
    assert len(client.fetch(t, 0, 0, max_records=1).records) == 1
    with pytest.raises(weft.NotFound):
        client.fetch(t, 7, 0)


def test_produce_to_an_unknown_partition_refuses_the_whole_request(client: weft.Client) -> None:
    # docs/log.md: request-level problems refuse the whole request (nothing is
    # written); per-record `error`s are for appends that failed on their partition.
    t = unique("partial")
    client.create_topic(t, partitions=1)
    with pytest.raises(weft.NotFound):
        client.produce(t, [b"ok", weft.ProducerRecord(value=b"bad", partition=9)])
    assert client.offsets(t, 0, "latest") == 0


def test_long_poll_fetch_gets_a_record_produced_later(node: Node, client: weft.Client) -> None:
    import threading

    t = unique("poll")
    client.create_topic(t)
    got: list[weft.FetchResult] = []
    th = threading.Thread(target=lambda: got.append(client.fetch(t, 0, 0, wait_ms=20_000)))
    th.start()
    time.sleep(0.2)
    with weft.Client(node.tcp) as other:
        other.produce(t, [b"late"])
    th.join(30)
    assert got and [r.value for r in got[0].records] == [b"late"]


def test_group_calls(client: weft.Client) -> None:
    t = unique("gt")
    g = unique("grp")
    client.create_topic(t, partitions=2)
    m = client.join_group(g, [t], session_timeout_ms=10_000)
    assert sorted(m.assignment) == [(t, 0), (t, 1)] and m.members == 1
    hb = client.heartbeat(g, m.member_id)
    assert hb.generation == m.generation
    assert client.committed(g, t, 0) is None
    assert client.commit(g, {(t, 0): 0}, member_id=m.member_id, generation=m.generation)
    assert client.committed(g, t, 0) == 0
    with pytest.raises(weft.Conflict):
        client.commit(g, {(t, 0): 0}, member_id=m.member_id, generation=m.generation + 5)
    assert any(x["group"] == g for x in client.groups())
    assert client.describe_group(g)
    with pytest.raises(weft.Conflict):
        client.delete_group(g)  # a live member
    assert client.leave_group(g, m.member_id)
    with pytest.raises(weft.NotFound):
        client.heartbeat(g, m.member_id)
    assert client.delete_group(g)
    assert client.committed(g, t, 0) is None
    with pytest.raises(weft.NotFound):
        client.delete_group(g)


def test_consumer_iterates_commits_and_a_second_member_resumes(client: weft.Client, node: Node) -> None:
    t = unique("stream")
    g = unique("billing")
    client.create_topic(t, partitions=2)
    values = [f"v{i}".encode() for i in range(20)]
    assert all(r.ok for r in client.produce(t, [(f"k{i}", v) for i, v in enumerate(values)]))

    seen: list[bytes] = []
    with weft.Client(node.tcp) as c1:
        consumer = c1.consumer(g, [t], auto_offset_reset="earliest", consumer_timeout_ms=3000)
        for rec in consumer:
            seen.append(rec.value or b"")
            if len(seen) == 12:
                break
        consumer.close()  # commits what was handed out, leaves
    committed = sum(client.committed(g, t, p) or 0 for p in (0, 1))
    assert committed == 12

    with weft.Client(node.tcp) as c2:
        with c2.consumer(g, [t], auto_offset_reset="earliest", consumer_timeout_ms=1500) as consumer2:
            rest = [r.value or b"" for r in consumer2]
    assert sorted(seen + rest) == sorted(values)  # nothing lost, nothing twice
    assert sum(client.committed(g, t, p) or 0 for p in (0, 1)) == 20


def test_consumer_latest_reset_skips_old_records(client: weft.Client, node: Node) -> None:
    t = unique("late")
    g = unique("g")
    client.create_topic(t)
    client.produce(t, [b"old"])
    with weft.Client(node.tcp) as c:
        consumer = c.consumer(g, [t], auto_offset_reset="latest", consumer_timeout_ms=1500)
        consumer.start()
        client.produce(t, [b"new"])
        assert [r.value for r in consumer] == [b"new"]
        consumer.close()


def test_two_members_share_the_partitions(client: weft.Client, node: Node) -> None:
    t = unique("shared")
    g = unique("pair")
    client.create_topic(t, partitions=4)
    with weft.Client(node.tcp) as c1, weft.Client(node.tcp) as c2:
        a = c1.consumer(g, [t], auto_offset_reset="earliest", consumer_timeout_ms=500, session_timeout_ms=3000)
        a.start()
        b = c2.consumer(g, [t], auto_offset_reset="earliest", consumer_timeout_ms=500, session_timeout_ms=3000)
        b.start()
        deadline = time.monotonic() + 30
        while len(a.assignment) + len(b.assignment) != 4 or not a.assignment or not b.assignment:
            assert time.monotonic() < deadline, (a.assignment, b.assignment)
            a.poll()  # heartbeats; the answer carries the new generation's assignment
            b.poll()
        assert set(a.assignment).isdisjoint(b.assignment)
        a.close()
        b.close()


def test_rebalance_hands_partitions_off_without_loss_or_duplicates(client: weft.Client, node: Node) -> None:
    # A reads part of the log; B joins; A commits what it handed out of the
    # partitions it loses before acknowledging the new generation, so B starts
    # exactly there: every record once.
    t = unique("handoff")
    g = unique("hgroup")
    client.create_topic(t, partitions=4)
    values = [f"r{i}".encode() for i in range(40)]
    assert all(r.ok for r in client.produce(t, [(f"k{i}", v) for i, v in enumerate(values)]))
    seen: list[bytes] = []
    with weft.Client(node.tcp) as c1, weft.Client(node.tcp) as c2:
        a = c1.consumer(g, [t], auto_offset_reset="earliest", session_timeout_ms=3000, poll_wait_ms=100, max_records=5)
        seen += [r.value or b"" for r in a.poll(5)]
        b = c2.consumer(g, [t], auto_offset_reset="earliest", session_timeout_ms=3000, poll_wait_ms=100, max_records=5)
        b.start()
        deadline = time.monotonic() + 60
        while len(seen) < 40 or not a.assignment or not b.assignment:
            assert time.monotonic() < deadline, (len(seen), a.assignment, b.assignment)
            seen += [r.value or b"" for r in a.poll(5)]
            seen += [r.value or b"" for r in b.poll(5)]
        assert set(a.assignment).isdisjoint(b.assignment)
        a.close()
        b.close()
    assert sorted(seen) == sorted(values)  # nothing lost, nothing twice


def test_consumer_reset_policies(client: weft.Client, node: Node) -> None:
    t = unique("policy")
    client.create_topic(t)
    client.produce(t, [b"one", b"two"])
    with weft.Client(node.tcp) as c:
        # Weft's default is earliest (docs/log.md): a new group reads what the topic holds
        with c.consumer(unique("g"), [t], consumer_timeout_ms=1000) as d:
            assert [r.value for r in d] == [b"one", b"two"]
        with pytest.raises(weft.OutOfRange) as e:
            c.consumer(unique("g"), [t], auto_offset_reset="none").start()
        assert e.value.kind == "no_reset_policy"
    # a fetch outside the log moved by the policy says where it was asked to start
    r = client.fetch(t, 0, 99, reset="earliest")
    assert r.reset_from == 99 and [x.value for x in r.records] == [b"one", b"two"]
    with pytest.raises(weft.OutOfRange):
        client.fetch(t, 0, 99, reset="none")


def test_member_fetch_is_fenced(client: weft.Client) -> None:
    t = unique("fenced")
    g = unique("fg")
    client.create_topic(t, partitions=2)
    client.produce(t, [weft.ProducerRecord(value=b"a", partition=0)])
    m1 = client.join_group(g, [t])
    assert [r.value for r in client.fetch(t, 0, 0, member=m1).records] == [b"a"]
    m2 = client.join_group(g, [t])  # a new generation: m1's is stale
    assert m2.generation > m1.generation
    with pytest.raises(weft.Conflict) as e:
        client.fetch(t, 0, 0, member=m1)
    assert e.value.kind == "illegal_generation"
    assert client.leave_group(g, m1.member_id)
    with pytest.raises((weft.NotFound, weft.Conflict)) as gone:
        client.fetch(t, 0, 0, member=m1)
    assert gone.value.kind in ("unknown_member", "illegal_generation")
    start, committed = client.start_offset(g, t, 0, "latest")
    assert (start, committed) == (1, None)
    client.leave_group(g, m2.member_id)
