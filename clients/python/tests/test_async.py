"""The asyncio client: calls, concurrency, errors, the async consumer, reconnect."""

from __future__ import annotations

import asyncio

import pytest
from conftest import Node, unique

import weft


@pytest.mark.parametrize("transport", ["tcp", "unix", "udp", "tls"])
async def test_async_calls(node: Node, transport: str) -> None:
    tls = node.tls_options() if transport == "tls" else None
    async with weft.AsyncClient(getattr(node, transport), tls=tls) as c:
        assert (await c.ping())["pong"] is True
        got = await asyncio.gather(*(c.echo(i) for i in range(200)))
        assert got == list(range(200))
        assert "weft.echo" in (await c.info())["endpoints"]
        assert (await c.stats())["endpoint.weft.echo.calls"] >= 200
        with pytest.raises(weft.UnknownRoute):
            await c.call("nope")


async def test_async_log_and_consumer(node: Node) -> None:
    t, g = unique("atopic"), unique("agroup")
    async with weft.AsyncClient(node.tcp) as c:
        await c.create_topic(t, partitions=3)
        res = await c.produce(t, [(f"k{i}", f"v{i}") for i in range(9)])
        assert all(r.ok for r in res)
        got: list[bytes] = []
        async with c.consumer(g, [t], auto_offset_reset="earliest", consumer_timeout_ms=1500) as consumer:
            async for rec in consumer:
                got.append(rec.value or b"")
        assert sorted(got) == sorted(f"v{i}".encode() for i in range(9))
        assert sum([(await c.committed(g, t, p)) or 0 for p in range(3)]) == 9
        with pytest.raises(weft.NotFound):
            await c.fetch(unique("none"), 0, 0)


async def test_async_timeout(node: Node) -> None:
    t = unique("slow")
    async with weft.AsyncClient(node.tcp) as c:
        await c.create_topic(t)
        with pytest.raises(weft.Timeout):
            await c.fetch(t, 0, 0, wait_ms=5000, timeout=0.3)
        assert (await c.ping())["pong"]  # the late answer is dropped, the connection carries on
