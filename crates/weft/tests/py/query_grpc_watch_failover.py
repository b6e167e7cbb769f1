"""A grpcio Watch that survives the death of its node: watches PREFIX of
TABLE from START_REVISION on the first of GRPC_ADDRS; when the stream breaks
(the node was killed) it resumes on the next address from its last
revision + 1, as docs/query.md says a client should. Prints one JSON line
per event (revision, key, value, type, node) and per (re)start or error,
and exits 0 once it has seen a put of END_KEY. It trusts nothing it
receives: duplicates or gaps are for crates/weft/tests/query_grpc_watch_failover.rs
to find in its output. Stubs come from grpcio-tools (STUBS)."""
import json
import os
import sys
import time

import grpc

sys.path.insert(0, os.environ["STUBS"])
from weftq import query_pb2 as pb  # noqa: E402
from weftq import query_pb2_grpc as pbg  # noqa: E402

addrs = os.environ["GRPC_ADDRS"].split(",")
table = os.environ["TABLE"]
prefix = os.environ["PREFIX"].encode()
end_key = os.environ["END_KEY"].encode()
next_rev = int(os.environ["START_REVISION"])
# A bound against hangs (the test also bounds its wait).
deadline = time.time() + 150
i = 0


def say(**kw):
    print(json.dumps(kw), flush=True)


while time.time() < deadline:
    addr = addrs[i % len(addrs)]
    chan = grpc.insecure_channel(addr)
    stub = pbg.QueryStub(chan)
    try:
        w = stub.Watch(pb.WatchRequest(table=table, prefix=prefix, start_revision=next_rev), timeout=deadline - time.time())
        for resp in w:
            if resp.created:
                say(watching=addr, start=next_rev)
            for e in resp.events:
                say(revision=e.revision, key=e.kv.key.decode(), value=e.kv.value.decode(),
                    type="delete" if e.type == pb.EVENT_TYPE_DELETE else "put", node=addr)
                next_rev = e.revision + 1
                if e.kv.key == end_key and e.type == pb.EVENT_TYPE_PUT:
                    sys.exit(0)
        say(ended=addr)
    except grpc.RpcError as err:
        say(error=str(err.code()), node=addr, detail=err.details())
    finally:
        chan.close()
    i += 1
    time.sleep(0.2)
sys.exit("timed out before the end key")
