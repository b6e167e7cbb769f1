"""The asyncio client: one persistent multiplexed connection, reconnecting."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from . import _frame as fr
from ._addr import Address, Backoff, TlsOptions, client_id, parse_address
from ._trace import TraceSource, opentelemetry_source
from .errors import (
    ConnectionError,
    ConnectionLost,
    ProtocolError,
    ServerError,
    Timeout,
    Unauthorized,
    UnsupportedVersion,
    from_dto,
)

if TYPE_CHECKING:
    from .consumer import AsyncConsumer
from .types import FetchResult, Membership, ProduceResult, RecordLike, record_to_wire

DEFAULT_ADDR = "tcp://127.0.0.1:7400"
PROTOCOL_VERSION = 1


class _Conn:
    """One live connection (stream or UDP) and the calls waiting on it."""

    def __init__(self) -> None:
        self.pending: dict[bytes, asyncio.Future[fr.Frame]] = {}
        self.closed = False
        self.goaway = False
        self.welcome: dict[str, Any] = {}
        # The server takes a trace-context extension on requests (its welcome
        # lists the feature); frames to other servers never carry one.
        self.trace_ok = False
        # Compressed bodies were negotiated (hello asked, welcome lists
        # "compress-zstd"; docs/protocol.md, "Compression").
        self.compress_ok = False

    def usable(self) -> bool:
        return not self.closed and not self.goaway

    def send(self, data: bytes) -> None:
        raise NotImplementedError

    async def drain(self) -> None:
        return None

    def dispatch(self, f: fr.Frame) -> None:
        if f.kind == fr.CONTROL and f.route == "goaway":
            self.goaway = True
            return
        if f.kind == fr.ERROR and f.id == fr.NIL_ID:
            # About the connection, not a request (unauthorized, busy at
            # max_connections, handshake timeout): every waiting call gets it,
            # and the server closes the connection next.
            self.fail_all("", from_dto(f.value()))
            return
        fut = self.pending.pop(f.id, None)
        if fut is not None and not fut.done():
            fut.set_result(f)
        # Frames nobody waits for (late answers, events) are ignored.

    def fail_all(self, why: str, error: Exception | None = None) -> None:
        self.closed = True
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error if error is not None else ConnectionLost(why))

    def close(self) -> None:
        self.closed = True


class _StreamConn(_Conn):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__()
        self.reader = reader
        self.writer = writer
        self.decoder = fr.Decoder()
        self.task: asyncio.Task[None] | None = None

    def send(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionLost("connection closed")
        self.writer.write(data)

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (OSError, RuntimeError) as e:
            self.fail_all(f"write failed: {e}")
            raise ConnectionLost(f"write failed: {e}") from None

    async def read_loop(self) -> None:
        why = "connection closed by the server"
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self.decoder.feed(data)
                while (f := self.decoder.next()) is not None:
                    self.dispatch(f)
        except fr.FrameError as e:
            why = f"bad frame from the server: {e}"
        except (OSError, asyncio.IncompleteReadError) as e:
            why = f"connection lost: {e}"
        finally:
            self.fail_all(why)
            self.writer.close()

    def close(self) -> None:
        super().close()
        self.writer.close()
        if self.task is not None:
            self.task.cancel()


class _UdpProto(asyncio.DatagramProtocol):
    def __init__(self, conn: _UdpConn) -> None:
        self.conn = conn

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            f = fr.decode_datagram(data)
        except fr.FrameError:
            return
        self.conn.dispatch(f)

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable: the calls time out; UDP has no connection to lose


class _UdpConn(_Conn):
    def __init__(self) -> None:
        super().__init__()
        self.transport: asyncio.DatagramTransport | None = None

    def send(self, data: bytes) -> None:
        if len(data) > fr.MAX_DATAGRAM_BYTES:
            raise ValueError(f"request of {len(data)} bytes does not fit in a datagram; use TCP or a Unix socket")
        assert self.transport is not None
        self.transport.sendto(data)

    def close(self) -> None:
        super().close()
        if self.transport is not None:
            self.transport.close()


class AsyncClient:
    """Weft's native protocol over TCP, Unix sockets, TLS or UDP, on asyncio.

    Connects lazily on the first call (or ``await client.connect()``), keeps one
    connection with any number of calls in flight, and reconnects with
    exponential back-off after a drop or a ``goaway``. A call that was on the
    wire when the connection dropped raises :class:`ConnectionLost` and is not
    resent. A request carries the caller's W3C trace context (the current
    OpenTelemetry span by default, ``trace_context=``) when the server's
    welcome lists ``trace-context``. ``token=`` (default: the ``WEFT_TOKEN``
    environment variable) is a bearer token or API key sent in the hello, for
    a node with auth on (docs/security.md). ``compression="zstd"`` (needs the
    optional ``zstandard`` package) asks for compressed bodies: on stream
    connections whose welcome lists ``compress-zstd``, requests of at least
    1024 bytes go compressed and compressed answers are read
    (docs/protocol.md, "Compression"). Not there yet: cluster leader
    redirects.
    """

    def __init__(
        self,
        addr: str = DEFAULT_ADDR,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        tls: TlsOptions | None = None,
        client_name: str = "weft-python",
        json: bool = False,
        trace_context: TraceSource | None | bool = True,
        token: str | None = None,
        compression: str | None = None,
    ) -> None:
        self.address: Address = parse_address(addr)
        # "zstd": ask for compressed bodies (needs the zstandard package).
        if compression not in (None, "zstd"):
            raise ValueError(f"unknown compression {compression!r} (supported: 'zstd')")
        if compression is not None and not fr.zstd_available():
            raise ValueError("compression='zstd' needs the zstandard package (pip install zstandard)")
        self.compression = compression
        self.token = token if token is not None else (os.environ.get("WEFT_TOKEN", "").strip() or None)
        # True: the OpenTelemetry current span when the package is installed;
        # a callable: its answer; False/None: never send trace context.
        if trace_context is True:
            self.trace_source: TraceSource | None = opentelemetry_source()
        elif trace_context is False:
            self.trace_source = None
        else:
            self.trace_source = trace_context
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.tls = tls or TlsOptions()
        self.client_name = client_name
        self.json = json
        self.client_id = client_id()
        self._conn: _Conn | None = None
        self._lock: asyncio.Lock | None = None
        self._backoff = Backoff()
        self._closed = False

    # ---- connection -------------------------------------------------------

    @property
    def welcome(self) -> dict[str, Any]:
        """The server's ``welcome`` of the current connection (empty before)."""
        return self._conn.welcome if self._conn else {}

    @property
    def connected(self) -> bool:
        """True while a connection is up and usable (no drop or goaway seen)."""
        return self._conn is not None and self._conn.usable()

    async def connect(self) -> dict[str, Any]:
        """Connect now (else the first call does). Returns the welcome."""
        loop = asyncio.get_running_loop()
        conn = await self._connected(loop.time() + self.connect_timeout)
        return conn.welcome

    async def close(self) -> None:
        self._closed = True
        if self._conn is not None:
            self._conn.close()
            self._conn.fail_all("client closed")
            self._conn = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connected(self, deadline: float) -> _Conn:
        if self._closed:
            raise ConnectionError("client is closed")
        conn = self._conn
        if conn is not None and conn.usable():
            return conn
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            conn = self._conn
            if conn is not None and conn.usable():
                return conn
            loop = asyncio.get_running_loop()
            last: Exception | None = None
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ConnectionError(f"cannot connect to {self.address}: {last or 'timed out'}")
                try:
                    conn = await asyncio.wait_for(self._open(), min(remaining, self.connect_timeout))
                    self._backoff.reset()
                    self._conn = conn
                    return conn
                except (Unauthorized, UnsupportedVersion, ProtocolError):
                    raise  # retrying cannot help
                except ServerError as e:  # busy (max_connections), timeout...: retry with back-off
                    last = e
                except (OSError, asyncio.TimeoutError, ConnectionError) as e:
                    last = e
                delay = self._backoff.next_delay()
                if loop.time() + delay >= deadline:
                    raise ConnectionError(f"cannot connect to {self.address}: {last}")
                await asyncio.sleep(delay)

    async def _open(self) -> _Conn:
        a = self.address
        conn: _Conn
        if a.scheme == "udp":
            loop = asyncio.get_running_loop()
            u = _UdpConn()
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProto(u), remote_addr=(a.host, a.port))
            u.transport = transport
            conn = u
        else:
            if a.scheme == "unix":
                reader, writer = await asyncio.open_unix_connection(a.path)
            elif a.scheme == "tls":
                reader, writer = await asyncio.open_connection(
                    a.host, a.port, ssl=self.tls.context(), server_hostname=self.tls.server_name or a.host
                )
            else:
                reader, writer = await asyncio.open_connection(a.host, a.port)
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s = _StreamConn(reader, writer)
            s.task = asyncio.get_running_loop().create_task(s.read_loop())
            conn = s
        try:
            await self._hello(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    async def _hello(self, conn: _Conn) -> None:
        msg_id = fr.new_id()
        fut: asyncio.Future[fr.Frame] = asyncio.get_running_loop().create_future()
        conn.pending[msg_id] = fut
        hello: dict[str, Any] = {"protocol_version": PROTOCOL_VERSION, "client_id": self.client_id, "client_name": self.client_name}
        if self.token:
            hello["token"] = self.token
        if self.compression is not None and isinstance(conn, _StreamConn):
            hello["compression"] = [self.compression]
        conn.send(fr.encode(fr.CONTROL, "hello", fr.encode_body(hello), msg_id))
        await conn.drain()
        f = await fut
        if f.kind == fr.ERROR:
            raise from_dto(f.value(), "hello")
        w = f.value()
        if f.kind != fr.CONTROL or f.route != "welcome" or not isinstance(w, dict):
            raise ProtocolError(f"expected a welcome, got kind {f.kind} route {f.route!r}")
        if w.get("protocol_version") != PROTOCOL_VERSION:
            raise ProtocolError(f"server speaks protocol version {w.get('protocol_version')}, this client {PROTOCOL_VERSION}")
        conn.welcome = w
        features = w.get("features")
        conn.trace_ok = isinstance(features, list) and "trace-context" in features
        conn.compress_ok = (
            self.compression is not None and isinstance(conn, _StreamConn)
            and isinstance(features, list) and "compress-zstd" in features
        )

    # ---- calls ------------------------------------------------------------

    async def call(self, route: str, body: Any = None, *, timeout: float | None = None, json: bool | None = None) -> Any:
        """Call any endpoint; returns the decoded answer, raises the typed error."""
        f = await self.call_frame(route, fr.encode_body(body, self.json if json is None else json),
                                  json=self.json if json is None else json, timeout=timeout)
        if f.kind == fr.ERROR:
            raise from_dto(f.value(), route)
        return f.value()

    async def call_frame(
        self, route: str, body: bytes, *, json: bool = False, timeout: float | None = None, traceparent: str | None = None
    ) -> fr.Frame:
        """Send a request with an already encoded body; returns the answer frame.
        ``traceparent`` overrides the client's trace source for this call."""
        if traceparent is None and self.trace_source is not None:
            traceparent = self.trace_source()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        conn = await self._connected(deadline)
        msg_id = fr.new_id()
        fut: asyncio.Future[fr.Frame] = loop.create_future()
        conn.pending[msg_id] = fut
        # A timer on the future rather than asyncio.wait_for: the same deadline
        # for a fraction of the per-call cost (no waiter future and callbacks).
        timer = loop.call_at(max(deadline, loop.time() + 0.001), _expire, fut, route, self.address)
        try:
            tp = traceparent if conn.trace_ok else None
            flags = fr.FLAG_JSON if json else 0
            if conn.compress_ok and len(body) >= fr.COMPRESS_MIN_BYTES:
                packed = fr.compress(body)
                if packed is not None:
                    body, flags = packed, flags | fr.FLAG_COMPRESSED
            conn.send(fr.encode(fr.REQUEST, route, body, msg_id, flags, tp))
            await conn.drain()
            answer = await fut
            if answer.flags & fr.FLAG_COMPRESSED:
                if not conn.compress_ok:
                    raise ProtocolError("compressed answer on a connection that did not negotiate compression")
                try:
                    answer = fr.decompress(answer)
                except fr.FrameError as e:
                    raise ProtocolError(f"bad compressed answer: {e}") from None
            return answer
        finally:
            timer.cancel()
            conn.pending.pop(msg_id, None)

    async def send(self, route: str, body: Any = None) -> None:
        """A one-way request: no answer, no error report."""
        loop = asyncio.get_running_loop()
        conn = await self._connected(loop.time() + self.timeout)
        flags = fr.FLAG_ONE_WAY | (fr.FLAG_JSON if self.json else 0)
        conn.send(fr.encode(fr.REQUEST, route, fr.encode_body(body, self.json), fr.new_id(), flags))
        await conn.drain()

    # ---- standard endpoints ----------------------------------------------

    async def ping(self) -> dict[str, Any]:
        return dict(await self.call("weft.ping"))

    async def echo(self, value: Any) -> Any:
        return await self.call("weft.echo", value)

    async def info(self) -> dict[str, Any]:
        return dict(await self.call("weft.info"))

    async def stats(self) -> dict[str, Any]:
        return dict(await self.call("weft.stats"))

    async def liveness(self) -> list[dict[str, Any]]:
        return list(await self.call("weft.liveness"))

    # ---- the log ------------------------------------------------------------

    async def create_topic(self, name: str, *, partitions: int | None = None, **config: Any) -> dict[str, Any]:
        """``config`` takes any of retention_ms, retention_bytes, max_record_bytes,
        segment_bytes, segment_ms, cleanup ("delete"/"compact"), delete_retention_ms."""
        if partitions is not None:
            config["partitions"] = partitions
        return dict(await self.call("log.topic.create", {"name": name, "config": config or None}))

    async def topics(self) -> list[str]:
        return list(await self.call("log.topic.list"))

    async def describe_topic(self, name: str) -> dict[str, Any]:
        return dict(await self.call("log.topic.describe", {"name": name}))

    async def delete_topic(self, name: str) -> bool:
        return bool((await self.call("log.topic.delete", {"name": name}))["ok"])

    async def alter_topic(self, name: str, **changes: Any) -> dict[str, Any]:
        """Absent fields stay unchanged; a negative retention means no limit."""
        return dict(await self.call("log.topic.alter", {"name": name, **changes}))

    async def produce(self, topic: str, records: Sequence[RecordLike]) -> list[ProduceResult]:
        """Append records; one result per record, in order (an error per record,
        not an exception, when only some fail)."""
        r = await self.call("log.produce", {"topic": topic, "records": [record_to_wire(x) for x in records]})
        return [ProduceResult.from_wire(x) for x in r["results"]]

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_bytes: int | None = None,
        max_records: int | None = None,
        wait_ms: int | None = None,
        reset: str | None = None,
        member: Membership | None = None,
        timeout: float | None = None,
    ) -> FetchResult:
        """``reset`` ("earliest", "latest", "none"): where to read when ``offset``
        is outside the log, instead of :class:`OutOfRange` (the result's
        ``reset_from`` then names the offset asked for). ``member``: fetch as
        that group member (``log.group.fetch``), fenced like a commit: a member
        that was expired or rebalanced away gets :class:`NotFound` /
        :class:`Conflict` instead of records."""
        body: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
        if reset is not None:
            body["reset"] = reset
        if max_bytes is not None:
            body["max_bytes"] = max_bytes
        if max_records is not None:
            body["max_records"] = max_records
        if wait_ms is not None:
            body["wait_ms"] = wait_ms
            if timeout is None:
                timeout = self.timeout + wait_ms / 1000
        if member is not None:
            fenced = {"group": member.group, "member_id": member.member_id, "generation": member.generation, "fetch": body}
            return FetchResult.from_wire(await self.call("log.group.fetch", fenced, timeout=timeout))
        return FetchResult.from_wire(await self.call("log.fetch", body, timeout=timeout))

    async def offsets(self, topic: str, partition: int, spec: str | int = "latest") -> int:
        """``spec``: "earliest", "latest", or a timestamp in ms (first offset at or after it)."""
        s: Any = {"timestamp": spec} if isinstance(spec, int) else spec
        return int((await self.call("log.offsets", {"topic": topic, "partition": partition, "spec": s}))["offset"])

    async def join_group(
        self,
        group: str,
        topics: Sequence[str],
        *,
        member_id: str | None = None,
        strategy: str | None = None,
        session_timeout_ms: int | None = None,
    ) -> Membership:
        body: dict[str, Any] = {"group": group, "client_id": self.client_id, "topics": list(topics), "member_id": member_id}
        if strategy is not None:
            body["strategy"] = strategy
        if session_timeout_ms is not None:
            body["session_timeout_ms"] = session_timeout_ms
        return Membership.from_wire(await self.call("log.group.join", body))

    async def heartbeat(self, group: str, member_id: str, generation: int | None = None) -> Membership:
        """Keep the member alive. ``generation``: the one this member has adopted
        (it stopped reading and committed the partitions it lost), which hands
        those partitions to their new owners; absent counts as adopted."""
        body: dict[str, Any] = {"group": group, "member_id": member_id}
        if generation is not None:
            body["generation"] = generation
        return Membership.from_wire(await self.call("log.group.heartbeat", body))

    async def leave_group(self, group: str, member_id: str) -> bool:
        return bool((await self.call("log.group.leave", {"group": group, "member_id": member_id}))["ok"])

    async def commit(
        self,
        group: str,
        offsets: Mapping[tuple[str, int], int],
        *,
        member_id: str | None = None,
        generation: int | None = None,
        metadata: str = "",
    ) -> bool:
        """Commit ``{(topic, partition): next offset to read}``. Members pass their
        id and generation (a stale generation is :class:`Conflict`)."""
        body = {
            "group": group,
            "member_id": member_id,
            "generation": generation,
            "offsets": [{"topic": t, "partition": p, "offset": o, "metadata": metadata} for (t, p), o in offsets.items()],
        }
        return bool((await self.call("log.group.commit", body))["ok"])

    async def committed(self, group: str, topic: str, partition: int) -> int | None:
        r = await self.call("log.group.committed", {"group": group, "topic": topic, "partition": partition})
        o = r.get("offset")
        return None if o is None else int(o)

    async def start_offset(self, group: str, topic: str, partition: int, reset: str = "earliest") -> tuple[int, int | None]:
        """Where a member of ``group`` starts on a partition: the committed offset
        when it is inside the log, else the reset policy's (``none`` without a
        usable commit: :class:`OutOfRange`). Returns ``(start, committed)``."""
        body = {"group": group, "topic": topic, "partition": partition, "reset": reset}
        r = await self.call("log.group.committed", body)
        o = r.get("offset")
        return int(r["start"]), None if o is None else int(o)

    async def groups(self) -> list[dict[str, Any]]:
        return list(await self.call("log.group.list"))

    async def describe_group(self, group: str) -> dict[str, Any]:
        return dict(await self.call("log.group.describe", {"group": group}))

    def consumer(self, group: str, topics: Sequence[str], **options: Any) -> AsyncConsumer:
        """A consumer group member: ``async for record in client.consumer(...)``."""
        from .consumer import AsyncConsumer

        return AsyncConsumer(self, group, topics, **options)

    # ---- queued endpoints and senders (docs/queues.md) -----------------------

    async def queues(self, kind: str = "queue") -> list[dict[str, Any]]:
        """Every queued endpoint (``kind="queue"``) or queued sender (``"sender"``)."""
        return list(await self.call(f"weft.{_kind(kind)}.ls"))

    async def queue_show(self, name: str, kind: str = "queue") -> dict[str, Any]:
        return dict(await self.call(f"weft.{_kind(kind)}.show", {"name": name}))

    async def queue_pause(self, name: str, what: str = "all", kind: str = "queue") -> dict[str, Any]:
        return dict(await self.call(f"weft.{_kind(kind)}.pause", {"name": name, "what": what}))

    async def queue_resume(self, name: str, what: str = "all", kind: str = "queue") -> dict[str, Any]:
        return dict(await self.call(f"weft.{_kind(kind)}.resume", {"name": name, "what": what}))

    async def queue_errors(self, name: str, n: int = 10, kind: str = "queue") -> list[str]:
        return list(await self.call(f"weft.{_kind(kind)}.errors", {"name": name, "n": n}))

    async def queue_inspect(self, name: str, uid: str, kind: str = "queue") -> dict[str, Any]:
        return dict(await self.call(f"weft.{_kind(kind)}.inspect", {"name": name, "uid": uid}))

    async def queue_pop(self, name: str, uid: str, kind: str = "queue") -> dict[str, Any]:
        return dict(await self.call(f"weft.{_kind(kind)}.pop", {"name": name, "uid": uid}))

    async def queue_reprocess(self, name: str, uid: str | None = None, kind: str = "queue") -> int:
        return int((await self.call(f"weft.{_kind(kind)}.reprocess", {"name": name, "uid": uid}))["count"])

    async def queue_clear(self, name: str, kind: str = "queue") -> int:
        return int((await self.call(f"weft.{_kind(kind)}.clear", {"name": name}))["count"])

    async def stats_current(self) -> dict[str, Any]:
        return dict(await self.call("weft.stats.current"))

    async def stats_gathered(self) -> dict[str, Any] | None:
        r = await self.call("weft.stats.gathered")
        return None if r is None else dict(r)

    async def stats_full(self) -> list[dict[str, Any]]:
        return list(await self.call("weft.stats.full"))

    async def errors(self) -> list[dict[str, Any]]:
        return list(await self.call("weft.errors.get"))

    async def errors_clear(self, error_id: str | None = None, count: int = 0) -> list[dict[str, Any]]:
        return list(await self.call("weft.errors.clear", {"error_id": error_id, "count": count}))


def _expire(fut: asyncio.Future[fr.Frame], route: str, address: object) -> None:
    if not fut.done():
        fut.set_exception(Timeout(f"no answer to {route} from {address} in time"))


def _kind(kind: str) -> str:
    if kind not in ("queue", "sender"):
        raise ValueError(f"kind must be 'queue' or 'sender', not {kind!r}")
    return kind



