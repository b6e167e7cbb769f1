"""The query API over the native protocol (docs/query.md, docs/aql.md):
``query.execute`` and ``query.batch`` with AQL text, and table helpers that
write the AQL for you. Parameters are bound on the client: ``$name`` in the
text becomes the value's AQL literal (quoted and escaped), never text
spliced as is."""

from __future__ import annotations

import json as _json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union

from .errors import CompareFailed

#: A key: text (its UTF-8) or bytes.
Key = Union[str, bytes, bytearray, memoryview]


def quote(s: str, q: str = "'") -> str:
    """``s`` as an AQL string (``q="'"``) or quoted name (``q='"'``)."""
    out = [q]
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == q:
            out.append("\\" + q)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append(q)
    return "".join(out)


def name(n: str) -> str:
    """A table or topic name, always quoted (a keyword stays a name)."""
    if not isinstance(n, str) or not n:
        raise ValueError(f"a table or topic name is a non-empty str, not {n!r}")
    return quote(n, '"')


def key_literal(k: Key) -> str:
    if isinstance(k, str):
        return quote(k)
    if isinstance(k, (bytes, bytearray, memoryview)):
        return f"x'{bytes(k).hex()}'"
    raise TypeError(f"a key is str or bytes, not {type(k).__name__}")


def literal(v: Any) -> str:
    """A value's AQL literal: str is stored as its text, bytes as they are,
    anything else JSON-encodable as one JSON literal (``42``, ``{"a": 1}``)."""
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return f"x'{bytes(v).hex()}'"
    if isinstance(v, float) and v != v:
        raise ValueError("NaN has no JSON literal")
    try:
        return _json.dumps(v, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{v!r} has no AQL literal: {e}") from None


def bind(aql: str, params: Mapping[str, Any] | None) -> str:
    """Replace each ``$name`` outside strings, quoted names and comments with
    ``literal(params[name])``. An unknown or unused name is a ValueError."""
    if not params:
        if "$" in _code_only(aql):
            raise ValueError("the query has $parameters but no params were given")
        return aql
    out: list[str] = []
    used: set[str] = set()
    i, n = 0, len(aql)
    while i < n:
        c = aql[i]
        if c in "'\"":
            j = _string_end(aql, i)
            out.append(aql[i:j])
            i = j
        elif c == "-" and aql.startswith("--", i):
            j = aql.find("\n", i)
            j = n if j < 0 else j
            out.append(aql[i:j])
            i = j
        elif c == "$":
            j = i + 1
            while j < n and (aql[j].isalnum() or aql[j] == "_"):
                j += 1
            p = aql[i + 1 : j]
            if not p:
                raise ValueError(f"a $ without a parameter name at byte {i}")
            if p not in params:
                raise ValueError(f"no value for the parameter ${p}")
            used.add(p)
            out.append(literal(params[p]))
            i = j
        else:
            out.append(c)
            i += 1
    unused = set(params) - used
    if unused:
        raise ValueError(f"parameters not in the query: {', '.join(sorted(unused))}")
    return "".join(out)


def _string_end(s: str, i: int) -> int:
    q = s[i]
    j = i + 1
    while j < len(s):
        if s[j] == "\\":
            j += 2
            continue
        if s[j] == q:
            return j + 1
        j += 1
    return len(s)


def _code_only(s: str) -> str:
    out, i = [], 0
    while i < len(s):
        if s[i] in "'\"":
            i = _string_end(s, i)
        elif s.startswith("--", i):
            j = s.find("\n", i)
            i = len(s) if j < 0 else j
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _bytes_of(d: Mapping[str, Any], field: str) -> str | bytes | None:
    if field in d:
        v = d[field]
        return v if isinstance(v, str) else None
    h = d.get(f"{field}_hex")
    return bytes.fromhex(h) if isinstance(h, str) else None


@dataclass(frozen=True)
class KeyValue:
    """One key of a table: ``key`` and ``value`` are str when they are UTF-8,
    else bytes (the JSON answer's ``key_hex``/``value_hex``)."""

    key: str | bytes
    value: str | bytes | None
    create_revision: int
    mod_revision: int
    version: int
    deleted: bool = False

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> KeyValue:
        k = _bytes_of(d, "key")
        return cls(
            key=k if k is not None else b"",
            value=_bytes_of(d, "value"),
            create_revision=int(d.get("create_revision", 0)),
            mod_revision=int(d.get("mod_revision", 0)),
            version=int(d.get("version", 0)),
            deleted=bool(d.get("deleted", False)),
        )

    def json(self) -> Any:
        """The value parsed as JSON (what ``put`` stored from a dict, list, number...)."""
        if self.value is None:
            return None
        return _json.loads(self.value)


@dataclass(frozen=True)
class RangeResult:
    kvs: list[KeyValue]
    revision: int
    more: bool


class QueryMixin:
    """The query calls of :class:`weft.AsyncClient`."""

    async def call(self, route: str, body: Any = None, *, timeout: float | None = None, json: bool | None = None) -> Any:
        raise NotImplementedError  # AsyncClient's

    async def query(
        self,
        aql: str,
        params: Mapping[str, Any] | None = None,
        *,
        timeout_ms: int | None = None,
        serializable: bool = False,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run one AQL statement (``query.execute``); returns the JSON result:
        ``kind``, ``revision``, ``count``, and ``kvs``, ``more``, ``succeeded``
        and ``ops`` (BATCH), ``tables``, ``records``/``next_offset`` (FROM
        TOPIC) as the statement has them. ``params``: values for ``$name``
        placeholders. ``timeout_ms``: the server-side deadline (a shorter
        ``TIMEOUT`` clause wins). ``serializable``: in cluster mode, GET and
        RANGE read the answering node's replica without a ReadIndex."""
        return await self._query("query.execute", bind(aql, params), timeout_ms, serializable, timeout)

    async def query_batch(
        self,
        batch: str | Sequence[str],
        params: Mapping[str, Any] | None = None,
        *,
        timeout_ms: int | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Run one BATCH atomically (``query.batch``): AQL text ``BATCH {...}``,
        or a list of operations (GET/SET/DELETE/RANGE on one table) wrapped
        into one. Answers ``succeeded`` and one result per op in ``ops``."""
        text = batch if isinstance(batch, str) else "BATCH { " + "; ".join(batch) + " }"
        return await self._query("query.batch", bind(text, params), timeout_ms, False, timeout)

    async def _query(
        self, route: str, aql: str, timeout_ms: int | None, serializable: bool, timeout: float | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"aql": aql}
        if timeout_ms is not None:
            if timeout_ms < 0:
                raise ValueError("timeout_ms must be >= 0")
            body["timeout_ms"] = timeout_ms
            if timeout is None:
                timeout = timeout_ms / 1000 + 5
        if serializable:
            body["serializable"] = True
        return dict(await self.call(route, body, timeout=timeout))

    # ---- tables ----------------------------------------------------------------

    async def table_create(self, table: str) -> None:
        """CREATE TABLE; :class:`Conflict` (kind ``already_exists``) when it exists."""
        await self.query(f"CREATE TABLE {name(table)}")

    async def table_drop(self, table: str) -> None:
        await self.query(f"DROP TABLE {name(table)}")

    async def tables(self) -> list[str]:
        return [str(t) for t in (await self.query("SHOW TABLES")).get("tables", [])]

    async def get(
        self, table: str, key: Key, *, revision: int | None = None, serializable: bool = False
    ) -> KeyValue | None:
        """The key's current value (or at ``revision``), None when absent."""
        at = f" AT REVISION {int(revision)}" if revision is not None else ""
        r = await self.query(f"GET {name(table)} {key_literal(key)}{at}", serializable=serializable)
        kvs = r.get("kvs") or []
        return KeyValue.from_wire(kvs[0]) if kvs else None

    async def put(
        self, table: str, key: Key, value: Any, *, if_version: int | None = None, if_absent: bool = False
    ) -> int:
        """SET the key; returns the table's revision of the write. ``if_version``
        (0 = absent) or ``if_absent`` make it a compare-and-set that raises
        :class:`CompareFailed` when the compare does not hold."""
        if if_version is not None and if_absent:
            raise ValueError("give if_version or if_absent, not both")
        cond = f" IF VERSION = {int(if_version)}" if if_version is not None else (" IF ABSENT" if if_absent else "")
        r = await self.query(f"SET {name(table)} {key_literal(key)} = {literal(value)}{cond}")
        return int(r.get("revision", 0))

    async def compare_and_set(self, table: str, key: Key, value: Any, version: int) -> bool:
        """Write ``value`` only if the key's version is ``version`` (0: absent).
        True when written, False when the compare failed."""
        try:
            await self.put(table, key, value, if_version=version)
        except CompareFailed:
            return False
        return True

    async def delete(self, table: str, key: Key, *, if_version: int | None = None, if_exists: bool = False) -> int:
        """DELETE the key; returns how many keys were deleted (0 or 1). The
        conditions raise :class:`CompareFailed` when they do not hold."""
        if if_version is not None and if_exists:
            raise ValueError("give if_version or if_exists, not both")
        cond = f" IF VERSION = {int(if_version)}" if if_version is not None else (" IF EXISTS" if if_exists else "")
        r = await self.query(f"DELETE {name(table)} {key_literal(key)}{cond}")
        return int(r.get("count", 0))

    async def range(
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
        """Keys ``start <= k < end`` (``end`` None: to the last key), or those
        starting with ``prefix``, in key order; ``more`` when ``limit`` cut it."""
        if prefix is not None:
            if start is not None or end is not None:
                raise ValueError("give prefix or start/end, not both")
            sel = f"PREFIX {key_literal(prefix)}"
        else:
            sel = f"FROM {key_literal(start if start is not None else b'')}"
            if end is not None:
                sel += f" TO {key_literal(end)}"
        if limit is not None:
            sel += f" LIMIT {int(limit)}"
        if revision is not None:
            sel += f" AT REVISION {int(revision)}"
        r = await self.query(f"RANGE {name(table)} {sel}", serializable=serializable)
        return RangeResult([KeyValue.from_wire(x) for x in r.get("kvs") or []], int(r.get("revision", 0)), bool(r.get("more", False)))

    async def history(self, table: str, key: Key, limit: int | None = None) -> list[KeyValue]:
        """The key's stored versions, newest first (deletes have ``deleted``)."""
        lim = f" LIMIT {int(limit)}" if limit is not None else ""
        r = await self.query(f"HISTORY {name(table)} {key_literal(key)}{lim}")
        return [KeyValue.from_wire(x) for x in r.get("kvs") or []]
