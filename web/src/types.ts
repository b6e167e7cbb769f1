// The JSON the node pushes on /ui/ws (docs/dashboard.md, "WebSocket messages").

export interface Check { name: string; ok: boolean; detail: string }

export interface NodeView {
  name: string;
  id: string;
  version: string;
  uptime_s: number;
  listeners: string[];
  ready: boolean;
  checks: Check[];
  disk_full: boolean;
  partitions_poisoned: number;
}

export interface PartitionView {
  partition: number;
  start_offset: number;
  end_offset: number;
  high_watermark: number;
  size_bytes: number;
}

export interface TopicView {
  name: string;
  internal: boolean;
  produced_total: number;
  fetched_total: number;
  produce_rate: number | null;
  consume_rate: number | null;
  partitions: PartitionView[];
}

export interface GroupView {
  group: string;
  state: string;
  members: number;
  lag: { topic: string; partition: number; lag: number }[];
}

export interface QueueInfo {
  name: string;
  kind: 'endpoint' | 'sender';
  accepting_paused: boolean;
  processing_paused: boolean;
  incoming: number;
  errors: number;
  in_flight: number;
  bytes: number;
  enqueued: number;
  processed: number;
  failed_attempts: number;
  moved_to_error: number;
  oldest_incoming_age_ms: number;
}

export interface PvView {
  name: string;
  type: string;
  writable: boolean;
  display: string;
  number: number | null;
}

/** A table of the node's store (a live count: revision, keys, bytes). */
export interface TableView {
  name: string;
  revision: number;
  compact_revision: number;
  keys: number;
  bytes: number;
}

export interface Snapshot {
  type: 'snapshot';
  time_ms: number;
  node: NodeView;
  cluster: Record<string, unknown> | null;
  topics: TopicView[];
  groups: GroupView[];
  queues: QueueInfo[];
  pvs: PvView[];
  pvs_omitted: number;
  tables: TableView[];
  tables_omitted: number;
}

export interface ItemView {
  uid: string;
  queue: string;
  attempts: number;
  reason: string;
  group?: string;
  enqueued_ms: number;
  request: unknown;
}

export interface RecordOut {
  partition: number;
  offset: number;
  timestamp_ms: number;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
  encoding: 'utf8' | 'base64';
}

// The AQL console (POST /ui/api/query) and table watches: the JSON forms of
// docs/query.md ("Surfaces": keys and values are strings when UTF-8, else
// key_hex / value_hex).

export interface KvOut {
  key?: string;
  key_hex?: string;
  value?: string;
  value_hex?: string;
  create_revision: number;
  mod_revision: number;
  version: number;
  deleted?: boolean;
}

export interface QueryRecord {
  partition: number;
  offset: number;
  timestamp_ms: number;
  key?: string;
  key_hex?: string;
  value?: string;
  value_hex?: string;
}

export interface QueryResult {
  kind: string;
  revision: number;
  count: number;
  kvs?: KvOut[];
  more?: boolean;
  succeeded?: boolean;
  ops?: QueryResult[];
  tables?: string[];
  records?: QueryRecord[];
  next_offset?: number;
}

export interface ErrorBody {
  code: string;
  message: string;
  details?: Record<string, unknown>;
}

export type ConsoleAnswer =
  | { ok: true; result: QueryResult; elapsed_ms: number }
  | { ok: false; status: number; error: ErrorBody; elapsed_ms: number };

export interface TableEvent {
  type: 'put' | 'delete';
  revision: number;
  kv: KvOut;
}
