// Node calling a Python service (clients/python/examples/dice_service.py) and
// a Rust one (weft serve's endpoints, the other tests); the built package
// installed into a clean folder and used from there.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import * as weft from "../dist/index.js";
import { Node, ROOT, freePort, sleep } from "./helpers.mjs";

const PY = process.env.WEFT_PYTHON || path.join(ROOT, ".venv/bin/python");

test("a Python service called from Node", { skip: !existsSync(PY) && `no Python at ${PY} (WEFT_PYTHON)` }, async () => {
  const port = await freePort();
  const proc = spawn(PY, [path.join(ROOT, "clients/python/examples/dice_service.py"), `tcp://127.0.0.1:${port}`], {
    env: { ...process.env, PYTHONPATH: path.join(ROOT, "clients/python/src"), DICE_SEED: "7" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const c = new weft.Client(`tcp://127.0.0.1:${port}`, { connectTimeoutMs: 30000 });
  try {
    const w = await c.connect();
    assert.equal(w.server_name, "dice");
    const n = await c.call("roll", { sides: 6 });
    assert.ok(n >= 1 && n <= 6);
    assert.equal((await c.call("roll_times", { sides: 6, how_many: 10 })).length, 10);
    const g = await c.call("guess", { sides: 6, guess: 3 });
    assert.equal(g.correct, g.rolled === 3);
    await assert.rejects(c.call("roll", { sides: 0 }), (e) => e instanceof weft.ValidationError && e.details.field === "sides");
    await assert.rejects(c.call("roll_times", { sides: 6, how_many: 1001 }), (e) => e instanceof weft.ValidationError && e.details.max === 1000);
    await assert.rejects(c.call("roll", { faces: 6 }), weft.BadBodyError);
    await assert.rejects(c.call("nope"), weft.UnknownRouteError);
    assert.equal((await c.ping()).pong, true);
    assert.ok((await c.info()).endpoints.includes("guess"));
    // the dice client example against the Python dice service
    const ex = path.join(path.dirname(new URL(import.meta.url).pathname), "../examples");
    const out = execFileSync(process.execPath, [path.join(ex, "dice_client.mjs"), `tcp://127.0.0.1:${port}`], { encoding: "utf8" }).split("\n");
    assert.equal(out[0], `connected to tcp://127.0.0.1:${port}`);
    assert.match(out[5], /^roll \{sides: 0\} -> refused \(validation\): sides must be at least 1/);
    assert.match(out[6], /^roll_times \{sides: 6, how_many: 1001\} -> refused \(validation\)/);
  } finally {
    await c.close();
    proc.kill("SIGTERM");
  }
});

test("the echo client, producer and consumer examples against weft serve", async () => {
  const node = await Node.create();
  const ex = path.join(path.dirname(new URL(import.meta.url).pathname), "../examples");
  try {
    const echo = execFileSync(process.execPath, [path.join(ex, "echo_client.mjs"), node.tcp, "héllo"], { encoding: "utf8" });
    assert.ok(echo.includes('echo "héllo" -> error server error: unknown_route'), echo);
    assert.ok(echo.includes('weft.echo "héllo" -> "héllo"'), echo);
    const topic = `ex-${process.pid}`;
    const prod = execFileSync(process.execPath, [path.join(ex, "producer.mjs"), node.http, topic], { encoding: "utf8" });
    assert.equal(prod.split("\n").filter((l) => l.includes("-> partition")).length, 3, prod);
    const cons = spawn(process.execPath, [path.join(ex, "consumer.mjs"), node.tcp, topic, `g-${process.pid}`], { stdio: ["ignore", "pipe", "inherit"] });
    let text = "";
    const deadline = Date.now() + 30000;
    cons.stdout.on("data", (d) => (text += d));
    while (text.split("\n").filter(Boolean).length < 3) {
      assert.ok(Date.now() < deadline, text);
      await sleep(50);
    }
    const exited = new Promise((r) => cons.once("exit", r));
    cons.kill("SIGINT");
    assert.equal(await exited, 0);
    assert.deepEqual(text.split("\n").filter(Boolean).map((l) => l.split(": ")[1]).sort(), ["first", "second", "third"]);
  } finally {
    await node.stop();
  }
});

test("npm pack: the tarball installs into a clean folder and works there", async () => {
  const node = await Node.create();
  try {
    const out = mkdtempSync(path.join(os.tmpdir(), "weft-pack-"));
    const pkgDir = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..");
    execFileSync("npm", ["pack", "--pack-destination", out], { cwd: pkgDir, stdio: "pipe" });
    const tgz = readdirSync(out).find((f) => f.startsWith("weft-client-") && f.endsWith(".tgz"));
    assert.ok(tgz, "no tarball");
    const listing = execFileSync("tar", ["tzf", path.join(out, tgz)], { encoding: "utf8" });
    assert.ok(listing.includes("package/dist/index.js") && listing.includes("package/dist/index.d.ts"), listing);
    assert.ok(!listing.includes("node_modules") && !listing.includes("package/src/"), listing);
    const app = path.join(out, "app");
    execFileSync("mkdir", ["-p", app]);
    writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "app", version: "1.0.0", type: "module", private: true }));
    execFileSync("npm", ["install", "--no-audit", "--no-fund", path.join(out, tgz)], { cwd: app, stdio: "pipe" });
    writeFileSync(path.join(app, "main.mjs"), `
      import { Client, aqlKey } from "weft-client";
      const c = new Client(${JSON.stringify(node.tcp)});
      const p = await c.ping();
      console.log(p.pong, await c.echo("from the tarball"));
      const t = await c.createTable("tarball_${process.pid}");
      await t.put("k", { n: 1 });
      console.log((await t.get("k")).value, aqlKey("it's"));
      await c.close();
    `);
    const r = execFileSync(process.execPath, ["main.mjs"], { cwd: app, encoding: "utf8" });
    assert.equal(r.trim(), `true from the tarball\n{"n":1} 'it\\'s'`);
    assert.ok(listing.includes("package/dist/query.d.ts"), listing);
    const resolved = execFileSync(process.execPath, ["-e", "console.log(require.resolve('weft-client/package.json'))"], { cwd: app, encoding: "utf8" });
    assert.ok(resolved.startsWith(app), resolved);
  } finally {
    await node.stop();
  }
});

const RUST_EXAMPLES = process.env.WEFT_EXAMPLES || path.join(ROOT, "target/debug/examples");
test("the dice client against the Rust dice service: the same refusals as from the Python one",
  { skip: !existsSync(path.join(RUST_EXAMPLES, "dice_server")) && `no Rust examples in ${RUST_EXAMPLES} (WEFT_EXAMPLES)` }, async () => {
  const port = await freePort();
  const addr = `tcp://127.0.0.1:${port}`;
  const proc = spawn(path.join(RUST_EXAMPLES, "dice_server"), [addr], { stdio: "ignore", env: { ...process.env, DICE_SEED: "7" } });
  const c = new weft.Client(addr, { connectTimeoutMs: 30000 });
  try {
    await c.connect();
    await assert.rejects(c.call("roll", { sides: 0 }), (e) => e instanceof weft.ValidationError && e.details.field === "sides" && e.details.min === 1);
    await assert.rejects(c.call("roll", { faces: 6 }), weft.BadBodyError);
    const ex = path.join(path.dirname(new URL(import.meta.url).pathname), "../examples");
    const out = execFileSync(process.execPath, [path.join(ex, "dice_client.mjs"), addr], { encoding: "utf8" }).split("\n");
    assert.equal(out[5], "roll {sides: 0} -> refused (validation): sides must be at least 1 {\"field\":\"sides\",\"got\":0,\"min\":1}");
    assert.equal(out[6], "roll_times {sides: 6, how_many: 1001} -> refused (validation): how_many must be at most 1000 {\"field\":\"how_many\",\"got\":1001,\"max\":1000}");
  } finally {
    await c.close();
    proc.kill("SIGTERM");
  }
});
