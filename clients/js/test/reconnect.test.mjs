import { test } from "node:test";
import assert from "node:assert/strict";
import * as weft from "../dist/index.js";
import { Node, sleep } from "./helpers.mjs";

test("a server killed and restarted under a client: the same client carries on", async () => {
  const node = await Node.create();
  try {
    for (const transport of ["tcp", "unix", "tls"]) {
      const c = new weft.Client(node[transport], { timeoutMs: 2000, connectTimeoutMs: 1000, ...(transport === "tls" ? { tls: node.tlsOptions() } : {}) });
      assert.equal((await c.ping()).pong, true);
      await node.kill();
      await assert.rejects(c.ping(), (e) => e instanceof weft.ConnectionError || e instanceof weft.TimeoutError);
      await node.start();
      const deadline = Date.now() + 30000;
      for (;;) {
        try {
          assert.equal((await c.ping()).pong, true);
          break;
        } catch (e) {
          if (!(e instanceof weft.ConnectionError || e instanceof weft.TimeoutError) || Date.now() > deadline) throw e;
        }
      }
      assert.equal(await c.echo("after"), "after");
      await c.close();
    }
    // a call made while the server is down waits for it (bounded by its timeout)
    const c = new weft.Client(node.tcp, { timeoutMs: 60000 });
    await c.ping();
    await node.kill();
    const waiting = c.echo("waited").catch((e) => e);
    await sleep(500);
    await node.start();
    const r = await waiting;
    // the call may have been written before the client saw the drop: then it is lost, not resent
    if (r instanceof weft.ConnectionLost) assert.equal(await c.echo("again"), "again");
    else assert.equal(r, "waited");
    // a call on the wire when the connection drops fails with ConnectionLost
    await c.createTopic("drop").catch(() => {});
    const lost = c.fetch("drop", 0, 0, { waitMs: 30000 }).catch((e) => e);
    await sleep(500);
    await node.kill();
    assert.ok((await lost) instanceof weft.ConnectionLost);
    await node.start();
    // graceful stop: goaway, then reconnect
    assert.equal((await c.ping()).pong, true);
    await node.stop();
    await node.start();
    assert.equal((await c.ping()).pong, true);
    await c.close();
  } finally {
    await node.stop();
  }
});

test("refused by the allow-list: UnauthorizedError, final (not retried into a ConnectionError)", async () => {
  const node = await Node.create({ WEFT_TCP_ALLOW: "10.0.0.0/8" });
  try {
    const c = new weft.Client(node.tcp, { timeoutMs: 30000, connectTimeoutMs: 30000 });
    await assert.rejects(c.ping(), weft.UnauthorizedError);
    await c.close();
    const ok = new weft.Client(node.unix);
    assert.equal((await ok.ping()).pong, true);
    await ok.close();
  } finally {
    await node.stop();
  }
});
