"""The asyncio client: one persistent multiplexed connection, reconnecting."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from . import _frame as fr
from ._addr import Address, Backoff, TlsOptions, client_id, parse_address
from ._leaders import NODE_BOUND_ROUTES, PARTITION_ROUTES, LeaderCache
from ._trace import TraceSource, opentelemetry_source
from .errors import (
    ConnectionError,
    ConnectionLost,
    NotLeader,
    ProtocolError,
    ServerError,
    Timeout,
    Unauthorized,
    UnknownRoute,
    UnsupportedVersion,
    from_dto,
)
from .query import QueryMixin

if TYPE_CHECKING:
    from .consumer import AsyncConsumer
from .types import FetchResult, Membership, ProduceResult, RecordLike, record_to_wire

DEFAULT_ADDR = "tcp://127.0.0.1:7400"
PROTOCOL_VERSION = 1
#: Leader addresses kept with an open connection; the least recently used
#: one is closed past this.
MAX_LEADER_CONNECTIONS = 8
#: Least time between two ``cluster.status`` lookups of the leader cache.
LEADER_REFRESH_S = 1.0
#: ``on`` while the synchronous client runs one of this client's coroutines
#: on the caller's own thread (``Client._drive``).
_DRIVEN = threading.local()


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


class AsyncClient(QueryMixin):
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
    (docs/protocol.md, "Compression").

    Cluster mode (``follow_leader=True``, the default): a request for one
    partition (``log.produce``, ``log.fetch``, ``log.offsets``) goes to that
    partition's raft leader when the leader cache knows it (filled from
    ``cluster.status`` and from ``not_leader`` answers), over one connection
    per leader address (at most ``MAX_LEADER_CONNECTIONS``). A ``not_leader``
    answer (the server did not run the request) is retried, at most
    ``max_redirects`` times within the call's timeout: at the leader it names,
    or after a short back-off at this client's address when it names none. A
    leader that cannot be reached is forgotten and the request goes to this
    client's address. ``follow_leader=False``: every request goes to ``addr``
    and ``not_leader`` is raised as :class:`NotLeader`.
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
        follow_leader: bool = True,
        max_redirects: int = 3,
    ) -> None:
        self.address: Address = parse_address(addr)
        if max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")
        self.follow_leader = follow_leader
        self.max_redirects = max_redirects
        self._leaders = LeaderCache()
        self._peers: OrderedDict[str, AsyncClient] = OrderedDict()
        # None: not asked yet; False: not a cluster node (or not allowed to
        # read cluster.status): routing then only follows not_leader answers.
        self._cluster: bool | None = None
        self._status_at: float | None = None
        self._stale = False
        self._refresh_lock: asyncio.Lock | None = None
        # Leader connections try once and fail fast: the caller falls back
        # to its own address instead of waiting for a dead leader.
        self._fail_fast = False
        #: Requests answered by a leader other than ``addr`` (routed or redirected).
        self.leader_calls = 0
        #: ``not_leader`` answers followed (retried at a leader or after back-off).
        self.redirects = 0
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
        # Set by the synchronous Client that owns this client: calls made by
        # coroutines it drives on its caller's thread go there (blocking).
        self._sync_call: Callable[..., Any] | None = None

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
        peers, self._peers = list(self._peers.values()), OrderedDict()
        for p in peers:
            await p.close()
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
                if self._fail_fast:
                    raise ConnectionError(f"cannot connect to {self.address}: {last}")
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
        if self._sync_call is not None and getattr(_DRIVEN, "on", False):
            return self._sync_call(route, body, timeout=timeout, json=json)
        j = self.json if json is None else json
        encoded = fr.encode_body(body, j)
        if self._routing_needed(route, body):
            return await self._call_routed(route, body, encoded, j, timeout)
        t0 = asyncio.get_running_loop().time()
        f = await self.call_frame(route, encoded, json=j, timeout=timeout)
        if f.kind == fr.ERROR:
            err = from_dto(f.value(), route)
            if self.follow_leader and isinstance(err, NotLeader):
                # Not run there: retried in what is left of the timeout.
                left = (self.timeout if timeout is None else timeout) - (asyncio.get_running_loop().time() - t0)
                return await self._call_routed(route, body, encoded, j, max(left, 0.0), f)
            raise err
        return f.value()

    # ---- cluster leaders -----------------------------------------------------

    @property
    def leader_cache(self) -> dict[tuple[str, int], str]:
        """What the client knows: ``{(topic, partition): leader's address}``."""
        return self._leaders.snapshot()

    def _routing_needed(self, route: str, body: Any) -> bool:
        """Whether a request should take the routed path (the synchronous
        client's fast path serves the rest): a cluster lookup is due or a
        leader other than ``addr`` is known for its partition."""
        if not self.follow_leader or route not in PARTITION_ROUTES:
            return False
        if self._cluster is False and not self._leaders.leaders:
            return False  # a single node that never redirected: the fast path, no record scan
        tp = self._leaders.partition_of(route, body)
        if tp is not None and self._leaders.leader_for(tp) is not None:
            return True
        return self._refresh_due(body, tp)

    def _refresh_due(self, body: Any, tp: tuple[str, int] | None) -> bool:
        """A cluster.status lookup is wanted: never done, a failure since, or
        a topic (partition) the cache does not know."""
        if self._cluster is False:
            return False
        if self._status_at is None or self._stale:
            return True
        if tp is None:
            return isinstance(body, dict) and body.get("topic") not in self._leaders.partitions
        return tp not in self._leaders.groups

    async def refresh_leaders(self, timeout: float | None = None) -> dict[tuple[str, int], str]:
        """Read ``cluster.status`` at ``addr`` into the leader cache now.
        Returns the cache; a node without cluster mode leaves it empty."""
        loop = asyncio.get_running_loop()
        self._status_at = loop.time()
        try:
            conn = await self._connected(loop.time() + (self.connect_timeout if timeout is None else timeout))
        except (Timeout, ConnectionError):
            return self.leader_cache
        features = conn.welcome.get("features")
        if isinstance(features, list) and "cluster" not in features:
            self._cluster = False  # the welcome says: not in cluster mode (docs/protocol.md)
            return self.leader_cache
        try:
            status = await self.call_frame("cluster.status", fr.encode_body(None), timeout=timeout)
        except (Timeout, ConnectionError):
            return self.leader_cache
        if status.kind == fr.ERROR:
            err = from_dto(status.value(), "cluster.status")
            if isinstance(err, (UnknownRoute, Unauthorized)):
                self._cluster = False  # a single node, or a token without the right: not_leader answers only
            return self.leader_cache
        self._cluster = True
        self._stale = False
        self._leaders.learn_status(status.value())
        return self.leader_cache

    async def _maybe_refresh(self, route: str, body: Any, deadline: float) -> None:
        if route not in PARTITION_ROUTES or not self._refresh_due(body, self._leaders.partition_of(route, body)):
            return
        loop = asyncio.get_running_loop()
        if self._refresh_lock is None:
            self._refresh_lock = asyncio.Lock()
        async with self._refresh_lock:
            # Concurrent calls share one lookup per LEADER_REFRESH_S.
            if self._status_at is not None and loop.time() - self._status_at < LEADER_REFRESH_S:
                return
            remaining = deadline - loop.time()
            if remaining > 0:
                await self.refresh_leaders(timeout=min(remaining, self.connect_timeout))

    def _peer(self, addr: str) -> AsyncClient:
        p = self._peers.get(addr)
        if p is not None:
            self._peers.move_to_end(addr)
            return p
        p = AsyncClient(
            addr, timeout=self.timeout, connect_timeout=self.connect_timeout, tls=self.tls,
            client_name=self.client_name, json=self.json, trace_context=self.trace_source or False,
            token=self.token or "", compression=self.compression, follow_leader=False,
        )
        p._fail_fast = True
        self._peers[addr] = p
        while len(self._peers) > MAX_LEADER_CONNECTIONS:
            _, old = self._peers.popitem(last=False)
            asyncio.get_running_loop().create_task(old.close())
        return p

    def _drop_peer(self, addr: str) -> None:
        p = self._peers.pop(addr, None)
        if p is not None:
            asyncio.get_running_loop().create_task(p.close())

    def _follows(self, addr: str) -> bool:
        """A leader address this client may use: never a plain-text one when
        the client was given TLS (nodes register their tcp:// address)."""
        try:
            a = parse_address(addr)
        except ValueError:
            return False
        return a != self.address and (self.address.scheme != "tls" or a.scheme == "tls")

    async def _call_routed(
        self, route: str, body: Any, encoded: bytes, j: bool, timeout: float | None, first: fr.Frame | None = None
    ) -> Any:
        """A call that goes to the partition's leader when known and follows
        ``not_leader`` answers (bounded hops, one deadline). ``first``: the
        answer the synchronous fast path already got from ``addr``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout if timeout is None else timeout)
        target: str | None = None
        if first is None:
            await self._maybe_refresh(route, body, deadline)
        tp = self._leaders.partition_of(route, body)
        if first is None and tp is not None:
            leader = self._leaders.leader_for(tp)
            target = leader if leader is not None and self._follows(leader) else None
        hops = 0
        f = first
        while True:
            if f is None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise Timeout(f"no answer to {route} from {target or self.address} in time")
                if target is None:
                    f = await self.call_frame(route, encoded, json=j, timeout=remaining)
                else:
                    try:
                        f = await self._peer(target).call_frame(route, encoded, json=j, timeout=remaining)
                    except ConnectionLost:
                        # Sent, fate unknown: never resent; the next call asks again.
                        self._leaders.forget_addr(target)
                        self._stale = True
                        raise
                    except ConnectionError:
                        # Never reached the leader, so nothing ran: go to addr.
                        self._leaders.forget_addr(target)
                        self._drop_peer(target)
                        self._stale = True
                        target = None
                        continue
            if f.kind != fr.ERROR:
                if target is not None:
                    self.leader_calls += 1
                return f.value()
            err = from_dto(f.value(), route)
            if not isinstance(err, NotLeader) or route in NODE_BOUND_ROUTES or hops >= self.max_redirects:
                raise err
            # not_leader: the node did not run the request, so it may go again.
            hops += 1
            self.redirects += 1
            self._stale = True
            addr = self._leaders.learn_not_leader(tp, err.details)
            f = None
            if addr is not None and addr != target and self._follows(addr):
                target = addr
            else:
                target = None
                pause = min(0.05 * 2**hops * random.uniform(0.5, 1.0), max(deadline - loop.time(), 0.0))
                await asyncio.sleep(pause)

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

    async def delete_group(self, group: str) -> bool:
        """Delete a group and its committed offsets (kafka-consumer-groups
        ``--delete``): Conflict while it has live members, NotFound when
        there is nothing to delete."""
        return bool((await self.call("log.group.delete", {"group": group}))["ok"])

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



