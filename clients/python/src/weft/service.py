"""Serve endpoints written in Python on Weft's native protocol (TCP, Unix
sockets, UDP), with the same frames, handshake and error DTOs as a Rust
``weft_service::Service``, so callers cannot tell the two apart.

    service = weft.Service("dice")

    @service.endpoint("roll")
    def roll(req: dict) -> int:
        if req["sides"] < 1:
            raise weft.Validation("sides must be at least 1", {"field": "sides"})
        return random.randint(1, req["sides"])

    service.run("tcp://127.0.0.1:7410")
"""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Union

from . import _frame as fr
from ._addr import parse_address
from .aio import PROTOCOL_VERSION
from .errors import BadBody, ServerError

Handler = Callable[[Any], Union[Any, Awaitable[Any]]]

__version__ = "0.1.0"


class _Stats:
    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.by_code: dict[str, int] = {}
        self.lat_us: list[int] = []

    def record(self, us: int, code: str | None) -> None:
        self.calls += 1
        if code is not None:
            self.errors += 1
            self.by_code[code] = self.by_code.get(code, 0) + 1
        self.lat_us.append(us)
        if len(self.lat_us) > 4096:  # keep the latest samples only: bounded memory
            del self.lat_us[:2048]


class Service:
    """A set of endpoints under route keys, plus the standard ``weft.ping``,
    ``weft.echo``, ``weft.info`` and ``weft.stats``."""

    def __init__(self, name: str, *, version: str = __version__, max_in_flight_per_conn: int = 256) -> None:
        self.name = name
        self.version = version
        self.id = str(uuid.uuid4())
        self.max_in_flight_per_conn = max_in_flight_per_conn
        self.max_frame_bytes = fr.MAX_FRAME_BYTES
        self._endpoints: dict[str, Handler] = {}
        self._stats: dict[str, _Stats] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._udp: list[asyncio.DatagramTransport] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = time.monotonic()
        self.transports: list[str] = []
        self._features: list[str] = []
        self._stop: asyncio.Event | None = None
        self.endpoint("weft.ping")(lambda _b: {"pong": True, "server_time_ms": int(time.time() * 1000)})
        self.endpoint("weft.info")(lambda _b: self._info())
        self.endpoint("weft.stats")(lambda _b: self._stats_map())

    def endpoint(self, route: str) -> Callable[[Handler], Handler]:
        """Register the decorated function (sync or async) under ``route``. It
        takes the decoded body and returns the answer; raising a
        :class:`weft.ServerError` subclass (``Validation``, ``NotFound``...)
        answers that code and details; any other exception is ``handler``."""
        if not route or len(route.encode()) > 255:
            raise ValueError("a route key is 1 to 255 bytes")

        def deco(fn: Handler) -> Handler:
            self._endpoints[route] = fn
            self._stats.setdefault(route, _Stats())
            return fn

        return deco

    @property
    def routes(self) -> list[str]:
        return sorted(set(self._endpoints) | {"weft.echo"})

    def _info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "id": self.id,
            "uptime_s": time.monotonic() - self._started,
            "transports": list(self.transports),
            "endpoints": self.routes,
        }

    def _stats_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for route, s in sorted(self._stats.items()):
            k = f"endpoint.{route}"
            out[f"{k}.calls"] = s.calls
            out[f"{k}.errors"] = s.errors
            for code, n in s.by_code.items():
                out[f"{k}.errors.{code}"] = n
            if s.lat_us:
                lat = sorted(s.lat_us)
                for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
                    out[f"{k}.latency_us.{name}"] = lat[min(len(lat) - 1, int(q * len(lat)))]
                out[f"{k}.latency_us.max"] = lat[-1]
        return out

    # ---- dispatch ---------------------------------------------------------------

    async def handle(self, f: fr.Frame) -> fr.Frame | None:
        """Answer one request frame (None for one-way requests and non-requests)."""
        if f.kind != fr.REQUEST:
            return None
        one_way = bool(f.flags & fr.FLAG_ONE_WAY)
        as_json = f.is_json
        t0 = time.perf_counter()
        code: str | None = None
        out: bytes
        kind = fr.RESPONSE
        if f.route == "weft.echo":
            self._stats.setdefault("weft.echo", _Stats())
            out = f.body  # byte for byte
        else:
            fn = self._endpoints.get(f.route)
            err: ServerError | None = None
            result: Any = None
            if fn is None:
                err = ServerError(f'no endpoint "{f.route}"', {"route": f.route}, code="unknown_route")
            else:
                try:
                    body = f.value()
                except Exception as e:  # undecodable body
                    err = BadBody(f"body does not decode: {e}")
                else:
                    try:
                        result = fn(body)
                        if inspect.isawaitable(result):
                            result = await result
                    except ServerError as e:
                        err = e
                    except Exception as e:
                        err = ServerError(f"{type(e).__name__}: {e}", code="handler")
                        if os.environ.get("WEFT_DEBUG"):
                            traceback.print_exc()
            if err is None:
                try:
                    out = fr.encode_body(result, as_json)
                except Exception as e:
                    err = ServerError(f"answer does not encode: {e}", code="handler")
            if err is not None:
                code = err.code
                kind = fr.ERROR
                out = fr.encode_body(err.to_dto(), as_json)
        s = self._stats.get(f.route)
        if s is not None:
            s.record(int((time.perf_counter() - t0) * 1e6), code)
        if one_way:
            return None
        return fr.Frame(kind, fr.FLAG_JSON if as_json else 0, f.id, f.route, out)

    def _welcome(self, f: fr.Frame) -> tuple[fr.Frame, bool]:
        as_json = f.is_json
        try:
            hello = f.value()
            version = hello.get("protocol_version") if isinstance(hello, dict) else None
        except Exception:
            version = None
        if version != PROTOCOL_VERSION:
            dto = {
                "code": "unsupported_version",
                "message": f"protocol version {version} not spoken here",
                "details": {"supported": [PROTOCOL_VERSION], "found": version},
            }
            return fr.Frame(fr.ERROR, f.flags & fr.FLAG_JSON, f.id, "hello", fr.encode_body(dto, as_json)), False
        w = {
            "protocol_version": PROTOCOL_VERSION,
            "server_id": self.id,
            "server_name": self.name,
            "version": self.version,
            "features": list(self._features),
        }
        return fr.Frame(fr.CONTROL, f.flags & fr.FLAG_JSON, f.id, "welcome", fr.encode_body(w, as_json)), True

    @staticmethod
    def _error(msg_id: bytes, route: str, code: str, message: str, details: Any = None) -> bytes:
        dto: dict[str, Any] = {"code": code, "message": message}
        if details is not None:
            dto["details"] = details
        return fr.encode(fr.ERROR, route, fr.encode_body(dto), msg_id)

    # ---- transports ---------------------------------------------------------------

    async def _serve_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        dec = fr.Decoder(self.max_frame_bytes)
        greeted = False
        slots = asyncio.Semaphore(self.max_in_flight_per_conn)
        tasks: set[asyncio.Task[None]] = set()

        async def run(f: fr.Frame) -> None:
            try:
                ans = await self.handle(f)
                if ans is not None and not writer.is_closing():
                    writer.write(fr.encode(ans.kind, ans.route, ans.body, ans.id, ans.flags))
            finally:
                slots.release()

        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                dec.feed(data)
                while True:
                    try:
                        f = dec.next()
                    except fr.FrameError as e:
                        writer.write(self._error(e.msg_id, "", e.code, str(e)))
                        if e.fatal:
                            await writer.drain()
                            return
                        continue
                    if f is None:
                        break
                    if f.kind == fr.CONTROL:
                        if f.route == "hello":
                            ans, greeted = self._welcome(f)
                            writer.write(fr.encode(ans.kind, ans.route, ans.body, ans.id, ans.flags))
                        continue
                    if f.kind != fr.REQUEST:
                        continue
                    if not greeted:
                        writer.write(self._error(f.id, f.route, "handshake_required", "send a hello control frame first"))
                        continue
                    await slots.acquire()  # at the limit: stop reading (back-pressure)
                    t = asyncio.get_running_loop().create_task(run(f))
                    tasks.add(t)
                    t.add_done_callback(tasks.discard)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._writers.discard(writer)
            writer.close()

    async def start(self, *addrs: str) -> list[str]:
        """Listen on each address (``tcp://``, ``unix://``, ``udp://``; port 0
        picks a free port). Returns the bound addresses."""
        bound: list[str] = []
        loop = asyncio.get_running_loop()
        for a in addrs or ("tcp://127.0.0.1:7410",):
            addr = parse_address(a) if not a.endswith(":0") else parse_address(a[:-2] + ":1")
            if addr.scheme == "tcp":
                port = 0 if a.endswith(":0") else addr.port
                srv = await asyncio.start_server(self._serve_stream, addr.host, port)
                self._servers.append(srv)
                host, p = srv.sockets[0].getsockname()[:2]
                bound.append(f"tcp://{host}:{p}")
            elif addr.scheme == "unix":
                if os.path.exists(addr.path):
                    os.unlink(addr.path)  # a stale socket file
                srv = await asyncio.start_unix_server(self._serve_stream, addr.path)
                self._servers.append(srv)
                bound.append(f"unix://{addr.path}")
            elif addr.scheme == "udp":
                port = 0 if a.endswith(":0") else addr.port
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _UdpServe(self), local_addr=(addr.host, port)
                )
                self._udp.append(transport)
                host, p = transport.get_extra_info("sockname")[:2]
                bound.append(f"udp://{host}:{p}")
            else:
                raise ValueError(f"{a}: a Python service serves tcp://, unix:// and udp://")
            scheme = addr.scheme
            if scheme not in self._features:
                self._features.append(scheme)
        self.transports += bound
        return bound

    async def stop(self) -> None:
        """Stop listening, let requests in flight finish, send ``goaway``, close."""
        for s in self._servers:
            s.close()
        for t in self._udp:
            t.close()
        for w in list(self._writers):
            if not w.is_closing():
                w.write(fr.encode(fr.CONTROL, "goaway", b"", fr.NIL_ID))
                try:
                    await asyncio.wait_for(w.drain(), 2)
                except (OSError, asyncio.TimeoutError):
                    pass
                w.close()
        for s in self._servers:
            try:
                await asyncio.wait_for(s.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
        self._servers.clear()
        self._udp.clear()

    async def serve(self, *addrs: str) -> None:
        """Listen and serve until SIGINT/SIGTERM (or :meth:`shutdown`)."""
        bound = await self.start(*addrs)
        for b in bound:
            print(f"{self.name}: listening on {b}", flush=True)
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self._stop.set)
            except (NotImplementedError, RuntimeError):
                pass
        await self._stop.wait()
        await self.stop()

    def shutdown(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def run(self, *addrs: str) -> None:
        """Blocking :meth:`serve`."""
        asyncio.run(self.serve(*addrs))


class _UdpServe(asyncio.DatagramProtocol):
    def __init__(self, service: Service) -> None:
        self.service = service
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            f = fr.decode_datagram(data)
        except fr.FrameError as e:
            self._send(Service._error(e.msg_id, "", e.code, str(e)), addr)
            return
        if f.kind == fr.CONTROL and f.route == "hello":
            ans, _ = self.service._welcome(f)
            self._send(fr.encode(ans.kind, ans.route, ans.body, ans.id, ans.flags), addr)
            return
        asyncio.get_running_loop().create_task(self._answer(f, addr))

    async def _answer(self, f: fr.Frame, addr: Any) -> None:
        ans = await self.service.handle(f)
        if ans is None:
            return
        data = fr.encode(ans.kind, ans.route, ans.body, ans.id, ans.flags)
        if len(data) > fr.MAX_DATAGRAM_BYTES:
            data = Service._error(f.id, f.route, "too_large", "answer does not fit in a datagram: use TCP or a Unix socket",
                                  {"len": len(data), "max": fr.MAX_DATAGRAM_BYTES})
        self._send(data, addr)

    def _send(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(data, addr)
