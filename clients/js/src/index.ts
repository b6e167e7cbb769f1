// weft-client: Weft's native protocol (Node.js) and HTTP gateway (browsers), one API.
export { Client, Consumer, Table } from "./client.js";
export type { WriteResult, ClientOptions, ConsumerOptions, FetchResult, LogRecord, Membership, ProduceResult, ProducerRecord, QueueKind, TopicPartitionOffset, Bytes } from "./client.js";
export * from "./errors.js";
export { Decoder, FrameError, Kind, FLAG_JSON, FLAG_ONE_WAY, encodeFrame, encodeBody, decodeBody, newId } from "./frame.js";
export type { Frame } from "./frame.js";
export type { TlsOptions, LeaderHint, LeaderStats } from "./native.js";
export { leaderHint } from "./native.js";
export { aqlName, aqlKey, aqlValue, bindParams, batchText } from "./query.js";
export type { BatchCompare, BatchOp, BatchSpec, KeyValue, QueryOptions, QueryParams, QueryRecord, QueryResult, TableKey, TableValue } from "./query.js";
export type { CallOptions, Welcome } from "./transport.js";
