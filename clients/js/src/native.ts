// Weft's native protocol over TCP, Unix sockets and TLS (Node.js): one
// persistent multiplexed connection, reconnecting with back-off.
import type { Socket } from "node:net";
import { ConnectionError, ConnectionLost, NotLeaderError, ProtocolError, TimeoutError, UnauthorizedError, UnsupportedVersionError, fromDto } from "./errors.js";
import { Decoder, FLAG_JSON, FLAG_ONE_WAY, Frame, FrameError, Kind, NIL_ID, decodeBody, encodeBody, encodeFrame, idKey, newId } from "./frame.js";

const NIL_KEY = idKey(NIL_ID);
import { Backoff, CallOptions, Transport, Welcome, sleep } from "./transport.js";

export const PROTOCOL_VERSION = 1;

export interface TlsOptions {
  /** PEM CA certificates to trust (default: Node's bundled roots). */
  ca?: string | Uint8Array;
  /** PEM client certificate and key (mTLS). */
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  /** Name checked in the server certificate (default: the address's host). */
  servername?: string;
}

export interface NativeOptions {
  timeoutMs: number;
  connectTimeoutMs: number;
  tls?: TlsOptions;
  clientName: string;
  clientId: string;
  json: boolean;
  /** The W3C traceparent to send with each request, if any. */
  traceContext?: () => string | undefined;
  /** Bearer token or API key sent in the hello (docs/protocol.md, "Authentication"). */
  token?: string;
  /** Follow `not_leader` answers to the leader they name (default true). */
  followLeader?: boolean;
  /** Most `not_leader` redirects one call follows (default 3). */
  maxLeaderHops?: number;
  /** One connect attempt, no back-off loop (a redirect target: when it is down, the first node is asked again). */
  connectOnce?: boolean;
}

/** What `not_leader` says (docs/protocol.md): leader 0 and addr null when unknown. */
export interface LeaderHint {
  group: number;
  leader: number;
  addr: string | null;
}

/** The leader hint of a `not_leader` error (also under `details.not_leader`). */
export function leaderHint(e: unknown): LeaderHint | null {
  if (!(e instanceof NotLeaderError)) return null;
  const d = (e.details ?? {}) as Record<string, unknown>;
  const n = (d.not_leader ?? {}) as Record<string, unknown>;
  const group = Number(d.group ?? n.group ?? 0);
  const leader = Number(d.leader ?? n.leader ?? 0);
  const a = d.addr ?? n.addr;
  return { group, leader, addr: typeof a === "string" && a !== "" ? a : null };
}

/** Leader-cache and redirect counters of a native client. */
export interface LeaderStats {
  /** Calls sent again at the leader a `not_leader` named. */
  redirects: number;
  /** Calls sent again after a `not_leader` that named no leader (an election). */
  retries: number;
  /** Calls that went straight to a cached leader (this node included, when it leads). */
  cacheHits: number;
  /** group -> the leader's native address, as last learnt. */
  leaders: Record<string, string>;
}

/**
 * The leader-cache key of a request: the partition (or table) it addresses,
 * when the body says. A `not_leader` answer ties the key to its raft group,
 * and the group to its leader, so later calls on the key go straight there.
 */
export function leaderKey(route: string, body: unknown): string | null {
  // Group membership lives on the node the member joined (docs/cluster.md):
  // its calls (fenced fetches and commits too) never move to a partition leader.
  if (!body || typeof body !== "object" || route.startsWith("log.group.")) return null;
  const b = body as Record<string, unknown>;
  const f = b;
  if (typeof f.topic === "string") {
    let p = f.partition;
    // a produce whose records all name one partition addresses that partition
    if (p == null && Array.isArray(b.records) && b.records.length) {
      const ps = new Set((b.records as Record<string, unknown>[]).map((r) => r?.partition));
      if (ps.size === 1) p = [...ps][0];
    }
    return `topic\0${f.topic}\0${p ?? ""}`;
  }
  if (route.startsWith("query.") && typeof b.aql === "string") {
    const m = /^\s*(?:GET|SET|DELETE|RANGE|HISTORY|FILTER|UPDATE)\s+("(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_-]*)/i.exec(b.aql)
      ?? /^\s*BATCH\s*\{\s*(?:IF\s+[A-Z_]+\s*\(\s*|(?:GET|SET|DELETE|RANGE)\s+)("(?:[^"\\]|\\.)*"|[A-Za-z_][A-Za-z0-9_-]*)/i.exec(b.aql);
    if (m) return `table\0${m[1]!.replace(/^"([^"\\]*)"$/, "$1")}`;
  }
  return null;
}

export type Address = { scheme: "tcp" | "tls"; host: string; port: number } | { scheme: "unix"; path: string };

export function parseNativeAddress(addr: string): Address {
  const m = /^([a-z]+):\/\/(.*)$/i.exec(addr);
  const scheme = (m ? m[1]! : "tcp").toLowerCase();
  const rest = m ? m[2]! : addr;
  if (scheme === "unix") {
    if (!rest) throw new RangeError(`${addr}: unix:// needs a path`);
    return { scheme, path: rest };
  }
  if (scheme !== "tcp" && scheme !== "tls") throw new RangeError(`${addr}: unknown scheme ${scheme} (tcp, unix, tls, http, https)`);
  const hm = /^\[([^\]]+)\]:(\d+)$/.exec(rest) ?? /^([^:]+):(\d+)$/.exec(rest);
  const port = hm ? Number(hm[2]) : NaN;
  if (!hm || !(port > 0 && port < 65536)) throw new RangeError(`${addr}: expected ${scheme}://HOST:PORT`);
  return { scheme, host: hm[1]!, port };
}

interface Pending {
  resolve: (f: Frame) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

class Conn {
  pending = new Map<string, Pending>();
  closed = false;
  goaway = false;
  welcome: Welcome | null = null;
  /** The welcome listed `trace-context`: requests may carry the extension. */
  traceOk = false;
  private decoder = new Decoder();
  /** Writes of this tick are corked and go out in one writev at the next one. */
  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };
  constructor(readonly socket: Socket) {
    socket.on("data", (d: Uint8Array) => {
      // plain Uint8Array views, not Buffers: decoded binary values are Uint8Arrays in Node and browsers alike
      this.decoder.feed(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
      try {
        for (let f = this.decoder.next(); f; f = this.decoder.next()) this.dispatch(f);
      } catch (e) {
        if (e instanceof FrameError && e.fatal) {
          this.failAll(`bad frame from the server: ${e.message}`);
          socket.destroy();
        }
      }
    });
    socket.on("close", () => this.failAll("connection closed by the server"));
    socket.on("error", (e) => this.failAll(`connection lost: ${e.message}`));
  }
  usable(): boolean {
    return !this.closed && !this.goaway;
  }
  dispatch(f: Frame): void {
    if (f.kind === Kind.Control && f.route === "goaway") {
      this.goaway = true;
      return;
    }
    const key = idKey(f.id);
    if (f.kind === Kind.Error && key === NIL_KEY) {
      // About the connection, not a request (unauthorized, busy at
      // max_connections, handshake timeout): every waiting call gets it.
      this.failAll("", fromDto(decodeBody(f.body, (f.flags & FLAG_JSON) !== 0)));
      return;
    }
    const p = this.pending.get(key);
    if (p) {
      this.pending.delete(key);
      clearTimeout(p.timer);
      p.resolve(f);
    }
  }
  failAll(why: string, error?: Error): void {
    this.closed = true;
    const pending = this.pending;
    this.pending = new Map();
    for (const p of pending.values()) {
      clearTimeout(p.timer);
      p.reject(error ?? new ConnectionLost(why));
    }
  }
  request(frame: Uint8Array, id: Uint8Array, timeoutMs: number, what: string): Promise<Frame> {
    if (this.closed) return Promise.reject(new ConnectionLost("connection closed"));
    const key = idKey(id);
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(key);
        reject(new TimeoutError(`no answer to ${what} in time`));
      }, Math.max(1, timeoutMs));
      this.pending.set(key, { resolve, reject, timer });
      this.write(frame);
    });
  }
  /** Queue a frame: the first write of a tick corks the socket, the next tick
   * uncorks it, so requests made in one tick leave in one system call. */
  write(frame: Uint8Array): void {
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      process.nextTick(this.uncork);
    }
    this.socket.write(frame);
  }
  close(): void {
    this.closed = true;
    this.socket.destroy();
  }
}

export class NativeTransport implements Transport {
  readonly kind = "native" as const;
  readonly address: Address;
  private conn: Conn | null = null;
  private connecting: Promise<Conn> | null = null;
  private backoff = new Backoff();
  private closed = false;
  /** Other nodes of a cluster, by address: one pooled connection each. */
  private peers = new Map<string, NativeTransport>();
  /** Leader cache: request key -> raft group, group -> leader address. */
  private groupOf = new Map<string, number>();
  private leaderOf = new Map<number, string>();
  private stats = { redirects: 0, retries: 0, cacheHits: 0 };

  constructor(readonly addr: string, readonly opts: NativeOptions) {
    this.address = parseNativeAddress(addr);
  }

  get welcome(): Welcome | null {
    return this.conn?.welcome ?? null;
  }

  async connect(): Promise<Welcome> {
    const c = await this.connected(Date.now() + this.opts.connectTimeoutMs);
    return c.welcome!;
  }

  private async connected(deadline: number): Promise<Conn> {
    if (this.closed) throw new ConnectionError("client is closed");
    if (this.conn && this.conn.usable()) return this.conn;
    if (!this.connecting) {
      this.connecting = this.reconnectLoop(deadline).finally(() => (this.connecting = null));
    }
    return this.connecting;
  }

  private async reconnectLoop(deadline: number): Promise<Conn> {
    let last: unknown = null;
    for (;;) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new ConnectionError(`cannot connect to ${this.addr}: ${errText(last) ?? "timed out"}`);
      try {
        const c = await this.open(Math.min(remaining, this.opts.connectTimeoutMs));
        this.backoff.reset();
        this.conn = c;
        return c;
      } catch (e) {
        // retrying cannot help these; busy (max_connections) and the like are retried with back-off
        if (e instanceof ProtocolError || e instanceof UnauthorizedError || e instanceof UnsupportedVersionError) throw e;
        if (this.opts.connectOnce) throw new ConnectionError(`cannot connect to ${this.addr}: ${errText(e)}`);
        last = e;
      }
      const delay = this.backoff.nextDelayMs();
      if (Date.now() + delay >= deadline) throw new ConnectionError(`cannot connect to ${this.addr}: ${errText(last)}`);
      await sleep(delay);
      if (this.closed) throw new ConnectionError("client is closed");
    }
  }

  private async open(timeoutMs: number): Promise<Conn> {
    const a = this.address;
    const socket = await new Promise<Socket>((resolve, reject) => {
      let s: Socket;
      const fail = (e: Error) => {
        clearTimeout(timer);
        s?.destroy();
        reject(e);
      };
      const timer = setTimeout(() => fail(new ConnectionError("connect timed out")), timeoutMs);
      const ok = () => {
        clearTimeout(timer);
        s.removeListener("error", fail);
        resolve(s);
      };
      (async () => {
        if (a.scheme === "tls") {
          const tls = await import("node:tls");
          const t = this.opts.tls ?? {};
          s = tls.connect({
            host: a.host,
            port: a.port,
            ca: t.ca as string | undefined,
            cert: t.cert as string | undefined,
            key: t.key as string | undefined,
            servername: t.servername ?? (isIp(a.host) ? undefined : a.host),
            ALPNProtocols: ["weft/1"],
          }, ok);
        } else {
          const net = await import("node:net");
          s = a.scheme === "unix" ? net.connect({ path: a.path }, ok) : net.connect({ host: a.host, port: a.port, noDelay: true }, ok);
        }
        s.once("error", fail);
      })().catch(fail);
    });
    const conn = new Conn(socket);
    try {
      const id = newId();
      const hello: Record<string, unknown> = { protocol_version: PROTOCOL_VERSION, client_id: this.opts.clientId, client_name: this.opts.clientName };
      if (this.opts.token) hello.token = this.opts.token;
      const f = await conn.request(encodeFrame(Kind.Control, "hello", encodeBody(hello), id), id, timeoutMs, "hello");
      if (f.kind === Kind.Error) throw fromDto(decodeBody(f.body, (f.flags & FLAG_JSON) !== 0), "hello");
      const w = decodeBody(f.body, (f.flags & FLAG_JSON) !== 0) as Welcome;
      if (f.kind !== Kind.Control || f.route !== "welcome" || !w) throw new ProtocolError(`expected a welcome, got kind ${f.kind} route ${f.route}`);
      if (w.protocol_version !== PROTOCOL_VERSION) throw new ProtocolError(`server speaks protocol version ${w.protocol_version}, this client ${PROTOCOL_VERSION}`);
      conn.welcome = w;
      conn.traceOk = Array.isArray(w.features) && w.features.includes("trace-context");
      return conn;
    } catch (e) {
      conn.close();
      throw e;
    }
  }

  /**
   * One call, following `not_leader` (cluster mode): the node that answers it
   * ran nothing, so the call is sent again, within the same deadline, at the
   * leader it names (at most `maxLeaderHops` times, over a pooled connection
   * to that node), or, when it names none (an election), at the first node
   * after a back-off. The leader learnt is cached per raft group, and the
   * request's partition or table is tied to its group, so later calls on it
   * go straight to the leader.
   */
  async call(route: string, body: unknown, opts: CallOptions): Promise<unknown> {
    const json = opts.json ?? this.opts.json;
    const payload = encodeBody(body, json);
    const deadline = Date.now() + (opts.timeoutMs ?? this.opts.timeoutMs);
    const follow = this.opts.followLeader !== false;
    // The key is only looked for when the cache has something, or a not_leader came.
    let key = follow && this.groupOf.size > 0 ? leaderKey(route, body) : null;
    const group = key != null ? this.groupOf.get(key) : undefined;
    const cachedAddr = group != null ? this.leaderOf.get(group) : undefined;
    let target: NativeTransport = cachedAddr != null ? this.peer(cachedAddr) : this;
    if (cachedAddr != null) this.stats.cacheHits++;
    let hops = 0;
    let backoff: Backoff | null = null;
    for (;;) {
      let f: Frame;
      try {
        f = await target.callFrame(route, payload, json, deadline - Date.now());
      } catch (e) {
        // A cached leader we cannot reach: forget it; when nothing was sent,
        // the first node (which forwards, or names the new leader) gets the call.
        if (target !== this && e instanceof ConnectionError) {
          this.forgetLeader(target.addr);
          if (!(e instanceof ConnectionLost) && Date.now() < deadline) {
            target = this;
            continue;
          }
        }
        throw e;
      }
      const v = decodeBody(f.body, (f.flags & FLAG_JSON) !== 0);
      if (f.kind !== Kind.Error) return v;
      const err = fromDto(v, route);
      const hint = follow ? leaderHint(err) : null;
      if (!hint) throw err;
      key ??= leaderKey(route, body);
      if (key != null && hint.group) this.groupOf.set(key, hint.group);
      if (hint.addr != null && hint.addr !== target.addr) {
        if (hops >= (this.opts.maxLeaderHops ?? 3)) throw err;
        hops++;
        this.stats.redirects++;
        if (hint.group) this.leaderOf.set(hint.group, hint.addr);
        try {
          target = this.peer(hint.addr);
        } catch {
          throw err; // an address this client cannot dial
        }
        continue;
      }
      // No leader named (or the same node again): an election is under way.
      if (hint.group) this.leaderOf.delete(hint.group);
      backoff ??= new Backoff(50, 1000);
      const delay = backoff.nextDelayMs();
      if (Date.now() + delay >= deadline) throw err;
      this.stats.retries++;
      await sleep(delay);
      target = this;
    }
  }

  /**
   * Fill the leader cache from the node's `cluster.status` (partitions with
   * their raft group and leader, nodes with their native address), so calls
   * on a partition go straight to its leader without a first redirect or a
   * forwarding hop. Returns how many partitions have a known leader.
   */
  async refreshLeaders(timeoutMs = this.opts.timeoutMs): Promise<number> {
    const f = await this.callFrame("cluster.status", encodeBody(null), false, timeoutMs);
    const v = decodeBody(f.body, (f.flags & FLAG_JSON) !== 0) as Record<string, unknown>;
    if (f.kind === Kind.Error) throw fromDto(v, "cluster.status");
    const addrOf = new Map<number, string>();
    for (const n of (v.nodes as Record<string, unknown>[] | undefined) ?? []) {
      if (typeof n.native_addr === "string") addrOf.set(Number(n.id), n.native_addr);
    }
    let known = 0;
    for (const p of (v.partitions as Record<string, unknown>[] | undefined) ?? []) {
      const group = Number(p.group);
      const addr = p.leader != null ? addrOf.get(Number(p.leader)) : undefined;
      if (!group || typeof p.topic !== "string") continue;
      this.groupOf.set(`topic\0${p.topic}\0${p.partition}`, group);
      if (addr) {
        this.leaderOf.set(group, addr);
        known++;
      }
    }
    return known;
  }

  /** Redirect and leader-cache counters (cluster mode). */
  leaderStats(): LeaderStats {
    return { ...this.stats, leaders: Object.fromEntries([...this.leaderOf].map(([g, a]) => [String(g), a])) };
  }

  /** The pooled connection to another node (`tcp://...` as nodes register it). */
  private peer(addr: string): NativeTransport {
    if (addr === this.addr) return this;
    let p = this.peers.get(addr);
    if (!p) {
      // The same options (TLS, token, ...) and the same connect bound; a peer never redirects itself.
      p = new NativeTransport(addr, { ...this.opts, followLeader: false, connectOnce: true });
      this.peers.set(addr, p);
    }
    return p;
  }

  private forgetLeader(addr: string): void {
    for (const [g, a] of this.leaderOf) if (a === addr) this.leaderOf.delete(g);
  }

  callFrame(route: string, body: Uint8Array, json: boolean, timeoutMs: number): Promise<Frame> {
    const c = this.conn;
    // On a live connection, no await before the write.
    if (c && c.usable() && !this.closed) {
      try {
        return this.requestOn(c, route, body, json, timeoutMs);
      } catch (e) {
        return Promise.reject(e);
      }
    }
    const deadline = Date.now() + timeoutMs;
    return this.connected(deadline).then((conn) => this.requestOn(conn, route, body, json, deadline - Date.now()));
  }

  private requestOn(conn: Conn, route: string, body: Uint8Array, json: boolean, timeoutMs: number): Promise<Frame> {
    const id = newId();
    const tp = conn.traceOk && this.opts.traceContext ? this.opts.traceContext() : undefined;
    return conn.request(encodeFrame(Kind.Request, route, body, id, json ? FLAG_JSON : 0, tp), id, timeoutMs, route);
  }

  async send(route: string, body: unknown): Promise<void> {
    // one-way: no answer, so no redirect; a cached leader gets it directly
    const key = this.opts.followLeader !== false ? leaderKey(route, body) : null;
    const g = key != null ? this.groupOf.get(key) : undefined;
    const addr = g != null ? this.leaderOf.get(g) : undefined;
    if (addr != null) return this.peer(addr).send(route, body);
    const conn = await this.connected(Date.now() + this.opts.timeoutMs);
    const flags = FLAG_ONE_WAY | (this.opts.json ? FLAG_JSON : 0);
    conn.write(encodeFrame(Kind.Request, route, encodeBody(body, this.opts.json), newId(), flags));
  }

  async close(): Promise<void> {
    this.closed = true;
    const peers = [...this.peers.values()];
    this.peers.clear();
    await Promise.all(peers.map((p) => p.close()));
    if (this.conn) {
      this.conn.failAll("client closed");
      this.conn.close();
      this.conn = null;
    }
  }
}

function isIp(h: string): boolean {
  return /^[\d.]+$/.test(h) || h.includes(":");
}

function errText(e: unknown): string | null {
  return e == null ? null : e instanceof Error ? e.message : String(e);
}
