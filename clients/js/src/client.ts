// One API over two transports: native (Node: tcp://, unix://, tls://) and the
// HTTP gateway (http://, https://: browsers, REST + WebSocket).
import { ConflictError, NotFoundError, NotSupported, ServerError, fromDto } from "./errors.js";
import { HttpTransport, recordOut } from "./http.js";
import { NativeTransport, TlsOptions } from "./native.js";
import { CallOptions, Transport, Welcome, sleep } from "./transport.js";
import { BatchSpec, KeyValue, QueryOptions, QueryParams, QueryResult, TableKey, TableValue, aqlInt, aqlKey, aqlName, aqlValue, batchText, bindParams, rangeText, toResult } from "./query.js";
import { LeaderStats } from "./native.js";

export type Bytes = Uint8Array | string;

export interface ClientOptions {
  /** Default call timeout in ms (10 000). */
  timeoutMs?: number;
  /** Connect (and reconnect) bound in ms (5 000). */
  connectTimeoutMs?: number;
  /** For tls:// addresses. */
  tls?: TlsOptions;
  /** Shown to the server in the hello. */
  clientName?: string;
  /** Send JSON bodies instead of msgpack (native transport). */
  json?: boolean;
  /** Extra HTTP headers (HTTP transport). */
  headers?: Record<string, string>;
  /**
   * The caller's W3C `traceparent` for each request (e.g. from
   * `@opentelemetry/api`'s propagation): the native transport sends it in the
   * frame's trace-context extension when the server supports it, the HTTP
   * transport as the `traceparent` header.
   */
  traceContext?: () => string | undefined;
  /**
   * Bearer token (`wt.…`) or API key (`wk.…`) for a node with auth on
   * (docs/security.md): sent in the native hello, as `Authorization: Bearer`
   * over HTTP and as `access_token` on WebSocket URLs. Default: the
   * `WEFT_TOKEN` environment variable (Node); `""` sends none.
   */
  token?: string;
  /**
   * Cluster mode: follow `not_leader` answers (default true). Natively the call
   * goes again to the leader the answer names (at most `maxLeaderHops` times,
   * within the call's deadline, over one pooled connection per node) and the
   * leader is cached per raft group; with no leader named it is retried after
   * a back-off. Over HTTP the gateway forwards, so only the back-off retry applies.
   */
  followLeader?: boolean;
  /** Most redirects one call follows (default 3). */
  maxLeaderHops?: number;
}

export interface ProducerRecord {
  value?: Bytes | null;
  key?: Bytes | null;
  headers?: [string, Bytes][];
  partition?: number;
  timestampMs?: number;
}

export interface ProduceResult {
  partition?: number;
  offset?: number;
  timestampMs?: number;
  /** Set when this record was refused (the others may have been written). */
  error?: ServerError;
}

export interface LogRecord {
  topic: string;
  partition: number;
  offset: number;
  timestampMs: number;
  key: Uint8Array | null;
  value: Uint8Array | null;
  headers: [string, Uint8Array][];
}

export interface FetchResult {
  topic: string;
  partition: number;
  highWatermark: number;
  logStartOffset: number;
  nextOffset: number;
  records: LogRecord[];
  /** Set when `reset` moved a fetch whose offset was outside the log: the offset asked for. */
  resetFrom?: number;
}

export interface Membership {
  group: string;
  memberId: string;
  generation: number;
  assignment: [string, number][];
  members: number;
  /** Partitions of this member's share still held by their previous owner (they arrive in a later heartbeat). */
  pending: number;
}

export interface TopicPartitionOffset {
  topic: string;
  partition: number;
  offset: number;
  metadata?: string;
}

export type QueueKind = "queue" | "sender";

const te = new TextEncoder();
const toBytes = (v: Bytes | null | undefined): Uint8Array | null => (v == null ? null : typeof v === "string" ? te.encode(v) : v);
// bytes arrive as bin (msgpack), a string, or an array of byte values (JSON answers, docs/log.md)
const asBytes = (v: unknown): Uint8Array | null =>
  v == null ? null : typeof v === "string" ? te.encode(v) : Array.isArray(v) ? Uint8Array.from(v as number[]) : (v as Uint8Array);

const processEnv = (): Record<string, string | undefined> | undefined =>
  (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;

function makeClientId(): string {
  return processEnv()?.HOSTNAME || globalThis.crypto.randomUUID();
}

type Obj = Record<string, unknown>;

function toRecord(topic: string, partition: number, r: Obj): LogRecord {
  return {
    topic,
    partition,
    offset: Number(r.offset),
    timestampMs: Number(r.timestamp_ms ?? 0),
    key: asBytes(r.key),
    value: asBytes(r.value),
    headers: ((r.headers as [string, unknown][]) ?? []).map(([k, v]) => [k, asBytes(v) ?? new Uint8Array(0)]),
  };
}

function toMembership(v: unknown): Membership {
  const m = v as Obj;
  return {
    group: String(m.group),
    memberId: String(m.member_id),
    generation: Number(m.generation),
    assignment: ((m.assignment as [string, number][]) ?? []).map(([t, p]) => [t, Number(p)]),
    members: Number(m.members ?? 0),
    pending: Number(m.pending ?? 0),
  };
}

/**
 * A Weft client. `new Client("tcp://127.0.0.1:7400")` (Node: tcp://, unix://,
 * tls://) or `new Client("http://127.0.0.1:7480")` (the HTTP gateway: the log's
 * calls and queries). `token` for a node with auth on; `not_leader` answers
 * are followed to the leader (cluster mode).
 */
export class Client {
  readonly transport: Transport;
  readonly clientId = makeClientId();

  constructor(readonly addr = "tcp://127.0.0.1:7400", opts: ClientOptions = {}) {
    const timeoutMs = opts.timeoutMs ?? 10_000;
    const token = (opts.token ?? processEnv()?.WEFT_TOKEN ?? "").trim() || undefined;
    if (/^https?:\/\//i.test(addr)) {
      this.transport = new HttpTransport(addr, { timeoutMs, headers: opts.headers, traceContext: opts.traceContext, token, followLeader: opts.followLeader });
    } else {
      this.transport = new NativeTransport(addr, {
        timeoutMs,
        connectTimeoutMs: opts.connectTimeoutMs ?? 5_000,
        tls: opts.tls,
        clientName: opts.clientName ?? "weft-js",
        clientId: this.clientId,
        json: opts.json ?? false,
        traceContext: opts.traceContext,
        token,
        followLeader: opts.followLeader ?? true,
        maxLeaderHops: opts.maxLeaderHops ?? 3,
      });
    }
  }

  /** Connect now (else the first call does); the server's welcome (null over HTTP). */
  connect(): Promise<Welcome | null> {
    return this.transport.connect();
  }

  close(): Promise<void> {
    return this.transport.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Cluster mode: redirects followed and the leader cache (native transport; zeros over HTTP). */
  leaderStats(): LeaderStats {
    const t = this.transport;
    if (t instanceof NativeTransport) return t.leaderStats();
    return { redirects: 0, retries: (t as HttpTransport).retries ?? 0, cacheHits: 0, leaders: {} };
  }

  /**
   * Cluster mode, native transport: learn every partition's leader from the
   * node's `cluster.status` (admin on `cluster` when auth is on), so calls on
   * a partition go straight to its leader. Returns how many leaders are known.
   */
  refreshLeaders(): Promise<number> {
    const t = this.transport;
    if (!(t instanceof NativeTransport)) return Promise.reject(new NotSupported("refreshLeaders() needs a native address (the gateway forwards)"));
    return t.refreshLeaders();
  }

  /** Call any endpoint; resolves to the decoded answer, rejects with the typed error. */
  call<T = unknown>(route: string, body?: unknown, opts: CallOptions = {}): Promise<T> {
    return this.transport.call(route, body, opts) as Promise<T>;
  }

  /** A one-way request: no answer, no error report. */
  send(route: string, body?: unknown): Promise<void> {
    return this.transport.send(route, body);
  }

  // ---- standard endpoints ----
  ping(): Promise<{ pong: boolean; server_time_ms: number }> { return this.call("weft.ping"); }
  echo<T>(value: T): Promise<T> { return this.call("weft.echo", value); }
  info(): Promise<{ name: string; version: string; id: string; uptime_s: number; transports: string[]; endpoints: string[] }> { return this.call("weft.info"); }
  stats(): Promise<Record<string, number>> { return this.call("weft.stats"); }
  liveness(): Promise<Obj[]> { return this.call("weft.liveness"); }

  // ---- the log ----
  /** `config`: partitions, retention_ms, retention_bytes, max_record_bytes, segment_bytes, segment_ms, cleanup, delete_retention_ms. */
  createTopic(name: string, config?: Obj): Promise<Obj> { return this.call("log.topic.create", { name, config: config ?? null }); }
  topics(): Promise<string[]> { return this.call("log.topic.list"); }
  describeTopic(name: string): Promise<Obj> { return this.call("log.topic.describe", { name }); }
  async deleteTopic(name: string): Promise<boolean> { return Boolean((await this.call<Obj>("log.topic.delete", { name })).ok); }
  /** Absent fields stay unchanged; a negative retention means no limit. */
  alterTopic(name: string, changes: Obj): Promise<Obj> { return this.call("log.topic.alter", { ...changes, name }); }

  /** Append records; one result per record, in order. */
  async produce(topic: string, records: (ProducerRecord | Bytes)[]): Promise<ProduceResult[]> {
    // Absent fields are left out (the server's defaults: no key, no headers).
    const wire = records.map((r) => {
      if (r instanceof Uint8Array) return { value: r };
      const x: ProducerRecord = typeof r === "string" ? { value: r } : r;
      const o: Obj = { value: toBytes(x.value) };
      if (x.key != null) o.key = toBytes(x.key);
      if (x.headers?.length) o.headers = x.headers.map(([n, v]) => [n, toBytes(v)]);
      if (x.partition != null) o.partition = x.partition;
      if (x.timestampMs != null) o.timestamp_ms = x.timestampMs;
      return o;
    });
    const r = await this.call<{ results: Obj[] }>("log.produce", { topic, records: wire });
    return r.results.map((x) => {
      const out: ProduceResult = {};
      if (x.partition != null) out.partition = Number(x.partition);
      if (x.offset != null) out.offset = Number(x.offset);
      if (x.timestamp_ms != null) out.timestampMs = Number(x.timestamp_ms);
      if (x.error) out.error = fromDto(x.error, "log.produce");
      return out;
    });
  }

  /**
   * `reset` ("earliest" | "latest" | "none"): where to read when `offset` is outside the log, instead of
   * OutOfRangeError. `member`: fetch as that group member (`log.group.fetch`, native transport), fenced like
   * a commit: a member expired or rebalanced away gets NotFoundError / ConflictError instead of records.
   */
  async fetch(topic: string, partition: number, offset: number, opts: { maxBytes?: number; maxRecords?: number; waitMs?: number; reset?: "earliest" | "latest" | "none"; member?: Membership; timeoutMs?: number } = {}): Promise<FetchResult> {
    const body: Obj = { topic, partition, offset };
    if (opts.reset != null) body.reset = opts.reset;
    if (opts.maxBytes != null) body.max_bytes = opts.maxBytes;
    if (opts.maxRecords != null) body.max_records = opts.maxRecords;
    if (opts.waitMs != null) body.wait_ms = opts.waitMs;
    const timeoutMs = opts.timeoutMs ?? (opts.waitMs != null ? 10_000 + opts.waitMs : undefined);
    const callOpts = timeoutMs != null ? { timeoutMs } : {};
    const m = opts.member;
    const r = m
      ? await this.call<Obj>("log.group.fetch", { group: m.group, member_id: m.memberId, generation: m.generation, fetch: body }, callOpts)
      : await this.call<Obj>("log.fetch", body, callOpts);
    const out: FetchResult = {
      topic: String(r.topic),
      partition: Number(r.partition),
      highWatermark: Number(r.high_watermark),
      logStartOffset: Number(r.log_start_offset),
      nextOffset: Number(r.next_offset),
      records: ((r.records as Obj[]) ?? []).map((x) => toRecord(topic, partition, x)),
    };
    if (r.reset_from != null) out.resetFrom = Number(r.reset_from);
    return out;
  }

  /** `spec`: "earliest", "latest", or a timestamp in ms. */
  async offsets(topic: string, partition: number, spec: "earliest" | "latest" | number = "latest"): Promise<number> {
    const s = typeof spec === "number" ? { timestamp: spec } : spec;
    return Number((await this.call<Obj>("log.offsets", { topic, partition, spec: s })).offset);
  }

  async joinGroup(group: string, topics: string[], opts: { memberId?: string; strategy?: "range" | "roundrobin"; sessionTimeoutMs?: number } = {}): Promise<Membership> {
    const body: Obj = { group, client_id: this.clientId, topics, member_id: opts.memberId ?? null };
    if (opts.strategy) body.strategy = opts.strategy;
    if (opts.sessionTimeoutMs != null) body.session_timeout_ms = opts.sessionTimeoutMs;
    return toMembership(await this.call("log.group.join", body));
  }
  /**
   * Keep a member alive. `generation`: the one this member has adopted (it stopped
   * reading and committed what it lost), which hands those partitions to their new
   * owners; absent counts as adopted.
   */
  async heartbeat(group: string, memberId: string, generation?: number): Promise<Membership> {
    const body: Obj = { group, member_id: memberId };
    if (generation != null) body.generation = generation;
    return toMembership(await this.call("log.group.heartbeat", body));
  }
  async leaveGroup(group: string, memberId: string): Promise<boolean> { return Boolean((await this.call<Obj>("log.group.leave", { group, member_id: memberId })).ok); }
  /** Commit next-offsets-to-read; members pass their id and generation (stale: ConflictError). */
  async commit(group: string, offsets: TopicPartitionOffset[], opts: { memberId?: string; generation?: number } = {}): Promise<boolean> {
    const body = { group, member_id: opts.memberId ?? null, generation: opts.generation ?? null, offsets: offsets.map((o) => ({ metadata: "", ...o })) };
    return Boolean((await this.call<Obj>("log.group.commit", body)).ok);
  }
  async committed(group: string, topic: string, partition: number): Promise<number | null> {
    const r = await this.call<Obj>("log.group.committed", { group, topic, partition });
    return r.offset == null ? null : Number(r.offset);
  }
  /**
   * Where a member of `group` starts on a partition: the committed offset when inside the log, else the
   * reset policy's (`none` without a usable commit: OutOfRangeError). Resolves to `{ start, committed }`.
   */
  async startOffset(group: string, topic: string, partition: number, reset: "earliest" | "latest" | "none" = "earliest"): Promise<{ start: number; committed: number | null }> {
    const r = await this.call<Obj>("log.group.committed", { group, topic, partition, reset });
    return { start: Number(r.start), committed: r.offset == null ? null : Number(r.offset) };
  }
  groups(): Promise<Obj[]> { return this.call("log.group.list"); }
  describeGroup(group: string): Promise<Obj> { return this.call("log.group.describe", { group }); }
  /** Delete a group and its committed offsets (ConflictError while it has live members, NotFoundError when there is nothing). */
  async deleteGroup(group: string): Promise<boolean> { return Boolean((await this.call<Obj>("log.group.delete", { group })).ok); }

  /** A consumer group member: `for await (const r of client.consumer(...))`. */
  consumer(group: string, topics: string[], opts: ConsumerOptions = {}): Consumer {
    return new Consumer(this, group, topics, opts);
  }

  /**
   * Follow one partition (or, over HTTP without `partition`, every partition)
   * from `offset` ("earliest", "latest" or a number): a WebSocket stream over
   * HTTP, long-poll fetches over the native protocol. Stops when `signal` aborts.
   */
  async *stream(topic: string, opts: { partition?: number; offset?: "earliest" | "latest" | number; signal?: AbortSignal } = {}): AsyncGenerator<LogRecord> {
    const from = opts.offset ?? "latest";
    if (this.transport instanceof HttpTransport) {
      const http = this.transport;
      // a refused upgrade tells a WebSocket nothing: ask the topic's REST route why (401, 403, 404)
      const why = async (): Promise<Error | null> => http.request("GET", `/v1/topics/${encodeURIComponent(topic)}`, undefined, http.opts.timeoutMs).then(() => null, (e: Error) => e);
      yield* wsStream(http.streamUrl(topic, opts.partition, String(from)), topic, opts.signal, why);
      return;
    }
    if (opts.partition === undefined) throw new NotSupported("a native stream follows one partition: pass partition");
    let offset = typeof from === "number" ? from : await this.offsets(topic, opts.partition, from);
    while (!opts.signal?.aborted) {
      const r = await this.fetch(topic, opts.partition, offset, { waitMs: 500 });
      for (const rec of r.records) {
        if (opts.signal?.aborted) return;
        yield rec;
      }
      offset = r.nextOffset;
    }
  }

  // ---- the query API (docs/query.md, docs/aql.md) ----
  /**
   * Run one AQL statement (`query.execute`; HTTP `POST /v1/query`). `params`
   * fill `$name` (an object) or `$1`, `$2`, ... (an array) placeholders with
   * quoted literals. Errors are typed: ValidationError (syntax: `details.offset`,
   * `line`, `column`), NotFoundError, ConflictError (a compare failed:
   * `kind === "compare_failed"`; a table exists), OutOfRangeError, BusyError
   * (a `query.*` limit), ServerTimeoutError, UnavailableError, ForbiddenError.
   */
  async query(aql: string, params?: QueryParams, opts: QueryOptions = {}): Promise<QueryResult> {
    return toResult(await this.call("query.execute", queryBody(bindParams(aql, params), opts), callOpts(opts)));
  }

  /**
   * One atomic BATCH on one table (`query.batch`): AQL text (with `params`) or a
   * BatchSpec. With compares and no `else`, a failed compare is ConflictError;
   * with `else`, the answer says `succeeded: false` and carries the ELSE results.
   */
  async batch(spec: string | BatchSpec, params?: QueryParams, opts: QueryOptions = {}): Promise<QueryResult> {
    const aql = typeof spec === "string" ? bindParams(spec, params) : batchText(spec);
    // over HTTP both routes are POST /v1/query: refuse here what query.batch refuses natively
    if (!/^\s*BATCH\b/i.test(aql.replace(/^(\s*--[^\n]*\n)*/, ""))) throw new RangeError("batch() takes a BATCH statement");
    return toResult(await this.call("query.batch", queryBody(aql, opts), callOpts(opts)));
  }

  /** `CREATE TABLE`; its handle. */
  async createTable(name: string, opts: QueryOptions = {}): Promise<Table> {
    await this.query(`CREATE TABLE ${aqlName(name)}`, undefined, opts);
    return this.table(name);
  }
  async dropTable(name: string, opts: QueryOptions = {}): Promise<void> {
    await this.query(`DROP TABLE ${aqlName(name)}`, undefined, opts);
  }
  /** `SHOW TABLES`. */
  async tables(opts: QueryOptions = {}): Promise<string[]> {
    return (await this.query("SHOW TABLES", undefined, opts)).tables ?? [];
  }
  /** A handle on a table (no call is made). */
  table(name: string): Table {
    return new Table(this, name);
  }

  // ---- queued endpoints and senders (docs/queues.md) ----
  queues(kind: QueueKind = "queue"): Promise<Obj[]> { return this.call(`weft.${kindOf(kind)}.ls`); }
  queueShow(name: string, kind: QueueKind = "queue"): Promise<Obj> { return this.call(`weft.${kindOf(kind)}.show`, { name }); }
  queuePause(name: string, what: "accepting" | "processing" | "all" = "all", kind: QueueKind = "queue"): Promise<Obj> { return this.call(`weft.${kindOf(kind)}.pause`, { name, what }); }
  queueResume(name: string, what: "accepting" | "processing" | "all" = "all", kind: QueueKind = "queue"): Promise<Obj> { return this.call(`weft.${kindOf(kind)}.resume`, { name, what }); }
  queueErrors(name: string, n = 10, kind: QueueKind = "queue"): Promise<string[]> { return this.call(`weft.${kindOf(kind)}.errors`, { name, n }); }
  queueInspect(name: string, uid: string, kind: QueueKind = "queue"): Promise<Obj> { return this.call(`weft.${kindOf(kind)}.inspect`, { name, uid }); }
  queuePop(name: string, uid: string, kind: QueueKind = "queue"): Promise<Obj> { return this.call(`weft.${kindOf(kind)}.pop`, { name, uid }); }
  async queueReprocess(name: string, uid?: string, kind: QueueKind = "queue"): Promise<number> { return Number((await this.call<Obj>(`weft.${kindOf(kind)}.reprocess`, { name, uid: uid ?? null })).count); }
  async queueClear(name: string, kind: QueueKind = "queue"): Promise<number> { return Number((await this.call<Obj>(`weft.${kindOf(kind)}.clear`, { name })).count); }
  statsCurrent(): Promise<Obj> { return this.call("weft.stats.current"); }
  statsGathered(): Promise<Obj | null> { return this.call("weft.stats.gathered"); }
  statsFull(): Promise<Obj[]> { return this.call("weft.stats.full"); }
  errors(): Promise<Obj[]> { return this.call("weft.errors.get"); }
  errorsClear(errorId?: string, count = 0): Promise<Obj[]> { return this.call("weft.errors.clear", { error_id: errorId ?? null, count }); }
}

function queryBody(aql: string, opts: QueryOptions): Obj {
  const b: Obj = { aql };
  if (opts.timeoutMs != null) b.timeout_ms = Math.max(1, Math.ceil(opts.timeoutMs));
  if (opts.serializable) b.serializable = true;
  return b;
}

function callOpts(opts: QueryOptions): CallOptions {
  // the server's deadline first: its typed timeout answer arrives before ours gives up
  return opts.timeoutMs != null ? { timeoutMs: opts.timeoutMs + 5_000 } : {};
}

/** A write's outcome. */
export interface WriteResult {
  /** The table's revision after the write (unchanged when nothing changed). */
  revision: number;
  /** The previous version of the key, when there was one (plain put and delete). */
  prev: KeyValue | null;
}

/**
 * A key-value table (docs/query.md): reads at the current or a past revision,
 * writes with compares (compare-and-set), history.
 */
export class Table {
  constructor(readonly client: Client, readonly name: string) {}

  private q(aql: string, opts: QueryOptions = {}): Promise<QueryResult> {
    return this.client.query(aql, undefined, opts);
  }

  /** The key's current value (or at `revision`); null when absent. */
  async get(key: TableKey, opts: QueryOptions & { revision?: number } = {}): Promise<KeyValue | null> {
    const at = opts.revision != null ? ` AT REVISION ${aqlInt(opts.revision, "revision")}` : "";
    return (await this.q(`GET ${aqlName(this.name)} ${aqlKey(key)}${at}`, opts)).kvs[0] ?? null;
  }

  /**
   * Store a value. `ifVersion: n` writes only if the key's version is n (0:
   * absent), `ifAbsent` only if it does not exist; a failed compare is
   * ConflictError with `kind === "compare_failed"`.
   */
  async put(key: TableKey, value: TableValue, opts: QueryOptions & { ifVersion?: number; ifAbsent?: boolean } = {}): Promise<WriteResult> {
    if (opts.ifVersion != null && opts.ifAbsent) throw new RangeError("ifVersion and ifAbsent: one or the other");
    const cond = opts.ifVersion != null ? ` IF VERSION = ${aqlInt(opts.ifVersion, "ifVersion")}` : opts.ifAbsent ? " IF ABSENT" : "";
    const r = await this.q(`SET ${aqlName(this.name)} ${aqlKey(key)} = ${aqlValue(value)}${cond}`, opts);
    return { revision: r.revision, prev: r.kvs[0] ?? null };
  }

  /**
   * Compare-and-set: write `value` only if the key's version is still
   * `expectedVersion` (0: absent). True when written, false when the compare
   * failed (someone else wrote first: re-read and try again).
   */
  async compareAndSet(key: TableKey, expectedVersion: number, value: TableValue, opts: QueryOptions = {}): Promise<boolean> {
    try {
      await this.put(key, value, { ...opts, ifVersion: expectedVersion });
      return true;
    } catch (e) {
      if (e instanceof ConflictError && e.kind === "compare_failed") return false;
      throw e;
    }
  }

  /** Delete a key; `deleted` is 0 when it was absent (`ifExists`/`ifVersion`: ConflictError instead). */
  async delete(key: TableKey, opts: QueryOptions & { ifVersion?: number; ifExists?: boolean } = {}): Promise<WriteResult & { deleted: number }> {
    if (opts.ifVersion != null && opts.ifExists) throw new RangeError("ifVersion and ifExists: one or the other");
    const cond = opts.ifVersion != null ? ` IF VERSION = ${aqlInt(opts.ifVersion, "ifVersion")}` : opts.ifExists ? " IF EXISTS" : "";
    const r = await this.q(`DELETE ${aqlName(this.name)} ${aqlKey(key)}${cond}`, opts);
    return { revision: r.revision, prev: r.kvs[0] ?? null, deleted: r.count };
  }

  /** Keys with a prefix, or in `[from, to)`, in key order; `more` says `limit` cut it. */
  async range(spec: { prefix: TableKey } | { from: TableKey; to?: TableKey }, opts: QueryOptions & { limit?: number; revision?: number } = {}): Promise<QueryResult> {
    const lim = opts.limit != null ? ` LIMIT ${aqlInt(opts.limit, "limit")}` : "";
    const at = opts.revision != null ? ` AT REVISION ${aqlInt(opts.revision, "revision")}` : "";
    return this.q(`RANGE ${aqlName(this.name)} ${rangeText(spec)}${lim}${at}`, opts);
  }

  /** The key's stored versions, newest first (deletes have `deleted: true`). */
  async history(key: TableKey, opts: QueryOptions & { limit?: number } = {}): Promise<KeyValue[]> {
    const lim = opts.limit != null ? ` LIMIT ${aqlInt(opts.limit, "limit")}` : "";
    return (await this.q(`HISTORY ${aqlName(this.name)} ${aqlKey(key)}${lim}`, opts)).kvs;
  }

  /** An atomic BATCH on this table (see Client.batch). */
  batch(spec: Omit<BatchSpec, "table">, opts: QueryOptions = {}): Promise<QueryResult> {
    return this.client.batch({ ...spec, table: this.name }, undefined, opts);
  }
}

function kindOf(k: string): string {
  if (k !== "queue" && k !== "sender") throw new RangeError(`kind must be "queue" or "sender", not ${k}`);
  return k;
}

async function* wsStream(url: string, topic: string, signal?: AbortSignal, why?: () => Promise<Error | null>): AsyncGenerator<LogRecord> {
  const WS = (globalThis as { WebSocket?: typeof WebSocket }).WebSocket;
  if (!WS) throw new NotSupported("no WebSocket in this runtime (Node 20: run with --experimental-websocket; Node 22+ has it)");
  const ws = new WS(url);
  const queue: LogRecord[] = [];
  let done = false;
  let failure: Error | null = null;
  let wake: (() => void) | null = null;
  const poke = () => { const w = wake; wake = null; w?.(); };
  ws.onmessage = (ev: MessageEvent) => {
    const r = recordOut(JSON.parse(String(ev.data)) as Obj);
    queue.push(toRecord(topic, Number(r.partition), r));
    poke();
  };
  const shown = url.replace(/access_token=[^&]*/, "access_token=…");
  let diagnosing: Promise<void> | null = null;
  ws.onerror = () => {
    diagnosing = (async () => {
      failure = (await why?.().catch(() => null)) ?? new NotFoundError(`stream ${shown} failed (unknown topic or partition?)`);
    })();
    diagnosing.then(poke);
  };
  ws.onclose = () => { done = true; poke(); };
  const onAbort = () => ws.close();
  signal?.addEventListener("abort", onAbort);
  try {
    for (;;) {
      while (queue.length) yield queue.shift()!;
      if (diagnosing) await diagnosing;
      if (failure) throw failure;
      if (done || signal?.aborted) return;
      await new Promise<void>((r) => (wake = r));
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
    ws.close();
  }
}

export interface ConsumerOptions {
  /**
   * Where to start without a committed offset, or from a position outside the log (docs/log.md,
   * "the reset policy"): "earliest" (Weft's default), "latest" (Kafka's), or "none" (OutOfRangeError).
   */
  autoOffsetReset?: "earliest" | "latest" | "none";
  /** Commit handed-out offsets every autoCommitIntervalMs, before a rebalance and on close (default true). */
  enableAutoCommit?: boolean;
  autoCommitIntervalMs?: number;
  sessionTimeoutMs?: number;
  maxRecords?: number;
  pollWaitMs?: number;
  /** Stop iterating after this long without a record (default: never). */
  consumerTimeoutMs?: number;
  strategy?: "range" | "roundrobin";
}

/** A consumer group member; semantics as the Python client's (and kafka-python's). */
export class Consumer implements AsyncIterable<LogRecord> {
  membership: Membership | null = null;
  /** Next offset to hand out, per "topic\0partition". */
  readonly positions = new Map<string, number>();
  private committedPos = new Map<string, number>();
  private buffer: LogRecord[] = [];
  private lastBeat = 0;
  private lastCommit = 0;
  private readonly o: Required<Omit<ConsumerOptions, "consumerTimeoutMs" | "strategy">> & Pick<ConsumerOptions, "consumerTimeoutMs" | "strategy">;

  constructor(readonly client: Client, readonly group: string, readonly topics: string[], opts: ConsumerOptions = {}) {
    this.o = {
      autoOffsetReset: opts.autoOffsetReset ?? "earliest",
      enableAutoCommit: opts.enableAutoCommit ?? true,
      autoCommitIntervalMs: opts.autoCommitIntervalMs ?? 5000,
      sessionTimeoutMs: opts.sessionTimeoutMs ?? 10_000,
      maxRecords: opts.maxRecords ?? 500,
      pollWaitMs: opts.pollWaitMs ?? 500,
      consumerTimeoutMs: opts.consumerTimeoutMs,
      strategy: opts.strategy,
    };
  }

  get assignment(): [string, number][] {
    return this.membership ? [...this.membership.assignment] : [];
  }

  async start(): Promise<Membership> {
    if (!this.membership) {
      const opts: { sessionTimeoutMs: number; strategy?: "range" | "roundrobin" } = { sessionTimeoutMs: this.o.sessionTimeoutMs };
      if (this.o.strategy) opts.strategy = this.o.strategy;
      this.membership = await this.client.joinGroup(this.group, this.topics, opts);
      this.lastBeat = this.lastCommit = Date.now();
      try {
        await this.initPositions();
      } catch (e) {
        await this.close(false); // do not hold partitions we cannot read
        throw e;
      }
    }
    return this.membership!;
  }

  private async initPositions(): Promise<void> {
    const assigned = new Set(this.assignment.map(([t, p]) => `${t}\0${p}`));
    for (const k of [...this.positions.keys()]) if (!assigned.has(k)) { this.positions.delete(k); this.committedPos.delete(k); }
    this.buffer = this.buffer.filter((r) => assigned.has(`${r.topic}\0${r.partition}`));
    for (const [t, p] of this.assignment) {
      const k = `${t}\0${p}`;
      if (this.positions.has(k)) continue;
      // one call: the committed offset if inside the log, else the policy's (none: the node's OutOfRangeError)
      const { start, committed } = await this.client.startOffset(this.group, t, p, this.o.autoOffsetReset);
      if (committed != null) this.committedPos.set(k, committed);
      this.positions.set(k, start);
    }
  }

  private async heartbeat(): Promise<void> {
    const cur = this.membership!;
    let m: Membership;
    try {
      m = await this.client.heartbeat(this.group, cur.memberId, cur.generation);
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
      this.membership = null; // session expired: join again
      this.positions.clear();
      this.committedPos.clear();
      this.buffer = [];
      await this.start();
      return;
    }
    if (m.generation !== cur.generation) {
      // Rebalanced (cooperative hand-off, docs/log.md): the partitions we lose stay
      // ours until we adopt the new generation, so commit what we handed out under
      // it, stop reading them, then acknowledge.
      this.membership = m;
      if (this.o.enableAutoCommit) await this.commitQuietly();
      await this.initPositions();
      m = await this.client.heartbeat(this.group, m.memberId, m.generation);
    }
    this.membership = m;
    await this.initPositions();
  }

  private async maintain(): Promise<void> {
    await this.start();
    const now = Date.now();
    // partitions still on their way from a previous owner arrive in a later heartbeat: ask again soon
    const interval = (this.membership?.pending ?? 0) > 0 ? this.o.pollWaitMs : this.o.sessionTimeoutMs / 3;
    if (now - this.lastBeat >= interval) {
      this.lastBeat = now;
      await this.heartbeat();
    }
    if (this.o.enableAutoCommit && now - this.lastCommit >= this.o.autoCommitIntervalMs) await this.commitQuietly();
  }

  private take(): LogRecord {
    const r = this.buffer.shift()!;
    this.positions.set(`${r.topic}\0${r.partition}`, r.offset + 1);
    return r;
  }

  private async fill(): Promise<void> {
    const tps = [...this.positions.entries()];
    if (tps.length === 0) return sleep(this.o.pollWaitMs);
    const got = await Promise.all(tps.map(async ([k, off]) => {
      const [t, ps] = k.split("\0") as [string, string];
      // natively a member fetches fenced (log.group.fetch); the HTTP gateway has no such route
      const member = this.client.transport.kind === "native" ? this.membership ?? undefined : undefined;
      let r: FetchResult;
      try {
        r = await this.client.fetch(t, Number(ps), off, { maxRecords: this.o.maxRecords, waitMs: this.o.pollWaitMs, reset: this.o.autoOffsetReset, member });
      } catch (e) {
        if (!(e instanceof ConflictError || e instanceof NotFoundError)) throw e;
        this.lastBeat = 0; // expired or rebalanced away: heartbeat at once (rejoin or adopt)
        return [];
      }
      if (r.resetFrom != null) this.positions.set(k, r.records[0]?.offset ?? r.nextOffset);
      return r.records;
    }));
    for (const recs of got) this.buffer.push(...recs);
  }

  /** Records from the assigned partitions (may be empty after the wait). */
  async poll(maxRecords?: number): Promise<LogRecord[]> {
    await this.maintain();
    if (this.buffer.length === 0) await this.fill();
    const out: LogRecord[] = [];
    const n = maxRecords ?? this.o.maxRecords;
    while (this.buffer.length && out.length < n) out.push(this.take());
    return out;
  }

  /** Commit the given offsets, or the positions of every record handed out. */
  async commit(offsets?: TopicPartitionOffset[]): Promise<void> {
    await this.start();
    const m = this.membership!;
    const todo = offsets ?? [...this.positions.entries()].filter(([k, o]) => this.committedPos.get(k) !== o).map(([k, offset]) => {
      const [topic, p] = k.split("\0") as [string, string];
      return { topic, partition: Number(p), offset };
    });
    this.lastCommit = Date.now();
    if (todo.length === 0) return;
    await this.client.commit(this.group, todo, { memberId: m.memberId, generation: m.generation });
    for (const o of todo) this.committedPos.set(`${o.topic}\0${o.partition}`, o.offset);
  }

  private async commitQuietly(): Promise<void> {
    try {
      await this.commit();
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      this.lastBeat = 0; // rebalanced under us (illegal_generation, not_assigned): heartbeat at once to hand off
    }
  }

  /** Commit (when auto-commit is on), then leave the group. */
  async close(commit = true): Promise<void> {
    if (!this.membership) return;
    try {
      if (commit && this.o.enableAutoCommit) await this.commitQuietly();
    } finally {
      const m = this.membership;
      this.membership = null;
      try {
        await this.client.leaveGroup(this.group, m.memberId);
      } catch (e) {
        if (!(e instanceof NotFoundError)) throw e;
      }
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<LogRecord> {
    let started = Date.now();
    for (;;) {
      await this.maintain();
      if (this.buffer.length) {
        yield this.take();
        started = Date.now();
        continue;
      }
      await this.fill();
      if (this.buffer.length === 0 && this.o.consumerTimeoutMs != null && Date.now() - started >= this.o.consumerTimeoutMs) return;
    }
  }
}
