"""A Weft native-protocol client over TLS, written from docs/protocol.md
with Python's ssl module (OpenSSL underneath). JSON bodies (flag 0x01).

usage: weft_tls_client.py HOST PORT CA_PEM [CERT_PEM KEY_PEM]
Prints one JSON object: {"welcome": {...}, "echo": ..., "ping": {...},
"whoami": {...}} or {"refused": "reason"}.
"""
import json
import socket
import ssl
import struct
import sys
import uuid

HEADER = struct.Struct(">2sBBBBI16s")  # magic, version, kind, flags, R, B, id
REQUEST, RESPONSE, ERROR, CONTROL = 1, 2, 3, 5
JSON_FLAG = 0x01


def frame(kind, route, body, mid=None):
    mid = mid or uuid.uuid4().bytes
    r = route.encode()
    b = json.dumps(body).encode()
    return mid, HEADER.pack(b"WF", 1, kind, JSON_FLAG, len(r), len(b), mid) + r + b


def read_exact(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        out += chunk
    return out


def read_frame(sock):
    magic, version, kind, flags, rlen, blen, mid = HEADER.unpack(read_exact(sock, HEADER.size))
    assert magic == b"WF" and version == 1, (magic, version)
    if blen > 1 << 20:
        raise ValueError("frame too large")
    route = read_exact(sock, rlen).decode()
    body = read_exact(sock, blen)
    value = json.loads(body) if flags & JSON_FLAG and body else body.hex()
    return kind, route, mid, value


def call(sock, route, body):
    mid, data = frame(REQUEST, route, body)
    sock.sendall(data)
    while True:
        kind, r, got, value = read_frame(sock)
        if got == mid:
            if kind == ERROR:
                raise RuntimeError(f"server error: {value}")
            return value


def main():
    host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.set_alpn_protocols(["weft/1"])
    if len(sys.argv) > 5:
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    out = {}
    try:
        raw = socket.create_connection((host, port), timeout=10)
        sock = ctx.wrap_socket(raw, server_hostname="localhost")
        out["alpn"] = sock.selected_alpn_protocol()
        out["tls_version"] = sock.version()
        mid, hello = frame(CONTROL, "hello", {"protocol_version": 1, "client_id": "python-ssl", "client_name": "py"})
        sock.sendall(hello)
        kind, route, got, welcome = read_frame(sock)
        if kind != CONTROL or route != "welcome" or got != mid:
            raise RuntimeError(f"expected welcome, got kind {kind} route {route}: {welcome}")
        out["welcome"] = welcome
        out["echo"] = call(sock, "weft.echo", {"text": "hi from python"})
        out["ping"] = call(sock, "weft.ping", None)
        out["whoami"] = call(sock, "whoami", None)
        sock.close()
    except (ssl.SSLError, ConnectionError, OSError, RuntimeError) as e:
        out = {"refused": f"{type(e).__name__}: {e}"}
    print(json.dumps(out))


main()
