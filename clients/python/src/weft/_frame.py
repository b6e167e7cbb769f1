"""Weft native frames (docs/protocol.md), sans-IO: bytes in, frames out."""

from __future__ import annotations

import json
import struct
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack

MAGIC = b"WF"
VERSION = 1
HEADER_LEN = 26
NIL_ID = b"\x00" * 16

REQUEST = 1
RESPONSE = 2
ERROR = 3
EVENT = 4
CONTROL = 5

FLAG_JSON = 0x01
FLAG_ONE_WAY = 0x02
#: The body region starts with a trace-context extension (docs/protocol.md,
#: "Trace context"); only sent to servers whose welcome lists "trace-context".
FLAG_TRACE = 0x04
#: The body proper (after any trace-context extension) is one zstd frame
#: (docs/protocol.md, "Compression"); only on connections that negotiated it.
FLAG_COMPRESSED = 0x08
#: Bodies shorter than this are sent as they are.
COMPRESS_MIN_BYTES = 1024

#: Largest frame accepted by default (the server's `limits.max_frame_bytes`).
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: Largest UDP payload (65,535 minus IP and UDP headers).
MAX_DATAGRAM_BYTES = 65_507

_HEADER = struct.Struct(">2sBBBBI16s")


class FrameError(Exception):
    """A frame that cannot be decoded. ``fatal`` means the stream cannot continue."""

    def __init__(self, message: str, *, fatal: bool = False, msg_id: bytes = NIL_ID, code: str = "bad_frame") -> None:
        super().__init__(message)
        self.fatal = fatal
        self.msg_id = msg_id
        self.code = code


@dataclass(frozen=True)
class Frame:
    kind: int
    flags: int
    id: bytes
    route: str
    body: bytes

    @property
    def is_json(self) -> bool:
        return bool(self.flags & FLAG_JSON)

    def value(self) -> Any:
        """The decoded body (None for an empty body)."""
        return decode_body(self.body, self.is_json)


def new_id() -> bytes:
    """A fresh message id: UUID v4, 16 raw bytes."""
    return uuid.uuid4().bytes


def _ext_hook(code: int, data: bytes) -> Any:
    return msgpack.ExtType(code, data)


def _json_default(v: Any) -> Any:
    # JSON has no bytes: Weft takes a string as UTF-8 bytes (docs/log.md)
    if isinstance(v, (bytes, bytearray, memoryview)):
        try:
            return bytes(v).decode()
        except UnicodeDecodeError:
            raise ValueError("bytes that are not UTF-8 cannot travel in a JSON body; use msgpack") from None
    raise TypeError(f"{type(v).__name__} is not JSON serializable")


def encode_body(value: Any, as_json: bool = False) -> bytes:
    """Encode a body. ``None`` is the empty body ("no arguments")."""
    if value is None:
        return b""
    if as_json:
        return json.dumps(value, separators=(",", ":"), default=_json_default).encode()
    out = msgpack.packb(value, use_bin_type=True)
    assert isinstance(out, bytes)
    return out


def decode_body(body: bytes, as_json: bool = False) -> Any:
    if not body:
        return None
    if as_json:
        return json.loads(body)
    return msgpack.unpackb(body, raw=False, strict_map_key=False, ext_hook=_ext_hook)


def encode(kind: int, route: str, body: bytes, msg_id: bytes, flags: int = 0, traceparent: str | None = None) -> bytes:
    """One frame. With ``traceparent`` (a W3C value), the body region starts
    with the trace-context extension: one length byte, then the value."""
    r = route.encode()
    if len(r) > 255:
        raise ValueError(f"route key of {len(r)} bytes is over 255")
    if len(msg_id) != 16:
        raise ValueError("message id must be 16 bytes")
    if traceparent:
        tp = traceparent.encode("ascii")
        if len(tp) > 255:
            raise ValueError(f"traceparent of {len(tp)} bytes is over 255")
        flags |= FLAG_TRACE
        body = bytes((len(tp),)) + tp + body
    return _HEADER.pack(MAGIC, VERSION, kind, flags, len(r), len(body), msg_id) + r + body


class Decoder:
    """Feed bytes, take frames. Mirrors the reference decoder's limits:
    the length is checked on the header, before anything is buffered."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> None:
        self._buf += data

    def next(self) -> Frame | None:
        """The next whole frame, or None when more bytes are needed."""
        buf = self._buf
        if len(buf) < 10:
            return None
        if bytes(buf[0:2]) != MAGIC:
            raise FrameError(f"bad magic {bytes(buf[0:2])!r}: not a Weft frame", fatal=True)
        rlen = buf[5]
        blen = int.from_bytes(buf[6:10], "big")
        total = HEADER_LEN + rlen + blen
        if total > self.max_frame_bytes:
            raise FrameError(
                f"frame of {total} bytes is over the maximum of {self.max_frame_bytes}", fatal=True, code="too_large"
            )
        if len(buf) < total:
            return None
        version, kind, flags = buf[2], buf[3], buf[4]
        msg_id = bytes(buf[10:26])
        route = bytes(buf[26 : 26 + rlen])
        body = bytes(buf[26 + rlen : total])
        del buf[:total]
        if version != VERSION:
            raise FrameError(f"unsupported protocol version {version}", msg_id=msg_id, code="unsupported_version")
        if kind not in (REQUEST, RESPONSE, ERROR, EVENT, CONTROL):
            raise FrameError(f"unknown frame kind {kind}", msg_id=msg_id)
        if flags & ~(FLAG_JSON | FLAG_ONE_WAY | FLAG_COMPRESSED):
            raise FrameError(f"unknown flag bits {flags:#010b}", msg_id=msg_id)
        try:
            route_s = route.decode()
        except UnicodeDecodeError:
            raise FrameError("route key is not valid UTF-8", msg_id=msg_id) from None
        return Frame(kind, flags, msg_id, route_s, body)


def decode_datagram(data: bytes) -> Frame:
    """One datagram is exactly one frame."""
    d = Decoder(MAX_DATAGRAM_BYTES + HEADER_LEN)
    d.feed(data)
    f = d.next()
    if f is None:
        raise FrameError("datagram truncated")
    if d._buf:
        raise FrameError(f"datagram carries {len(d._buf)} bytes after the frame")
    return f


def zstd_available() -> bool:
    """Whether the optional ``zstandard`` package is installed."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def compress(body: bytes) -> bytes | None:
    """``body`` as one zstd frame declaring its size, or None when that is
    not shorter (then send it plain)."""
    import zstandard

    packed: bytes = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(body)
    return packed if len(packed) < len(body) else None


def decompress(frame: Frame, max_frame_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """``frame`` with its compressed body (flag 0x08) inflated; other frames
    as they are. The declared size is checked before anything is inflated:
    over ``max_frame_bytes`` is ``too_large``, a body that is not one zstd
    frame with a declared size, or decodes to another size, ``bad_frame``."""
    if not frame.flags & FLAG_COMPRESSED:
        return frame
    import zstandard

    start = 0
    if frame.flags & FLAG_TRACE:
        n = frame.body[0] if frame.body else 0
        if n == 0 or 1 + n > len(frame.body):
            raise FrameError("bad trace-context extension", msg_id=frame.id)
        start = 1 + n
    packed = frame.body[start:]
    try:
        params = zstandard.get_frame_parameters(packed)
    except zstandard.ZstdError as e:
        raise FrameError(f"bad compressed body: {e}", msg_id=frame.id) from None
    declared = params.content_size
    if declared == zstandard.CONTENTSIZE_UNKNOWN or declared == zstandard.CONTENTSIZE_ERROR:
        raise FrameError("compressed body does not declare its size", msg_id=frame.id)
    if HEADER_LEN + len(frame.route.encode()) + start + declared > max_frame_bytes:
        raise FrameError(f"compressed body of {declared} bytes is over the maximum", msg_id=frame.id, code="too_large")
    try:
        plain = zstandard.ZstdDecompressor().decompress(packed, max_output_size=declared)
    except zstandard.ZstdError as e:
        raise FrameError(f"bad compressed body: {e}", msg_id=frame.id) from None
    if len(plain) != declared:
        raise FrameError("compressed body decodes to another size than declared", msg_id=frame.id)
    return Frame(frame.kind, frame.flags & ~FLAG_COMPRESSED, frame.id, frame.route, frame.body[:start] + plain)
