"""Typed exceptions, one per wire error code (docs/protocol.md, "Errors")."""

from __future__ import annotations

from typing import Any


class WeftError(Exception):
    """Base of every error this package raises."""


class ConnectionError(WeftError):  # noqa: A001 - the package's own, distinct from the builtin
    """Could not connect, or the connection is unusable."""


class ConnectionLost(ConnectionError):
    """The connection dropped while the request was on the wire: it may or may not
    have been applied. The client never resends it on its own."""


class Timeout(WeftError):
    """No answer within the call's timeout."""


class ProtocolError(WeftError):
    """The peer broke the protocol (bad frame, wrong version in welcome)."""


class ServerError(WeftError):
    """The server answered with an error frame. ``code``, ``message`` and
    ``details`` are the error DTO's fields; ``kind`` is ``details["kind"]`` when
    present (the log's exact condition)."""

    code: str = "unknown"

    def __init__(self, message: str, details: Any = None, *, code: str | None = None, route: str = "") -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details
        self.route = route

    @property
    def kind(self) -> str | None:
        if isinstance(self.details, dict):
            k = self.details.get("kind")
            return k if isinstance(k, str) else None
        return None

    def to_dto(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        return out

    def __str__(self) -> str:
        s = f"{self.code}: {self.message}"
        if self.details is not None:
            s += f" ({self.details!r})"
        return s


class UnknownRoute(ServerError):
    code = "unknown_route"


class BadBody(ServerError):
    code = "bad_body"


class Validation(ServerError):
    code = "validation"


class Busy(ServerError):
    code = "busy"


class HandlerError(ServerError):
    code = "handler"


class BadFrame(ServerError):
    code = "bad_frame"


class TooLarge(ServerError):
    code = "too_large"


class UnsupportedVersion(ServerError):
    code = "unsupported_version"


class HandshakeRequired(ServerError):
    code = "handshake_required"


class Unauthorized(ServerError):
    code = "unauthorized"


class Unauthenticated(Unauthorized):
    """Auth is on and the caller has no valid identity: no token, or a wrong,
    expired or revoked one (pass ``token=`` or set ``WEFT_TOKEN``). A
    subclass of Unauthorized, so ``except Unauthorized`` still catches it."""

    code = "unauthenticated"


class Forbidden(Unauthorized):
    """The caller's roles do not allow this request."""

    code = "forbidden"


class NotFound(ServerError):
    code = "not_found"


class Conflict(ServerError):
    code = "conflict"


class CompareFailed(Conflict):
    """Query API: the compare of a conditional write (``IF VERSION``, ``IF
    ABSENT``, ``IF EXISTS``, a BATCH IF without ELSE) did not hold; nothing
    was written. ``details["failed"]`` names the compares."""

    code = "conflict"


class AqlSyntaxError(Validation):
    """Query API: the AQL text does not parse. ``line``, ``column`` and
    ``offset`` (bytes) say where; ``details["expected"]`` what was expected."""

    code = "validation"

    def _pos(self, field: str) -> int | None:
        v = self.details.get(field) if isinstance(self.details, dict) else None
        try:
            return int(v) if v is not None else None
        except (TypeError, ValueError):
            return None

    @property
    def line(self) -> int | None:
        return self._pos("line")

    @property
    def column(self) -> int | None:
        return self._pos("column")

    @property
    def offset(self) -> int | None:
        return self._pos("offset")


class OutOfRange(ServerError):
    code = "out_of_range"


class Unavailable(ServerError):
    code = "unavailable"


class NotLeader(Unavailable):
    """Cluster mode: the node does not lead the raft group the request needs
    and did not run it; ``details`` holds ``group``, ``leader`` and ``addr``
    (the leader's native address, None when unknown). A subclass of
    Unavailable, which stage 1 servers answered instead."""

    code = "not_leader"


class ServerTimeout(ServerError):
    code = "timeout"


class ShuttingDown(ServerError):
    code = "shutting_down"


class Internal(ServerError):
    code = "internal"


ERRORS: dict[str, type[ServerError]] = {
    c.code: c
    for c in (
        UnknownRoute,
        BadBody,
        Validation,
        Busy,
        HandlerError,
        BadFrame,
        TooLarge,
        UnsupportedVersion,
        HandshakeRequired,
        Unauthorized,
        Unauthenticated,
        Forbidden,
        NotFound,
        Conflict,
        OutOfRange,
        Unavailable,
        NotLeader,
        ServerTimeout,
        ShuttingDown,
        Internal,
    )
}


#: Finer classes for a code and ``details["kind"]`` (the query API's reasons).
KINDS: dict[tuple[str, str], type[ServerError]] = {
    ("conflict", "compare_failed"): CompareFailed,
    ("validation", "invalid_aql"): AqlSyntaxError,
}


def from_dto(dto: Any, route: str = "") -> ServerError:
    """The typed exception for an error body. Unknown codes (a newer server)
    become a plain ServerError carrying the code."""
    if not isinstance(dto, dict):
        return ServerError(f"malformed error body {dto!r}", code="unknown", route=route)
    code = str(dto.get("code", "unknown"))
    message = str(dto.get("message", ""))
    details = dto.get("details")
    kind = details.get("kind") if isinstance(details, dict) else None
    cls = KINDS.get((code, kind)) if isinstance(kind, str) else None
    cls = cls or ERRORS.get(code)
    if cls is None:
        return ServerError(message, dto.get("details"), code=code, route=route)
    return cls(message, dto.get("details"), route=route)
