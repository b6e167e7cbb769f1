// A real `weft serve` on free loopback ports and a temp data dir (WEFT_BIN overrides the binary).
import { spawn } from "node:child_process";
import { mkdtempSync, existsSync, readFileSync, openSync } from "node:fs";
import net from "node:net";
import dgram from "node:dgram";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(here, "../../..");
export const WEFT_BIN = process.env.WEFT_BIN || path.join(ROOT, "target/debug/weft");

export async function freePort(udpToo = false) {
  for (let i = 0; i < 100; i++) {
    const port = await new Promise((resolve, reject) => {
      const s = net.createServer();
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
    });
    if (!udpToo) return port;
    const ok = await new Promise((resolve) => {
      const u = dgram.createSocket("udp4");
      u.once("error", () => resolve(false));
      u.bind(port, "127.0.0.1", () => u.close(() => resolve(true)));
    });
    if (ok) return port;
  }
  throw new Error("no free port");
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Node {
  static async create(env = {}) {
    const n = new Node();
    n.env = env;
    n.tmp = mkdtempSync(path.join(os.tmpdir(), "weft-js-"));
    n.dataDir = path.join(n.tmp, "data");
    n.port = await freePort(true);
    n.tlsPort = await freePort();
    n.httpPort = await freePort();
    n.sock = path.join(n.dataDir, "weft.sock");
    await n.start();
    return n;
  }
  get tcp() { return `tcp://127.0.0.1:${this.port}`; }
  get unix() { return `unix://${this.sock}`; }
  get tls() { return `tls://127.0.0.1:${this.tlsPort}`; }
  get http() { return `http://127.0.0.1:${this.httpPort}`; }
  tlsOptions(clientCert = true) {
    const d = path.join(this.dataDir, "tls");
    const o = { ca: readFileSync(path.join(d, "ca.pem")) };
    if (clientCert) { o.cert = readFileSync(path.join(d, "client.pem")); o.key = readFileSync(path.join(d, "client.key")); }
    return o;
  }
  async start() {
    const log = openSync(path.join(this.tmp, "weft.log"), "a");
    this.proc = spawn(WEFT_BIN, [
      "serve", "--data-dir", this.dataDir,
      "--tcp-addr", `127.0.0.1:${this.port}`, "--udp-addr", `127.0.0.1:${this.port}`, "--unix-path", this.sock,
      "--enable", "tls", "--tls-addr", `127.0.0.1:${this.tlsPort}`, "--client-auth", "require",
      "--http-addr", `127.0.0.1:${this.httpPort}`, "--fsync", "never",
    ], { stdio: ["ignore", log, log], env: { ...process.env, WEFT_LOG: "warn", ...this.env } });
    let exited = null;
    this.proc.once("exit", (code) => (exited = code));
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exited !== null) throw new Error(`weft serve exited ${exited}: ${readFileSync(path.join(this.tmp, "weft.log"), "utf8").slice(-2000)}`);
      if ((await canConnect(this.port)) && (await canConnect(this.tlsPort)) && (await canConnect(this.httpPort)) && existsSync(this.sock)) return;
      if (Date.now() > deadline) throw new Error("weft serve did not start listening within 60 s");
      await sleep(50);
    }
  }
  async kill(signal = "SIGKILL") {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once("exit", r));
    p.kill(signal);
    await done;
    this.proc = null;
  }
  stop() { return this.kill("SIGTERM"); }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: "127.0.0.1", port }, () => { s.destroy(); resolve(true); });
    s.once("error", () => resolve(false));
  });
}

let seq = 0;
export const unique = (p) => `${p}-${process.pid}-${++seq}`;

/**
 * One `weft serve` of a cluster (crates/weft/tests/support/cluster.rs's
 * flags), on free loopback ports; ended by its pid only.
 */
export class ClusterNode {
  constructor(id, tmp) {
    this.id = id;
    this.dir = path.join(tmp, `n${id}`);
    this.logPath = path.join(tmp, `n${id}.log`);
  }
  async ports() {
    this.port = await freePort();
    this.httpPort = await freePort();
    this.clusterPort = await freePort();
  }
  get tcp() { return `tcp://127.0.0.1:${this.port}`; }
  get http() { return `http://127.0.0.1:${this.httpPort}`; }
  get clusterAddr() { return `127.0.0.1:${this.clusterPort}`; }
  async start(peers) {
    const log = openSync(this.logPath, "a");
    const env = { ...process.env, WEFT_LOG: "warn", WEFT_CLUSTER_TICK_MS: "50" };
    for (const k of ["WEFT_CONFIG", "WEFT_ADDR", "WEFT_TOKEN"]) delete env[k];
    this.proc = spawn(WEFT_BIN, [
      "serve", "--data-dir", this.dir,
      "--tcp-addr", `127.0.0.1:${this.port}`, "--disable", "udp",
      "--http-addr", `127.0.0.1:${this.httpPort}`,
      "--node-id", String(this.id), "--cluster-addr", this.clusterAddr, "--cluster-peers", peers,
    ], { stdio: ["ignore", log, log], env });
    let exited = null;
    this.proc.once("exit", (code) => (exited = code));
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (exited !== null) throw new Error(`node ${this.id} exited ${exited}: ${readFileSync(this.logPath, "utf8").slice(-2000)}`);
      if ((await canConnect(this.port)) && (await canConnect(this.httpPort))) return;
      if (Date.now() > deadline) throw new Error(`node ${this.id} did not start listening within 60 s`);
      await sleep(50);
    }
  }
  get alive() { return this.proc != null && this.proc.exitCode === null && this.proc.signalCode === null; }
  async kill(signal = "SIGKILL") {
    const p = this.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const done = new Promise((r) => p.once("exit", r));
    p.kill(signal);
    await done;
    this.proc = null;
  }
}

/** Three (or n) founding nodes; resolves once the metadata group has a leader and every node registered its address. */
export async function startCluster(n = 3, status) {
  // free ports are only free when asked: another process may take one before
  // a node binds it, so a start that lost that race is tried again on new ports
  for (let attempt = 1; ; attempt++) {
    try {
      return await startClusterOnce(n, status);
    } catch (e) {
      if (attempt >= 3 || !/Address already in use/.test(String(e.message))) throw e;
    }
  }
}

async function startClusterOnce(n, status) {
  const tmp = mkdtempSync(path.join(os.tmpdir(), "weft-js-cluster-"));
  const nodes = [];
  for (let i = 1; i <= n; i++) {
    const c = new ClusterNode(i, tmp);
    await c.ports();
    nodes.push(c);
  }
  const peers = nodes.map((c) => `${c.id}=${c.clusterAddr}`).join(",");
  try {
    await Promise.all(nodes.map((c) => c.start(peers)));
    await until("a metadata leader and every node registered", async () => {
      const s = await status(nodes[0]).catch(() => null);
      return s && s.meta_leader && s.nodes.filter((x) => typeof x.native_addr === "string").length === n ? s : null;
    });
  } catch (e) {
    await Promise.all(nodes.map((c) => c.kill()));
    throw e;
  }
  return nodes;
}

/** Poll `f` every 100 ms until it gives a value; a 60 s bound against hangs, not a timing assertion. */
export async function until(what, f) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
