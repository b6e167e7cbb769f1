"""Values of the log API (docs/log.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

from .errors import ServerError, from_dto

Bytesish = Union[bytes, bytearray, memoryview, str]
#: What ``produce`` accepts per record: a value alone, a ``(key, value)`` pair,
#: a :class:`ProducerRecord`, or a dict with the wire fields.
RecordLike = Union[Bytesish, tuple[Bytesish | None, Bytesish | None], "ProducerRecord", Mapping[str, Any]]


def to_bytes(v: Bytesish | None) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode()
    return bytes(v)


@dataclass
class ProducerRecord:
    value: Bytesish | None = None
    key: Bytesish | None = None
    headers: Sequence[tuple[str, Bytesish]] = ()
    partition: int | None = None
    timestamp_ms: int | None = None

    def to_wire(self) -> dict[str, Any]:
        # Absent fields are left out (the server's defaults: no key, no headers).
        out: dict[str, Any] = {"value": to_bytes(self.value)}
        if self.key is not None:
            out["key"] = to_bytes(self.key)
        if self.headers:
            out["headers"] = [[n, to_bytes(v)] for n, v in self.headers]
        if self.partition is not None:
            out["partition"] = self.partition
        if self.timestamp_ms is not None:
            out["timestamp_ms"] = self.timestamp_ms
        return out


def record_to_wire(r: RecordLike) -> dict[str, Any]:
    if type(r) is bytes:
        return {"value": r}
    if isinstance(r, ProducerRecord):
        return r.to_wire()
    if isinstance(r, (bytes, bytearray, memoryview, str)):
        return ProducerRecord(value=r).to_wire()
    if isinstance(r, tuple):
        return ProducerRecord(key=r[0], value=r[1]).to_wire()
    return ProducerRecord(
        value=r.get("value"),
        key=r.get("key"),
        headers=[(str(h[0]), h[1]) for h in r.get("headers", ())],
        partition=r.get("partition"),
        timestamp_ms=r.get("timestamp_ms"),
    ).to_wire()


@dataclass(frozen=True)
class ProduceResult:
    """Where one record went, or why it was refused (``error``)."""

    partition: int | None
    offset: int | None
    timestamp_ms: int | None
    error: ServerError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @staticmethod
    def from_wire(v: Mapping[str, Any]) -> ProduceResult:
        err = v.get("error")
        return ProduceResult(
            v.get("partition"), v.get("offset"), v.get("timestamp_ms"), from_dto(err, "log.produce") if err else None
        )


@dataclass(frozen=True)
class Record:
    """A record read from the log."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @staticmethod
    def from_wire(topic: str, partition: int, v: Mapping[str, Any]) -> Record:
        return Record(
            topic,
            partition,
            int(v["offset"]),
            int(v.get("timestamp_ms", 0)),
            _opt_bytes(v.get("key")),
            _opt_bytes(v.get("value")),
            [(str(h[0]), _opt_bytes(h[1]) or b"") for h in v.get("headers") or ()],
        )


def _opt_bytes(v: Any) -> bytes | None:
    if v is None:
        return None
    if isinstance(v, str):
        return v.encode()
    return bytes(v)


@dataclass(frozen=True)
class FetchResult:
    topic: str
    partition: int
    high_watermark: int
    log_start_offset: int
    next_offset: int
    records: list[Record]
    #: set when ``reset`` moved a fetch whose offset was outside the log
    reset_from: int | None = None

    @staticmethod
    def from_wire(v: Mapping[str, Any]) -> FetchResult:
        topic, partition = str(v["topic"]), int(v["partition"])
        rf = v.get("reset_from")
        return FetchResult(
            topic,
            partition,
            int(v["high_watermark"]),
            int(v["log_start_offset"]),
            int(v["next_offset"]),
            [Record.from_wire(topic, partition, r) for r in v.get("records") or ()],
            None if rf is None else int(rf),
        )


@dataclass(frozen=True)
class Membership:
    """A consumer group member's view: the answer of join and heartbeat."""

    group: str
    member_id: str
    generation: int
    assignment: list[tuple[str, int]]
    members: int
    #: partitions of this member's share still held by their previous owner
    #: (they arrive in a later heartbeat, after the hand-off)
    pending: int = 0

    @staticmethod
    def from_wire(v: Mapping[str, Any]) -> Membership:
        return Membership(
            str(v["group"]),
            str(v["member_id"]),
            int(v["generation"]),
            [(str(t), int(p)) for t, p in v.get("assignment") or ()],
            int(v.get("members", 0)),
            int(v.get("pending") or 0),
        )
