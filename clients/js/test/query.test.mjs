// The query API (docs/query.md, docs/aql.md) against a real `weft serve`:
// AQL with parameters, BATCH, the table helpers (revisions, compare-and-set,
// history), typed errors; the same calls natively and over HTTP.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import * as weft from "../dist/index.js";
import { Node } from "./helpers.mjs";

let node;
before(async () => { node = await Node.create(); });
after(async () => { await node?.stop(); });

const te = new TextEncoder();

test("literals and parameters are quoted, not spliced", () => {
  assert.equal(weft.aqlKey("it's"), "'it\\'s'");
  assert.equal(weft.aqlKey("a\\b"), "'a\\\\b'");
  assert.equal(weft.aqlKey(new Uint8Array([0, 255])), "x'00ff'");
  assert.equal(weft.aqlName('my.table'), '"my.table"');
  assert.equal(weft.aqlValue({ a: [1, "x"] }), '{"a":[1,"x"]}');
  assert.equal(weft.bindParams("GET t $k -- $nope\nSET t '$x' = $2", { k: "a'b", 2: 5 }), "GET t 'a\\'b' -- $nope\nSET t '$x' = 5");
  assert.equal(weft.bindParams("SET t $1 = $2", ["k", null]), "SET t 'k' = null");
  assert.throws(() => weft.bindParams("GET t $missing", {}), RangeError);
  assert.throws(() => weft.bindParams("GET t $3", ["a"]), RangeError);
  assert.throws(() => weft.aqlValue(NaN), RangeError);
});

for (const via of ["tcp", "http"]) {
  test(`tables, keys, revisions, compare-and-set via ${via}`, async () => {
    const c = new weft.Client(node[via]);
    try {
      const name = `js_${via}_${process.pid}`;
      const t = await c.createTable(name);
      assert.ok((await c.tables()).includes(name));
      await assert.rejects(c.createTable(name), (e) => e instanceof weft.ConflictError && e.details.grpc_code === "ALREADY_EXISTS");

      const w1 = await t.put("pump/1", { kind: "pump", rpm: 1200 });
      assert.equal(w1.prev, null);
      const kv1 = await t.get("pump/1");
      assert.deepEqual(JSON.parse(kv1.value), { kind: "pump", rpm: 1200 });
      assert.equal(kv1.version, 1);
      assert.equal(kv1.modRevision, w1.revision);
      assert.equal(await t.get("absent"), null);

      // text, bytes, quotes and backslashes in keys and values survive the round trip
      await t.put("it's\\odd", "plain 'text'");
      assert.equal((await t.get("it's\\odd")).value, "plain 'text'");
      await t.put(new Uint8Array([0xff, 0]), new Uint8Array([0, 1, 0xfe]));
      const bin = await t.get(new Uint8Array([0xff, 0]));
      assert.deepEqual(bin.key, new Uint8Array([0xff, 0]));
      assert.deepEqual(bin.value, new Uint8Array([0, 1, 0xfe]));

      // compare-and-set on the version
      assert.equal(await t.compareAndSet("pump/1", 1, { kind: "pump", rpm: 1300 }), true);
      assert.equal(await t.compareAndSet("pump/1", 1, { kind: "pump", rpm: 9999 }), false);
      const kv2 = await t.get("pump/1");
      assert.equal(kv2.version, 2);
      assert.equal(JSON.parse(kv2.value).rpm, 1300);
      await assert.rejects(t.put("pump/1", 1, { ifVersion: 1 }), (e) => e instanceof weft.ConflictError && e.kind === "compare_failed" && e.details.grpc_code === "FAILED_PRECONDITION");
      await t.put("pump/2", { kind: "pump", rpm: 800 }, { ifAbsent: true });
      await assert.rejects(t.put("pump/2", 0, { ifAbsent: true }), weft.ConflictError);
      assert.equal(await t.compareAndSet("pump/3", 0, "created"), true);

      // reads at a past revision
      assert.equal(JSON.parse((await t.get("pump/1", { revision: w1.revision })).value).rpm, 1200);
      await assert.rejects(t.get("pump/1", { revision: 1_000_000 }), weft.OutOfRangeError);

      // range, limit, more
      const r = await t.range({ prefix: "pump/" });
      assert.deepEqual(r.kvs.map((k) => k.key), ["pump/1", "pump/2", "pump/3"]);
      const lim = await t.range({ from: "pump/", to: "pump0" }, { limit: 2 });
      assert.equal(lim.kvs.length, 2);
      assert.equal(lim.more, true);
      assert.equal(lim.count, 3);

      // delete with and without compares; history
      const d = await t.delete("pump/3");
      assert.equal(d.deleted, 1);
      assert.equal((await t.delete("pump/3")).deleted, 0);
      await assert.rejects(t.delete("pump/3", { ifExists: true }), weft.ConflictError);
      await assert.rejects(t.delete("pump/2", { ifVersion: 7 }), weft.ConflictError);
      const h = await t.history("pump/3");
      assert.equal(h.length, 2);
      assert.equal(h[0].deleted, true);
      assert.equal(h[1].value, "created");

      // query() with parameters, FILTER
      // without params a "$" reaches the server as it is: a syntax error, typed
      await assert.rejects(c.query("FILTER $t WHERE rpm >= 1"), weft.ValidationError);
      const f = await c.query(`FILTER ${weft.aqlName(name)} WHERE kind = $kind AND rpm >= $min`, { kind: "pump", min: 1000 });
      assert.equal(f.kind, "filter");
      assert.deepEqual(f.kvs.map((k) => k.key), ["pump/1"]);

      await c.dropTable(name);
      assert.ok(!(await c.tables()).includes(name));
      await assert.rejects(t.get("pump/1"), weft.NotFoundError);
    } finally {
      await c.close();
    }
  });

  test(`BATCH: atomic, with compares, ELSE via ${via}`, async () => {
    const c = new weft.Client(node[via]);
    try {
      const name = `jsb_${via}_${process.pid}`;
      const t = await c.createTable(name);
      const plain = await t.batch({ then: [{ set: "a", value: 1 }, { set: "b", value: 2 }, { get: "a" }] });
      assert.equal(plain.kind, "batch");
      assert.equal(plain.succeeded, true);
      assert.equal(plain.ops.length, 3);
      assert.equal(plain.ops[2].kvs[0].value, "1");
      const rev = plain.revision;
      assert.equal((await t.get("a")).modRevision, rev);
      assert.equal((await t.get("b")).modRevision, rev); // one revision for the whole batch

      // a lock: taken once, the second attempt runs ELSE and sees the holder
      const lock = { if: [{ target: "version", key: "lock", value: 0 }], then: [{ set: "lock", value: "me" }], else: [{ get: "lock" }] };
      assert.equal((await t.batch(lock)).succeeded, true);
      const second = await t.batch(lock);
      assert.equal(second.succeeded, false);
      assert.equal(second.ops[0].kvs[0].value, "me");
      // without ELSE a failed compare is a ConflictError naming the compare
      await assert.rejects(t.batch({ if: [{ target: "value", key: "lock", value: "you" }], then: [{ delete: "lock" }] }), (e) => e instanceof weft.ConflictError && e.details.failed.length === 1);
      assert.equal((await t.get("lock")).value, "me");
      // text form with parameters
      const b = await c.batch(`BATCH { IF MOD_REVISION(${weft.aqlName(name)}, 'a') = $1 THEN { DELETE ${weft.aqlName(name)} 'a' } }`, [rev]);
      assert.equal(b.succeeded, true);
      assert.equal(await t.get("a"), null);
      await assert.rejects(c.batch("GET t 'a'"), RangeError);
      await assert.rejects(c.batch({ table: name, then: [{ set: "x", value: 1 }], else: [{ get: "x" }] }), RangeError);
    } finally {
      await c.close();
    }
  });

  test(`typed query errors via ${via}`, async () => {
    const c = new weft.Client(node[via]);
    try {
      await assert.rejects(c.query("GET"), (e) => e instanceof weft.ValidationError && e.kind === "invalid_aql" && e.details.offset != null && e.details.line === "1");
      await assert.rejects(c.query(`GET "no_such_table_${process.pid}" 'k'`), (e) => e instanceof weft.NotFoundError && e.details.grpc_code === "NOT_FOUND");
      await assert.rejects(c.query("CREATE TABLE \"bad/name\""), weft.ValidationError);
      await assert.rejects(c.query("SHOW TABLES TIMEOUT 0"), (e) => e instanceof weft.ServerTimeoutError && e.details.grpc_code === "DEADLINE_EXCEEDED");
      const name = `jse_${via}_${process.pid}`;
      const t = await c.createTable(name);
      await assert.rejects(t.put("k".repeat(5000), 1), weft.ValidationError); // tables.max_key_bytes
      await assert.rejects(c.query(`RANGE ${weft.aqlName(name)} PREFIX '' LIMIT 1000000`), weft.BusyError); // query.max_results
      // FROM TOPIC reads the log
      const topic = `jsq-${via}-${process.pid}`;
      await c.createTopic(topic);
      await c.produce(topic, [{ value: JSON.stringify({ total: 50 }) }, { value: JSON.stringify({ total: 150 }) }]);
      const r = await c.query(`FROM TOPIC ${weft.aqlName(topic)} PARTITION 0 OFFSET 0 WHERE total > $n`, { n: 100 });
      assert.equal(r.kind, "topic_read");
      assert.equal(r.records.length, 1);
      assert.equal(JSON.parse(r.records[0].value).total, 150);
      assert.equal(r.nextOffset, 2);
    } finally {
      await c.close();
    }
  });
}

test("json bodies natively: the same answers", async () => {
  const c = new weft.Client(node.tcp, { json: true });
  const name = `jsj_${process.pid}`;
  const t = await c.createTable(name);
  await t.put("k", te.encode("v"));
  assert.equal((await t.get("k")).value, "v");
  await c.close();
});
