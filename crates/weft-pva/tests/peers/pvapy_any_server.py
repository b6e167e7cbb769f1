"""pvAccessCPP server with variant-union ("any") fields holding structures,
which pvAccessCPP sends with the 0xFD/0xFE type cache inside operation data.
Env as for pvapy_peer.py. Prints READY; SIGTERM stops."""
import signal, sys, threading
import pvaccess as pva

P = sys.argv[1] if len(sys.argv) > 1 else "X:"

def make(n):
    o = pva.PvObject({"value": (), "other": ()}, "weft:test/Any:1.0")
    o.setUnion("value", pva.PvObject({"value": {"a": pva.INT, "s": pva.STRING}}, {"value": {"a": n, "s": "x"}}))
    o.setUnion("other", pva.PvObject({"value": {"a": pva.INT, "s": pva.STRING}}, {"value": {"a": n + 1, "s": "y"}}))
    return o

srv = pva.PvaServer()
srv.addRecord(P + "any", make(0))
print("READY", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
n = 0
while not stop.wait(0.1):
    n += 1
    srv.update(P + "any", make(n))
srv.stop()
