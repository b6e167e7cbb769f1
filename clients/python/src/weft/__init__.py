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
    BadBody,
    BadFrame,
    Busy,
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
from .service import Service
from .types import FetchResult, Membership, ProduceResult, ProducerRecord, Record

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncConsumer",
    "BadBody",
    "BadFrame",
    "Busy",
    "Client",
    "Conflict",
    "ConnectionError",
    "ConnectionLost",
    "Consumer",
    "FetchResult",
    "HandlerError",
    "HandshakeRequired",
    "Internal",
    "Membership",
    "NotFound",
    "OutOfRange",
    "ProduceResult",
    "ProducerRecord",
    "ProtocolError",
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
