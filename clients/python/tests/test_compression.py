"""Compressed bodies on the native protocol (docs/protocol.md, "Compression")
against a real `weft serve`: a client with ``compression="zstd"`` sends and
reads compressed bodies over the threshold (the server's counters move),
small bodies stay plain, and a client without the option sees plain frames."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import Node

import weft
from weft import _frame as fr

zstandard = pytest.importorskip("zstandard")


def counters(node: Node) -> tuple[int, int]:
    # Read by a client without compression: a stats answer is big enough to
    # be compressed itself toward one with it.
    with weft.Client(node.tcp) as plain:
        s = plain.stats()
    return int(s["net.compressed_in"]), int(s["net.compressed_out"])


def test_large_echo_round_trips_compressed_both_ways(node: Node) -> None:
    big = "all work and no play " * 500
    with weft.Client(node.tcp, compression="zstd") as c:
        assert c.ping()["pong"] is True
        assert "compress-zstd" in c.welcome["features"]
        before = counters(node)
        assert c.echo(big) == big
        after = counters(node)
        assert after == (before[0] + 1, before[1] + 1)
        with weft.Client(node.tcp) as plain:
            s = plain.stats()
        assert int(s["net.compressed_in.saved_bytes"]) > 5000
        assert int(s["net.compressed_out.saved_bytes"]) > 5000
        # Small bodies stay plain both ways.
        assert c.echo("hi") == "hi"
        assert counters(node) == after


def test_async_client_reads_compressed_answers_and_plain_clients_see_plain_frames(node: Node) -> None:
    big = b"0123456789abcdef" * 1000

    async def run() -> None:
        async with weft.AsyncClient(node.tcp, compression="zstd") as c:
            await c.connect()
            before = await asyncio.to_thread(counters, node)
            f = await c.call_frame("weft.echo", fr.encode_body(big))
            # call_frame hands back the inflated frame
            assert not f.flags & fr.FLAG_COMPRESSED and f.value() == big
            after = await asyncio.to_thread(counters, node)
            assert after == (before[0] + 1, before[1] + 1)
        async with weft.AsyncClient(node.tcp) as plain:
            before_plain = await plain.stats()
            seen: list[int] = []
            conn_frame = await plain.call_frame("weft.echo", fr.encode_body(big))
            seen.append(conn_frame.flags)
            assert conn_frame.value() == big
            after_plain = await plain.stats()
            assert int(after_plain["net.compressed_in"]) == int(before_plain["net.compressed_in"])
            assert int(after_plain["net.compressed_out"]) == int(before_plain["net.compressed_out"])
            assert all(not fl & fr.FLAG_COMPRESSED for fl in seen)

    asyncio.run(run())


def test_decompress_refuses_bombs_and_garbage() -> None:
    bomb = zstandard.ZstdCompressor(write_content_size=True).compress(b"\0" * (fr.MAX_FRAME_BYTES + 1))
    f = fr.Frame(fr.RESPONSE, fr.FLAG_COMPRESSED, fr.NIL_ID, "weft.echo", bomb)
    with pytest.raises(fr.FrameError) as e:
        fr.decompress(f)
    assert e.value.code == "too_large"
    junk = fr.Frame(fr.RESPONSE, fr.FLAG_COMPRESSED, fr.NIL_ID, "weft.echo", b"not zstd")
    with pytest.raises(fr.FrameError) as e2:
        fr.decompress(junk)
    assert e2.value.code == "bad_frame"
    plain: Any = fr.Frame(fr.RESPONSE, 0, fr.NIL_ID, "weft.echo", b"x")
    assert fr.decompress(plain) is plain
