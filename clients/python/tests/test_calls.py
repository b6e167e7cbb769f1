"""Every standard call over every transport, and typed errors for bad input."""

from __future__ import annotations

import pytest
from conftest import Node, unique

import weft


@pytest.mark.parametrize("transport", ["tcp", "unix", "udp", "tls"])
def test_standard_calls_over_each_transport(node: Node, transport: str) -> None:
    addr = getattr(node, transport)
    tls = node.tls_options() if transport == "tls" else None
    with weft.Client(addr, tls=tls) as c:
        w = c.connect()
        assert w["protocol_version"] == 1
        assert transport in w["features"]
        pong = c.ping()
        assert pong["pong"] is True and pong["server_time_ms"] > 0
        assert c.echo({"text": "héllo", "n": [1, 2.5, None], "b": b"\x00\xff"}) == {
            "text": "héllo",
            "n": [1, 2.5, None],
            "b": b"\x00\xff",
        }
        info = c.info()
        assert "weft.ping" in info["endpoints"] and "log.produce" in info["endpoints"]
        assert any(t.startswith(transport + "://") for t in info["transports"])
        stats = c.stats()
        assert stats["endpoint.weft.ping.calls"] >= 1
        assert isinstance(c.liveness(), list)
        assert c.call("weft.echo", "raw") == "raw"


def test_json_bodies(node: Node) -> None:
    with weft.Client(node.tcp, json=True) as c:
        assert c.echo({"a": [1, "x"]}) == {"a": [1, "x"]}
        with pytest.raises(weft.UnknownRoute) as e:
            c.call("weft.nope")
        assert e.value.details == {"route": "weft.nope"}
        # byte fields: strings in JSON requests, arrays of byte values in JSON answers
        t = unique("json")
        c.create_topic(t)
        c.produce(t, [("k", "héllo")])
        r = c.fetch(t, 0, 0).records[0]
        assert r.key == b"k" and r.value == "héllo".encode()
    with weft.Client(node.tcp) as c:
        assert c.call("weft.echo", {"j": 1}, json=True) == {"j": 1}


def test_many_calls_in_flight_on_one_connection(node: Node) -> None:
    import concurrent.futures

    with weft.Client(node.tcp) as c:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda i: c.echo(i), range(500)))
        assert got == list(range(500))


def test_typed_errors(client: weft.Client) -> None:
    with pytest.raises(weft.UnknownRoute) as e:
        client.call("no.such.route", {"x": 1})
    assert e.value.code == "unknown_route" and e.value.details["route"] == "no.such.route"
    with pytest.raises(weft.BadBody):
        client.call("log.produce", {"nonsense": True})
    with pytest.raises(weft.Validation):
        client.create_topic("bad name with spaces")
    with pytest.raises(weft.Validation):
        client.create_topic("__internal")
    with pytest.raises(weft.NotFound) as nf:
        client.describe_topic(unique("missing"))
    assert nf.value.kind is None or isinstance(nf.value.kind, str)
    t = unique("dup")
    client.create_topic(t)
    with pytest.raises(weft.Conflict):
        client.create_topic(t)
    client.produce(t, [b"one"])
    with pytest.raises(weft.OutOfRange) as oor:
        client.fetch(t, 0, 1000)
    assert oor.value.details["latest"] == 1
    small = unique("small")
    client.create_topic(small, max_record_bytes=64)
    with pytest.raises(weft.TooLarge) as tl:
        client.produce(small, [b"x" * 1000])
    assert tl.value.details["max"] == 64
    # every typed error is a ServerError and a WeftError
    assert issubclass(weft.NotFound, weft.ServerError) and issubclass(weft.ServerError, weft.WeftError)
    # the connection carries on after each refusal
    assert client.ping()["pong"] is True


def test_udp_answer_too_large_for_a_datagram(node: Node, client: weft.Client) -> None:
    t = unique("bigudp")
    client.create_topic(t)
    assert all(r.ok for r in client.produce(t, [b"v" * 10_000] * 10))
    with weft.Client(node.udp) as c:
        with pytest.raises(ValueError):
            c.echo(b"x" * 70_000)  # the request does not fit: refused before sending
        with pytest.raises(weft.TooLarge):
            c.fetch(t, 0, 0)  # the answer does not fit: the server says so
        assert len(c.fetch(t, 0, 0, max_records=2).records) == 2


def test_timeout_and_unreachable() -> None:
    from conftest import free_port

    port = free_port()
    with weft.Client(f"tcp://127.0.0.1:{port}", timeout=0.5, connect_timeout=0.5) as c:
        with pytest.raises(weft.ConnectionError):
            c.ping()
    with weft.Client(f"udp://127.0.0.1:{port}", timeout=0.5, connect_timeout=0.5) as c:
        with pytest.raises(weft.ConnectionError):
            c.ping()


def test_tls_without_client_certificate_is_refused(node: Node) -> None:
    with weft.Client(node.tls, tls=node.tls_options(client_cert=False), connect_timeout=1, timeout=2) as c:
        with pytest.raises(weft.ConnectionError):
            c.ping()


def test_bad_addresses() -> None:
    for bad in ("ftp://x:1", "tcp://nohost", "tcp://h:0", "unix://"):
        with pytest.raises(ValueError):
            weft.Client(bad)


def test_queues_and_senders(client: weft.Client) -> None:
    # `weft serve` registers the management endpoints; it has no queues of its own.
    assert isinstance(client.queues(), list)
    assert isinstance(client.queues("sender"), list)
    # an unknown queue name is `validation` (docs/queues.md, Management)
    with pytest.raises(weft.Validation):
        client.queue_show("no-such-queue")
    with pytest.raises(weft.Validation):
        client.queue_pause("no-such-queue")
    with pytest.raises(weft.Validation):
        client.queue_errors("no-such-sender", kind="sender")
    # every management call reaches its endpoint with a body of the right shape:
    # a wrong shape would be bad_body, an unknown name is validation
    for kind in ("queue", "sender"):
        for call in (
            lambda: client.queue_show("nope", kind=kind),
            lambda: client.queue_pause("nope", "processing", kind=kind),
            lambda: client.queue_resume("nope", "accepting", kind=kind),
            lambda: client.queue_errors("nope", 5, kind=kind),
            lambda: client.queue_inspect("nope", "uid-1", kind=kind),
            lambda: client.queue_pop("nope", "uid-1", kind=kind),
            lambda: client.queue_reprocess("nope", kind=kind),
            lambda: client.queue_reprocess("nope", "uid-1", kind=kind),
            lambda: client.queue_clear("nope", kind=kind),
        ):
            with pytest.raises(weft.Validation):
                call()
    with pytest.raises(ValueError):
        client.queues("bogus")
    g = client.stats_gathered()
    assert g is None or isinstance(g, dict)
    cur = client.stats_current()
    assert isinstance(cur, dict) and cur
    assert isinstance(client.stats_full(), list)
    assert client.errors() == [] or isinstance(client.errors(), list)
    assert isinstance(client.errors_clear(), list)


def test_one_way_requests(client: weft.Client) -> None:
    import time

    t = unique("oneway")
    client.create_topic(t)
    client.send("no.such.route", {"x": 1})  # no answer, no error
    client.send("log.produce", {"topic": t, "records": [{"value": b"fire-and-forget", "headers": []}]})
    deadline = time.monotonic() + 30
    while client.offsets(t, 0, "latest") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.fetch(t, 0, 0).records[0].value == b"fire-and-forget"
    assert client.ping()["pong"] is True
