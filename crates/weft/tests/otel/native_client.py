"""The Python client (clients/python, package `weft`) traced with the
OpenTelemetry Python SDK: inside a span of its own it produces over the
native protocol, once with the synchronous client and once with the asyncio
one; the client puts the span's traceparent into the frame's trace-context
extension. Prints (JSON) the trace and span id of each.

usage: native_client.py ADDR TOPIC    (PYTHONPATH must reach clients/python/src)
"""
import asyncio
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

import weft

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("weft-test-native-client")
addr, topic = sys.argv[1], sys.argv[2]


def ids(span):
    ctx = span.get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


out = {}
with weft.Client(addr) as c:
    c.connect()  # a live connection first: the produce takes the short path
    assert "trace-context" in c.welcome.get("features", []), c.welcome
    with tracer.start_as_current_span("sync-produce") as span:
        r = c.produce(topic, [b"sync"])
        out["sync"] = ids(span) | {"offset": r[0].offset}
    # A call that goes through a coroutine on the client's loop thread.
    with tracer.start_as_current_span("sync-info") as span:
        c.info()
        out["sync_info"] = ids(span)


async def main():
    async with weft.AsyncClient(addr) as c:
        with tracer.start_as_current_span("async-produce") as span:
            r = await c.produce(topic, [b"async"])
            out["async"] = ids(span) | {"offset": r[0].offset}

asyncio.run(main())
print(json.dumps(out))
