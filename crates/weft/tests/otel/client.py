"""A client traced with the OpenTelemetry Python SDK: inside a span of its
own, it POSTs records to a Weft HTTP gateway with the span's W3C
`traceparent` injected by the SDK's propagator, and prints (JSON) its trace
and span ids and the `traceparent` header Weft answered with.

usage: client.py GATEWAY_URL TOPIC
"""
import json
import sys
import urllib.request

from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider

trace.set_tracer_provider(TracerProvider())
tracer = trace.get_tracer("weft-test-client")

url, topic = sys.argv[1], sys.argv[2]
with tracer.start_as_current_span("client-produce") as span:
    headers = {"Content-Type": "application/json"}
    propagate.inject(headers)
    body = json.dumps({"records": [{"value": "traced"}]}).encode()
    req = urllib.request.Request(f"{url}/v1/topics/{topic}/records", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req) as resp:
        answer = json.load(resp)
        weft_traceparent = resp.headers.get("traceparent")
    ctx = span.get_span_context()
    print(json.dumps({
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "sent": headers.get("traceparent"),
        "answer": answer,
        "weft_traceparent": weft_traceparent,
    }))
