// The client against `weft serve --auth` (docs/security.md): no token, a
// wrong one, the admin token of DATA_DIR/admin.token, a read-only token; over
// the native protocol (token in the hello) and the HTTP gateway (Authorization:
// Bearer; access_token on the WebSocket).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import * as weft from "../dist/index.js";
import { Node, sleep } from "./helpers.mjs";

let node, admin, reader;
const topic = `js.orders-${process.pid}`;
const te = new TextEncoder();
const td = new TextDecoder();

before(async () => {
  node = await Node.create({ WEFT_AUTH_ENABLED: "true" });
  admin = readFileSync(path.join(node.dataDir, "admin.token"), "utf8").trim();
  assert.match(admin, /^wt\./);
  const c = new weft.Client(node.tcp, { token: admin });
  try {
    await c.createTopic(topic);
    await c.call("auth.role.add", { name: "jsread", grants: ["read:topic:js.*"] });
    await c.call("auth.user.add", { name: "jsr", roles: ["jsread"] });
    reader = (await c.call("auth.token.create", { user: "jsr", description: "js client test" })).secret;
    assert.match(reader, /^wt\./);
  } finally {
    await c.close();
  }
});
after(async () => { await node?.stop(); });

for (const via of ["tcp", "http"]) {
  test(`no token, a wrong token: UnauthenticatedError via ${via}`, async () => {
    const none = new weft.Client(node[via], { token: "" });
    try {
      await assert.rejects(none.produce(topic, ["x"]), (e) => e instanceof weft.UnauthenticatedError && e.code === "unauthenticated" && e instanceof weft.UnauthorizedError);
      await assert.rejects(none.topics(), weft.UnauthenticatedError);
      await assert.rejects(none.query("SHOW TABLES"), weft.UnauthenticatedError);
    } finally {
      await none.close();
    }
    const wrong = admin.slice(0, -1) + (admin.endsWith("A") ? "Q" : "A");
    const bad = new weft.Client(node[via], { token: wrong, timeoutMs: 5000, connectTimeoutMs: 5000 });
    try {
      // natively the hello itself is refused, final (not retried into a ConnectionError)
      await assert.rejects(bad.topics(), weft.UnauthenticatedError);
    } finally {
      await bad.close();
    }
  });

  test(`the admin token works via ${via}`, async () => {
    const c = new weft.Client(node[via], { token: admin });
    try {
      const r = await c.produce(topic, [{ key: via, value: `by admin via ${via}` }]);
      assert.equal(r[0].error, undefined);
      assert.ok((await c.topics()).includes(topic));
      const got = (await c.fetch(topic, 0, r[0].offset)).records[0];
      assert.equal(td.decode(got.value), `by admin via ${via}`);
      const t = `jsauth_${via}_${process.pid}`;
      await c.createTable(t);
      await c.table(t).put("k", { by: "admin" });
      assert.equal((await c.table(t).get("k")).value, '{"by":"admin"}');
    } finally {
      await c.close();
    }
  });

  test(`a read-only token: ForbiddenError on produce, reads work, via ${via}`, async () => {
    const c = new weft.Client(node[via], { token: reader });
    try {
      await assert.rejects(c.produce(topic, ["not allowed"]), (e) => e instanceof weft.ForbiddenError && e.code === "forbidden" && e instanceof weft.UnauthorizedError);
      await assert.rejects(c.createTopic(`js.other-${via}-${process.pid}`), weft.ForbiddenError);
      const f = await c.fetch(topic, 0, 0);
      assert.ok(f.records.length >= 1);
      // still refused afterwards: nothing was written by the refused produce
      const admin_ = new weft.Client(node.tcp, { token: admin });
      const all = (await admin_.fetch(topic, 0, 0)).records.map((r) => td.decode(r.value));
      await admin_.close();
      assert.ok(!all.includes("not allowed"));
    } finally {
      await c.close();
    }
  });
}

test("native: the token is the connection's identity (auth.whoami), WEFT_TOKEN is the default", async () => {
  const c = new weft.Client(node.tcp, { token: reader });
  const w = await c.connect();
  assert.ok(w.features.includes("auth"));
  const who = await c.call("auth.whoami");
  assert.equal(who.user, "jsr");
  assert.equal(who.via, "token");
  await c.close();
  const saved = process.env.WEFT_TOKEN;
  process.env.WEFT_TOKEN = admin;
  try {
    const d = new weft.Client(node.tcp);
    assert.equal((await d.call("auth.whoami")).user, "admin");
    await d.close();
    // an explicit "" wins over the environment: no token
    const e = new weft.Client(node.tcp, { token: "" });
    await assert.rejects(e.call("auth.whoami"), weft.UnauthenticatedError);
    await e.close();
  } finally {
    if (saved === undefined) delete process.env.WEFT_TOKEN;
    else process.env.WEFT_TOKEN = saved;
  }
});

test("HTTP WebSocket stream: the token as access_token; refused without one (typed)", async () => {
  const admin_ = new weft.Client(node.tcp, { token: admin });
  const start = await admin_.offsets(topic, 0, "latest");
  const ctl = new AbortController();
  const c = new weft.Client(node.http, { token: reader });
  const it = c.stream(topic, { partition: 0, offset: start, signal: ctl.signal });
  const first = it.next();
  await sleep(200); // not a threshold: the record may arrive before or after the stream opens
  await admin_.produce(topic, [{ value: "streamed", partition: 0 }]);
  const r = await first;
  assert.equal(td.decode(r.value.value), "streamed");
  ctl.abort();
  await it.return();
  await admin_.close();
  const none = new weft.Client(node.http, { token: "" });
  const it2 = none.stream(topic, { partition: 0, offset: "earliest" });
  await assert.rejects(it2.next(), weft.UnauthenticatedError);
  const ro = new weft.Client(node.http, { token: reader });
  await assert.rejects(ro.stream(`other-${process.pid}`, { partition: 0 }).next(), weft.ForbiddenError);
});
