import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as weft from "../dist/index.js";
import { Node, unique, sleep } from "./helpers.mjs";

let node;
before(async () => { node = await Node.create(); });
after(async () => { await node?.stop(); });

const te = new TextEncoder();
const td = new TextDecoder();

// One API, two transports: the same log calls natively and through the HTTP gateway.
for (const via of ["tcp", "http"]) {
  test(`topics, produce, fetch, offsets via ${via}`, async () => {
    const c = new weft.Client(node[via]);
    try {
      const t = unique(`orders-${via}`);
      const d = await c.createTopic(t, { partitions: 2, retention_ms: 3600000 });
      assert.equal(d.name, t);
      assert.ok((await c.topics()).includes(t));
      assert.equal((await c.describeTopic(t)).partitions.length, 2);
      assert.equal((await c.alterTopic(t, { partitions: 3, retention_ms: -1 })).config.partitions, 3);
      const before = Date.now() - 1;
      const res = await c.produce(t, [
        "plain",
        { key: "k1", value: "v1" },
        { key: te.encode("k2"), value: new Uint8Array([0, 1, 255]), headers: [["h", "x"]], partition: 1 },
        { value: "ts", partition: 0, timestampMs: before },
        { key: "tomb", value: null, partition: 0 },
      ]);
      assert.deepEqual(res.map((r) => r.error), [undefined, undefined, undefined, undefined, undefined]);
      assert.equal(res[2].partition, 1);
      assert.equal(res[3].timestampMs, before);
      const again = await c.produce(t, [{ key: "k1", value: "again" }]);
      assert.equal(again[0].partition, res[1].partition);
      const all = [];
      for (const p of [0, 1, 2]) all.push(...(await c.fetch(t, p, 0)).records);
      assert.equal(all.length, 6);
      const bin = all.find((r) => r.key && td.decode(r.key) === "k2");
      assert.deepEqual(bin.value, new Uint8Array([0, 1, 255]));
      assert.deepEqual(bin.headers.map(([k, v]) => [k, td.decode(v)]), [["h", "x"]]);
      assert.equal(all.find((r) => r.key && td.decode(r.key) === "tomb").value, null);
      const p1 = await c.fetch(t, 1, 0);
      assert.equal(p1.nextOffset, p1.records.length);
      assert.equal(await c.offsets(t, 1, "earliest"), 0);
      assert.equal(await c.offsets(t, 1, "latest"), p1.records.length);
      assert.equal(await c.offsets(t, 0, before), 0);
      assert.equal((await c.fetch(t, 0, 0, { maxRecords: 1 })).records.length, 1);
      await assert.rejects(c.fetch(t, 0, 999), weft.OutOfRangeError);
      // the reset policy moves a fetch outside the log, and says so
      const moved = await c.fetch(t, 1, 999, { reset: "earliest" });
      assert.equal(moved.resetFrom, 999);
      assert.equal(moved.records.length, p1.records.length);
      await assert.rejects(c.fetch(t, 0, 999, { reset: "none" }), weft.OutOfRangeError);
      await assert.rejects(c.describeTopic(unique("nope")), weft.NotFoundError);
      await assert.rejects(c.createTopic(t), weft.ConflictError);
      await assert.rejects(c.createTopic("bad name"), weft.ValidationError);
      assert.equal(await c.deleteTopic(t), true);
      assert.ok(!(await c.topics()).includes(t));
    } finally {
      await c.close();
    }
  });

  test(`group calls and a consumer group member via ${via}`, async () => {
    const c = new weft.Client(node[via]);
    try {
      const t = unique(`stream-${via}`), g = unique("billing");
      await c.createTopic(t, { partitions: 2 });
      const values = Array.from({ length: 20 }, (_, i) => `v${i}`);
      await c.produce(t, values.map((v, i) => ({ key: `k${i}`, value: v })));

      const m = await c.joinGroup(g, [t], { sessionTimeoutMs: 10000 });
      assert.deepEqual(m.assignment.map(([, p]) => p).sort(), [0, 1]);
      assert.equal((await c.heartbeat(g, m.memberId)).generation, m.generation);
      assert.equal(await c.committed(g, t, 0), null);
      await assert.rejects(c.commit(g, [{ topic: t, partition: 0, offset: 0 }], { memberId: m.memberId, generation: m.generation + 5 }), weft.ConflictError);
      assert.ok((await c.groups()).some((x) => x.group === g));
      assert.ok(await c.describeGroup(g));
      assert.equal(await c.leaveGroup(g, m.memberId), true);

      const seen = [];
      const c1 = c.consumer(g, [t], { autoOffsetReset: "earliest", consumerTimeoutMs: 3000 });
      for await (const r of c1) {
        seen.push(td.decode(r.value));
        if (seen.length === 12) break;
      }
      await c1.close();
      assert.equal((await c.committed(g, t, 0)) + (await c.committed(g, t, 1)), 12);
      const c2 = c.consumer(g, [t], { autoOffsetReset: "earliest", consumerTimeoutMs: 1500 });
      for await (const r of c2) seen.push(td.decode(r.value));
      await c2.close();
      assert.deepEqual([...seen].sort(), [...values].sort());
      assert.equal((await c.committed(g, t, 0)) + (await c.committed(g, t, 1)), 20);
      // Weft's default reset policy is earliest; "none" refuses a group without commits
      const fresh = c.consumer(unique("fresh"), [t], { consumerTimeoutMs: 1000 });
      let n = 0;
      for await (const _ of fresh) n++;
      await fresh.close();
      assert.equal(n, 20);
      await assert.rejects(c.consumer(unique("none"), [t], { autoOffsetReset: "none" }).start(),
        (e) => e instanceof weft.OutOfRangeError && e.kind === "no_reset_policy");
      // Deleting the group takes its offsets; a second delete finds nothing.
      assert.equal(await c.deleteGroup(g), true);
      assert.equal(await c.committed(g, t, 0), null);
      await assert.rejects(c.deleteGroup(g), weft.NotFoundError);
    } finally {
      await c.close();
    }
  });
}

test("stream: WebSocket over HTTP and long-poll natively give the same records", async () => {
  const nat = new weft.Client(node.tcp);
  const http = new weft.Client(node.http);
  for (const c of [nat, http]) {
    const t = unique(`live-${c.transport.kind}`);
    await nat.createTopic(t);
    await nat.produce(t, ["a", "b"]);
    const ctl = new AbortController();
    const got = [];
    const producer = (async () => { await sleep(300); await nat.produce(t, ["live"]); })();
    for await (const r of c.stream(t, { partition: 0, offset: "earliest", signal: ctl.signal })) {
      got.push(td.decode(r.value));
      assert.equal(r.partition, 0);
      if (got.length === 3) { ctl.abort(); break; }
    }
    await producer;
    assert.deepEqual(got, ["a", "b", "live"]);
  }
  await assert.rejects(http.ping(), weft.NotSupported); // only the log's calls go through the gateway
  await nat.close();
  await http.close();
});
