// Weft's native protocol over TCP, Unix sockets and TLS (Node.js): one
// persistent multiplexed connection, reconnecting with back-off.
import type { Socket } from "node:net";
import { ConnectionError, ConnectionLost, ProtocolError, TimeoutError, UnauthorizedError, UnsupportedVersionError, fromDto } from "./errors.js";
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
}

class Conn {
  pending = new Map<string, Pending>();
  closed = false;
  goaway = false;
  welcome: Welcome | null = null;
  /** The welcome listed `trace-context`: requests may carry the extension. */
  traceOk = false;
  private decoder = new Decoder();
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
      p.resolve(f);
    }
  }
  failAll(why: string, error?: Error): void {
    this.closed = true;
    const pending = this.pending;
    this.pending = new Map();
    for (const p of pending.values()) p.reject(error ?? new ConnectionLost(why));
  }
  request(frame: Uint8Array, id: Uint8Array, timeoutMs: number, what: string): Promise<Frame> {
    if (this.closed) return Promise.reject(new ConnectionLost("connection closed"));
    const key = idKey(id);
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(key);
        reject(new TimeoutError(`no answer to ${what} in time`));
      }, Math.max(1, timeoutMs));
      this.pending.set(key, {
        resolve: (f) => (clearTimeout(timer), resolve(f)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      this.socket.write(frame);
    });
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
      const hello = { protocol_version: PROTOCOL_VERSION, client_id: this.opts.clientId, client_name: this.opts.clientName };
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

  async call(route: string, body: unknown, opts: CallOptions): Promise<unknown> {
    const json = opts.json ?? this.opts.json;
    const f = await this.callFrame(route, encodeBody(body, json), json, opts.timeoutMs ?? this.opts.timeoutMs);
    const v = decodeBody(f.body, (f.flags & FLAG_JSON) !== 0);
    if (f.kind === Kind.Error) throw fromDto(v, route);
    return v;
  }

  async callFrame(route: string, body: Uint8Array, json: boolean, timeoutMs: number): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    const conn = await this.connected(deadline);
    const id = newId();
    const tp = conn.traceOk && this.opts.traceContext ? this.opts.traceContext() : undefined;
    return conn.request(encodeFrame(Kind.Request, route, body, id, json ? FLAG_JSON : 0, tp), id, deadline - Date.now(), route);
  }

  async send(route: string, body: unknown): Promise<void> {
    const conn = await this.connected(Date.now() + this.opts.timeoutMs);
    const flags = FLAG_ONE_WAY | (this.opts.json ? FLAG_JSON : 0);
    conn.socket.write(encodeFrame(Kind.Request, route, encodeBody(body, this.opts.json), newId(), flags));
  }

  async close(): Promise<void> {
    this.closed = true;
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
