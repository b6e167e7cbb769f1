"""A consumer group member that iterates records and commits as it goes,
as Kafka's Python clients do (kafka-python's ``for msg in consumer``)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Sequence

from .errors import Conflict, NotFound
from .types import Membership, Record

if TYPE_CHECKING:
    from .aio import AsyncClient


class AsyncConsumer:
    """Joins ``group`` for ``topics`` and reads the partitions assigned to it.

    * Start position of a partition: the group's committed offset, else
      ``auto_offset_reset`` (docs/log.md, "the reset policy"): "earliest"
      (Weft's default), "latest" (Kafka's), or "none" (raise
      :class:`OutOfRange`). A position outside the log (removed by retention)
      restarts there too: the fetch carries the policy.
    * ``enable_auto_commit`` (default on): the offsets of records already
      handed out are committed every ``auto_commit_interval_ms``, before a
      rebalance, and on :meth:`close`: at-least-once, like kafka-python.
      :meth:`commit` commits now.
    * Heartbeats every ``session_timeout_ms / 3`` while iterating; a new
      generation in the answer is a rebalance: partitions taken away are
      dropped, new ones start from their committed offsets.
    * ``consumer_timeout_ms``: stop iterating after that long without a record
      (default: never, as kafka-python).
    """

    def __init__(
        self,
        client: AsyncClient,
        group: str,
        topics: Sequence[str],
        *,
        auto_offset_reset: str = "earliest",
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 10_000,
        max_records: int = 500,
        poll_wait_ms: int = 500,
        consumer_timeout_ms: int | None = None,
        strategy: str | None = None,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError("auto_offset_reset must be 'earliest', 'latest' or 'none'")
        self.client = client
        self.group = group
        self.topics = list(topics)
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = enable_auto_commit
        self.auto_commit_interval_s = auto_commit_interval_ms / 1000
        self.session_timeout_ms = session_timeout_ms
        self.max_records = max_records
        self.poll_wait_ms = poll_wait_ms
        self.consumer_timeout_s = None if consumer_timeout_ms is None else consumer_timeout_ms / 1000
        self.strategy = strategy
        self.membership: Membership | None = None
        #: next offset to hand out, per assigned (topic, partition)
        self.positions: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._buffer: deque[Record] = deque()
        self._last_beat = 0.0
        self._last_commit = 0.0

    @property
    def assignment(self) -> list[tuple[str, int]]:
        return list(self.membership.assignment) if self.membership else []

    async def start(self) -> Membership:
        """Join the group (the first iteration or poll does it otherwise)."""
        if self.membership is None:
            loop = asyncio.get_running_loop()
            self.membership = await self.client.join_group(
                self.group, self.topics, strategy=self.strategy, session_timeout_ms=self.session_timeout_ms
            )
            self._last_beat = self._last_commit = loop.time()
            try:
                await self._init_positions()
            except BaseException:
                await self.close(commit=False)  # do not hold partitions we cannot read
                raise
        assert self.membership is not None
        return self.membership

    async def _init_positions(self) -> None:
        assigned = set(self.assignment)
        for tp in list(self.positions):
            if tp not in assigned:
                del self.positions[tp]
                self._committed.pop(tp, None)
        self._buffer = deque(r for r in self._buffer if (r.topic, r.partition) in assigned)
        for tp in assigned:
            if tp not in self.positions:
                # one call: the committed offset if inside the log, else the policy's
                # (none without a usable commit: the node's typed OutOfRange)
                start, committed = await self.client.start_offset(self.group, tp[0], tp[1], self.auto_offset_reset)
                if committed is not None:
                    self._committed[tp] = committed
                self.positions[tp] = start

    async def _heartbeat(self) -> None:
        assert self.membership is not None
        try:
            m = await self.client.heartbeat(self.group, self.membership.member_id, self.membership.generation)
        except NotFound:
            # Our session expired: join again as a new member.
            self.membership = None
            self.positions.clear()
            self._committed.clear()
            self._buffer.clear()
            await self.start()
            return
        if m.generation != self.membership.generation:
            # Rebalanced (cooperative hand-off, docs/log.md): the partitions we
            # lose stay ours until we adopt the new generation, so commit what
            # we handed out under it, stop reading them, then acknowledge.
            self.membership = m
            if self.enable_auto_commit:
                await self._commit_quietly()
            await self._init_positions()
            m = await self.client.heartbeat(self.group, m.member_id, m.generation)
        self.membership = m
        await self._init_positions()

    async def _maintain(self) -> None:
        await self.start()
        now = asyncio.get_running_loop().time()
        # Partitions still on their way from a previous owner arrive in a later
        # heartbeat: ask again soon while some are pending.
        pending = self.membership is not None and self.membership.pending > 0
        interval_s = self.poll_wait_ms / 1000 if pending else self.session_timeout_ms / 3000
        if now - self._last_beat >= interval_s:
            self._last_beat = now
            await self._heartbeat()
        if self.enable_auto_commit and now - self._last_commit >= self.auto_commit_interval_s:
            await self._commit_quietly()

    def _take(self) -> Record:
        r = self._buffer.popleft()
        self.positions[(r.topic, r.partition)] = r.offset + 1
        return r

    async def poll(self, max_records: int | None = None) -> list[Record]:
        """Records from the assigned partitions (may be empty after the wait)."""
        await self._maintain()
        if not self._buffer:
            await self._fetch()
        n = max_records or self.max_records
        out: list[Record] = []
        while self._buffer and len(out) < n:
            out.append(self._take())
        return out

    async def _fetch(self) -> None:
        tps = list(self.positions.items())
        if not tps:
            await asyncio.sleep(self.poll_wait_ms / 1000)
            return

        async def one(tp: tuple[str, int], offset: int) -> list[Record]:
            try:
                r = await self.client.fetch(
                    tp[0],
                    tp[1],
                    offset,
                    max_records=self.max_records,
                    wait_ms=self.poll_wait_ms,
                    reset=self.auto_offset_reset,
                    member=self.membership,  # fenced: log.group.fetch
                )
            except (Conflict, NotFound):
                # expired or rebalanced away: heartbeat at once (rejoin or adopt)
                self._last_beat = 0.0
                return []
            if r.reset_from is not None and r.records:
                self.positions[tp] = r.records[0].offset
            elif r.reset_from is not None:
                self.positions[tp] = r.next_offset
            return r.records

        results = await asyncio.gather(*(one(tp, o) for tp, o in tps))
        for recs in results:
            self._buffer.extend(recs)

    async def commit(self, offsets: dict[tuple[str, int], int] | None = None) -> None:
        """Commit the given offsets, or the positions of every record handed out."""
        await self.start()
        assert self.membership is not None
        todo = dict(offsets) if offsets is not None else {tp: o for tp, o in self.positions.items() if self._committed.get(tp) != o}
        self._last_commit = asyncio.get_running_loop().time()
        if not todo:
            return
        await self.client.commit(
            self.group, todo, member_id=self.membership.member_id, generation=self.membership.generation
        )
        self._committed.update(todo)

    async def _commit_quietly(self) -> None:
        try:
            await self.commit()
        except Conflict:
            # Rebalanced under us (illegal_generation, not_assigned): heartbeat
            # at once to adopt the new generation and hand off.
            self._last_beat = 0.0

    async def close(self, commit: bool = True) -> None:
        """Commit (if auto-commit is on and ``commit``), then leave the group."""
        if self.membership is None:
            return
        try:
            if commit and self.enable_auto_commit:
                await self._commit_quietly()
        finally:
            m, self.membership = self.membership, None
            try:
                await self.client.leave_group(self.group, m.member_id)
            except NotFound:
                pass

    def __aiter__(self) -> AsyncConsumer:
        return self

    async def __anext__(self) -> Record:
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            await self._maintain()
            if self._buffer:
                return self._take()
            await self._fetch()
            if not self._buffer and self.consumer_timeout_s is not None and loop.time() - started >= self.consumer_timeout_s:
                raise StopAsyncIteration

    async def __aenter__(self) -> AsyncConsumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
