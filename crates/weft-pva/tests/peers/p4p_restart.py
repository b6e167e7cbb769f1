"""p4p monitor that must survive a Weft server restart.

Prints FIRST after the first update; the test then restarts the server on the
same ports. Prints one JSON line when an update arrives after a disconnect.
"""
import json, sys, threading
from p4p.client.thread import Context, Disconnected

P = sys.argv[1] if len(sys.argv) > 1 else "weft:demo:"
state = {"updates": 0, "disconnects": 0, "after": 0}
first = threading.Event()
done = threading.Event()

def cb(v):
    if isinstance(v, Disconnected):
        state["disconnects"] += 1
        return
    if isinstance(v, Exception):
        return
    state["updates"] += 1
    first.set()
    if state["disconnects"] > 0:
        state["after"] += 1
        if state["after"] >= 3:
            done.set()

ctx = Context("pva")
sub = ctx.monitor(P + "counter", cb, notify_disconnect=True)
first.wait(10)
print("FIRST", flush=True)
ok = done.wait(60)
sub.close()
ctx.close()
state["ok"] = ok
print(json.dumps(state), flush=True)
