"""The dice-roller client of docs/examples.md: one call from the command line,
or a demo that also shows two refusals.

    python dice_client.py [ADDR] [roll SIDES | roll_times SIDES N | guess SIDES G]
"""

import sys

import weft

args = sys.argv[1:]
addr = args.pop(0) if args and "://" in args[0] else "tcp://127.0.0.1:7410"

COMMANDS = {"roll": ("sides",), "roll_times": ("sides", "how_many"), "guess": ("sides", "guess")}


def show(c: weft.Client, route: str, body: dict[str, int]) -> None:
    shown = "{" + ", ".join(f"{k}: {v}" for k, v in body.items()) + "}"
    try:
        r = c.call(route, body)
    except weft.Validation as e:  # refused: print and carry on
        print(f"{route} {shown} -> refused (validation): {e.message} {e.details}")
        return
    if route == "roll_times":
        print(f"{route} {shown} -> {r} (sum {sum(r)})")
    elif route == "guess":
        print(f"{route} {shown} -> rolled {r['rolled']}, {'correct!' if r['correct'] else 'wrong'}")
    else:
        print(f"{route} {shown} -> {r}")


if args:  # parse before connecting: a typo costs no round trip
    route = args[0]
    if route not in COMMANDS or len(args) - 1 != len(COMMANDS[route]):
        sys.exit(f"usage: dice_client.py [ADDR] {' | '.join(f'{k} ' + ' '.join(v).upper() for k, v in COMMANDS.items())}")
    plan = [(route, {k: int(v) for k, v in zip(COMMANDS[route], args[1:])})]
else:
    plan = [
        ("roll", {"sides": 6}),
        ("roll", {"sides": 20}),
        ("roll_times", {"sides": 6, "how_many": 10}),
        ("guess", {"sides": 6, "guess": 3}),
        ("roll", {"sides": 0}),
        ("roll_times", {"sides": 6, "how_many": 1001}),
    ]

with weft.Client(addr) as c:
    c.connect()
    print(f"connected to {addr}")
    for route, body in plan:
        show(c, route, body)
