// weft-client: Weft's native protocol (Node.js) and HTTP gateway (browsers), one API.
export { Client, Consumer } from "./client.js";
export type { ClientOptions, ConsumerOptions, FetchResult, LogRecord, Membership, ProduceResult, ProducerRecord, QueueKind, TopicPartitionOffset, Bytes } from "./client.js";
export * from "./errors.js";
export { Decoder, FrameError, Kind, FLAG_JSON, FLAG_ONE_WAY, encodeFrame, encodeBody, decodeBody, newId } from "./frame.js";
export type { Frame } from "./frame.js";
export type { TlsOptions } from "./native.js";
export type { CallOptions, Welcome } from "./transport.js";
