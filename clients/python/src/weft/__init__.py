"""Weft client and service library for Python (docs/protocol.md).

    import weft
    with weft.Client("tcp://127.0.0.1:7400") as c:
        print(c.ping())
"""

from ._addr import TlsOptions, parse_address
from .aio import AsyncClient
from .client import Client, Consumer
from .consumer import AsyncConsumer
from .errors import (
    AqlSyntaxError,
    BadBody,
    BadFrame,
    Busy,
    CompareFailed,
    Conflict,
    ConnectionError,
    ConnectionLost,
    HandlerError,
    HandshakeRequired,
    Internal,
    NotFound,
    NotLeader,
    OutOfRange,
    ProtocolError,
    ServerError,
    ServerTimeout,
    ShuttingDown,
    Timeout,
    TooLarge,
    Unauthorized,
    Unauthenticated,
    Forbidden,
    Unavailable,
    UnknownRoute,
    UnsupportedVersion,
    Validation,
    WeftError,
)
from .query import KeyValue, RangeResult
from .service import Service
from .types import FetchResult, Membership, ProduceResult, ProducerRecord, Record

__version__ = "0.1.0"

__all__ = [
    "AqlSyntaxError",
    "AsyncClient",
    "AsyncConsumer",
    "BadBody",
    "BadFrame",
    "Busy",
    "Client",
    "CompareFailed",
    "Conflict",
    "ConnectionError",
    "ConnectionLost",
    "Consumer",
    "FetchResult",
    "HandlerError",
    "HandshakeRequired",
    "Internal",
    "KeyValue",
    "Membership",
    "NotFound",
    "OutOfRange",
    "ProduceResult",
    "ProducerRecord",
    "ProtocolError",
    "RangeResult",
    "Record",
    "ServerError",
    "ServerTimeout",
    "Service",
    "ShuttingDown",
    "NotLeader",
    "Timeout",
    "TlsOptions",
    "TooLarge",
    "Unauthorized",
    "Unauthenticated",
    "Forbidden",
    "Unavailable",
    "UnknownRoute",
    "UnsupportedVersion",
    "Validation",
    "WeftError",
    "parse_address",
]
