"""The Python client against a node with auth on (docs/security.md): the
matrix no token / wrong token / expired token / revoked key / role without
the permission / role with it, through ``token=`` in the hello."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import weft
from conftest import WEFT_BIN, Node


def weft_cli(node: Node, token: str, *args: str) -> str:
    out = subprocess.run([WEFT_BIN, *args, "--addr", node.tcp, "--token", token], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def auth_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("weft-auth") / "data", env={"WEFT_AUTH_ENABLED": "true"})
    n.data_dir.mkdir()
    n.start()
    yield n
    n.stop()


def test_token_matrix(auth_node: Node) -> None:
    admin = (auth_node.data_dir / "admin.token").read_text().strip()
    cli = lambda *a: weft_cli(auth_node, admin, *a)  # noqa: E731
    cli("topic", "create", "py.orders")
    cli("auth", "role", "add", "pyread", "--grant", "read:topic:py.*")
    cli("auth", "role", "add", "pywrite", "--grant", "write:topic:py.*")
    cli("auth", "user", "add", "pr", "--role", "pyread")
    cli("auth", "user", "add", "pw", "--role", "pywrite")
    reader = json.loads(cli("auth", "token", "create", "pr", "--json"))["secret"]
    writer = json.loads(cli("auth", "token", "create", "pw", "--json"))["secret"]
    short = json.loads(cli("auth", "token", "create", "pw", "--ttl-s", "1", "--json"))["secret"]
    revoked = json.loads(cli("auth", "key", "create", "pw", "--json"))
    cli("auth", "key", "revoke", revoked["id"])
    wrong = writer[:-1] + ("A" if writer[-1] != "A" else "Q")

    # No token: the hello is welcomed, every request refused.
    with weft.Client(auth_node.tcp, token="") as c:
        with pytest.raises(weft.Unauthenticated):
            c.produce("py.orders", [b"x"])
    # Wrong, revoked: the hello itself is refused.
    for bad in (wrong, revoked["secret"]):
        with pytest.raises(weft.Unauthenticated):
            with weft.Client(auth_node.tcp, token=bad, timeout=5) as c:
                c.ping()
    # Expired: wait (bounded) for the 1 s token to lapse on an open connection.
    with weft.Client(auth_node.tcp, token=short) as c:
        deadline = time.monotonic() + 30
        while True:
            try:
                c.ping()
            except weft.Unauthenticated:
                break
            assert time.monotonic() < deadline, "the 1 s token never expired"
            time.sleep(0.2)
    # A role without the permission, and with it.
    with weft.Client(auth_node.tcp, token=reader) as c:
        with pytest.raises(weft.Forbidden) as e:
            c.produce("py.orders", [b"x"])
        assert isinstance(e.value, weft.Unauthorized)
    with weft.Client(auth_node.tcp, token=writer) as c:
        r = c.produce("py.orders", [b"hello"])
        assert r[0].error is None
    with weft.Client(auth_node.tcp, token=reader) as c:
        got = c.fetch("py.orders", 0, 0)
        assert [rec.value for rec in got.records] == [b"hello"]


def test_token_from_environment(auth_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = Path(auth_node.data_dir / "admin.token").read_text().strip()
    monkeypatch.setenv("WEFT_TOKEN", admin)
    with weft.Client(auth_node.tcp) as c:
        assert c.call("auth.whoami")["user"] == "admin"


def test_query_api_with_auth(auth_node: Node) -> None:
    """The query routes under auth: no token is Unauthenticated, a role
    without the route's grant Forbidden, the admin token runs them. A token
    that may not read cluster.status still produces (leader routing then only
    follows not_leader answers)."""
    admin = (auth_node.data_dir / "admin.token").read_text().strip()
    cli = lambda *a: weft_cli(auth_node, admin, *a)  # noqa: E731
    cli("topic", "create", "pyq.orders")
    cli("auth", "role", "add", "pyqread", "--grant", "read:topic:pyq.*")
    cli("auth", "role", "add", "pyqwrite", "--grant", "write:topic:pyq.*")
    cli("auth", "user", "add", "qr", "--role", "pyqread")
    cli("auth", "user", "add", "qw", "--role", "pyqwrite")
    reader = json.loads(cli("auth", "token", "create", "qr", "--json"))["secret"]
    writer = json.loads(cli("auth", "token", "create", "qw", "--json"))["secret"]
    with weft.Client(auth_node.tcp, token="") as c:
        with pytest.raises(weft.Unauthenticated):
            c.query("SHOW TABLES")
    with weft.Client(auth_node.tcp, token=reader) as c:
        with pytest.raises(weft.Forbidden):
            c.table_create("pyq_denied")
        with pytest.raises(weft.Forbidden):
            c.produce("pyq.orders", [{"value": b"no", "partition": 0}])
    with weft.Client(auth_node.tcp, token=admin) as c:
        c.table_create("pyq_tbl")
        assert c.put("pyq_tbl", "k", {"v": 1}) > 0
        kv = c.get("pyq_tbl", "k")
        assert kv is not None and kv.json() == {"v": 1}
    with weft.Client(auth_node.tcp, token=writer) as c:
        (r,) = c.produce("pyq.orders", [{"value": b"yes", "partition": 0}])
        assert r.error is None and c.leader_cache == {}
