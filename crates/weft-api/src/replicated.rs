//! Cluster mode: tables replicated on the cluster's raft groups
//! (docs/query.md, "Tables: replicated"). The executor runs GET, SET,
//! DELETE, RANGE, CREATE TABLE and SHOW TABLES through a [`ReplicatedTables`]
//! backend when one is set (the binary's cluster mode sets it over
//! weft-cluster); a single node keeps the local `Tables` path unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use weft_table::{Event, KeySet, Revision, TableState, WriteCommand, WriteResult};

use crate::error::Error;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A replica's applied state, read under its lock.
pub trait StateView: Send + Sync {
    fn with_state(&self, f: &mut dyn FnMut(&TableState));
}

/// Replicated tables of a cluster node.
pub trait ReplicatedTables: Send + Sync {
    /// Create a table through the metadata group (replicas: up to 3, at most the data nodes).
    fn create<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), Error>>;
    /// Propose a write to the table's group; answered once committed and applied here.
    fn write<'a>(&'a self, name: &'a str, cmd: WriteCommand) -> BoxFut<'a, Result<WriteResult, Error>>;
    /// The local replica for a read: linearizable (ReadIndex first) or serializable.
    fn read<'a>(&'a self, name: &'a str, linearizable: bool) -> BoxFut<'a, Result<Arc<dyn StateView>, Error>>;
    /// Names of the replicated tables (this node's metadata).
    fn list(&self) -> Vec<String>;
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
