import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import * as weft from "../dist/index.js";
import { Node, unique, freePort, sleep, WEFT_BIN } from "./helpers.mjs";

let node;
before(async () => { node = await Node.create(); });
after(async () => { await node?.stop(); });

for (const transport of ["tcp", "unix", "tls"]) {
  test(`standard calls over ${transport}`, async () => {
    const c = new weft.Client(node[transport], transport === "tls" ? { tls: node.tlsOptions() } : {});
    try {
      const w = await c.connect();
      assert.equal(w.protocol_version, 1);
      assert.ok(w.features.includes(transport));
      const pong = await c.ping();
      assert.equal(pong.pong, true);
      assert.ok(pong.server_time_ms > 0);
      const v = { text: "héllo", n: [1, 2.5, null], b: new Uint8Array([0, 255]) };
      assert.deepEqual(await c.echo(v), v);
      const info = await c.info();
      assert.ok(info.endpoints.includes("log.produce"));
      assert.ok(info.transports.some((t) => t.startsWith(transport + "://")));
      assert.ok((await c.stats())["endpoint.weft.ping.calls"] >= 1);
      assert.ok(Array.isArray(await c.liveness()));
      const many = await Promise.all(Array.from({ length: 300 }, (_, i) => c.echo(i)));
      assert.deepEqual(many, Array.from({ length: 300 }, (_, i) => i));
    } finally {
      await c.close();
    }
  });
}

test("json bodies", async () => {
  const c = new weft.Client(node.tcp, { json: true });
  assert.deepEqual(await c.echo({ a: [1, "x"] }), { a: [1, "x"] });
  await assert.rejects(c.call("weft.nope"), (e) => e instanceof weft.UnknownRouteError && e.details.route === "weft.nope");
  // byte fields: strings in JSON requests, arrays of byte values in JSON answers
  const t = unique("json");
  await c.createTopic(t);
  await c.produce(t, [{ key: "k", value: "héllo" }]);
  const r = (await c.fetch(t, 0, 0)).records[0];
  assert.deepEqual(r.value, new TextEncoder().encode("héllo"));
  assert.deepEqual(r.key, new TextEncoder().encode("k"));
  await c.close();
});

test("typed errors for bad input", async () => {
  const c = new weft.Client(node.tcp);
  try {
    await assert.rejects(c.call("no.such.route", { x: 1 }), (e) => e instanceof weft.UnknownRouteError && e.code === "unknown_route" && e instanceof weft.ServerError && e instanceof weft.WeftError);
    await assert.rejects(c.call("log.produce", { nonsense: true }), weft.BadBodyError);
    await assert.rejects(c.createTopic("bad name"), weft.ValidationError);
    await assert.rejects(c.describeTopic(unique("missing")), weft.NotFoundError);
    const t = unique("dup");
    await c.createTopic(t);
    await assert.rejects(c.createTopic(t), weft.ConflictError);
    await c.produce(t, ["one"]);
    await assert.rejects(c.fetch(t, 0, 1000), (e) => e instanceof weft.OutOfRangeError && e.details.latest === 1);
    const small = unique("small");
    await c.createTopic(small, { max_record_bytes: 64 });
    await assert.rejects(c.produce(small, ["x".repeat(1000)]), (e) => e instanceof weft.TooLargeError && e.details.max === 64);
    assert.equal((await c.ping()).pong, true);
  } finally {
    await c.close();
  }
});

test("unreachable and refused", async () => {
  const port = await freePort();
  const c = new weft.Client(`tcp://127.0.0.1:${port}`, { timeoutMs: 500, connectTimeoutMs: 500 });
  await assert.rejects(c.ping(), weft.ConnectionError);
  await c.close();
  const noCert = new weft.Client(node.tls, { tls: node.tlsOptions(false), timeoutMs: 2000, connectTimeoutMs: 1000 });
  await assert.rejects(noCert.ping(), weft.ConnectionError);
  await noCert.close();
  assert.throws(() => new weft.Client("ftp://x:1"), RangeError);
  assert.throws(() => new weft.Client("tcp://nohost"), RangeError);
});

test("timeout, then the connection carries on", async () => {
  const c = new weft.Client(node.tcp);
  const t = unique("slow");
  await c.createTopic(t);
  await assert.rejects(c.fetch(t, 0, 0, { waitMs: 5000, timeoutMs: 300 }), weft.TimeoutError);
  assert.equal((await c.ping()).pong, true);
  await c.close();
});

test("queues and senders management", async () => {
  const c = new weft.Client(node.tcp);
  assert.ok(Array.isArray(await c.queues()));
  assert.ok(Array.isArray(await c.queues("sender")));
  // an unknown queue name is `validation` (docs/queues.md, Management)
  await assert.rejects(c.queueShow("no-such-queue"), weft.ValidationError);
  await assert.rejects(c.queuePause("no-such-queue"), weft.ValidationError);
  await assert.rejects(c.queueErrors("no-such", 10, "sender"), weft.ValidationError);
  // every management call reaches its endpoint with a body of the right shape:
  // a wrong shape would be bad_body, an unknown name is validation
  for (const kind of ["queue", "sender"]) {
    for (const call of [
      () => c.queueShow("nope", kind), () => c.queuePause("nope", "processing", kind), () => c.queueResume("nope", "accepting", kind),
      () => c.queueErrors("nope", 5, kind), () => c.queueInspect("nope", "uid-1", kind), () => c.queuePop("nope", "uid-1", kind),
      () => c.queueReprocess("nope", undefined, kind), () => c.queueReprocess("nope", "uid-1", kind), () => c.queueClear("nope", kind),
    ]) await assert.rejects(call(), weft.ValidationError);
  }
  const g = await c.statsGathered();
  assert.ok(g === null || typeof g === "object");
  assert.throws(() => c.queues("bogus"), RangeError);
  assert.equal(typeof (await c.statsCurrent()), "object");
  assert.ok(Array.isArray(await c.statsFull()));
  assert.ok(Array.isArray(await c.errors()));
  await c.close();
});

test("one-way requests", async () => {
  const c = new weft.Client(node.tcp);
  const t = unique("oneway");
  await c.createTopic(t);
  await c.send("no.such.route", { x: 1 }); // no answer, no error
  await c.send("log.produce", { topic: t, records: [{ value: new TextEncoder().encode("fire-and-forget"), headers: [] }] });
  const deadline = Date.now() + 30000;
  while ((await c.offsets(t, 0, "latest")) !== 1) {
    assert.ok(Date.now() < deadline);
    await sleep(20);
  }
  assert.equal(new TextDecoder().decode((await c.fetch(t, 0, 0)).records[0].value), "fire-and-forget");
  assert.equal((await c.ping()).pong, true);
  await c.close();
});
