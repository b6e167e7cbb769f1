// Weft native frames (docs/protocol.md), sans-IO: bytes in, frames out.
import { Decoder as MpDecoder, Encoder } from "@msgpack/msgpack";

export const VERSION = 1;
export const HEADER_LEN = 26;
export const NIL_ID = new Uint8Array(16);
export const Kind = { Request: 1, Response: 2, Error: 3, Event: 4, Control: 5 } as const;
export const FLAG_JSON = 0x01;
export const FLAG_ONE_WAY = 0x02;
/** The body region starts with a trace-context extension. */
export const FLAG_TRACE = 0x04;
/** Largest frame accepted by default (the server's `limits.max_frame_bytes`). */
export const MAX_FRAME_BYTES = 16 * 1024 * 1024;

export interface Frame {
  kind: number;
  flags: number;
  id: Uint8Array;
  route: string;
  body: Uint8Array;
}

const te = new TextEncoder();
const td = new TextDecoder("utf-8", { fatal: true });

export class FrameError extends Error {
  constructor(message: string, readonly fatal = false) {
    super(message);
    this.name = "FrameError";
  }
}

// Random bytes for message ids, drawn 4 KiB at a time: one getRandomValues
// call per id cost more than the rest of encoding a small request.
const ID_POOL = new Uint8Array(4096);
let idPoolAt = ID_POOL.length;

/** A fresh message id: a UUID v4, 16 raw bytes. */
export function newId(): Uint8Array {
  if (idPoolAt === ID_POOL.length) {
    globalThis.crypto.getRandomValues(ID_POOL);
    idPoolAt = 0;
  }
  const id = ID_POOL.slice(idPoolAt, idPoolAt + 16);
  idPoolAt += 16;
  id[6] = (id[6]! & 0x0f) | 0x40;
  id[8] = (id[8]! & 0x3f) | 0x80;
  return id;
}

/** A Map key for a message id: its 16 bytes as 16 char codes (cheaper than hex). */
export function idKey(id: Uint8Array): string {
  return String.fromCharCode(id[0]!, id[1]!, id[2]!, id[3]!, id[4]!, id[5]!, id[6]!, id[7]!,
    id[8]!, id[9]!, id[10]!, id[11]!, id[12]!, id[13]!, id[14]!, id[15]!);
}

// JSON has no bytes: Weft takes a string as UTF-8 bytes (docs/log.md).
function jsonBytes(_k: string, v: unknown): unknown {
  if (v instanceof Uint8Array) {
    try {
      return td.decode(v);
    } catch {
      throw new TypeError("bytes that are not UTF-8 cannot travel in a JSON body; use msgpack");
    }
  }
  return v;
}

// One encoder for every body (the module function builds an encoder and its
// buffer per call); `encode` returns a copy, and the encoder clones itself if
// re-entered.
const encoder = new Encoder({ ignoreUndefined: true });
// And one decoder (the module function builds one per call; it clones itself if re-entered).
const mpDecoder = new MpDecoder({ useBigInt64: false });

// Route keys are few: their UTF-8 bytes are kept.
const routeBytes = new Map<string, Uint8Array>();
function routeKey(route: string): Uint8Array {
  let r = routeBytes.get(route);
  if (r === undefined) {
    r = te.encode(route);
    if (routeBytes.size < 1024) routeBytes.set(route, r);
  }
  return r;
}

/** Encode a body; `undefined`/`null` is the empty body ("no arguments"). */
export function encodeBody(value: unknown, json = false): Uint8Array {
  if (value === undefined || value === null) return new Uint8Array(0);
  if (json) return te.encode(JSON.stringify(value, jsonBytes));
  return encoder.encode(value);
}

export function decodeBody(body: Uint8Array, json = false): unknown {
  if (body.length === 0) return null;
  if (json) return JSON.parse(new TextDecoder().decode(body));
  return mpDecoder.decode(body);
}

/**
 * One frame. With `traceparent` (a W3C value), the body region starts with the
 * trace-context extension (docs/protocol.md, "Trace context"): one length
 * byte, then the value; send it only to servers whose welcome lists
 * `trace-context`.
 */
export function encodeFrame(kind: number, route: string, body: Uint8Array, id: Uint8Array, flags = 0, traceparent?: string): Uint8Array {
  const r = routeKey(route);
  if (r.length > 255) throw new RangeError(`route key of ${r.length} bytes is over 255`);
  if (id.length !== 16) throw new RangeError("message id must be 16 bytes");
  if (traceparent) {
    const tp = te.encode(traceparent);
    if (tp.length > 255) throw new RangeError(`traceparent of ${tp.length} bytes is over 255`);
    const ext = new Uint8Array(1 + tp.length + body.length);
    ext[0] = tp.length;
    ext.set(tp, 1);
    ext.set(body, 1 + tp.length);
    body = ext;
    flags |= FLAG_TRACE;
  }
  const out = new Uint8Array(HEADER_LEN + r.length + body.length);
  const dv = new DataView(out.buffer);
  out[0] = 0x57;
  out[1] = 0x46;
  out[2] = VERSION;
  out[3] = kind;
  out[4] = flags;
  out[5] = r.length;
  dv.setUint32(6, body.length);
  out.set(id, 10);
  out.set(r, HEADER_LEN);
  out.set(body, HEADER_LEN + r.length);
  return out;
}

/** Feed bytes, take frames; the length is checked on the header, before buffering. */
export class Decoder {
  private buf: Uint8Array = new Uint8Array(0);
  constructor(readonly maxFrameBytes = MAX_FRAME_BYTES) {}

  feed(data: Uint8Array): void {
    if (this.buf.length === 0) {
      this.buf = data;
      return;
    }
    const b = new Uint8Array(this.buf.length + data.length);
    b.set(this.buf, 0);
    b.set(data, this.buf.length);
    this.buf = b;
  }

  /** The next whole frame, or undefined when more bytes are needed. */
  next(): Frame | undefined {
    const buf = this.buf;
    if (buf.length < 10) return undefined;
    if (buf[0] !== 0x57 || buf[1] !== 0x46) throw new FrameError("bad magic: not a Weft frame", true);
    const rlen = buf[5]!;
    const blen = ((buf[6]! << 24) | (buf[7]! << 16) | (buf[8]! << 8) | buf[9]!) >>> 0;
    const total = HEADER_LEN + rlen + blen;
    if (total > this.maxFrameBytes) throw new FrameError(`frame of ${total} bytes is over the maximum of ${this.maxFrameBytes}`, true);
    if (buf.length < total) return undefined;
    const f: Frame = {
      kind: buf[3]!,
      flags: buf[4]!,
      id: buf.slice(10, 26),
      route: "",
      body: buf.slice(HEADER_LEN + rlen, total),
    };
    const version = buf[2];
    const route = buf.subarray(HEADER_LEN, HEADER_LEN + rlen);
    this.buf = buf.subarray(total);
    if (version !== VERSION) throw new FrameError(`unsupported protocol version ${version}`);
    if (f.kind < 1 || f.kind > 5) throw new FrameError(`unknown frame kind ${f.kind}`);
    if (f.flags & ~(FLAG_JSON | FLAG_ONE_WAY)) throw new FrameError(`unknown flag bits ${f.flags}`);
    f.route = routeText(route);
    return f;
  }
}

// Answers carry their request's route: the last few decoded are kept.
const routeTexts: { bytes: Uint8Array; text: string }[] = [];
function routeText(route: Uint8Array): string {
  for (const r of routeTexts) {
    if (r.bytes.length === route.length && r.bytes.every((b, i) => b === route[i])) return r.text;
  }
  let text: string;
  try {
    text = td.decode(route);
  } catch {
    throw new FrameError("route key is not valid UTF-8");
  }
  if (routeTexts.length >= 8) routeTexts.pop();
  routeTexts.unshift({ bytes: route.slice(), text });
  return text;
}
