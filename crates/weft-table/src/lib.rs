//! Weft tables: named key-value tables with revisions, as etcd's MVCC store
//! (docs/query.md, "Tables: storage").
//!
//! # Public API (stable; weft-api builds on it)
//!
//! ```text
//! Tables::open(data_dir, TablesConfig).await -> Tables      // <data_dir>/tables/
//!   .create(name, TableConfig).await -> Table                // AlreadyExists, InvalidArgument (name), TooMany
//!   .drop(name).await                                        // NotFound
//!   .get(name) -> Table                                      // NotFound
//!   .list() -> Vec<TableInfo>      .stats()      .gauges()   .config()
//!
//! Table (Clone; all reads and writes async):
//!   .get(key, at: Option<Revision>) -> GetResult { kv: Option<KeyValue>, revision }
//!   .range(RangeSpec { from, to, prefix, limit, at, keys_only, count_only })
//!       -> RangeResult { kvs, more, count, revision }
//!   .put(key, value) -> PutResult { revision, prev_kv }
//!   .delete(key) -> DeleteResult { revision, deleted, prev_kvs }
//!   .delete_range(KeyRange { from, to, prefix }) -> DeleteResult
//!   .txn(Txn { compares: Vec<Compare>, success: Vec<Op>, failure: Vec<Op> })
//!       -> TxnResult { succeeded, revision, results: Vec<OpResult> }
//!   .compact(rev) -> CompactResult { compact_revision, removed_versions }
//!   .write(WriteCommand) -> WriteResult                      // any of the above writes
//!   .history(key, limit) -> Vec<Event>                       // newest first
//!   .watch(WatchSpec { target: Key|Range|Prefix, start_revision, prev_kv }) -> Watcher
//!   .revision()  .compact_revision()  .stats() -> TableStats  .name()  .config()
//!
//! Watcher::next().await -> Result<Event { kind: Put|Delete, kv, prev_kv, revision }>
//!   ends with Err(SlowWatcher | Compacted | Dropped)
//!
//! KeyValue { key, value, create_revision, mod_revision, version }; .value_json()
//! Compare { key, op: Equal|NotEqual|Less|Greater,
//!           target: Value(b)|Version(n)|CreateRevision(r)|ModRevision(r)|Exists(bool) }
//!   Compare::version_eq(k, n) (IF VERSION = n), Compare::absent(k) (IF ABSENT)
//! Op::{Put{key,value}, Delete{key}, DeleteRange(KeyRange), Get{key}, Range(RangeSpec)}
//! OpResult::{Put(PutResult), Delete(DeleteResult), Get(Option<KeyValue>), Range(RangeResult)}
//!
//! Replication (sans-IO): TableState::apply(index, &WriteCommand) -> Applied { result, events, changed },
//!   TableState::snapshot() -> Vec<u8>, TableState::restore(&[u8]), reads get/range/history/events_between.
//!   WriteCommand::encode()/decode(&[u8]), WriteResult::encode()/decode(&[u8]) (msgpack, raft payloads).
//! Errors: one enum `Error` (NotFound, AlreadyExists, InvalidArgument, Compacted, FutureRevision,
//!   TooLarge, TooMany, SlowWatcher, NotJson, Dropped, Poisoned, Corrupt, Storage); `Error::kind()`.
//! ```
//!
//! Revisions follow etcd: one counter per table, 1 for the first write;
//! every write that changes something (a put, a delete that deletes, a
//! transaction whose branch writes) uses exactly one new revision; writes
//! that change nothing (deleting an absent key, a read-only transaction)
//! and compactions use none. Per key: `create_revision`, `mod_revision`,
//! `version` (puts since creation; a delete resets the key).
//!
//! Layers: `state` is the deterministic state machine (what a raft group
//! applies); `table` is the single-node durable driver (WAL + fsync + group
//! commit + watchers); `registry` names tables on disk; `wal` is the
//! record codec (fuzzed).

pub mod config;
pub mod error;
pub mod registry;
pub mod state;
pub mod table;
pub mod types;
pub mod wal;
pub mod watch;

pub use config::{TableConfig, TablesConfig};
pub use error::{Error, Result};
pub use registry::{MAX_NAME_BYTES, TableInfo, Tables, validate_name};
pub use state::{Applied, KeySet, TableState};
pub use table::{Table, check_limits};
pub use types::*;
pub use watch::Watcher;

#[cfg(test)]
mod send_check {
    // The gRPC layer holds these across awaits in spawned tasks: they must be Send.
    fn assert_send<T: Send + 'static>(_: T) {}

    #[allow(dead_code)]
    fn futures_are_send(t: crate::Table, tables: crate::Tables, mut w: crate::Watcher) {
        assert_send(async move {
            let _ = t.get(b"k", None).await;
            let _ = t.range(crate::RangeSpec::default()).await;
            let _ = t.put("k", "v").await;
            let _ = t.txn(crate::Txn::default()).await;
            let _ = t.history(b"k", None).await;
            let _ = w.next().await;
            let _ = tables.create("x", crate::TableConfig::default()).await;
            let _ = tables.drop("x").await;
        });
    }
}
