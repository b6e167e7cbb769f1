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
  } finally {
    await c.close();
    proc.kill("SIGTERM");
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
      import { Client } from "weft-client";
      const c = new Client(${JSON.stringify(node.tcp)});
      const p = await c.ping();
      console.log(p.pong, await c.echo("from the tarball"));
      await c.close();
    `);
    const r = execFileSync(process.execPath, ["main.mjs"], { cwd: app, encoding: "utf8" });
    assert.equal(r.trim(), "true from the tarball");
    const resolved = execFileSync(process.execPath, ["-e", "console.log(require.resolve('weft-client/package.json'))"], { cwd: app, encoding: "utf8" });
    assert.ok(resolved.startsWith(app), resolved);
  } finally {
    await node.stop();
  }
});
