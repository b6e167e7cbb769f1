"""Closed-loop throughput of the Python client (and of redis-py for comparison).

    python bench.py weft ADDR SECONDS      # ping (1 in flight, sync Client), ping (16 in flight, AsyncClient),
                                           # produce 1 record/request, produce 100 records/request
    python bench.py redis HOST:PORT SECONDS   # PING and XADD the same ways with redis-py

Prints one JSON line per workload: {"client", "workload", "ops", "seconds", "per_s"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from typing import Any

VALUE = b"x" * 100


def timed(client: str, workload: str, seconds: float, step: Callable[[], int]) -> None:
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # warm-up
        step()
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        n += step()
    dt = time.perf_counter() - t0
    print(json.dumps({"client": client, "workload": workload, "ops": n, "seconds": round(dt, 3), "per_s": round(n / dt)}), flush=True)


async def atimed(client: str, workload: str, seconds: float, inflight: int, step: Callable[[], Any]) -> None:
    count = 0
    stop = time.perf_counter() + 0.3

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await step()
            count += 1

    await asyncio.gather(*(worker() for _ in range(inflight)))  # warm-up
    count = 0
    t0 = time.perf_counter()
    stop = t0 + seconds
    await asyncio.gather(*(worker() for _ in range(inflight)))
    dt = time.perf_counter() - t0
    print(json.dumps({"client": client, "workload": workload, "ops": count, "seconds": round(dt, 3), "per_s": round(count / dt)}), flush=True)


def bench_weft(addr: str, seconds: float) -> None:
    import weft

    with weft.Client(addr) as c:
        timed("weft-python", "ping, 1 in flight", seconds, lambda: (c.ping(), 1)[1])
        topic = f"bench-py-{int(time.time() * 1000)}"
        c.create_topic(topic, partitions=1)
        timed("weft-python", "produce 100 B, 1 record/request", seconds, lambda: len(c.produce(topic, [VALUE])))
        batch = [VALUE] * 100
        timed("weft-python", "produce 100 B, 100 records/request", seconds, lambda: len(c.produce(topic, batch)))

    async def run_async() -> None:
        async with weft.AsyncClient(addr) as a:
            await atimed("weft-python-asyncio", "ping, 1 in flight", seconds, 1, a.ping)
            await atimed("weft-python-asyncio", "ping, 16 in flight", seconds, 16, a.ping)

    asyncio.run(run_async())


def bench_redis(hostport: str, seconds: float) -> None:
    import redis

    host, port = hostport.rsplit(":", 1)
    r = redis.Redis(host=host, port=int(port))
    timed("redis-py", "ping, 1 in flight", seconds, lambda: (r.ping(), 1)[1])
    key = f"bench-py-{int(time.time() * 1000)}"
    timed("redis-py", "produce 100 B, 1 record/request", seconds, lambda: (r.xadd(key, {"v": VALUE}), 1)[1])

    def batch() -> int:
        p = r.pipeline(transaction=False)
        for _ in range(100):
            p.xadd(key, {"v": VALUE})
        return len(p.execute())

    timed("redis-py", "produce 100 B, 100 records/request", seconds, batch)
    r.delete(key)

    async def run_async() -> None:
        import redis.asyncio as aredis

        a = aredis.Redis(host=host, port=int(port), max_connections=16)
        await atimed("redis-py", "ping, 16 in flight", seconds, 16, a.ping)
        await a.aclose()

    asyncio.run(run_async())


if __name__ == "__main__":
    kind, target, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    (bench_weft if kind == "weft" else bench_redis)(target, secs)
