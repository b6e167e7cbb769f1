"""p4p (pvxs) client session against a Weft server. Prints one JSON object.

Discovery comes from the environment (EPICS_PVA_ADDR_LIST, EPICS_PVA_AUTO_ADDR_LIST=NO).
"""
import json, sys, threading, time
from p4p.client.thread import Context
from p4p.nt import NTURI

P = sys.argv[1] if len(sys.argv) > 1 else "weft:demo:"
out = {}

def raw(x):
    return x.raw if hasattr(x, "raw") else x

ctx = Context("pva")
try:
    c = ctx.get(P + "counter", timeout=5)
    out["counter"] = int(c)
    out["counter_id"] = raw(c).getID()
    out["counter_fields"] = sorted(raw(c).keys())
    w = ctx.get(P + "waveform", timeout=5)
    out["waveform_len"] = len(w)
    out["waveform_id"] = raw(w).getID()
    e = ctx.get(P + "enum", timeout=5)
    out["enum"] = {"index": int(raw(e).value.index), "choices": list(raw(e).value.choices)}
    t = ctx.get(P + "table", timeout=5)
    out["table_id"] = raw(t).getID()
    out["table_labels"] = list(raw(t).labels)
    out["table_name"] = list(raw(t).value.name)
    out["table_position"] = [float(x) for x in raw(t).value.position]
    # put then get
    ctx.put(P + "setpoint", 4.25, timeout=5)
    out["setpoint_after_put"] = float(ctx.get(P + "setpoint", timeout=5))
    ctx.put(P + "enum", {"value.index": 2}, timeout=5)
    out["enum_after_put"] = int(raw(ctx.get(P + "enum", timeout=5)).value.index)
    # field selection
    sel = ctx.get(P + "setpoint", request="field(value)", timeout=5)
    out["selected_value"] = float(sel)
    # read-only put must fail
    try:
        ctx.put(P + "counter", 5, timeout=5)
        out["readonly_put"] = "accepted"
    except Exception as ex:
        out["readonly_put"] = "refused"
    # rpc
    uri = NTURI([("a", "d"), ("b", "d")])
    res = ctx.rpc(P + "add", uri.wrap(P + "add", kws={"a": 2.5, "b": 4.0}), timeout=5)
    out["rpc_sum"] = float(res.value if hasattr(res, "value") else res)
    # monitor
    got = []
    done = threading.Event()
    def cb(v):
        got.append(int(v))
        if len(got) >= 5:
            done.set()
    sub = ctx.monitor(P + "counter", cb)
    done.wait(10)
    sub.close()
    out["monitor_updates"] = got[:5]
    # monitor of a put-driven PV
    seen = []
    ev = threading.Event()
    def cb2(v):
        seen.append(float(v))
        if float(v) == 7.5:
            ev.set()
    sub2 = ctx.monitor(P + "setpoint", cb2)
    time.sleep(0.3)
    ctx.put(P + "setpoint", 7.5, timeout=5)
    ev.wait(5)
    sub2.close()
    out["setpoint_monitor"] = seen
    # many monitors at once
    many = {}
    evs = []
    subs = []
    for i in range(20):
        ev_i = threading.Event()
        evs.append(ev_i)
        def mk(i, ev_i):
            def f(v):
                many[i] = many.get(i, 0) + 1
                if many[i] >= 3:
                    ev_i.set()
            return f
        subs.append(ctx.monitor(P + "counter", mk(i, ev_i)))
    for ev_i in evs:
        ev_i.wait(10)
    for s in subs:
        s.close()
    out["many_monitors"] = sum(1 for i in range(20) if many.get(i, 0) >= 3)
    # pipeline monitor
    pgot = []
    pev = threading.Event()
    def pcb(v):
        pgot.append(int(v))
        if len(pgot) >= 10:
            pev.set()
    ps = ctx.monitor(P + "counter", pcb, request="record[pipeline=true,queueSize=2]")
    pev.wait(10)
    ps.close()
    out["pipeline_updates"] = len(pgot)
    img = ctx.get(P + "image", timeout=5)
    out["image_id"] = raw(img).getID()
    out["image_shape"] = list(img.shape) if hasattr(img, "shape") else []
    out["image_sum"] = int(img.sum()) if hasattr(img, "sum") else -1
finally:
    ctx.close()
print(json.dumps(out))
