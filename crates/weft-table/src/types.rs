//! The data types of the table API: what goes in (commands, reads, compares,
//! watch specs) and what comes out (key-values, results, events). All are
//! serde types: write commands travel through a WAL today and a raft log
//! later, results through raft's apply answers.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A table revision (etcd's main revision). 0 means "nothing written yet";
/// the first write gets 1.
pub type Revision = u64;

/// One version of one key, as reads return it (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Bytes,
    /// Empty when the read asked for `keys_only`, and in Delete events.
    pub value: Bytes,
    /// Revision of the put that created the key (after its last delete).
    pub create_revision: Revision,
    /// Revision of the last write of the key (for a Delete event: the delete's).
    pub mod_revision: Revision,
    /// Puts since creation: 1 for a new key; 0 in a Delete event.
    pub version: u64,
}

impl KeyValue {
    /// The value read as a JSON document.
    pub fn value_json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.value).map_err(|e| Error::NotJson {
            key: String::from_utf8_lossy(&self.key).into_owned(),
            detail: e.to_string(),
        })
    }
}

/// A set of keys for DeleteRange. `from` inclusive; `to` exclusive (`None`:
/// to the end); `prefix`, when set, narrows further to keys starting with it
/// (the result is the intersection). `from` empty and `to` `None` and no
/// prefix means every key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub from: Bytes,
    pub to: Option<Bytes>,
    pub prefix: Option<Bytes>,
}

impl KeyRange {
    pub fn prefix(p: impl Into<Bytes>) -> Self {
        KeyRange { prefix: Some(p.into()), ..Default::default() }
    }
    pub fn between(from: impl Into<Bytes>, to: Option<Bytes>) -> Self {
        KeyRange { from: from.into(), to, prefix: None }
    }
}

/// A range read: keys in `[from, to)` (∩ `prefix`), in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSpec {
    /// First key (inclusive); empty: from the first key.
    pub from: Bytes,
    /// End key (exclusive); `None`: to the last key.
    pub to: Option<Bytes>,
    /// Only keys starting with this (intersected with `[from, to)`).
    pub prefix: Option<Bytes>,
    /// At most this many key-values (`more` says whether there are others);
    /// `None`: the table limit `max_range_limit`; a larger value is refused
    /// with `TooLarge` (never silently cut).
    pub limit: Option<u64>,
    /// Read as of this revision; `None`: the current one.
    pub at: Option<Revision>,
    /// Return keys and revisions but empty values.
    pub keys_only: bool,
    /// Return only `count` (no key-values).
    pub count_only: bool,
}

impl RangeSpec {
    pub fn prefix(p: impl Into<Bytes>) -> Self {
        RangeSpec { prefix: Some(p.into()), ..Default::default() }
    }
    pub fn between(from: impl Into<Bytes>, to: Option<Bytes>) -> Self {
        RangeSpec { from: from.into(), to, ..Default::default() }
    }
    pub fn key_range(&self) -> KeyRange {
        KeyRange { from: self.from.clone(), to: self.to.clone(), prefix: self.prefix.clone() }
    }
}

/// Answer of `Table::get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResult {
    pub kv: Option<KeyValue>,
    /// The table's current revision when the read was served.
    pub revision: Revision,
}

/// Answer of a range read (etcd's RangeResponse).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Keys in the range beyond those returned (the limit cut the answer).
    pub more: bool,
    /// Keys in the whole range at the read revision (regardless of the limit).
    pub count: u64,
    /// The table's current revision when the read was served.
    pub revision: Revision,
}

/// How a compare tests its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// What a compare looks at, and the operand. As in etcd, an absent key has
/// version, create_revision and mod_revision 0, and any compare of its value
/// is false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(Bytes),
    Version(u64),
    CreateRevision(Revision),
    ModRevision(Revision),
    /// Whether the key exists; only `Equal` and `NotEqual` are allowed.
    Exists(bool),
}

/// One condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Bytes,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    /// `IF VERSION = n` (n = 0: the key is absent).
    pub fn version_eq(key: impl Into<Bytes>, version: u64) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::Version(version) }
    }
    /// `IF ABSENT`.
    pub fn absent(key: impl Into<Bytes>) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::Exists(false) }
    }
    /// `IF MOD_REVISION = r`.
    pub fn mod_revision_eq(key: impl Into<Bytes>, rev: Revision) -> Self {
        Compare { key: key.into(), op: CompareOp::Equal, target: CompareTarget::ModRevision(rev) }
    }
}

/// One operation of a transaction branch. Writes in one transaction share
/// one revision, so a key may be written at most once per transaction (as
/// in etcd): two puts of a key, or a put and a delete covering it, are
/// refused with `InvalidArgument`. Reads see the writes before them in the
/// same branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
    DeleteRange(KeyRange),
    Get { key: Bytes },
    Range(RangeSpec),
}

/// A transaction (etcd's Txn): if every compare holds, run `success`, else
/// `failure`; atomically, under one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// A write, as replicated: the input of `TableState::apply`. Encoded with
/// msgpack in WAL records (`wal` module) and, later, raft entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteCommand {
    Put { key: Bytes, value: Bytes },
    Delete { key: Bytes },
    DeleteRange(KeyRange),
    Txn(Txn),
    /// Drop history below `revision` (reads at `revision` and later still work).
    Compact { revision: Revision },
}

impl WriteCommand {
    /// msgpack bytes, as a raft proposal carries the command.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain structs of bytes and integers into a Vec cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    /// Decode `encode` output; anything else is `InvalidArgument`. No
    /// allocation beyond what `data` holds (msgpack lengths are checked
    /// against the input by rmp-serde's slice reader).
    pub fn decode(data: &[u8]) -> Result<WriteCommand> {
        rmp_serde::from_slice(data).map_err(|e| Error::invalid(format!("write command does not decode: {e}")))
    }
}

impl WriteResult {
    /// msgpack bytes, as a raft apply answer carries the result.
    pub fn encode(&self) -> Vec<u8> {
        // As for commands: cannot fail.
        rmp_serde::to_vec(self).unwrap_or_default()
    }

    pub fn decode(data: &[u8]) -> Result<WriteResult> {
        rmp_serde::from_slice(data).map_err(|e| Error::invalid(format!("write result does not decode: {e}")))
    }
}

/// Answer of a put.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResult {
    /// The write's revision.
    pub revision: Revision,
    /// The key's value before the put, if it existed.
    pub prev_kv: Option<KeyValue>,
}

/// Answer of a delete or delete-range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResult {
    /// The write's revision; when nothing was deleted, no revision is used
    /// and this is the current revision (as etcd).
    pub revision: Revision,
    /// Keys deleted.
    pub deleted: u64,
    /// The deleted key-values (single-key Delete only; empty for DeleteRange,
    /// whose key count is unbounded).
    pub prev_kvs: Vec<KeyValue>,
}

/// Result of one op in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Put(PutResult),
    Delete(DeleteResult),
    Get(Option<KeyValue>),
    Range(RangeResult),
}

/// Answer of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResult {
    /// Whether every compare held (the `success` branch ran).
    pub succeeded: bool,
    /// The transaction's revision if it wrote anything, else the current one.
    pub revision: Revision,
    /// One result per op of the branch that ran, in order.
    pub results: Vec<OpResult>,
}

/// Answer of a compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactResult {
    /// The table's compact revision now.
    pub compact_revision: Revision,
    /// Stored versions (history entries and tombstones) dropped.
    pub removed_versions: u64,
}

/// Answer of any write command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    Put(PutResult),
    Delete(DeleteResult),
    Txn(TxnResult),
    Compact(CompactResult),
}

/// Which keys a watcher follows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchTarget {
    Key(Bytes),
    Range(KeyRange),
    Prefix(Bytes),
}

/// What to watch and from when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSpec {
    pub target: WatchTarget,
    /// First revision to deliver: stored history from there is replayed,
    /// then live events follow. `None`: only writes after the watch starts.
    pub start_revision: Option<Revision>,
    /// Fill `Event::prev_kv` (the key's previous version, if still stored).
    pub prev_kv: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change of one key. Events arrive in revision order; events of one
/// transaction share a revision and come in key order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// For a Put: the new key-value. For a Delete: key, empty value,
    /// mod_revision = the delete's revision, version 0, create_revision 0.
    pub kv: KeyValue,
    /// The key's version before this event, when asked for and still stored.
    pub prev_kv: Option<KeyValue>,
    pub revision: Revision,
}

/// Counters and gauges of one table (`weft stats` keys `table.<name>.<field>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    /// Write commands that changed the table (each used one revision, except compactions).
    pub writes: u64,
    /// Write commands refused (limits, bad arguments, compacted) or failed.
    pub write_errors: u64,
    /// Get and range calls (and history).
    pub reads: u64,
    /// Transactions applied.
    pub txns: u64,
    /// Transactions whose compares failed (the failure branch ran).
    pub failed_compares: u64,
    /// Watchers open now.
    pub watchers: u64,
    /// Events handed to watchers.
    pub events_sent: u64,
    /// Watchers cancelled as too slow.
    pub slow_watchers_cancelled: u64,
    /// Current revision.
    pub revision: Revision,
    /// Revisions below this are compacted.
    pub compact_revision: Revision,
    /// Live keys at the current revision.
    pub keys: u64,
    /// Bytes held: every stored key once plus every stored value version.
    pub bytes: u64,
    /// Stored versions (live and history, tombstones included).
    pub versions: u64,
    /// Size of the write-ahead log file.
    pub wal_bytes: u64,
}
