//! Configuration: `TableConfig` is per table and fixed at creation (stored
//! with the table, replicated with it later); `TablesConfig` is the node's
//! (config keys `tables.*`, docs/operations.md) and holds every limit.
//!
//! Limits are checked by the driver before a command is applied, never inside
//! `TableState::apply`: under raft, replicas may run with different node
//! configs, and apply must give the same answer on all of them.

use serde::{Deserialize, Serialize};

/// Per-table settings, fixed when the table is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TableConfig {
    /// Raft replicas wanted (`weft table create --replicas R`). Stored now;
    /// honoured once tables run on the cluster's raft groups. A single node
    /// keeps one copy whatever this says.
    pub replicas: u32,
}

impl Default for TableConfig {
    fn default() -> Self {
        TableConfig { replicas: 1 }
    }
}

/// Node-wide settings and limits of tables (config section `tables`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TablesConfig {
    /// Largest key (etcd has no key limit apart from the request size).
    pub max_key_bytes: u64,
    /// Largest value (etcd's default request limit is 1.5 MiB).
    pub max_value_bytes: u64,
    /// Most operations (compares + ops of the larger branch) in one transaction (etcd: 128).
    pub max_txn_ops: u64,
    /// Largest encoded write command (one transaction's keys and values together).
    pub max_command_bytes: u64,
    /// Most key-values one range call returns; also the default limit.
    pub max_range_limit: u64,
    /// Bytes one table may hold in memory (keys + every stored value version);
    /// writes past it are refused with `TooLarge` until a compaction or deletes
    /// free space (etcd's quota-backend-bytes).
    pub max_table_bytes: u64,
    /// Events buffered per watcher; a watcher that falls this far behind is
    /// cancelled with `SlowWatcher`.
    pub watch_buffer_events: u64,
    /// Watchers open at once per table.
    pub max_watchers_per_table: u64,
    /// Tables per node.
    pub max_tables: u64,
    /// When a table's WAL is this large, the state is written to a snapshot
    /// file and the WAL starts empty.
    pub wal_checkpoint_bytes: u64,
    /// Most write commands sharing one fsync (group commit).
    pub max_batch_commands: u64,
    /// Largest `history` answer.
    pub max_history_limit: u64,
    /// Automatic compaction by count (etcd's `--auto-compaction-mode
    /// revision`): every `auto_compact_interval_ms`, a table is compacted
    /// to its current revision minus this many, keeping at least the
    /// newest this-many revisions of history. 0: off (the default, as
    /// etcd's).
    pub auto_compact_revisions: u64,
    /// Automatic compaction by age (etcd's `periodic` mode): a table is
    /// compacted to the revision it had this long ago (sampled every
    /// interval, so history is kept for at least this long). 0: off. With
    /// both set, a compaction keeps what either asks for.
    pub auto_compact_age_ms: u64,
    /// How often automatic compaction looks at every table (etcd's
    /// revision mode: 5 minutes).
    pub auto_compact_interval_ms: u64,
}

impl Default for TablesConfig {
    fn default() -> Self {
        TablesConfig {
            max_key_bytes: 4 * 1024,
            max_value_bytes: 1024 * 1024,
            max_txn_ops: 128,
            max_command_bytes: 8 * 1024 * 1024,
            max_range_limit: 10_000,
            max_table_bytes: 1024 * 1024 * 1024,
            watch_buffer_events: 1024,
            max_watchers_per_table: 1024,
            max_tables: 1024,
            wal_checkpoint_bytes: 64 * 1024 * 1024,
            max_batch_commands: 256,
            max_history_limit: 10_000,
            auto_compact_revisions: 0,
            auto_compact_age_ms: 0,
            auto_compact_interval_ms: 300_000,
        }
    }
}
