"""Interleaved closed-loop windows, for a loaded machine: each round runs the
sync weft.Client and redis-py for WINDOW ms on each workload, one after the
other, so that load from elsewhere falls on both alike; prints the median and
the best window per client and workload (one JSON line each).

    python interleave.py WEFT_ADDR REDIS_HOST:PORT ROUNDS WINDOW_MS
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

VALUE = b"x" * 100


def window(step: Callable[[], Any], ms: float) -> float:
    n = 0
    t0 = time.perf_counter()
    end = t0 + ms / 1000
    while time.perf_counter() < end:
        step()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    import redis

    import weft

    addr, redis_at, rounds, ms = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    host, port = redis_at.rsplit(":", 1)
    c = weft.Client(addr)
    topic = f"bench-il-py-{int(time.time() * 1000)}"
    c.create_topic(topic, partitions=1)
    r = redis.Redis(host=host, port=int(port))
    key = f"bench-il-py-{int(time.time() * 1000)}"
    steps: dict[str, dict[str, Callable[[], Any]]] = {
        "weft-python": {"ping": c.ping, "produce": lambda: c.produce(topic, [VALUE])},
        "redis-py": {"ping": r.ping, "produce": lambda: r.xadd(key, {"v": VALUE})},
    }
    for s in steps.values():
        for f in s.values():
            window(f, ms)  # warm-up
    rates: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for w in ("ping", "produce"):
            for name, s in steps.items():
                rates.setdefault((name, w), []).append(window(s[w], ms))
    for (name, w), v in rates.items():
        v.sort()
        workload = "ping, 1 in flight" if w == "ping" else "produce 100 B, 1 record/request"
        print(json.dumps({"client": name, "workload": workload, "windows": len(v),
                          "median_per_s": round(v[len(v) // 2]), "best_per_s": round(v[-1])}), flush=True)
    r.delete(key)
    c.close()


if __name__ == "__main__":
    main()
