"""A grpcio client (stubs generated from proto/ by grpcio-tools) that calls
Weft's query API with W3C trace context in its metadata, for
crates/weft/tests/traces_grpc.rs. Environment: GRPC_ADDR, STUBS (the
generated code's directory). Prints one JSON object: the trace context
sent and what the call answered.
"""
import json
import os
import sys

import grpc

sys.path.insert(0, os.environ["STUBS"])
from weftq import query_pb2 as pb  # noqa: E402
from weftq import query_pb2_grpc as pbg  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
TRACESTATE = "weft=t61rcWkgMzE,congo=ucfJifl5GOE"

chan = grpc.insecure_channel(os.environ["GRPC_ADDR"])
# The node answers pings before its gRPC listener is up: wait (bounded).
grpc.channel_ready_future(chan).result(timeout=30)
stub = pbg.QueryStub(chan)
metadata = (("traceparent", TRACEPARENT), ("tracestate", TRACESTATE))
answer = stub.Execute(pb.ExecuteRequest(aql="SHOW TABLES"), timeout=30, metadata=metadata)
# A second call without trace context: the node starts a trace of its own.
stub.Execute(pb.ExecuteRequest(aql="SHOW TABLES"), timeout=30)
print(json.dumps({
    "trace_id": TRACE_ID,
    "span_id": SPAN_ID,
    "tracestate": TRACESTATE,
    "answered": answer.HasField("result"),
}))
