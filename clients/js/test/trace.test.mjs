// Trace context (docs/protocol.md, "Trace context"): the frame layout, and a
// real server taking the caller's traceparent over the native protocol and
// the HTTP gateway. That Weft's spans continue it is proven with an OTLP
// receiver in crates/weft/tests/traces.rs (for the Python client).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as weft from "../dist/index.js";
import { encodeFrame, FLAG_JSON, Kind } from "../dist/frame.js";
import { Node, unique } from "./helpers.mjs";

const TP = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
let node;
before(async () => { node = await Node.create(); });
after(async () => { await node?.stop(); });

test("extension layout matches the spec's example", () => {
  const body = new TextEncoder().encode("null");
  const f = encodeFrame(Kind.Request, "weft.ping", body, new Uint8Array(16).fill(1), FLAG_JSON, TP);
  assert.equal(f[4], 0x05);
  assert.equal(new DataView(f.buffer).getUint32(6), 60);
  const region = f.subarray(26 + "weft.ping".length);
  assert.equal(region[0], 55);
  assert.equal(new TextDecoder().decode(region.subarray(1, 56)), TP);
  assert.equal(new TextDecoder().decode(region.subarray(56)), "null");
  assert.equal(encodeFrame(Kind.Request, "weft.ping", body, new Uint8Array(16), FLAG_JSON)[4], 0x01);
});

test("native calls carry the source's traceparent and the body stays intact", async () => {
  let asked = 0;
  const c = new weft.Client(node.tcp, { traceContext: () => { asked++; return TP; } });
  try {
    const w = await c.connect();
    assert.ok(w.features.includes("trace-context"));
    assert.deepEqual(await c.echo({ a: new Uint8Array([0, 255]) }), { a: new Uint8Array([0, 255]) });
    const t = unique("traced");
    await c.createTopic(t);
    const r = await c.produce(t, [{ value: "x" }]);
    assert.equal(r[0].offset, 0);
    assert.ok(asked >= 3, `trace source asked ${asked} times`);
  } finally {
    await c.close();
  }
  // a traceparent that does not parse is ignored by the server (W3C)
  const bad = new weft.Client(node.tcp, { traceContext: () => "garbage" });
  try {
    assert.equal(await bad.echo("ok"), "ok");
  } finally {
    await bad.close();
  }
});

test("HTTP calls send it as the traceparent header", async () => {
  // Watch what goes to the real gateway: the fetch the transport calls.
  const realFetch = globalThis.fetch;
  const sent = [];
  globalThis.fetch = (url, init) => { sent.push(init?.headers?.traceparent); return realFetch(url, init); };
  try {
    const c = new weft.Client(node.http, { traceContext: () => TP });
    const t = unique("traced-http");
    await c.createTopic(t);
    const r = await c.produce(t, [{ value: "y" }]);
    assert.equal(r[0].offset, 0);
    await c.close();
  } finally {
    globalThis.fetch = realFetch;
  }
  assert.ok(sent.length >= 2);
  assert.deepEqual(new Set(sent), new Set([TP]));
});
