// The two transports behind one Client API.

export interface CallOptions {
  /** Seconds-free: milliseconds until the call gives up (default: the client's). */
  timeoutMs?: number;
  /** Send a JSON body instead of msgpack (native transport). */
  json?: boolean;
}

export interface Welcome {
  protocol_version: number;
  server_id: string;
  server_name: string;
  version: string;
  features: string[];
}

export interface Transport {
  readonly kind: "native" | "http";
  connect(): Promise<Welcome | null>;
  call(route: string, body: unknown, opts: CallOptions): Promise<unknown>;
  send(route: string, body: unknown): Promise<void>;
  close(): Promise<void>;
}

/** Exponential back-off with jitter in [d/2, d]: 50 ms doubling to 5 s. */
export class Backoff {
  attempt = 0;
  constructor(readonly baseMs = 50, readonly maxMs = 5000) {}
  nextDelayMs(): number {
    const d = Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 30);
    return d / 2 + Math.random() * (d / 2);
  }
  reset(): void {
    this.attempt = 0;
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
