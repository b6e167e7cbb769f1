"""The synchronous client. Safe to share between threads; calls from several
threads are multiplexed on one connection.

Over ``tcp://`` and ``unix://`` (without compression) requests go on the
client's own blocking connection (:mod:`weft._sync`): the calling thread
writes its frame and reads its answer itself, with no event loop and no
thread hop; it connects, reconnects with back-off, times out and raises the
same typed errors as the asyncio client. The other calls of the API
(``topics()``, ``create_topic()``, the query helpers, ...) are the asyncio
client's coroutines, run to completion on the caller's thread: their one
``call`` takes that same blocking path.

A private event-loop thread drives the asyncio client for the rest: TLS, UDP
and compressed connections (one loop callback per call on a live
connection), cluster routing to partition leaders (``_call_routed``),
``fetch`` and consumers (their own asyncio connection)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, Mapping, Sequence, TypeVar

from . import _frame as fr
from ._addr import TlsOptions
from ._trace import TraceSource
from . import _sync
from ._addr import Backoff
from ._leaders import PARTITION_ROUTES
from .aio import _DRIVEN, DEFAULT_ADDR, PROTOCOL_VERSION, AsyncClient, _expire
from .errors import (
    ConnectionError,
    ConnectionLost,
    NotLeader,
    ProtocolError,
    ServerError,
    Timeout,
    Unauthorized,
    UnsupportedVersion,
    from_dto,
)
from .consumer import AsyncConsumer
from .query import Key, KeyValue, RangeResult
from .types import FetchResult, Membership, ProduceResult, Record, RecordLike, record_to_wire

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="weft-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self.thread.is_alive():
            coro.close()
            raise RuntimeError("client is closed")
        fut = self._submit(coro)
        try:
            return fut.result()
        except (KeyboardInterrupt, SystemExit):
            # Ctrl-C while the coroutine runs on the loop thread: cancel it, so
            # that what the caller does next (a consumer's commit and leave)
            # does not race an operation nobody waits for any more.
            fut.cancel()
            raise

    def _submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """asyncio.run_coroutine_threadsafe, but the task runs in a copy of the
        caller's context (contextvars), so what the caller's thread has current
        (an OpenTelemetry span, for the trace context) is current in the call."""
        out: concurrent.futures.Future[T] = concurrent.futures.Future()
        loop = self.loop

        def start() -> None:
            if out.cancelled():
                coro.close()
                return
            task = loop.create_task(coro)  # copies the current context: the caller's

            def done(t: asyncio.Task[T]) -> None:
                # As asyncio's own chaining: cancel first, else claim the
                # future (False if the caller cancelled it meanwhile).
                if t.cancelled():
                    out.cancel()
                    return
                if not out.set_running_or_notify_cancel():
                    return
                if (e := t.exception()) is not None:
                    out.set_exception(e)
                else:
                    out.set_result(t.result())

            task.add_done_callback(done)
            out.add_done_callback(lambda f: loop.call_soon_threadsafe(task.cancel) if f.cancelled() else None)

        loop.call_soon_threadsafe(start, context=contextvars.copy_context())
        return out

    def call_frame(self, aio: AsyncClient, route: str, body: bytes, json: bool, timeout: float | None) -> fr.Frame:
        """One request on the live connection, or the coroutine path when there
        is none (connecting, reconnecting, after a goaway)."""
        if not self.thread.is_alive():
            raise RuntimeError("client is closed")
        msg_id = fr.new_id()
        # The trace context is read here, on the caller's thread, where its
        # span is current (the loop thread has none of its context).
        tp = aio.trace_source() if aio.trace_source is not None else None
        if aio.compression is not None:
            # Compressed bodies are encoded and decoded on the coroutine path.
            return self.run(aio.call_frame(route, body, json=json, timeout=timeout, traceparent=tp))
        live = aio._conn
        traced = tp is not None and live is not None and live.trace_ok
        frame = fr.encode(fr.REQUEST, route, body, msg_id, fr.FLAG_JSON if json else 0, tp if traced else None)
        wait = timeout if timeout is not None else aio.timeout
        done = threading.Lock()
        done.acquire()
        out: list[Any] = []  # [frame] or [exception] or [None]: take the slow path
        loop = self.loop

        def finish(fut: asyncio.Future[fr.Frame]) -> None:
            if fut.cancelled():
                out.append(ConnectionLost("call cancelled"))
            elif (e := fut.exception()) is not None:
                out.append(e)
            else:
                out.append(fut.result())
            done.release()

        def start() -> None:
            conn = aio._conn
            if aio._closed or conn is None or not conn.usable() or (tp is not None and conn.trace_ok != traced):
                out.append(None)
                done.release()
                return
            fut: asyncio.Future[fr.Frame] = loop.create_future()
            conn.pending[msg_id] = fut
            timer = loop.call_at(loop.time() + max(wait, 0.001), _expire, fut, route, aio.address)

            def cleanup(f: asyncio.Future[fr.Frame]) -> None:
                timer.cancel()
                conn.pending.pop(msg_id, None)
                finish(f)

            fut.add_done_callback(cleanup)
            try:
                conn.send(frame)
            except Exception as e:  # noqa: BLE001 - handed to the caller
                if not fut.done():
                    fut.set_exception(e)

        loop.call_soon_threadsafe(start)
        done.acquire()
        r = out[0]
        if r is None:
            return self.run(aio.call_frame(route, body, json=json, timeout=timeout, traceparent=tp))
        if isinstance(r, BaseException):
            raise r
        assert isinstance(r, fr.Frame)
        return r

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
        self.loop.close()


class Client:
    """Weft's native protocol over ``tcp://``, ``unix://``, ``tls://`` or ``udp://``.

    >>> with weft.Client("tcp://127.0.0.1:7400") as c:
    ...     c.ping()

    Every method of :class:`AsyncClient` is here, blocking, with the same
    options (``token=``, ``follow_leader=``, ...).
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
        self.aio = AsyncClient(
            addr, timeout=timeout, connect_timeout=connect_timeout, tls=tls, client_name=client_name, json=json,
            trace_context=trace_context, token=token, compression=compression, follow_leader=follow_leader,
            max_redirects=max_redirects,
        )
        self._loop = _LoopThread()
        # The blocking connection: tcp:// and unix://, without compression.
        self._blocking = _sync.AVAILABLE and self.aio.address.scheme in ("tcp", "unix") and compression is None
        self._sc: _sync.SyncConn | None = None
        self._sc_lock = threading.Lock()
        self._backoff = Backoff()
        self._ids = _sync.IdPool()
        self._closed = False
        # Coroutines of self.aio run by _drive on the caller's thread call back here.
        self.aio._sync_call = self.call

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def _drive(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one of the asyncio client's coroutines on this thread, to the
        end, without an event loop: its requests go through ``self.call``
        (``AsyncClient.call`` sees ``_DRIVEN``), which blocks instead of
        awaiting, so the coroutine never suspends."""
        prev = getattr(_DRIVEN, "on", False)
        _DRIVEN.on = True
        try:
            coro.send(None)
        except StopIteration as e:
            return e.value  # type: ignore[no-any-return]
        finally:
            _DRIVEN.on = prev
        coro.close()
        raise RuntimeError("internal error: a synchronous call suspended")

    # ---- the blocking connection ----------------------------------------------

    def _conn(self, deadline: float) -> _sync.SyncConn:
        """The live blocking connection, connecting (with back-off, until
        ``deadline``) when there is none or it is closing."""
        c = self._sc
        if c is not None and c.usable():
            return c
        if self._closed:
            raise ConnectionError("client is closed")
        aio = self.aio
        if not self._sc_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise ConnectionError(f"cannot connect to {aio.address}: timed out")
        try:
            c = self._sc
            if c is not None and c.usable():
                return c
            if c is not None:
                c.close_if_idle()  # after a goaway, calls still on it get their answers
                self._sc = None
            last: BaseException | None = None
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ConnectionError(f"cannot connect to {aio.address}: {last or 'timed out'}")
                try:
                    c = self._open(min(remaining, aio.connect_timeout))
                    self._backoff.reset()
                    if self._closed:
                        c.close()
                        raise ConnectionError("client is closed")
                    self._sc = c
                    return c
                except (Unauthorized, UnsupportedVersion, ProtocolError):
                    raise  # retrying cannot help
                except ServerError as e:  # busy (max_connections), timeout...: retry with back-off
                    last = e
                except (OSError, Timeout, ConnectionError) as e:
                    if self._closed:
                        raise ConnectionError("client is closed") from None
                    last = e
                delay = self._backoff.next_delay()
                if time.monotonic() + delay >= deadline:
                    raise ConnectionError(f"cannot connect to {aio.address}: {last}")
                time.sleep(delay)
        finally:
            self._sc_lock.release()

    def _open(self, timeout: float) -> _sync.SyncConn:
        aio = self.aio
        deadline = time.monotonic() + timeout
        conn = _sync.SyncConn(_sync.open_stream(aio.address, timeout), aio.address)
        body: dict[str, Any] = {
            "protocol_version": PROTOCOL_VERSION, "client_id": aio.client_id, "client_name": aio.client_name,
        }
        if aio.token:
            body["token"] = aio.token
        try:
            _sync.hello(conn, body, self._ids.next(), deadline, PROTOCOL_VERSION)
        except BaseException:
            conn.close()
            raise
        return conn

    def _request(self, route: str, encoded: bytes, j: bool, deadline: float) -> fr.Frame:
        """One request on the blocking connection; the answer frame."""
        aio = self.aio
        # The caller's span is current on this thread (the trace context).
        tp = aio.trace_source() if aio.trace_source is not None else None
        msg_id = self._ids.next()
        flags = fr.FLAG_JSON if j else 0
        while True:
            conn = self._conn(deadline)
            data = fr.encode(fr.REQUEST, route, encoded, msg_id, flags, tp if conn.trace_ok else None)
            try:
                return conn.request(data, msg_id, deadline, route)
            except _sync.Stale:
                continue  # it closed or said goaway while idle: nothing was sent; connect again

    @property
    def address(self) -> str:
        return str(self.aio.address)

    @property
    def welcome(self) -> dict[str, Any]:
        if self._blocking:
            c = self._sc
            return c.welcome if c is not None else {}
        return self.aio.welcome

    @property
    def connected(self) -> bool:
        """True while a connection is up and usable (no drop or goaway seen)."""
        if self._blocking:
            c = self._sc
            return c is not None and c.alive()
        return self.aio.connected

    def connect(self) -> dict[str, Any]:
        if self._blocking:
            return self._conn(time.monotonic() + self.aio.connect_timeout).welcome
        return self._run(self.aio.connect())

    def close(self) -> None:
        self._closed = True
        c, self._sc = self._sc, None
        if c is not None:
            c.close()
        if self._loop.thread.is_alive():
            self._run(self.aio.close())
        self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, route: str, body: Any = None, *, timeout: float | None = None, json: bool | None = None) -> Any:
        """Call any endpoint; returns the decoded answer, raises the typed error."""
        aio = self.aio
        j = aio.json if json is None else json
        encoded = fr.encode_body(body, j)
        t0 = time.monotonic()
        if self._blocking:
            deadline = t0 + (aio.timeout if timeout is None else timeout)
            if aio._cluster is None and aio.follow_leader and route in PARTITION_ROUTES:
                # Whether routing applies, from this connection's welcome (as
                # refresh_leaders does): a single node takes the plain path.
                features = self._conn(deadline).welcome.get("features")
                if isinstance(features, list) and "cluster" not in features:
                    aio._cluster = False
            if aio._routing_needed(route, body):
                return self._run(aio._call_routed(route, body, encoded, j, timeout))
            f = self._request(route, encoded, j, deadline)
        else:
            if aio._routing_needed(route, body):
                return self._run(aio._call_routed(route, body, encoded, j, timeout))
            f = self._loop.call_frame(aio, route, encoded, j, timeout)
        if f.kind == fr.ERROR:
            err = from_dto(f.value(), route)
            if isinstance(err, NotLeader) and aio.follow_leader:
                # Not run there: the redirect path retries, in what is left of the timeout.
                left = (aio.timeout if timeout is None else timeout) - (time.monotonic() - t0)
                return self._run(aio._call_routed(route, body, encoded, j, max(left, 0.0), f))
            raise err
        return f.value()

    @property
    def leader_cache(self) -> dict[tuple[str, int], str]:
        """What the client knows: ``{(topic, partition): leader's address}``."""
        return self.aio.leader_cache

    @property
    def redirects(self) -> int:
        """``not_leader`` answers followed so far."""
        return self.aio.redirects

    @property
    def leader_calls(self) -> int:
        """Requests answered by a leader other than the client's address."""
        return self.aio.leader_calls

    def refresh_leaders(self, timeout: float | None = None) -> dict[tuple[str, int], str]:
        return self._run(self.aio.refresh_leaders(timeout))

    def send(self, route: str, body: Any = None) -> None:
        """A one-way request: no answer, no error report."""
        aio = self.aio
        if not self._blocking:
            self._run(aio.send(route, body))
            return
        flags = fr.FLAG_ONE_WAY | (fr.FLAG_JSON if aio.json else 0)
        frame = fr.encode(fr.REQUEST, route, fr.encode_body(body, aio.json), self._ids.next(), flags)
        self._conn(time.monotonic() + aio.timeout).write(frame)

    def ping(self) -> dict[str, Any]:
        return dict(self.call("weft.ping"))

    def echo(self, value: Any) -> Any:
        return self.call("weft.echo", value)

    def info(self) -> dict[str, Any]:
        return self._drive(self.aio.info())

    def stats(self) -> dict[str, Any]:
        return self._drive(self.aio.stats())

    def liveness(self) -> list[dict[str, Any]]:
        return self._drive(self.aio.liveness())

    # the log
    def create_topic(self, name: str, *, partitions: int | None = None, **config: Any) -> dict[str, Any]:
        return self._drive(self.aio.create_topic(name, partitions=partitions, **config))

    def topics(self) -> list[str]:
        return self._drive(self.aio.topics())

    def describe_topic(self, name: str) -> dict[str, Any]:
        return self._drive(self.aio.describe_topic(name))

    def delete_topic(self, name: str) -> bool:
        return self._drive(self.aio.delete_topic(name))

    def alter_topic(self, name: str, **changes: Any) -> dict[str, Any]:
        return self._drive(self.aio.alter_topic(name, **changes))

    def produce(self, topic: str, records: Sequence[RecordLike]) -> list[ProduceResult]:
        r = self.call("log.produce", {"topic": topic, "records": [record_to_wire(x) for x in records]})
        return [ProduceResult.from_wire(x) for x in r["results"]]

    def fetch(
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
        return self._run(
            self.aio.fetch(
                topic,
                partition,
                offset,
                max_bytes=max_bytes,
                max_records=max_records,
                wait_ms=wait_ms,
                reset=reset,
                member=member,
                timeout=timeout,
            )
        )

    def offsets(self, topic: str, partition: int, spec: str | int = "latest") -> int:
        return self._drive(self.aio.offsets(topic, partition, spec))

    def join_group(
        self,
        group: str,
        topics: Sequence[str],
        *,
        member_id: str | None = None,
        strategy: str | None = None,
        session_timeout_ms: int | None = None,
    ) -> Membership:
        return self._drive(
            self.aio.join_group(
                group, topics, member_id=member_id, strategy=strategy, session_timeout_ms=session_timeout_ms
            )
        )

    def heartbeat(self, group: str, member_id: str, generation: int | None = None) -> Membership:
        return self._drive(self.aio.heartbeat(group, member_id, generation))

    def leave_group(self, group: str, member_id: str) -> bool:
        return self._drive(self.aio.leave_group(group, member_id))

    def commit(
        self,
        group: str,
        offsets: Mapping[tuple[str, int], int],
        *,
        member_id: str | None = None,
        generation: int | None = None,
        metadata: str = "",
    ) -> bool:
        return self._drive(
            self.aio.commit(group, offsets, member_id=member_id, generation=generation, metadata=metadata)
        )

    def committed(self, group: str, topic: str, partition: int) -> int | None:
        return self._drive(self.aio.committed(group, topic, partition))

    def start_offset(self, group: str, topic: str, partition: int, reset: str = "earliest") -> tuple[int, int | None]:
        return self._drive(self.aio.start_offset(group, topic, partition, reset))

    def groups(self) -> list[dict[str, Any]]:
        return self._drive(self.aio.groups())

    def describe_group(self, group: str) -> dict[str, Any]:
        return self._drive(self.aio.describe_group(group))

    def delete_group(self, group: str) -> bool:
        return self._drive(self.aio.delete_group(group))

    def consumer(self, group: str, topics: Sequence[str], **options: Any) -> Consumer:
        """A consumer group member: ``for record in client.consumer(...)``; see
        :class:`AsyncConsumer` for the options."""
        return Consumer(self, AsyncConsumer(self.aio, group, topics, **options))

    # the query API (docs/query.md)
    def query(
        self,
        aql: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_ms: int | None = None,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        return self._drive(self.aio.query(aql, params, timeout_ms=timeout_ms, serializable=serializable, timeout=timeout))

    def query_batch(
        self,
        batch: str | Sequence[str],
        params: Mapping[str, Any] | None = None,
        *,
        timeout_ms: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        return self._drive(self.aio.query_batch(batch, params, timeout_ms=timeout_ms, timeout=timeout))

    def table_create(self, table: str) -> None:
        self._drive(self.aio.table_create(table))

    def table_drop(self, table: str) -> None:
        self._drive(self.aio.table_drop(table))

    def tables(self) -> list[str]:
        return self._drive(self.aio.tables())

    def get(self, table: str, key: Key, *, revision: int | None = None, serializable: bool = False) -> KeyValue | None:
        return self._drive(self.aio.get(table, key, revision=revision, serializable=serializable))

    def put(self, table: str, key: Key, value: Any, *, if_version: int | None = None, if_absent: bool = False) -> int:
        return self._drive(self.aio.put(table, key, value, if_version=if_version, if_absent=if_absent))

    def compare_and_set(self, table: str, key: Key, value: Any, version: int) -> bool:
        return self._drive(self.aio.compare_and_set(table, key, value, version))

    def delete(self, table: str, key: Key, *, if_version: int | None = None, if_exists: bool = False) -> int:
        return self._drive(self.aio.delete(table, key, if_version=if_version, if_exists=if_exists))

    def range(
        self,
        table: str,
        start: Key | None = None,
        end: Key | None = None,
        *,
        prefix: Key | None = None,
        limit: int | None = None,
        revision: int | None = None,
        serializable: bool = False,
    ) -> RangeResult:
        return self._drive(
            self.aio.range(table, start, end, prefix=prefix, limit=limit, revision=revision, serializable=serializable)
        )

    def history(self, table: str, key: Key, limit: int | None = None) -> list[KeyValue]:
        return self._drive(self.aio.history(table, key, limit))

    # queued endpoints and senders
    def queues(self, kind: str = "queue") -> list[dict[str, Any]]:
        return self._drive(self.aio.queues(kind))

    def queue_show(self, name: str, kind: str = "queue") -> dict[str, Any]:
        return self._drive(self.aio.queue_show(name, kind))

    def queue_pause(self, name: str, what: str = "all", kind: str = "queue") -> dict[str, Any]:
        return self._drive(self.aio.queue_pause(name, what, kind))

    def queue_resume(self, name: str, what: str = "all", kind: str = "queue") -> dict[str, Any]:
        return self._drive(self.aio.queue_resume(name, what, kind))

    def queue_errors(self, name: str, n: int = 10, kind: str = "queue") -> list[str]:
        return self._drive(self.aio.queue_errors(name, n, kind))

    def queue_inspect(self, name: str, uid: str, kind: str = "queue") -> dict[str, Any]:
        return self._drive(self.aio.queue_inspect(name, uid, kind))

    def queue_pop(self, name: str, uid: str, kind: str = "queue") -> dict[str, Any]:
        return self._drive(self.aio.queue_pop(name, uid, kind))

    def queue_reprocess(self, name: str, uid: str | None = None, kind: str = "queue") -> int:
        return self._drive(self.aio.queue_reprocess(name, uid, kind))

    def queue_clear(self, name: str, kind: str = "queue") -> int:
        return self._drive(self.aio.queue_clear(name, kind))

    def stats_current(self) -> dict[str, Any]:
        return self._drive(self.aio.stats_current())

    def stats_gathered(self) -> dict[str, Any] | None:
        return self._drive(self.aio.stats_gathered())

    def stats_full(self) -> list[dict[str, Any]]:
        return self._drive(self.aio.stats_full())

    def errors(self) -> list[dict[str, Any]]:
        return self._drive(self.aio.errors())

    def errors_clear(self, error_id: str | None = None, count: int = 0) -> list[dict[str, Any]]:
        return self._drive(self.aio.errors_clear(error_id, count))


class Consumer:
    """The blocking face of :class:`AsyncConsumer`: ``for record in consumer``."""

    def __init__(self, client: Client, inner: AsyncConsumer) -> None:
        self._client = client
        self.inner = inner

    @property
    def assignment(self) -> list[tuple[str, int]]:
        return self.inner.assignment

    @property
    def positions(self) -> dict[tuple[str, int], int]:
        return dict(self.inner.positions)

    def start(self) -> Membership:
        return self._client._run(self.inner.start())

    def poll(self, max_records: int | None = None) -> list[Record]:
        return self._client._run(self.inner.poll(max_records))

    def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        self._client._run(self.inner.commit(offsets))

    def close(self, commit: bool = True) -> None:
        self._client._run(self.inner.close(commit))

    def __iter__(self) -> Iterator[Record]:
        return self

    def __next__(self) -> Record:
        try:
            return self._client._run(self.inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def __enter__(self) -> Consumer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
