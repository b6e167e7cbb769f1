"""The synchronous client's own connection: a blocking socket (``tcp://`` or
``unix://``) on which the calling thread writes its request and reads its
answer itself, with no event loop and no thread hop.

Several threads share one connection (multiplexed, as on the asyncio
client): each registers its message id and writes its frame; one of them at
a time holds the reader role, reads frames off the socket and hands each to
the thread that waits for its id (leader/followers). When the reader's own
answer has come, it gives the role up and wakes the others, one of which
reads next. A single thread, the common case, takes the role every time:
one ``send`` and one ``recv`` per call, plus a ``poll(0)`` to see whether
the server said something while the connection was idle (``goaway``, an
error about the connection, or its end).

Timeouts: the socket stays in blocking mode with a kernel receive timeout
(``SO_RCVTIMEO``) of ``READ_SLICE_S``, so a reader wakes up that often to
check its deadline (Python's own socket timeouts would add a ``poll`` before
every ``send`` and ``recv``). The frame codec is the asyncio client's
(:mod:`weft._frame`)."""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time
from typing import Any, Union

from . import _frame as fr
from ._addr import Address
from .errors import ConnectionError, ConnectionLost, ProtocolError, Timeout, from_dto

#: How long a reader blocks in ``recv`` before it looks at its deadline.
READ_SLICE_S = 0.1
#: ``poll``, ``MSG_DONTWAIT`` and a ``timeval`` ``SO_RCVTIMEO`` (Linux, macOS,
#: the BSDs); elsewhere the synchronous client uses its event-loop thread.
AVAILABLE = hasattr(select, "poll") and hasattr(socket, "MSG_DONTWAIT") and os.name == "posix"

class Stale(Exception):
    """The connection cannot take a new request (closed, goaway): make another."""


def _timeval(seconds: float) -> bytes:
    sec = int(seconds)
    return struct.pack("ll", sec, int((seconds - sec) * 1_000_000))


class SyncConn:
    """One blocking stream connection and the calls waiting on it."""

    def __init__(self, sock: socket.socket, address: Address) -> None:
        self.sock = sock
        self.address = address
        self.decoder = fr.Decoder()
        self.mu = threading.Lock()
        self.cv = threading.Condition(self.mu)
        self.wlock = threading.Lock()
        # Per call: a list, empty while the call waits, then [answer] or [exception].
        self.pending: dict[bytes, list[Union[fr.Frame, BaseException]]] = {}
        self.reading = False  # a thread holds the reader role
        self.waiters = 0  # threads waiting on cv for their answer or the role
        self.closed = False
        self.goaway = False
        self.welcome: dict[str, Any] = {}
        self.trace_ok = False
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)

    # ---- state ---------------------------------------------------------------

    def usable(self) -> bool:
        return not self.closed and not self.goaway

    def alive(self) -> bool:
        """Usable, after reading what arrived while nobody was reading."""
        with self.mu:
            if not self.closed and not self.reading and self._poll.poll(0):
                self._read_available()
            return self.usable()

    def _read_available(self) -> None:
        """With ``mu`` held and nobody reading: take in what the socket has now."""
        try:
            data = self.sock.recv(65536, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._fail_locked(f"connection lost: {e}")
            return
        self._take_locked(data)

    def _take_locked(self, data: bytes) -> None:
        if not data:
            self._fail_locked("connection closed by the server")
            return
        self.decoder.feed(data)
        try:
            while (f := self.decoder.next()) is not None:
                self._dispatch_locked(f)
        except fr.FrameError as e:
            self._fail_locked(f"bad frame from the server: {e}")
        if self.waiters:
            self.cv.notify_all()

    def _dispatch_locked(self, f: fr.Frame) -> None:
        if f.kind == fr.CONTROL and f.route == "goaway":
            self.goaway = True
            return
        if f.kind == fr.ERROR and f.id == fr.NIL_ID:
            # About the connection (unauthorized, busy, handshake timeout):
            # every waiting call gets it; the server closes the connection next.
            self._fail_locked("", from_dto(f.value()))
            return
        slot = self.pending.pop(f.id, None)
        if slot is not None and not slot:
            slot.append(f)
        # Frames nobody waits for (late answers, events) are ignored.

    def _fail_locked(self, why: str, error: BaseException | None = None) -> None:
        self.closed = True
        pending, self.pending = self.pending, {}
        for slot in pending.values():
            if not slot:
                slot.append(error if error is not None else ConnectionLost(why))
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.cv.notify_all()

    def fail(self, why: str) -> None:
        with self.mu:
            self._fail_locked(why)

    def close(self, why: str = "client closed") -> None:
        with self.mu:
            if not self.closed:
                self._fail_locked(why)
            if self.reading:
                return  # the reader wakes up on the shutdown; the socket is closed when collected
        self.sock.close()

    def close_if_idle(self) -> None:
        """Close unless calls still wait on it (they get their answers after a
        goaway; the server closes it then, and its last reader sees that)."""
        with self.mu:
            if self.pending or self.reading:
                return
        self.close("replaced")

    # ---- calls -----------------------------------------------------------------

    def request(self, data: bytes, msg_id: bytes, deadline: float, route: str) -> fr.Frame:
        """Write one frame, wait for the answer with its id until ``deadline``
        (``time.monotonic()``). Raises :class:`Stale` (nothing was written)
        when the connection cannot take it."""
        slot: list[Union[fr.Frame, BaseException]] = []
        with self.mu:
            if not self.reading and not self.pending and not self.closed and self._poll.poll(0):
                self._read_available()  # a goaway or the end, said while idle
            if self.closed or self.goaway:
                raise Stale()
            self.pending[msg_id] = slot
        try:
            self.write(data)
            self._wait(slot, deadline, route)
        except BaseException:
            with self.mu:
                self.pending.pop(msg_id, None)
            raise
        r = slot[0]
        if isinstance(r, BaseException):
            raise r
        return r

    def write(self, data: bytes) -> None:
        try:
            with self.wlock:
                self.sock.sendall(data)
        except OSError as e:
            # Part of the frame may be out: the stream cannot go on.
            with self.mu:
                self._fail_locked(f"write failed: {e}")
            raise ConnectionLost(f"write failed: {e}") from None
        except BaseException:
            with self.mu:  # interrupted (Ctrl-C) mid-frame: the same
                self._fail_locked("write interrupted")
            raise

    def _wait(self, slot: list[Union[fr.Frame, BaseException]], deadline: float, route: str) -> None:
        while not slot:
            with self.mu:
                if slot:
                    return
                if self.reading:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise Timeout(f"no answer to {route} from {self.address} in time")
                    self.waiters += 1
                    try:
                        self.cv.wait(remaining)
                    finally:
                        self.waiters -= 1
                    continue
                if self.closed:
                    # Failed between the write and here: the slot was filled then.
                    raise ConnectionLost("connection closed")
                self.reading = True
            try:
                self._read_until(slot, deadline)
            finally:
                with self.mu:
                    self.reading = False
                    if self.waiters:
                        self.cv.notify_all()  # one of them reads next
            if not slot and time.monotonic() >= deadline:
                raise Timeout(f"no answer to {route} from {self.address} in time")

    def _read_until(self, slot: list[Union[fr.Frame, BaseException]], deadline: float) -> None:
        """Holding the reader role: read until ``slot`` is filled, the
        connection fails or the deadline passes."""
        sock = self.sock
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, socket.timeout):
                if slot or time.monotonic() >= deadline:
                    return
                continue
            except OSError as e:
                with self.mu:
                    if not self.closed:
                        self._fail_locked(f"connection lost: {e}")
                return
            with self.mu:
                if self.closed and not data:
                    return  # shut down by close() or a failed write
                self._take_locked(data)
                if slot or self.closed:
                    return


class IdPool:
    """Message ids: UUID v4s cut from one ``os.urandom`` draw of 256 at a time
    (the version and variant bits set on the whole draw at once)."""

    N = 256
    _MASK = int.from_bytes(bytes.fromhex("ffffffffffff0fff3fffffffffffffff") * N, "big")
    _SET = int.from_bytes(bytes.fromhex("00000000000040008000000000000000") * N, "big")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0

    def next(self) -> bytes:
        with self._lock:
            at = self._at
            if at >= len(self._pool):
                raw = int.from_bytes(os.urandom(16 * self.N), "big") & self._MASK | self._SET
                self._pool = raw.to_bytes(16 * self.N, "big")
                at = 0
            self._at = at + 16
            return self._pool[at : at + 16]


def open_stream(address: Address, timeout: float) -> socket.socket:
    """A connected blocking socket (TCP with TCP_NODELAY, or Unix), with the
    receive timeout slice set and ``timeout`` as its send timeout."""
    if address.scheme == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address.path
    else:
        infos = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        if not infos:
            raise OSError(f"cannot resolve {address.host}")
        family, _, _, _, target = infos[0]
        s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.settimeout(max(timeout, 0.001))
        s.connect(target)
        s.settimeout(None)
        if address.scheme != "unix":
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(READ_SLICE_S))
    except BaseException:
        s.close()
        raise
    return s


def hello(conn: SyncConn, hello_body: dict[str, Any], msg_id: bytes, deadline: float, version: int) -> None:
    """The handshake on a fresh connection: ``hello``, then the ``welcome``."""
    try:
        f = conn.request(fr.encode(fr.CONTROL, "hello", fr.encode_body(hello_body), msg_id), msg_id, deadline, "hello")
    except Stale:
        raise ConnectionError("connection closed during the handshake") from None
    if f.kind == fr.ERROR:
        raise from_dto(f.value(), "hello")
    w = f.value()
    if f.kind != fr.CONTROL or f.route != "welcome" or not isinstance(w, dict):
        raise ProtocolError(f"expected a welcome, got kind {f.kind} route {f.route!r}")
    if w.get("protocol_version") != version:
        raise ProtocolError(f"server speaks protocol version {w.get('protocol_version')}, this client {version}")
    conn.welcome = w
    features = w.get("features")
    conn.trace_ok = isinstance(features, list) and "trace-context" in features
