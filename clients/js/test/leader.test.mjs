// Cluster leader redirects (docs/protocol.md `not_leader`, docs/cluster.md).
// 1. A stand-in follower that answers `not_leader` naming a real `weft serve`:
//    the redirect is followed, cached per group, bounded, and can be turned off.
// 2. A real three-node `weft serve` cluster: kill -9 of the partition leader
//    while two clients (native and HTTP) produce; every acknowledged record
//    reads back afterwards, at its acknowledged offset.
import { test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import * as weft from "../dist/index.js";
import { Node, startCluster, until, sleep, freePort } from "./helpers.mjs";

const td = new TextDecoder();

/**
 * A native-protocol listener that welcomes every hello and answers every
 * request with `answer(n, route, body)` (n counts requests from 1): an error
 * DTO, or a value.
 */
async function standIn(answer) {
  const s = { requests: [], sockets: new Set() };
  s.server = net.createServer((sock) => {
    s.sockets.add(sock);
    sock.on("close", () => s.sockets.delete(sock));
    sock.on("error", () => {});
    const dec = new weft.Decoder();
    sock.on("data", (d) => {
      dec.feed(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      for (let f = dec.next(); f; f = dec.next()) {
        if (f.kind === weft.Kind.Control && f.route === "hello") {
          const w = { protocol_version: 1, server_id: "stand-in", server_name: "stand-in", version: "0", features: ["tcp"] };
          sock.write(weft.encodeFrame(weft.Kind.Control, "welcome", weft.encodeBody(w), f.id));
          continue;
        }
        const body = weft.decodeBody(f.body, (f.flags & weft.FLAG_JSON) !== 0);
        s.requests.push({ route: f.route, body });
        const a = answer(s.requests.length, f.route, body);
        sock.write(a && a.code ? weft.encodeFrame(weft.Kind.Error, f.route, weft.encodeBody(a), f.id) : weft.encodeFrame(weft.Kind.Response, f.route, weft.encodeBody(a ?? null), f.id));
      }
    });
  });
  await new Promise((r) => s.server.listen(0, "127.0.0.1", r));
  s.addr = `tcp://127.0.0.1:${s.server.address().port}`;
  s.close = () => new Promise((r) => { for (const x of s.sockets) x.destroy(); s.server.close(r); });
  return s;
}

const notLeader = (group, leader, addr) => ({
  code: "not_leader",
  message: `this node does not lead group ${group}`,
  details: { kind: "not_leader", group, leader, addr, not_leader: { group, leader, addr } },
});

test("not_leader from a stand-in follower: followed to the real node, cached per group, bounded, optional", async () => {
  const real = await Node.create();
  const follower = await standIn(() => notLeader(42, 2, real.tcp));
  const loops = [];
  try {
    const topic = `redir-${process.pid}`;
    const direct = new weft.Client(real.tcp);
    await direct.createTopic(topic);

    const c = new weft.Client(follower.addr);
    const r1 = await c.produce(topic, [{ value: "one", partition: 0 }]);
    assert.equal(r1[0].offset, 0);
    assert.equal(follower.requests.length, 1);
    let st = c.leaderStats();
    assert.equal(st.redirects, 1);
    assert.deepEqual(st.leaders, { 42: real.tcp });
    // later calls on the same partition go straight to the leader
    const r2 = await c.produce(topic, [{ value: "two", partition: 0 }]);
    assert.equal(r2[0].offset, 1);
    assert.equal((await c.fetch(topic, 0, 0)).records.length, 2);
    assert.equal(follower.requests.length, 1);
    st = c.leaderStats();
    assert.equal(st.redirects, 1);
    assert.equal(st.cacheHits, 2);
    // calls the cache knows nothing about still start at the given node
    assert.equal((await c.ping()).pong, true);
    assert.equal(follower.requests.length, 2);
    await c.close();
    assert.deepEqual((await direct.fetch(topic, 0, 0)).records.map((r) => td.decode(r.value)), ["one", "two"]);

    // followLeader: false: the typed error, with its hint
    const off = new weft.Client(follower.addr, { followLeader: false });
    await assert.rejects(off.produce(topic, ["x"]), (e) => {
      assert.ok(e instanceof weft.NotLeaderError && e.code === "not_leader");
      assert.deepEqual(weft.leaderHint(e), { group: 42, leader: 2, addr: real.tcp });
      return true;
    });
    await off.close();
    assert.equal(follower.requests.length, 3);

    // no leader named (an election): back off, ask again, then follow
    const electing = await standIn((n) => (n === 1 ? notLeader(7, 0, null) : notLeader(7, 3, real.tcp)));
    loops.push(electing);
    const e = new weft.Client(electing.addr);
    assert.equal((await e.produce(topic, [{ value: "three", partition: 0 }]))[0].offset, 2);
    assert.equal(electing.requests.length, 2);
    assert.deepEqual({ ...e.leaderStats(), leaders: undefined }, { redirects: 1, retries: 1, cacheHits: 0, leaders: undefined });
    await e.close();

    // no leader ever: retried with back-off until the call's deadline, then the typed error
    const never = await standIn(() => notLeader(8, 0, null));
    loops.push(never);
    const n = new weft.Client(never.addr, { timeoutMs: 1500 });
    await assert.rejects(n.produce(topic, ["x"]), weft.NotLeaderError);
    assert.ok(never.requests.length >= 2, `${never.requests.length} attempts`);
    await n.close();

    // two stand-ins naming each other: at most maxLeaderHops redirects, then the error
    let b;
    const a = await standIn(() => notLeader(9, 2, b.addr));
    b = await standIn(() => notLeader(9, 1, a.addr));
    loops.push(a, b);
    const ping = new weft.Client(a.addr, { maxLeaderHops: 3 });
    await assert.rejects(ping.produce(topic, ["x"]), weft.NotLeaderError);
    assert.equal(a.requests.length + b.requests.length, 4);
    await ping.close();

    // a named leader that cannot be reached (down) is forgotten; the first node is asked again
    const dead = `tcp://127.0.0.1:${await freePort()}`;
    const seed = await standIn((k) => notLeader(11, 4, k === 1 ? dead : real.tcp));
    loops.push(seed);
    const g = new weft.Client(seed.addr, { timeoutMs: 5000 });
    assert.equal((await g.produce(topic, [{ value: "four", partition: 0 }]))[0].offset, 3);
    assert.equal(seed.requests.length, 2);
    assert.equal(g.leaderStats().leaders[11], real.tcp);
    await g.close();
    await direct.close();
  } finally {
    for (const s of loops) await s.close();
    await follower.close();
    await real.stop();
  }
});

const status = async (node) => {
  const c = new weft.Client(node.tcp, { timeoutMs: 5000, connectTimeoutMs: 2000 });
  try {
    return await c.call("cluster.status");
  } finally {
    await c.close();
  }
};

const partitionLeader = async (nodes, topic) => {
  for (const n of nodes.filter((x) => x.alive)) {
    const s = await status(n).catch(() => null);
    const p = s?.partitions?.find((x) => x.topic === topic && x.partition === 0);
    if (p && p.leader) return p.leader;
  }
  return null;
};

test("three weft serve nodes: kill -9 of the partition leader while producing; every acknowledged record reads back", async (t) => {
  const nodes = await startCluster(3, status);
  const clients = [];
  try {
    const topic = `jsc-${process.pid}`;
    const admin = new weft.Client(nodes[0].tcp, { timeoutMs: 30000 });
    clients.push(admin);
    await admin.createTopic(topic, { partitions: 1 });
    const leaderId = await until("a leader for the partition", () => partitionLeader(nodes, topic));
    const leader = nodes.find((n) => n.id === leaderId);
    const survivors = nodes.filter((n) => n !== leader);
    // the clients talk to a survivor (a node that is not the partition's leader)
    const viaNative = new weft.Client(survivors[0].tcp, { timeoutMs: 15000 });
    const viaHttp = new weft.Client(survivors[1].http, { timeoutMs: 15000 });
    clients.push(viaNative, viaHttp);

    // the native client learns the partition's leader and sends to it directly
    // (the survivor may hear of the election a moment after the leader knows it)
    await until("the survivor's view of the leader", async () => (await viaNative.refreshLeaders()) === 1);
    const groupOfPartition = Object.keys(viaNative.leaderStats().leaders)[0];
    assert.equal(viaNative.leaderStats().leaders[groupOfPartition], leader.tcp);

    const acked = new Map(); // value -> offset
    // a group member keeps to the node it joined (membership lives there), leader cache or not
    const warm = await viaNative.produce(topic, ["warm-0", "warm-1", "warm-2"].map((value) => ({ value, partition: 0 })));
    warm.forEach((r, i) => acked.set(`warm-${i}`, r.offset));
    const member = viaNative.consumer(`jsg-${process.pid}`, [topic], { pollWaitMs: 200 });
    const got = [];
    for (let i = 0; i < 100 && got.length < 3; i++) got.push(...(await member.poll()));
    await member.close();
    assert.deepEqual(got.map((r) => td.decode(r.value)), ["warm-0", "warm-1", "warm-2"]);
    const failures = [];
    let killed = null;
    let killedAt = 0;
    let afterKill = 0;
    const produce = async (c, name) => {
      // bounded: 120 batches each; the kill comes once 30 records are acknowledged
      for (let i = 0; i < 120; i++) {
        if (acked.size >= 30 && !killed) {
          killedAt = Date.now();
          killed = leader.kill("SIGKILL");
        }
        const values = [`${name}-${i}-a`, `${name}-${i}-b`];
        try {
          const res = await c.produce(topic, values.map((value) => ({ value, partition: 0 })));
          res.forEach((r, j) => {
            if (r.error) failures.push(r.error);
            else {
              acked.set(values[j], r.offset);
              if (killed) afterKill++;
            }
          });
        } catch (e) {
          // not acknowledged: unknown fate or refused, never counted
          if (!(e instanceof weft.WeftError)) throw e;
          failures.push(e);
          await sleep(50);
        }
        if (killed && (afterKill >= 20 || Date.now() > killedAt + 60_000)) return; // a bound against hangs
      }
    };
    await Promise.all([produce(viaNative, "native"), produce(viaHttp, "http")]);
    await killed;
    assert.ok(killed, "the leader was killed");
    assert.ok(afterKill >= 1, `records acknowledged after the kill (${failures.length} failures: ${failures.slice(0, 3).map((e) => e.message).join("; ")})`);

    const codes = {};
    for (const e of failures) codes[e.code ?? e.name] = (codes[e.code ?? e.name] ?? 0) + 1;
    t.diagnostic(`acknowledged ${acked.size} (${afterKill} after the kill), not acknowledged ${failures.length} ${JSON.stringify(codes)}; native ${JSON.stringify(viaNative.leaderStats())}, http retries ${viaHttp.leaderStats().retries}`);
    const st = viaNative.leaderStats();
    assert.ok(st.cacheHits >= 1, "produces went straight to the cached leader");
    // the killed leader was forgotten at the first call that could not reach it
    assert.notEqual(st.leaders[groupOfPartition], leader.tcp);
    // once a survivor leads, the cache learns it again and calls go there
    await until("a new leader", async () => {
      const id = await partitionLeader(survivors, topic);
      return id && id !== leader.id ? id : null;
    });
    await until("the new leader in the cache", async () => (await viaNative.refreshLeaders().catch(() => 0)) === 1 && viaNative.leaderStats().leaders[groupOfPartition]);
    const newLeader = viaNative.leaderStats().leaders[groupOfPartition];
    assert.ok(survivors.some((n) => n.tcp === newLeader), newLeader);
    const hits = viaNative.leaderStats().cacheHits;
    const last = await viaNative.produce(topic, [{ value: "after-refresh", partition: 0 }]);
    assert.equal(last[0].error, undefined);
    acked.set("after-refresh", last[0].offset);
    assert.equal(viaNative.leaderStats().cacheHits, hits + 1);

    // read everything back through each survivor
    const maxOffset = Math.max(...acked.values());
    for (const n of survivors) {
      const c = new weft.Client(n.tcp, { timeoutMs: 15000 });
      clients.push(c);
      const seen = new Map();
      let offset = 0;
      await until(`node ${n.id} has every acknowledged offset`, async () => {
        const r = await c.fetch(topic, 0, offset, { maxRecords: 1000 }).catch(() => null);
        if (!r) return false;
        for (const rec of r.records) seen.set(td.decode(rec.value), rec.offset);
        offset = r.nextOffset;
        return offset > maxOffset;
      });
      for (const [v, o] of acked) assert.equal(seen.get(v), o, `acknowledged ${v} at ${o} on node ${n.id}`);
    }
  } finally {
    for (const c of clients) await c.close();
    await Promise.all(nodes.map((n) => n.kill()));
  }
});
