"""pvapy (pvAccessCPP) client session against a Weft server. Prints one JSON object.

pvAccessCPP is the client that uses the 0xFD/0xFE type cache and PUT_GET.
Discovery comes from the environment (EPICS_PVA_ADDR_LIST, EPICS_PVA_AUTO_ADDR_LIST=NO).
"""
import json, sys, threading, time
import pvaccess as pva

P = sys.argv[1] if len(sys.argv) > 1 else "weft:demo:"
out = {}
c = pva.Channel(P + "counter")
v = c.get()
out["counter"] = v["value"]
out["counter_id"] = v.getStructureDict() and c.getIntrospectionDict() and "ok"
out["getfield_keys"] = sorted(c.getIntrospectionDict().keys())
w = pva.Channel(P + "waveform").get()
out["waveform_len"] = len(w["value"])
e = pva.Channel(P + "enum").get()
out["enum_choices"] = list(e["value"]["choices"])
t = pva.Channel(P + "table").get("field(labels,value)")
out["table_labels"] = list(t["labels"])
sp = pva.Channel(P + "setpoint")
sp.put(6.5)
out["setpoint_after_put"] = sp.get()["value"]
r = sp.putGet(pva.PvObject({"value": pva.DOUBLE}, {"value": 1.25}))
out["putget"] = r["value"]
out["getfield_sub"] = sorted(pva.Channel(P + "enum").getIntrospectionDict().keys())
# field selection
out["selected"] = sorted(sp.get("field(value)").getStructureDict().keys())
# monitor
got = []
ev = threading.Event()
def cb(x):
    got.append(x["value"])
    if len(got) >= 5:
        ev.set()
m = pva.Channel(P + "counter")
m.subscribe("s", cb)
m.startMonitor("field(value)")
ev.wait(10)
m.stopMonitor()
m.unsubscribe("s")
out["monitor_updates"] = got[:5]
# rpc
rc = pva.RpcClient(P + "add")
arg = pva.PvObject({"query": {"a": pva.DOUBLE, "b": pva.DOUBLE}}, {"query": {"a": 1.5, "b": 2.0}}, "epics:nt/NTURI:1.0")
res = rc.invoke(arg)
out["rpc_sum"] = res["value"]
# 1e6 doubles: pvAccessCPP segments this put
big = [float(i) for i in range(1000000)]
wf = pva.Channel(P + "buffer")
wf.put(pva.PvObject({"value": [pva.DOUBLE]}, {"value": big}))
back = wf.get("field(value)")["value"]
out["big_len"] = len(back)
out["big_last"] = back[-1]
img = pva.Channel(P + "image").get("field()")
out["image_dims"] = [d["size"] for d in img["dimension"]]
print(json.dumps(out))
