//! Weft's service framework, part two.
//!
//! - [`Manager`]: queued endpoints on a [`weft_service::Service`] (the request
//!   is fsync'd before its `{uid}` acknowledgement goes back; a handler works
//!   through the queue with retries, back-off with jitter, an error queue,
//!   pause/resume), queued senders (durable outgoing queues with retries, rate
//!   limit, sequenced mode), the statistics and error keepers, and the
//!   management endpoints `weft.queue.*`, `weft.sender.*`, `weft.stats.*`,
//!   `weft.errors.*`.
//! - [`Broadcaster`] / [`SequencedBroadcaster`]: one message to many clients.
//! - [`Cache`]: an LRU cache for handlers, bounded by entries and bytes, with TTL.
//! - [`cli`]: `weft queue|sender|errors|stats`.
//!
//! Delivery guarantee: at-least-once (see docs/queues.md).

// Tests may unwrap: a failure there is the report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
mod error;
pub mod keepers;
pub mod lru;
mod manage;
pub mod queue;
mod sender;
pub mod store;

pub use error::QueueError;
pub use keepers::{ErrorKeeper, ErrorState, PeriodEndpoint, Snapshot, StatsKeeper};
pub use lru::{Cache, CacheLimits, CacheStats};
pub use manage::{
    Ack, ClearErrors, Count, Delivery, ErrorsReq, Manager, ManagerOptions, MeteredHandler, NameReq, PauseReq, QueuedEndpoint,
    ReprocessReq, SetReq, UidReq, WatchReq, changed_route, MAX_QUEUE_WATCHERS, WATCH_INTERVAL,
};
pub use queue::{BoxFuture, ItemView, Outcome, PauseWhat, QueueInfo, QueueKind, QueueOptions, TokenBucket, WorkQueue, Worker, DEFAULT_MAX_UNCOMMITTED, MAX_UNCOMMITTED_LIMIT};
pub use sender::{classify, Broadcaster, BROADCAST_GROUP, NativeOutbound, Outbound, QueuedSender, SequencedBroadcaster, Target, TargetResult};
pub use weft_net::Backoff;
