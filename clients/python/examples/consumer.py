"""A consumer group member: prints records as they come, commits as it goes
(every 5 s and on exit), shares partitions with other members of the group.
Run two of these and watch the partitions split; Ctrl-C leaves the group.

    python consumer.py [ADDR] TOPIC GROUP
"""

import sys

import weft

args = sys.argv[1:]
addr = args.pop(0) if args and "://" in args[0] else "tcp://127.0.0.1:7400"
topic, group = (args + ["orders", "billing"][len(args):])[:2]

with weft.Client(addr) as c:
    consumer = c.consumer(group, [topic], auto_offset_reset="earliest")
    try:
        for r in consumer:
            key = r.key.decode(errors="replace") if r.key is not None else ""
            print(f"{r.topic}/{r.partition}@{r.offset} {key}: {(r.value or b'').decode(errors='replace')}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
