//! Cluster mode: tables replicated on the cluster's raft groups
//! (docs/query.md, "Tables: replicated"). The executor runs table statements
//! through a [`ReplicatedTables`] backend when one is set (the binary's
//! cluster mode sets it over weft-cluster); a single node keeps the local
//! `Tables` path unchanged. A node without a replica of the table forwards
//! the statement (as AQL text) to a node with one, which runs it and never
//! forwards it again (one hop).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use prost::Message;
use serde::{Deserialize, Serialize};
use weft_table::{Event, KeySet, Revision, TableState, WriteCommand, WriteResult};

use crate::error::Error;
use crate::pb;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A replica's applied state, read under its lock.
pub trait StateView: Send + Sync {
    fn with_state(&self, f: &mut dyn FnMut(&TableState));
}

/// A statement forwarded to a node that hosts the table (the body of the
/// binary's internal `cluster.local.query` route).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Forward {
    /// The table (the replica checks it hosts it before running anything).
    pub table: String,
    /// The statement as canonical AQL (the printer's output, which parses back to it).
    pub aql: String,
    #[serde(default)]
    pub serializable: bool,
    /// What is left of the caller's deadline (0: none).
    #[serde(default)]
    pub timeout_ms: u64,
    /// A read (may be sent to another replica after a failure; a write is
    /// sent again only when it certainly did not run).
    #[serde(default)]
    pub read_only: bool,
}

/// Replicated tables of a cluster node.
pub trait ReplicatedTables: Send + Sync {
    /// Create a table through the metadata group. `replicas`: None is up to
    /// 3, at most the data nodes; `max_tables` is checked when the command
    /// applies, so two racing creates cannot pass it together.
    fn create<'a>(&'a self, name: &'a str, replicas: Option<u32>, max_tables: u64) -> BoxFut<'a, Result<(), Error>>;
    /// Drop a table through the metadata group: every replica closes the
    /// table's raft group and removes its raft log.
    fn drop_table<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), Error>>;
    /// Whether this node hosts a replica of the table (`Err(NotFound)`: no
    /// such table, after a linearizable look at the metadata).
    fn hosted<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<bool, Error>>;
    /// Run a statement on a node that hosts the table (one hop).
    fn forward<'a>(&'a self, name: &'a str, req: Forward) -> BoxFut<'a, Result<pb::Result, Error>>;
    /// Propose a write to the table's group; answered once committed and applied here.
    fn write<'a>(&'a self, name: &'a str, cmd: WriteCommand) -> BoxFut<'a, Result<WriteResult, Error>>;
    /// The local replica for a read: linearizable (ReadIndex first) or serializable.
    fn read<'a>(&'a self, name: &'a str, linearizable: bool) -> BoxFut<'a, Result<Arc<dyn StateView>, Error>>;
    /// Names of the replicated tables (this node's metadata).
    fn list(&self) -> Vec<String>;
    /// Whether this node leads the table's raft group now (automatic
    /// compaction proposes only there, so it runs once per table).
    fn leads(&self, name: &str) -> bool;
    /// Watch: the events of `set` from revision `from` in the local
    /// replica's applied state (waits for at least one), and the next
    /// revision to ask for. Revisions are the same on every replica, so a
    /// watch resumed on another node at last revision + 1 loses and repeats nothing.
    fn watch<'a>(&'a self, name: &'a str, from: Revision, set: KeySet, prev_kv: bool, max_events: usize) -> BoxFut<'a, Result<(Vec<Event>, Revision), Error>>;
}

/// Run `f` on the replica's state and return its answer.
pub fn read_state<T>(v: &dyn StateView, f: impl FnOnce(&TableState) -> T) -> Option<T> {
    let mut f = Some(f);
    let mut out = None;
    v.with_state(&mut |s| {
        if let Some(f) = f.take() {
            out = Some(f(s));
        }
    });
    out
}

/// A forwarded statement's answer on the wire between nodes (protobuf bytes).
pub fn encode_result(r: &pb::Result) -> Vec<u8> {
    r.encode_to_vec()
}

pub fn decode_result(b: &[u8]) -> Result<pb::Result, Error> {
    pb::Result::decode(b).map_err(|e| Error::Unavailable(format!("a forwarded query's answer does not decode: {e}")))
}

/// A refusal the table's state machine answered when it applied a command
/// (its `kind()` and message, the same on every replica) as the error the
/// local table would have given: compacted or future revisions are
/// OUT_OF_RANGE, a missing key range's table NOT_FOUND, and so on.
pub fn applied_error(kind: &str, message: String) -> Error {
    use tonic::Code;
    let code = match kind {
        "invalid_argument" => return Error::Invalid(message),
        "compacted" | "future_revision" => Code::OutOfRange,
        "not_found" | "dropped" => Code::NotFound,
        "already_exists" => Code::AlreadyExists,
        "too_large" | "not_json" => Code::InvalidArgument,
        "too_many" | "slow_watcher" => Code::ResourceExhausted,
        "corrupt" => Code::DataLoss,
        _ => return Error::Unavailable(format!("{kind}: {message}")),
    };
    Error::Remote { code, reason: kind.to_owned(), message, metadata: Default::default() }
}
