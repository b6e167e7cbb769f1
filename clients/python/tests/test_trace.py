"""Trace context on the native protocol (docs/protocol.md, "Trace context"):
the frame layout, and a real server taking it on every path of both clients.
That Weft's spans continue the caller's trace is proven with an OTLP
receiver in crates/weft/tests/traces.rs."""

from __future__ import annotations

import asyncio

from conftest import Node, unique

import weft
from weft import _frame as fr

TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_extension_layout_matches_the_spec_example() -> None:
    msg_id = b"\x01" * 16
    data = fr.encode(fr.REQUEST, "weft.ping", b"null", msg_id, fr.FLAG_JSON, TP)
    # flags 05, B = 1 + 55 + 4 = 60, body region: 37, the traceparent, null
    assert data[4] == 0x05
    assert int.from_bytes(data[6:10], "big") == 60
    body = data[26 + len("weft.ping"):]
    assert body == bytes([55]) + TP.encode() + b"null"
    # without a traceparent nothing changes
    plain = fr.encode(fr.REQUEST, "weft.ping", b"null", msg_id, fr.FLAG_JSON)
    assert plain[4] == 0x01 and plain.endswith(b"weft.pingnull")


def test_sync_client_sends_the_sources_traceparent_on_every_path(node: Node) -> None:
    seen: list[int] = []

    def source() -> str:
        seen.append(1)
        return TP

    topic = unique("traced")
    with weft.Client(node.tcp, trace_context=source) as c:
        # first call connects through the coroutine path, the next take the short one
        assert c.ping()["pong"] is True
        assert "trace-context" in c.welcome["features"]
        c.create_topic(topic, partitions=1)
        r = c.produce(topic, [b"a", b"b"])
        assert [x.offset for x in r] == [0, 1]
        assert c.echo(b"\x00x") == b"\x00x"  # the body after the extension is intact
    assert len(seen) >= 3


def test_async_client_and_a_malformed_traceparent(node: Node) -> None:
    async def run() -> None:
        # The server ignores a traceparent that does not parse (W3C); the call works.
        async with weft.AsyncClient(node.tcp, trace_context=lambda: "not-a-traceparent") as c:
            assert await c.echo({"k": 1}) == {"k": 1}
        async with weft.AsyncClient(node.tcp, trace_context=False) as c:
            assert c.trace_source is None
            assert await c.echo("x") == "x"

    asyncio.run(run())
