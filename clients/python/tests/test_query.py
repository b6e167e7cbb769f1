"""The query API (docs/query.md, docs/aql.md) from Python against a real
`weft serve`: query/query_batch, the table helpers with revisions and
compare-and-set, parameters bound as literals, typed errors; sync and async."""

from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
from conftest import WEFT_BIN, Node, unique

import weft
from weft.query import bind, literal


def test_tables_and_revisions(client: weft.Client) -> None:
    t = unique("pyt").replace("-", "_")
    client.table_create(t)
    assert t in client.tables()
    with pytest.raises(weft.Conflict) as e:
        client.table_create(t)
    assert e.value.kind == "already_exists"

    r1 = client.put(t, "pump/1", {"kind": "pump", "rpm": 1200})
    r2 = client.put(t, "pump/2", "plain text")
    r3 = client.put(t, b"\xff\x00", b"\x80\x02")
    assert r1 < r2 < r3
    kv = client.get(t, "pump/1")
    assert kv is not None and kv.json() == {"kind": "pump", "rpm": 1200}
    assert (kv.version, kv.create_revision, kv.mod_revision) == (1, r1, r1)
    assert client.get(t, "pump/2") == weft.KeyValue("pump/2", "plain text", r2, r2, 1)
    raw = client.get(t, b"\xff\x00")
    assert raw is not None and raw.key == b"\xff\x00" and raw.value == b"\x80\x02"
    assert client.get(t, "absent") is None

    # Compare-and-set on the version; a lost compare writes nothing.
    r4 = client.put(t, "pump/1", {"kind": "pump", "rpm": 1300}, if_version=1)
    with pytest.raises(weft.CompareFailed) as cf:
        client.put(t, "pump/1", {"rpm": 0}, if_version=1)
    assert isinstance(cf.value, weft.Conflict) and cf.value.kind == "compare_failed"
    assert client.compare_and_set(t, "pump/1", {"rpm": 1}, 1) is False
    assert client.compare_and_set(t, "pump/1", {"rpm": 1}, 2) is True
    assert client.compare_and_set(t, "new", "x", 0) is True
    with pytest.raises(weft.CompareFailed):
        client.put(t, "new", "y", if_absent=True)
    # The past stays readable at its revision.
    old = client.get(t, "pump/1", revision=r1)
    assert old is not None and old.json()["rpm"] == 1200
    at4 = client.get(t, "pump/1", revision=r4)
    assert at4 is not None and at4.json()["rpm"] == 1300
    now = client.get(t, "pump/1")
    assert now is not None and now.json() == {"rpm": 1} and now.version == 3
    assert [h.json()["rpm"] for h in client.history(t, "pump/1")] == [1, 1300, 1200]

    rng = client.range(t, prefix="pump/")
    assert [k.key for k in rng.kvs] == ["pump/1", "pump/2"] and not rng.more
    lim = client.range(t, "a", "q", limit=1)
    assert [k.key for k in lim.kvs] == ["new"] and lim.more

    with pytest.raises(weft.CompareFailed):
        client.delete(t, "gone", if_exists=True)
    assert client.delete(t, "gone") == 0
    assert client.delete(t, "pump/2", if_version=1) == 1
    assert client.get(t, "pump/2") is None
    client.table_drop(t)
    assert t not in client.tables()
    with pytest.raises(weft.NotFound):
        client.get(t, "pump/1")


def test_query_batch_and_params(client: weft.Client) -> None:
    t = unique("pyq").replace("-", "_")
    client.query(f"CREATE TABLE {t}")
    # A hostile value stays one literal: quotes, backslashes, $ and comments inside.
    evil = "it's \\ $x -- not a comment\n\"q\""
    r = client.query(f"SET {t} $k = $v", {"k": "a", "v": evil})
    assert r["kind"] == "set"
    got = client.query(f"GET {t} $k", {"k": "a"})
    assert got["kvs"][0]["value"] == evil
    client.query(f"SET {t} 'n' = $v", {"v": {"rpm": 5, "tags": ["x"]}})
    f = client.query(f"FILTER {t} WHERE rpm >= $min", {"min": 5})
    assert [kv["key"] for kv in f["kvs"]] == ["n"]

    ok = client.query_batch([f"SET {t} 'b1' = 1", f"SET {t} 'b2' = 2", f"GET {t} 'b1'"])
    assert ok["succeeded"] is True and len(ok["ops"]) == 3 and ok["ops"][2]["kvs"][0]["value"] == "1"
    # ELSE branch: not an error, succeeded false (etcd's Txn).
    cond = client.query_batch(
        f"BATCH {{ IF VERSION({t}, 'lock') = 1 THEN {{ SET {t} 'lock' = 'me' }} ELSE {{ GET {t} 'b2' }} }}"
    )
    assert cond["succeeded"] is False and cond["ops"][0]["kvs"][0]["value"] == "2"
    # Without ELSE a failed compare is an error and nothing is written.
    with pytest.raises(weft.CompareFailed):
        client.query_batch(f"BATCH {{ IF VERSION({t}, 'b1') = 7 THEN {{ SET {t} 'b3' = 3 }} }}")
    assert client.get(t, "b3") is None
    with pytest.raises(weft.Validation) as nb:
        client.query_batch(f"GET {t} 'b1'")
    assert "BATCH" in nb.value.message

    show = client.query("SHOW TABLES")
    assert t in show["tables"]


def test_query_errors(client: weft.Client) -> None:
    with pytest.raises(weft.AqlSyntaxError) as e:
        client.query("GET")
    assert isinstance(e.value, weft.Validation)
    assert e.value.line == 1 and e.value.column is not None and e.value.column >= 1
    with pytest.raises(weft.NotFound):
        client.query("GET no_such_table_py 'k'")
    with pytest.raises(weft.ServerTimeout):
        client.query("SHOW TABLES TIMEOUT 0")
    # Bad input refused on the client before sending.
    with pytest.raises(ValueError):
        client.query("GET t $k")
    with pytest.raises(ValueError):
        client.query("GET t 'k'", {"unused": 1})
    with pytest.raises(ValueError):
        client.put("t", "k", float("nan"))
    with pytest.raises(TypeError):
        client.get("t", 5)  # type: ignore[arg-type]


def test_bind_leaves_strings_alone() -> None:
    assert bind("GET t '$k' -- $k\n", None) == "GET t '$k' -- $k\n"
    assert bind('SET "$t" $k = $v', {"k": b"\x00\xff", "v": [1, None]}) == "SET \"$t\" x'00ff' = [1,null]"
    assert literal("a'b\\c\u0001") == "'a\\'b\\\\c\\u{1}'"


def test_async_query(node: Node) -> None:
    async def main() -> None:
        async with weft.AsyncClient(node.tcp) as c:
            t = unique("pya").replace("-", "_")
            await c.table_create(t)
            rev = await c.put(t, "k", {"n": 1}, if_absent=True)
            kv = await c.get(t, "k")
            assert kv is not None and kv.mod_revision == rev and kv.json() == {"n": 1}
            assert await c.compare_and_set(t, "k", {"n": 2}, 1)
            assert not await c.compare_and_set(t, "k", {"n": 3}, 1)
            r = await c.query_batch([f"GET {t} 'k'"])
            assert json.loads(r["ops"][0]["kvs"][0]["value"]) == {"n": 2}
            with pytest.raises(weft.AqlSyntaxError):
                await c.query("SELECT 1")

    asyncio.run(main())


def test_cli_sees_python_writes(node: Node, client: weft.Client) -> None:
    """A table written through the Python client's native calls, read with
    the Rust CLI's `weft call query.execute` (the same route, another client)."""
    t = unique("pyc").replace("-", "_")
    client.table_create(t)
    client.put(t, "from-python", {"ok": True})
    out = subprocess.run(
        [WEFT_BIN, "call", "query.execute", json.dumps({"aql": f"GET {t} 'from-python'"}), "--addr", node.tcp],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(json.loads(out.stdout)["kvs"][0]["value"]) == {"ok": True}
