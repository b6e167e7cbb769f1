// The query API (docs/query.md, docs/aql.md): AQL text over the native
// `query.execute` / `query.batch` routes or the gateway's `POST /v1/query`,
// with literals quoted here so values never change a statement's shape.

/** A value SET stores: a string is stored as its UTF-8 text, bytes as they are, anything else as its JSON text. */
export type TableValue = string | Uint8Array | number | boolean | null | object;
/** A key: its UTF-8 text, or bytes. */
export type TableKey = string | Uint8Array;

/** One stored version of a key. `key`/`value` are strings when UTF-8, else bytes (as the server renders them). */
export interface KeyValue {
  key: string | Uint8Array;
  value: string | Uint8Array;
  createRevision: number;
  modRevision: number;
  /** Puts since the key was created (0 in a delete's history entry). */
  version: number;
  /** A delete, in HISTORY answers. */
  deleted?: boolean;
}

export interface QueryRecord {
  partition: number;
  offset: number;
  timestampMs: number;
  key?: string | Uint8Array;
  value: string | Uint8Array;
}

/** The answer to a query (docs/query.md, "the JSON form of a result"). */
export interface QueryResult {
  /** The statement: get, set, delete, range, filter, update, batch, history, create_table, drop_table, show_tables, topic_read. */
  kind: string;
  /** The table's revision the answer was served at (a write: its new revision). */
  revision: number;
  count: number;
  kvs: KeyValue[];
  /** A limit cut the answer. */
  more: boolean;
  /** BATCH: whether the compares held (THEN ran) or not (ELSE ran). */
  succeeded?: boolean;
  /** BATCH: one result per operation that ran. */
  ops?: QueryResult[];
  tables?: string[];
  records?: QueryRecord[];
  nextOffset?: number;
}

export interface QueryOptions {
  timeoutMs?: number;
  /** Cluster mode: GET and RANGE read the answering node's replica as applied now (possibly behind) instead of linearizably. */
  serializable?: boolean;
}

/** Parameters for `$name` / `$1` placeholders: each becomes a quoted literal. */
export type QueryParams = Record<string, TableValue> | TableValue[];

type Obj = Record<string, unknown>;

const hex = (b: Uint8Array): string => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
function unhex(s: string): Uint8Array {
  const out = new Uint8Array(s.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function quote(s: string, q: "'" | '"'): string {
  return q + s.replace(/\\/g, "\\\\").replace(q === "'" ? /'/g : /"/g, `\\${q}`) + q;
}

/** A table or topic name, always double-quoted (keywords and dots are then fine). */
export function aqlName(name: string): string {
  if (typeof name !== "string" || name === "") throw new RangeError("a table or topic name must be a non-empty string");
  return quote(name, '"');
}

/** A key literal: `'text'` or `x'hex'`. */
export function aqlKey(key: TableKey): string {
  if (key instanceof Uint8Array) return `x'${hex(key)}'`;
  if (typeof key !== "string") throw new RangeError(`a key is a string or a Uint8Array, not ${typeof key}`);
  return quote(key, "'");
}

/** A value literal: `'text'`, `x'hex'`, or a JSON literal for numbers, booleans, null, arrays and objects. */
export function aqlValue(v: TableValue): string {
  if (typeof v === "string" || v instanceof Uint8Array) return aqlKey(v);
  if (typeof v === "bigint") return String(v);
  if (typeof v === "number" && !Number.isFinite(v)) throw new RangeError(`${v} is not a JSON number`);
  const j = JSON.stringify(v);
  if (j === undefined) throw new RangeError(`${typeof v} has no JSON form`);
  return j;
}

/**
 * Replaces `$name` (object params) or `$1`, `$2`, ... (array params) outside
 * quotes and comments by quoted literals. An unknown placeholder is a RangeError.
 */
export function bindParams(aql: string, params?: QueryParams): string {
  if (params == null) return aql;
  let out = "";
  let i = 0;
  while (i < aql.length) {
    const c = aql[i]!;
    if (c === "'" || c === '"') {
      let j = i + 1;
      while (j < aql.length && aql[j] !== c) j += aql[j] === "\\" ? 2 : 1;
      out += aql.slice(i, j + 1);
      i = j + 1;
    } else if (c === "-" && aql[i + 1] === "-") {
      const j = aql.indexOf("\n", i);
      const end = j < 0 ? aql.length : j;
      out += aql.slice(i, end);
      i = end;
    } else if (c === "$") {
      const m = /^\$([A-Za-z_][A-Za-z0-9_]*|\d+)/.exec(aql.slice(i));
      if (!m) throw new RangeError(`a "$" at ${i} names no parameter`);
      const name = m[1]!;
      let v: TableValue | undefined;
      if (Array.isArray(params)) {
        const n = Number(name);
        if (!/^\d+$/.test(name) || n < 1 || n > params.length) throw new RangeError(`no parameter $${name} (${params.length} given, numbered from $1)`);
        v = params[n - 1];
      } else {
        if (!Object.prototype.hasOwnProperty.call(params, name)) throw new RangeError(`no parameter $${name}`);
        v = (params as Record<string, TableValue>)[name];
      }
      out += aqlValue(v as TableValue);
      i += m[0].length;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

function field(m: Obj, name: string): string | Uint8Array | undefined {
  if (m[name] != null) return String(m[name]);
  if (m[`${name}_hex`] != null) return unhex(String(m[`${name}_hex`]));
  return undefined;
}

function toKv(x: Obj): KeyValue {
  const kv: KeyValue = {
    key: field(x, "key") ?? "",
    value: field(x, "value") ?? "",
    createRevision: Number(x.create_revision ?? 0),
    modRevision: Number(x.mod_revision ?? 0),
    version: Number(x.version ?? 0),
  };
  if (x.deleted) kv.deleted = true;
  return kv;
}

/** The server's JSON result as a QueryResult. */
export function toResult(v: unknown): QueryResult {
  const r = (v ?? {}) as Obj;
  const out: QueryResult = {
    kind: String(r.kind ?? ""),
    revision: Number(r.revision ?? 0),
    count: Number(r.count ?? 0),
    kvs: ((r.kvs as Obj[]) ?? []).map(toKv),
    more: Boolean(r.more),
  };
  if (r.succeeded != null) out.succeeded = Boolean(r.succeeded);
  if (Array.isArray(r.ops)) out.ops = r.ops.map(toResult);
  if (Array.isArray(r.tables)) out.tables = r.tables.map(String);
  if (Array.isArray(r.records)) {
    out.records = (r.records as Obj[]).map((x) => {
      const rec: QueryRecord = { partition: Number(x.partition), offset: Number(x.offset), timestampMs: Number(x.timestamp_ms ?? 0), value: field(x, "value") ?? "" };
      const k = field(x, "key");
      if (k !== undefined) rec.key = k;
      return rec;
    });
  }
  if (r.next_offset != null) out.nextOffset = Number(r.next_offset);
  return out;
}

/** A compare of a conditional BATCH (etcd's Txn compare). */
export interface BatchCompare {
  target: "version" | "create_revision" | "mod_revision" | "value";
  key: TableKey;
  op?: "=" | "!=" | "<" | ">";
  /** An integer for version and revisions, a value for `value`. */
  value: TableValue;
}

/** One operation of a BATCH. */
export type BatchOp =
  | { get: TableKey }
  | { set: TableKey; value: TableValue }
  | { delete: TableKey }
  | { range: { prefix: TableKey } | { from: TableKey; to?: TableKey }; limit?: number };

/** A BATCH on one table: `then` runs when every compare holds (always without `if`), else `else`. */
export interface BatchSpec {
  table: string;
  if?: BatchCompare[];
  then: BatchOp[];
  else?: BatchOp[];
}

function int(n: unknown, what: string): string {
  if (typeof n === "bigint" && n >= 0n) return String(n);
  if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) throw new RangeError(`${what} must be a non-negative integer, not ${String(n)}`);
  return String(n);
}

function opText(t: string, o: BatchOp): string {
  if ("get" in o) return `GET ${t} ${aqlKey(o.get)}`;
  if ("set" in o) return `SET ${t} ${aqlKey(o.set)} = ${aqlValue(o.value)}`;
  if ("delete" in o) return `DELETE ${t} ${aqlKey(o.delete)}`;
  if ("range" in o) return `RANGE ${t} ${rangeText(o.range)}${o.limit != null ? ` LIMIT ${int(o.limit, "limit")}` : ""}`;
  throw new RangeError(`unknown batch operation ${JSON.stringify(o)}`);
}

export function rangeText(r: { prefix: TableKey } | { from: TableKey; to?: TableKey }): string {
  if ("prefix" in r) return `PREFIX ${aqlKey(r.prefix)}`;
  return `FROM ${aqlKey(r.from)}${r.to != null ? ` TO ${aqlKey(r.to)}` : ""}`;
}

/** The AQL text of a BATCH. */
export function batchText(b: BatchSpec): string {
  const t = aqlName(b.table);
  const ops = (xs: BatchOp[]) => xs.map((o) => opText(t, o)).join("; ");
  if (!b.if || b.if.length === 0) {
    if (b.else && b.else.length) throw new RangeError("a BATCH without compares has no ELSE branch");
    return `BATCH { ${ops(b.then)} }`;
  }
  const cmps = b.if.map((c) => {
    const target = c.target.toUpperCase();
    if (!["VERSION", "CREATE_REVISION", "MOD_REVISION", "VALUE"].includes(target)) throw new RangeError(`unknown compare target ${c.target}`);
    const op = c.op ?? "=";
    if (!["=", "!=", "<", ">"].includes(op)) throw new RangeError(`unknown compare operator ${op}`);
    const operand = target === "VALUE" ? aqlValue(c.value) : int(c.value, `${c.target} compare`);
    return `${target}(${t}, ${aqlKey(c.key)}) ${op} ${operand}`;
  });
  return `BATCH { IF ${cmps.join(" AND ")} THEN { ${ops(b.then)} }${b.else ? ` ELSE { ${ops(b.else)} }` : ""} }`;
}

export { int as aqlInt };
