"""The echo client of docs/examples.md: ping, typed `echo`, raw `weft.echo`, info.

    python echo_client.py [ADDR] [TEXT...]     (default tcp://127.0.0.1:7410)
"""

import sys
import time

import weft

addr = sys.argv[1] if len(sys.argv) > 1 else "tcp://127.0.0.1:7410"
texts = sys.argv[2:] or ["hello, weft"]

with weft.Client(addr) as c:
    w = c.connect()
    print(f"connected to {addr}: server {w['server_name']} ({w['server_id']}), version {w['version']}, features {w['features']}")
    t0 = time.perf_counter()
    p = c.ping()
    print(f"weft.ping -> pong={p['pong']} server_time_ms={p['server_time_ms']} in {(time.perf_counter() - t0) * 1e6:.0f}µs")
    for text in texts:
        try:
            r = c.call("echo", {"text": text})
            print(f'echo "{text}" -> "{r["text"]}" ({r["chars"]} chars)')
        except weft.ServerError as e:
            print(f'echo "{text}" -> error server error: {e}')
        print(f'weft.echo "{text}" -> "{c.echo(text)}"')
    i = c.info()
    print(f"weft.info -> name={i['name']} version={i['version']} uptime={i['uptime_s']:.1f}s "
          f"transports={i['transports']} endpoints={i['endpoints']}")
