"""A Weft native-protocol client over QUIC with aioquic, written from
docs/protocol.md: ALPN weft/1, hello on the first bidirectional stream
(stream 0), then each request on its own bidirectional stream, the send
side finished after the frame; the answer is read to the end of the stream.
JSON bodies (flag 0x01).

usage: weft_quic_client.py HOST PORT CA_PEM [CERT_PEM KEY_PEM]
Prints one JSON object: {"welcome", "echo", "ping", "whoami", "streams"} or
{"refused": "reason"}.
"""
import asyncio
import json
import struct
import sys
import uuid

from aioquic.asyncio import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamDataReceived

HEADER = struct.Struct(">2sBBBBI16s")
REQUEST, RESPONSE, ERROR, CONTROL = 1, 2, 3, 5
JSON_FLAG = 0x01


def frame(kind, route, body):
    mid = uuid.uuid4().bytes
    r = route.encode()
    b = json.dumps(body).encode()
    return mid, HEADER.pack(b"WF", 1, kind, JSON_FLAG, len(r), len(b), mid) + r + b


def parse(data):
    magic, version, kind, flags, rlen, blen, mid = HEADER.unpack_from(data)
    assert magic == b"WF" and version == 1
    route = data[HEADER.size:HEADER.size + rlen].decode()
    body = data[HEADER.size + rlen:HEADER.size + rlen + blen]
    assert len(body) == blen, "truncated answer"
    return kind, route, mid, json.loads(body) if flags & JSON_FLAG and body else body.hex()


class WeftQuic(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.pending = {}
        self.used = []

    def quic_event_received(self, event):
        if isinstance(event, StreamDataReceived) and event.stream_id in self.pending:
            buf, fut = self.pending[event.stream_id]
            buf.extend(event.data)
            if event.end_stream and not fut.done():
                fut.set_result(bytes(buf))
        elif isinstance(event, ConnectionTerminated):
            for _, fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError(f"connection closed: {event.error_code} {event.reason_phrase}"))

    async def exchange(self, data):
        sid = self._quic.get_next_available_stream_id()
        self.used.append(sid)
        fut = asyncio.get_running_loop().create_future()
        self.pending[sid] = (bytearray(), fut)
        self._quic.send_stream_data(sid, data, end_stream=True)
        self.transmit()
        return parse(await asyncio.wait_for(fut, 10))

    async def call(self, route, body):
        mid, data = frame(REQUEST, route, body)
        kind, _, got, value = await self.exchange(data)
        assert got == mid
        if kind == ERROR:
            raise RuntimeError(f"server error: {value}")
        return value


async def main():
    host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    config = QuicConfiguration(is_client=True, alpn_protocols=["weft/1"], server_name="localhost")
    config.load_verify_locations(ca)
    if len(sys.argv) > 5:
        config.load_cert_chain(sys.argv[4], sys.argv[5])
    out = {}
    try:
        async with connect(host, port, configuration=config, create_protocol=WeftQuic, wait_connected=True) as c:
            mid, hello = frame(CONTROL, "hello", {"protocol_version": 1, "client_id": "python-aioquic", "client_name": "py"})
            kind, route, got, welcome = await c.exchange(hello)
            if kind != CONTROL or route != "welcome" or got != mid:
                raise RuntimeError(f"expected welcome, got kind {kind} route {route}: {welcome}")
            out["welcome"] = welcome
            out["echo"] = await c.call("weft.echo", {"text": "hi from aioquic"})
            out["ping"] = await c.call("weft.ping", None)
            out["whoami"] = await c.call("whoami", None)
            # Concurrent requests, each on its own stream.
            answers = await asyncio.gather(*(c.call("weft.echo", i) for i in range(10)))
            out["concurrent"] = answers
            out["streams"] = c.used
    except (ConnectionError, RuntimeError, asyncio.TimeoutError, OSError) as e:
        out = {"refused": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


asyncio.run(main())
