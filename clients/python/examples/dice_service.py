"""The dice roller of docs/examples.md as a Python service: the same routes,
answers and validation errors as the Rust `dice_server`, so either serves
`dice_client` (Rust or Python) and `weft call roll '{"sides": 6}'`.

    DICE_SEED=7 python dice_service.py tcp://127.0.0.1:7410 udp://127.0.0.1:7410 unix:///tmp/dice.sock
"""

import os
import random
import sys
from typing import Any

import weft

MAX_TIMES = 1000
rng = random.Random(int(os.environ["DICE_SEED"])) if "DICE_SEED" in os.environ else random.SystemRandom()
service = weft.Service("dice")


def field(req: Any, name: str) -> int:
    v = req.get(name) if isinstance(req, dict) else None
    if not isinstance(v, int) or v < 0:
        raise weft.BadBody(f"missing field `{name}` (an unsigned integer)")
    return v


def sides_of(req: Any) -> int:
    sides = field(req, "sides")
    if sides == 0:
        raise weft.Validation("sides must be at least 1", {"field": "sides", "got": 0, "min": 1})
    return sides


@service.endpoint("roll")
def roll(req: Any) -> int:
    return rng.randint(1, sides_of(req))


@service.endpoint("roll_times")
def roll_times(req: Any) -> list[int]:
    sides, n = sides_of(req), field(req, "how_many")
    if n > MAX_TIMES:
        raise weft.Validation(f"how_many must be at most {MAX_TIMES}", {"field": "how_many", "got": n, "max": MAX_TIMES})
    return [rng.randint(1, sides) for _ in range(n)]


@service.endpoint("guess")
def guess(req: Any) -> dict[str, Any]:
    sides, g = sides_of(req), field(req, "guess")
    if not 1 <= g <= sides:
        raise weft.Validation(f"guess must be between 1 and {sides}", {"field": "guess", "got": g, "min": 1, "max": sides})
    rolled = rng.randint(1, sides)
    return {"rolled": rolled, "correct": rolled == g}


if __name__ == "__main__":
    service.run(*(sys.argv[1:] or ["tcp://127.0.0.1:7410"]))
