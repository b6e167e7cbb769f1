// The HTTP gateway as a transport (browsers, or anything with fetch): the
// log's native routes are mapped to the REST routes of docs/log.md, and
// streams use its WebSocket routes.
import { ConnectionError, NotLeaderError, NotSupported, ServerError, TimeoutError, fromDto } from "./errors.js";
import { Backoff, CallOptions, Transport, Welcome, sleep } from "./transport.js";

export interface HttpOptions {
  timeoutMs: number;
  /** Extra headers for every request. */
  headers?: Record<string, string>;
  /** The caller's W3C traceparent, sent as the `traceparent` header. */
  traceContext?: () => string | undefined;
  /** Bearer token or API key: `Authorization: Bearer`, and `access_token` on WebSocket URLs. */
  token?: string;
  /** Retry `not_leader` answers (no leader elected yet) within the call's deadline (default true). */
  followLeader?: boolean;
}

type Obj = Record<string, unknown>;
const enc = encodeURIComponent;

export function toBase64(b: Uint8Array): string {
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

export function fromBase64(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** A native wire record (bytes) as the gateway's JSON record (base64). */
function recordIn(r: Obj): Obj {
  const b64 = (v: unknown) => (v == null ? undefined : toBase64(v as Uint8Array));
  const headers: Record<string, string> = {};
  for (const [name, v] of (r.headers as [string, Uint8Array][] | undefined) ?? []) {
    if (name in headers) throw new NotSupported(`header ${name} appears twice: HTTP headers are a JSON object, use the native protocol`);
    headers[name] = toBase64(v);
  }
  const out: Obj = { key: b64(r.key), value: b64(r.value), headers, encoding: "base64" };
  if (r.partition != null) out.partition = r.partition;
  if (r.timestamp_ms != null) out.timestamp_ms = r.timestamp_ms;
  return out;
}

/** The gateway's JSON record as a native wire record. */
export function recordOut(r: Obj): Obj {
  const dec = (v: unknown): Uint8Array | null =>
    v == null ? null : r.encoding === "base64" ? fromBase64(String(v)) : new TextEncoder().encode(String(v));
  return {
    partition: r.partition,
    offset: r.offset,
    timestamp_ms: r.timestamp_ms,
    key: dec(r.key),
    value: dec(r.value),
    headers: Object.entries((r.headers as Record<string, string>) ?? {}).map(([k, v]) => [k, dec(v)]),
  };
}

export class HttpTransport implements Transport {
  readonly kind = "http" as const;
  readonly base: string;
  constructor(base: string, readonly opts: HttpOptions) {
    this.base = base.replace(/\/+$/, "");
  }

  async connect(): Promise<Welcome | null> {
    await this.request("GET", "/v1/topics", undefined, this.opts.timeoutMs);
    return null;
  }

  async close(): Promise<void> {}

  async send(route: string, body: unknown): Promise<void> {
    await this.call(route, body, {});
  }

  /**
   * The native route's operation over REST. The gateway forwards to the node
   * that can run a request, so `not_leader` reaches a client only while a
   * group has no leader; the gateway names only native addresses, so the call
   * is retried here, after a back-off, within its deadline (it did not run).
   */
  async call(route: string, body: unknown, opts: CallOptions): Promise<unknown> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.opts.timeoutMs);
    let backoff: Backoff | null = null;
    for (;;) {
      try {
        return await this.callOnce(route, body, Math.max(1, deadline - Date.now()));
      } catch (e) {
        if (!(e instanceof NotLeaderError) || this.opts.followLeader === false) throw e;
        backoff ??= new Backoff(50, 1000);
        const delay = backoff.nextDelayMs();
        if (Date.now() + delay >= deadline) throw e;
        this.retries++;
        await sleep(delay);
      }
    }
  }

  /** Calls retried after a `not_leader`. */
  retries = 0;

  private async callOnce(route: string, body: unknown, t: number): Promise<unknown> {
    const b = (body ?? {}) as Obj;
    const topic = () => `/v1/topics/${enc(String(b.topic ?? b.name))}`;
    const group = () => `/v1/groups/${enc(String(b.group))}`;
    switch (route) {
      case "log.topic.create":
        return this.request("POST", "/v1/topics", { name: b.name, config: b.config ?? undefined }, t);
      case "log.topic.list":
        return this.request("GET", "/v1/topics", undefined, t);
      case "log.topic.describe":
        return this.request("GET", topic(), undefined, t);
      case "log.topic.delete":
        return this.request("DELETE", topic(), undefined, t);
      case "log.topic.alter": {
        const { name: _n, ...changes } = b;
        return this.request("PATCH", topic(), changes, t);
      }
      case "log.produce":
        try {
          return await this.request("POST", `${topic()}/records`, { records: (b.records as Obj[]).map(recordIn) }, t);
        } catch (e) {
          // every record failed one by one: the gateway answers the first error with all
          // per-record results in details.results (docs/log.md); natively that is a
          // normal answer, so give the same results here
          const results = (e as ServerError).details && ((e as ServerError).details as Obj).results;
          if (e instanceof ServerError && Array.isArray(results)) return { results };
          throw e;
        }
      case "log.fetch": {
        const q = new URLSearchParams({ offset: String(b.offset), encoding: "base64" });
        for (const k of ["max_records", "max_bytes", "wait_ms", "reset"]) if (b[k] != null) q.set(k, String(b[k]));
        const wait = Number(b.wait_ms ?? 0);
        const r = (await this.request("GET", `${topic()}/partitions/${b.partition}/records?${q}`, undefined, t + wait)) as Obj;
        return { ...r, records: (r.records as Obj[]).map(recordOut) };
      }
      case "log.offsets": {
        const s = b.spec as string | { timestamp: number };
        const q = typeof s === "string" ? `spec=${enc(s)}` : `spec=timestamp&timestamp=${s.timestamp}`;
        return this.request("GET", `${topic()}/partitions/${b.partition}/offsets?${q}`, undefined, t);
      }
      case "log.group.join":
      case "log.group.heartbeat":
      case "log.group.leave":
      case "log.group.commit": {
        const { group: _g, ...rest } = b;
        return this.request("POST", `${group()}/${route.slice("log.group.".length)}`, rest, t);
      }
      case "log.group.committed":
        return this.request("GET", `${group()}/committed?topic=${enc(String(b.topic))}&partition=${b.partition}${b.reset ? `&reset=${enc(String(b.reset))}` : ""}`, undefined, t);
      case "log.group.list":
        return this.request("GET", "/v1/groups", undefined, t);
      case "log.group.describe":
        return this.request("GET", group(), undefined, t);
      case "log.group.delete":
        return this.request("DELETE", group(), undefined, t);
      case "query.execute":
      case "query.batch":
        // one HTTP route for both; Client.batch() only ever sends a BATCH
        return this.request("POST", "/v1/query", b, t);
      default:
        throw new NotSupported(`${route} is not served by the HTTP gateway (only the log's routes are); use a native address`);
    }
  }

  async request(method: string, path: string, body: unknown, timeoutMs: number): Promise<unknown> {
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), timeoutMs);
    let res: Response;
    const tp = this.opts.traceContext?.();
    try {
      res = await fetch(this.base + path, {
        method,
        headers: {
          ...(body === undefined ? {} : { "content-type": "application/json" }),
          ...(tp ? { traceparent: tp } : {}),
          ...(this.opts.token ? { authorization: `Bearer ${this.opts.token}` } : {}),
          ...this.opts.headers,
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl.signal,
      });
    } catch (e) {
      if (ctl.signal.aborted) throw new TimeoutError(`no answer to ${method} ${path} in time`);
      throw new ConnectionError(`cannot reach ${this.base}: ${(e as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
    const text = await res.text();
    let v: unknown = null;
    try {
      v = text ? JSON.parse(text) : null;
    } catch {
      v = { code: res.ok ? "internal" : "unknown", message: text };
      if (res.ok) throw fromDto(v, path);
    }
    if (!res.ok) throw fromDto(v, `${method} ${path}`);
    return v;
  }

  /** The WebSocket URL of a stream (docs/log.md). */
  streamUrl(topic: string, partition: number | undefined, offset: string): string {
    const ws = this.base.replace(/^http/, "ws");
    const p = partition === undefined ? "" : `/partitions/${partition}`;
    // browsers cannot set headers on a WebSocket: the gateway takes RFC 6750's access_token parameter
    const tok = this.opts.token ? `&access_token=${enc(this.opts.token)}` : "";
    return `${ws}/v1/topics/${enc(topic)}${p}/stream?offset=${enc(offset)}&encoding=base64${tok}`;
  }
}
