"""Produce lines of stdin (or a few samples) to a topic, printing where each went.

    python producer.py [ADDR] TOPIC < lines.txt
"""

import sys

import weft

args = sys.argv[1:]
addr = args.pop(0) if args and "://" in args[0] else "tcp://127.0.0.1:7400"
topic = args[0] if args else "orders"
lines = [ln.rstrip("\n") for ln in sys.stdin] if not sys.stdin.isatty() else ["k1:first", "k2:second", "k1:third"]

with weft.Client(addr) as c:
    try:
        c.create_topic(topic, partitions=3)
    except weft.Conflict:
        pass  # already there
    records: list[weft.ProducerRecord] = []
    for ln in lines:  # "key:value", or a value alone
        key, sep, value = ln.partition(":")
        records.append(weft.ProducerRecord(key=key, value=value) if sep else weft.ProducerRecord(value=ln))
    for line, res in zip(lines, c.produce(topic, records)):
        print(f"{line!r} -> partition {res.partition} offset {res.offset}" if res.ok else f"{line!r} -> {res.error}")
