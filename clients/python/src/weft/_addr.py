"""Addresses (`tcp://HOST:PORT`, `udp://`, `unix://PATH`, `tls://`) and TLS settings."""

from __future__ import annotations

import os
import random
import socket
import ssl
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Address:
    scheme: str  # tcp, udp, unix, tls
    host: str = ""
    port: int = 0
    path: str = ""

    def __str__(self) -> str:
        if self.scheme == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_address(addr: str) -> Address:
    """Parse ``tcp://HOST:PORT | udp://HOST:PORT | unix://PATH | tls://HOST:PORT``.
    A bare ``HOST:PORT`` is TCP."""
    scheme, sep, rest = addr.partition("://")
    if not sep:
        scheme, rest = "tcp", addr
    scheme = scheme.lower()
    if scheme == "unix":
        if not rest:
            raise ValueError(f"{addr!r}: unix:// needs a path")
        return Address("unix", path=rest)
    if scheme not in ("tcp", "udp", "tls"):
        raise ValueError(f"{addr!r}: unknown scheme {scheme!r} (tcp, udp, unix, tls)")
    if rest.startswith("["):
        host, _, port_s = rest[1:].partition("]:")
    else:
        host, _, port_s = rest.rpartition(":")
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"{addr!r}: expected {scheme}://HOST:PORT") from None
    if not host or not 0 < port < 65536:
        raise ValueError(f"{addr!r}: expected {scheme}://HOST:PORT")
    return Address(scheme, host=host, port=port)


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings for ``tls://`` addresses. ``ca``: PEM file of CAs to trust
    (default: the system store); ``cert``/``key``: a client certificate (mTLS);
    ``server_name``: the name checked in the server's certificate (default: the
    address's host)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["weft/1"])
        if self.cert:
            ctx.load_cert_chain(self.cert, self.key)
        return ctx


def client_id() -> str:
    """The hello's client id: ``HOSTNAME`` when set (a pod name), else a UUID."""
    return os.environ.get("HOSTNAME") or str(uuid.uuid4())


class Backoff:
    """Exponential back-off with jitter in [d/2, d]: 50 ms doubling to 5 s."""

    def __init__(self, base_s: float = 0.05, max_s: float = 5.0) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.attempt = 0

    def next_delay(self) -> float:
        d = min(self.max_s, self.base_s * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(d / 2, d)

    def reset(self) -> None:
        self.attempt = 0


def resolve(addr: Address) -> tuple[int, tuple[str, int] | tuple[str, int, int, int]]:
    """Family and socket address of a host:port (first result)."""
    infos = socket.getaddrinfo(addr.host, addr.port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {addr.host}")
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr  # type: ignore[return-value]
