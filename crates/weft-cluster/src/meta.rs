//! The metadata group's state machine (group 0): nodes, topics with their
//! partition placement, consumer-group committed offsets and membership. Pure and
//! deterministic: every control node applies the same commands in the same
//! order and reaches the same state.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};
use crate::host::{GroupId, NodeId, StateMachine};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Votes in the metadata group.
    Control,
    /// Hosts partition replicas.
    Data,
}

impl Role {
    /// Parse `control,data` (either, or both).
    pub fn parse_list(s: &str) -> Result<Vec<Role>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let r = match part {
                "control" => Role::Control,
                "data" => Role::Data,
                other => return Err(ClusterError::Config(format!("unknown role {other:?}: expected control, data"))),
            };
            if !out.contains(&r) {
                out.push(r);
            }
        }
        if out.is_empty() {
            return Err(ClusterError::Config("roles must name at least one of control, data".into()));
        }
        out.sort();
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub id: NodeId,
    /// Raft transport address.
    pub cluster_addr: String,
    /// Native protocol address clients and forwarding use (set when the node registers itself).
    #[serde(default)]
    pub native_addr: Option<String>,
    pub roles: Vec<Role>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionMeta {
    pub partition: u32,
    /// The raft group replicating this partition.
    pub group: GroupId,
    /// Replica nodes; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// Moves finished on this partition. While 0 the replicas are the
    /// group's founding configuration, which a replica opening the group for
    /// the first time may found it with; after a move it joins empty instead
    /// (and starts from a snapshot).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub moves: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub partitions: Vec<PartitionMeta>,
    /// The topic's configuration as given at creation (weft-log's topic config, as JSON).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Which creation of the name this is: the first partition's group id,
    /// unique because group ids are never reused (0 in metadata written
    /// before incarnations; [`TopicMeta::incarnation`] derives it then). A
    /// node keeps it with its local copy and drops a copy of another
    /// incarnation (a delete and create again it missed) before serving.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incarnation: u64,
}

impl TopicMeta {
    /// The topic's incarnation (see the field); the same on every node.
    pub fn incarnation(&self) -> u64 {
        if self.incarnation != 0 {
            return self.incarnation;
        }
        self.partitions.iter().map(|p| p.group).min().unwrap_or(0)
    }
}

/// A consumer group's membership as its coordinator last replicated it
/// (docs/cluster.md, "Consumer groups"): a new metadata leader takes over
/// with it, so members keep their generation. Heartbeat times are not in it
/// (heartbeats never go through raft).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMembers {
    /// The metadata term of the coordinator that wrote it: a later
    /// coordinator's state always wins over an earlier one's.
    pub epoch: u64,
    pub generation: u32,
    /// weft-log's `GroupSnapshot`, as JSON (opaque here).
    pub state: serde_json::Value,
}

/// A replicated table (docs/query.md, "Tables: replicated"): one raft group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableMeta {
    pub name: String,
    /// The raft group replicating this table.
    pub group: GroupId,
    /// Replica nodes; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    /// Moves finished on this table's group (as `PartitionMeta::moves`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub moves: u64,
}

/// A replica move in flight (docs/cluster.md, "Rebalancer"): `to` joins
/// the group and replaces `from`. The placement changes only when the move
/// finishes, after the group's membership change committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    pub group: GroupId,
    pub from: NodeId,
    pub to: NodeId,
    /// Why: `removed`, `down` or `balance`.
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetaState {
    pub nodes: BTreeMap<NodeId, NodeInfo>,
    pub topics: BTreeMap<String, TopicMeta>,
    /// consumer group -> topic -> partition -> committed offset.
    pub offsets: BTreeMap<String, BTreeMap<String, BTreeMap<u32, u64>>>,
    /// Consumer-group membership by group (absent from older snapshots).
    #[serde(default)]
    pub groups: BTreeMap<String, GroupMembers>,
    /// Each group's newest commit time (ms since the epoch, the proposer's
    /// clock), for the expiry of offsets by age (`log_store.offsets_retention_ms`;
    /// absent from older snapshots and commits: 0).
    #[serde(default)]
    pub group_commit_ms: BTreeMap<String, i64>,
    /// Replicated tables by name (absent from snapshots taken before tables).
    #[serde(default)]
    pub tables: BTreeMap<String, TableMeta>,
    /// Each node's gRPC query address, as it advertised it (`SetGrpcAddr`;
    /// a `not_leader` answer names the leader's, for query clients to follow).
    #[serde(default)]
    pub grpc_addrs: BTreeMap<NodeId, String>,
    /// Replica moves in flight, by group (absent from older snapshots).
    #[serde(default)]
    pub moves: BTreeMap<GroupId, Move>,
    /// Moves finished and cancelled since the cluster began (stats).
    #[serde(default)]
    pub moves_done: u64,
    #[serde(default)]
    pub moves_cancelled: u64,
    /// Next partition raft group id (groups ≥ 1; 0 is this group).
    pub next_group: GroupId,
    /// Index of the last applied command.
    pub applied: u64,
    /// The auth rules (weft-auth's state as JSON: users, roles, hashed
    /// credentials), replaced whole by [`MetaCommand::SetAuth`]; Null until
    /// set (docs/security.md, "Cluster").
    #[serde(default)]
    pub auth: serde_json::Value,
    /// Version of `auth`: 0 = never set; each SetAuth adds one.
    #[serde(default)]
    pub auth_version: u64,
    /// Names of deleted replicated topics not created again: a node that
    /// missed the delete (down, or restarted from a later snapshot) still
    /// removes its local copy (weft-cluster node.rs, close_deleted_topics).
    #[serde(default)]
    pub deleted_topics: std::collections::BTreeSet<String>,
}

/// A change to the metadata. Every change goes through the metadata group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetaCommand {
    /// Replace the auth rules if they are still at version `expected`
    /// (compare-and-set: the proposer computed `state` from that version;
    /// on `conflict` it retries from the newer one). Whole-state, so this
    /// crate needs no knowledge of the rules.
    SetAuth { expected: u64, state: serde_json::Value },
    /// Add or update a node (its addresses and roles).
    RegisterNode { node: NodeInfo },
    RemoveNode { id: NodeId },
    CreateTopic { name: String, partitions: u32, replicas: u32, #[serde(default)] config: serde_json::Value },
    DeleteTopic { name: String },
    /// Replace a topic's config (the proposer applied the alter to the
    /// current config and validated it); every replica's copy follows. The
    /// partition count cannot change here (its groups are placed at create).
    AlterTopic { name: String, config: serde_json::Value },
    CommitOffset {
        group: String,
        topic: String,
        partition: u32,
        offset: u64,
        /// When it was committed (the proposer's clock; 0 from older nodes).
        #[serde(default)]
        at_ms: i64,
    },
    /// The group coordinator's membership of one group after a change
    /// (join, leave, expiry, hand-off). Refused as stale when the stored
    /// one is from a later (epoch, generation).
    SetGroup { group: String, epoch: u64, generation: u32, state: serde_json::Value },
    /// Delete a consumer group: its committed offsets and its membership
    /// record (the proposer checked at the coordinator that it had no
    /// members). `not_found` when there was neither.
    DeleteGroup {
        group: String,
        /// An expiry by age: refused (`conflict`) when the group has a
        /// commit later than this (ms since the epoch), so a commit that
        /// raced the coordinator's decision is not undone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unless_committed_after_ms: Option<i64>,
    },
    /// Allocate a raft group for a table and place its replicas (as a partition's).
    /// `max_tables` (the proposer's `tables.max_tables`) is checked here, at
    /// apply, so racing creates cannot pass it together.
    CreateTable {
        name: String,
        replicas: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_tables: Option<u64>,
    },
    DropTable { name: String },
    /// A node's gRPC query address (it advertises its own once registered).
    SetGrpcAddr { id: NodeId, addr: String },
    /// Record a replica move of a partition or table group (the rebalancer's planner).
    /// `max_moves` (`cluster.rebalance.max_concurrent_moves`) is checked at apply.
    StartMove {
        group: GroupId,
        from: NodeId,
        to: NodeId,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_moves: Option<u64>,
    },
    /// The group's membership change committed: `to` replaces `from` in the placement.
    FinishMove { group: GroupId, from: NodeId, to: NodeId },
    /// Drop a move whose target left before it became a voter.
    CancelMove { group: GroupId, to: NodeId },
    /// Reorder a partition's or table's replicas (same set): the first is the preferred leader.
    SetReplicas { group: GroupId, replicas: Vec<NodeId> },
}

/// What applying a command answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetaResponse {
    Ok,
    Topic(TopicMeta),
    Table(TableMeta),
    /// The command was refused (same answer on every replica).
    Error { code: String, message: String },
}

/// Limits on what one command may ask for (the metadata is held in memory on every control node).
pub const MAX_PARTITIONS: u32 = 10_000;
pub const MAX_NAME_BYTES: usize = 249;
/// weft-log's limit on a consumer group's name.
pub const MAX_GROUP_NAME_BYTES: usize = 255;

impl MetaState {
    /// Data nodes sorted by id: the placement order.
    pub fn data_nodes(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.roles.contains(&Role::Data)).map(|n| n.id).collect()
    }

    /// Every partition group with its replicas, by group id.
    pub fn partition_groups(&self) -> Vec<(GroupId, Vec<NodeId>)> {
        let mut out: Vec<(GroupId, Vec<NodeId>)> = self.topics.values().flat_map(|t| t.partitions.iter().map(|p| (p.group, p.replicas.clone()))).collect();
        out.sort_by_key(|(g, _)| *g);
        out
    }

    /// Every group with replicas on data nodes (partitions and tables), by group id: what the rebalancer moves.
    pub fn replica_groups(&self) -> Vec<(GroupId, Vec<NodeId>)> {
        let mut out = self.partition_groups();
        out.extend(self.tables.values().map(|t| (t.group, t.replicas.clone())));
        out.sort_by_key(|(g, _)| *g);
        out
    }

    /// A partition's or table's replicas and move count, by group.
    fn replicas_mut(&mut self, group: GroupId) -> Option<(&mut Vec<NodeId>, &mut u64)> {
        if let Some(p) = self.topics.values_mut().flat_map(|t| t.partitions.iter_mut()).find(|p| p.group == group) {
            return Some((&mut p.replicas, &mut p.moves));
        }
        self.tables.values_mut().find(|t| t.group == group).map(|t| (&mut t.replicas, &mut t.moves))
    }

    fn apply_move(&mut self, cmd: MetaCommand) -> MetaResponse {
        let err = |code: &str, message: String| MetaResponse::Error { code: code.into(), message };
        match cmd {
            MetaCommand::StartMove { group, from, to, reason, max_moves } => {
                if self.moves.contains_key(&group) {
                    return err("conflict", format!("group {group} has a move in flight"));
                }
                if let Some(max) = max_moves
                    && self.moves.len() as u64 >= max
                {
                    return err("too_many", format!("{} moves in flight (cluster.rebalance.max_concurrent_moves = {max})", self.moves.len()));
                }
                if !self.nodes.get(&to).is_some_and(|n| n.roles.contains(&Role::Data)) {
                    return err("validation", format!("node {to} is not a data node"));
                }
                let Some((replicas, _)) = self.replicas_mut(group) else { return err("not_found", format!("no partition or table group {group}")) };
                if !replicas.contains(&from) || replicas.contains(&to) {
                    return err("validation", format!("group {group}: {from} must be a replica and {to} not"));
                }
                self.moves.insert(group, Move { group, from, to, reason });
                MetaResponse::Ok
            }
            MetaCommand::FinishMove { group, from, to } => {
                if !self.moves.get(&group).is_some_and(|m| m.from == from && m.to == to) {
                    return err("not_found", format!("group {group} has no move {from} -> {to}"));
                }
                self.moves.remove(&group);
                if let Some((replicas, moves)) = self.replicas_mut(group) {
                    for r in replicas.iter_mut().filter(|r| **r == from) {
                        *r = to;
                    }
                    *moves += 1;
                }
                self.moves_done += 1;
                MetaResponse::Ok
            }
            MetaCommand::CancelMove { group, to } => {
                if self.moves.get(&group).is_none_or(|m| m.to != to) {
                    return err("not_found", format!("group {group} has no move to {to}"));
                }
                self.moves.remove(&group);
                self.moves_cancelled += 1;
                MetaResponse::Ok
            }
            MetaCommand::SetReplicas { group, replicas } => {
                let Some((current, _)) = self.replicas_mut(group) else { return err("not_found", format!("no partition or table group {group}")) };
                let (mut a, mut b) = (current.clone(), replicas.clone());
                a.sort_unstable();
                b.sort_unstable();
                if a != b {
                    return err("validation", format!("group {group}: a reorder must keep the replica set"));
                }
                *current = replicas;
                MetaResponse::Ok
            }
            _ => err("validation", "not a move command".into()),
        }
    }

    pub fn apply(&mut self, cmd: MetaCommand) -> MetaResponse {
        let err = |code: &str, message: String| MetaResponse::Error { code: code.into(), message };
        match cmd {
            MetaCommand::SetAuth { expected, state } => {
                if expected != self.auth_version {
                    return err("conflict", format!("auth rules are at version {}, not {expected}", self.auth_version));
                }
                self.auth = state;
                self.auth_version += 1;
                MetaResponse::Ok
            }
            MetaCommand::RegisterNode { node } => {
                self.nodes.insert(node.id, node);
                MetaResponse::Ok
            }
            MetaCommand::RemoveNode { id } => {
                if self.nodes.remove(&id).is_none() {
                    return err("not_found", format!("node {id} is not a member"));
                }
                self.grpc_addrs.remove(&id);
                MetaResponse::Ok
            }
            MetaCommand::CreateTopic { name, partitions, replicas, config } => {
                if name.is_empty() || name.len() > MAX_NAME_BYTES {
                    return err("validation", format!("topic name must be 1 to {MAX_NAME_BYTES} bytes"));
                }
                if partitions == 0 || partitions > MAX_PARTITIONS {
                    return err("validation", format!("partitions must be 1 to {MAX_PARTITIONS}"));
                }
                if self.topics.contains_key(&name) {
                    return err("conflict", format!("topic {name:?} exists"));
                }
                let data = self.data_nodes();
                if replicas == 0 || replicas as usize > data.len() {
                    return err("validation", format!("replicas must be 1 to the number of data nodes ({})", data.len()));
                }
                let first_group = self.next_group.max(1);
                let parts = (0..partitions)
                    .map(|p| PartitionMeta { partition: p, group: first_group + u64::from(p), replicas: place(&data, p, replicas), moves: 0 })
                    .collect();
                self.next_group = first_group + u64::from(partitions);
                self.deleted_topics.remove(&name);
                let t = TopicMeta { name: name.clone(), partitions: parts, config, incarnation: first_group };
                self.topics.insert(name, t.clone());
                MetaResponse::Topic(t)
            }
            MetaCommand::DeleteTopic { name } => {
                let Some(t) = self.topics.remove(&name) else {
                    return err("not_found", format!("topic {name:?} does not exist"));
                };
                for p in &t.partitions {
                    self.moves.remove(&p.group);
                }
                // A topic created again under the name starts with no committed offsets.
                for topics in self.offsets.values_mut() {
                    topics.remove(&name);
                }
                self.offsets.retain(|_, topics| !topics.is_empty());
                self.deleted_topics.insert(name);
                MetaResponse::Ok
            }
            MetaCommand::AlterTopic { name, config } => {
                let Some(t) = self.topics.get_mut(&name) else {
                    return err("not_found", format!("topic {name:?} does not exist"));
                };
                let parts = config.get("partitions").and_then(|p| p.as_u64());
                if parts.is_some_and(|p| p != t.partitions.len() as u64) {
                    return err("validation", format!("the partition count of a replicated topic cannot change ({} partitions)", t.partitions.len()));
                }
                t.config = config;
                MetaResponse::Topic(t.clone())
            }
            MetaCommand::CreateTable { name, replicas, max_tables } => {
                if name.is_empty() || name.len() > MAX_NAME_BYTES {
                    return err("validation", format!("table name must be 1 to {MAX_NAME_BYTES} bytes"));
                }
                if self.tables.contains_key(&name) {
                    return err("conflict", format!("table {name:?} exists"));
                }
                if let Some(max) = max_tables
                    && self.tables.len() as u64 >= max
                {
                    return err("too_many", format!("{} tables: at the limit of {max} (tables.max_tables)", self.tables.len()));
                }
                let data = self.data_nodes();
                if replicas == 0 || replicas as usize > data.len() {
                    return err("validation", format!("replicas must be 1 to the number of data nodes ({})", data.len()));
                }
                let group = self.next_group.max(1);
                self.next_group = group + 1;
                // Rotate the preferred leader with the group id, as partitions rotate.
                let t = TableMeta { name: name.clone(), group, replicas: place(&data, (group % u64::from(u32::MAX)) as u32, replicas), moves: 0 };
                self.tables.insert(name, t.clone());
                MetaResponse::Table(t)
            }
            MetaCommand::SetGrpcAddr { id, addr } => {
                if !self.nodes.contains_key(&id) {
                    return err("not_found", format!("node {id} is not a member"));
                }
                if addr.is_empty() || addr.len() > MAX_NAME_BYTES {
                    return err("validation", format!("a gRPC address must be 1 to {MAX_NAME_BYTES} bytes"));
                }
                self.grpc_addrs.insert(id, addr);
                MetaResponse::Ok
            }
            MetaCommand::DropTable { name } => {
                let Some(t) = self.tables.remove(&name) else {
                    return err("not_found", format!("table {name:?} does not exist"));
                };
                self.moves.remove(&t.group);
                MetaResponse::Ok
            }
            cmd @ (MetaCommand::StartMove { .. } | MetaCommand::FinishMove { .. } | MetaCommand::CancelMove { .. } | MetaCommand::SetReplicas { .. }) => self.apply_move(cmd),
            MetaCommand::CommitOffset { group, topic, partition, offset, at_ms } => {
                let t = self.group_commit_ms.entry(group.clone()).or_insert(at_ms);
                *t = (*t).max(at_ms);
                self.offsets.entry(group).or_default().entry(topic).or_default().insert(partition, offset);
                MetaResponse::Ok
            }
            MetaCommand::SetGroup { group, epoch, generation, state } => {
                if group.is_empty() || group.len() > MAX_GROUP_NAME_BYTES {
                    return err("validation", format!("group name must be 1 to {MAX_GROUP_NAME_BYTES} bytes"));
                }
                if let Some(cur) = self.groups.get(&group)
                    && (epoch, generation) < (cur.epoch, cur.generation)
                {
                    return err("conflict", format!("group {group:?} is at epoch {} generation {}: stale", cur.epoch, cur.generation));
                }
                self.groups.insert(group, GroupMembers { epoch, generation, state });
                MetaResponse::Ok
            }
            MetaCommand::DeleteGroup { group, unless_committed_after_ms } => {
                if let (Some(after), Some(last)) = (unless_committed_after_ms, self.group_commit_ms.get(&group))
                    && *last > after
                {
                    return err("conflict", format!("group {group:?} has a commit since the expiry was decided"));
                }
                let offsets = self.offsets.remove(&group).is_some();
                let members = self.groups.remove(&group).is_some();
                self.group_commit_ms.remove(&group);
                if !offsets && !members {
                    return err("not_found", format!("group {group:?} has no committed offsets and no members"));
                }
                MetaResponse::Ok
            }
        }
    }
}

/// The weft-log configuration of a replicated topic's local copies: the
/// config given at creation (defaults for what it left out), with the
/// partition count of the placement.
pub fn topic_config(t: &TopicMeta) -> weft_log::TopicConfig {
    let mut c: weft_log::TopicConfig = serde_json::from_value(t.config.clone()).unwrap_or_default();
    c.partitions = t.partitions.len() as u32;
    c
}

/// Replica j of partition p goes to the data node at position (p + j) mod n
/// of the data nodes sorted by id: distinct nodes per partition, and the
/// preferred leaders (j = 0) rotate across nodes.
pub fn place(data_nodes: &[NodeId], partition: u32, replicas: u32) -> Vec<NodeId> {
    let n = data_nodes.len();
    if n == 0 {
        return Vec::new();
    }
    (0..replicas as usize).filter_map(|j| data_nodes.get((partition as usize + j) % n).copied()).collect()
}

/// Told the auth rules and their version each time they change (a SetAuth
/// applied, a snapshot restored), on the apply path: keep it short.
pub type AuthObserver = Arc<dyn Fn(u64, &serde_json::Value) + Send + Sync>;
/// Where the node keeps its [`AuthObserver`] (set after start).
pub type AuthObserverSlot = Arc<RwLock<Option<AuthObserver>>>;

/// The metadata state machine; the state is shared so readers (status,
/// ReadIndex reads) see it without going through the driver.
pub struct MetaSm {
    pub state: Arc<RwLock<MetaState>>,
    auth_observer: AuthObserverSlot,
}

impl MetaSm {
    pub fn new(state: Arc<RwLock<MetaState>>) -> Self {
        MetaSm { state, auth_observer: Arc::default() }
    }

    pub fn with_auth_observer(mut self, slot: AuthObserverSlot) -> Self {
        self.auth_observer = slot;
        self
    }

    fn tell_auth(&self, s: &MetaState) {
        let f = self.auth_observer.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let (Some(f), true) = (f, s.auth_version > 0) {
            f(s.auth_version, &s.auth);
        }
    }
}

impl StateMachine for MetaSm {
    fn apply(&mut self, index: u64, data: &bytes::Bytes) -> Vec<u8> {
        let resp = match serde_json::from_slice::<MetaCommand>(data) {
            Ok(cmd) => {
                let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
                s.applied = index;
                let auth = matches!(cmd, MetaCommand::SetAuth { .. });
                let r = s.apply(cmd);
                if auth && r == MetaResponse::Ok {
                    self.tell_auth(&s);
                }
                r
            }
            // Every replica refuses the same bytes the same way.
            Err(e) => MetaResponse::Error { code: "bad_command".into(), message: e.to_string() },
        };
        serde_json::to_vec(&resp).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        serde_json::to_vec(&*s).unwrap_or_default()
    }

    fn restore(&mut self, data: &[u8]) -> Result<()> {
        let new: MetaState = serde_json::from_slice(data).map_err(|e| ClusterError::StateMachine(format!("metadata snapshot: {e}")))?;
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        *s = new;
        self.tell_auth(&s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_rules_compare_and_set() {
        let mut s = MetaState::default();
        assert_eq!(s.apply(MetaCommand::SetAuth { expected: 0, state: serde_json::json!({"users": {}}) }), MetaResponse::Ok);
        // A proposer that computed from version 0 lost the race: the same refusal everywhere.
        let stale = s.apply(MetaCommand::SetAuth { expected: 0, state: serde_json::json!({}) });
        assert!(matches!(stale, MetaResponse::Error { ref code, .. } if code == "conflict"));
        assert_eq!((s.auth_version, s.auth.clone()), (1, serde_json::json!({"users": {}})));
        // Snapshots from before auth was replicated restore with none.
        let old: MetaState = serde_json::from_str(r#"{"nodes":{},"topics":{},"offsets":{},"next_group":1,"applied":0}"#).unwrap();
        assert_eq!((old.auth_version, old.auth), (0, serde_json::Value::Null));
    }

    fn node(id: NodeId, roles: &[Role]) -> MetaCommand {
        MetaCommand::RegisterNode { node: NodeInfo { id, cluster_addr: format!("127.0.0.1:{}", 7000 + id), native_addr: None, roles: roles.to_vec() } }
    }

    #[test]
    fn placement_spreads_round_robin_over_data_nodes() {
        assert_eq!(place(&[1, 2, 3], 0, 3), vec![1, 2, 3]);
        assert_eq!(place(&[1, 2, 3], 1, 3), vec![2, 3, 1]);
        assert_eq!(place(&[1, 2, 3, 4], 3, 2), vec![4, 1]);
    }

    #[test]
    fn create_topic_places_on_data_nodes_only_and_refuses_bad_input() {
        let mut s = MetaState::default();
        s.apply(node(1, &[Role::Control]));
        s.apply(node(2, &[Role::Data]));
        s.apply(node(3, &[Role::Control, Role::Data]));
        let MetaResponse::Topic(t) = s.apply(MetaCommand::CreateTopic { name: "t".into(), partitions: 2, replicas: 2, config: Default::default() }) else {
            panic!("expected a topic");
        };
        assert_eq!(t.partitions[0].replicas, vec![2, 3]);
        assert_eq!(t.partitions[1].replicas, vec![3, 2]);
        assert_eq!((t.partitions[0].group, t.partitions[1].group), (1, 2));
        let too_many = s.apply(MetaCommand::CreateTopic { name: "u".into(), partitions: 1, replicas: 3, config: Default::default() });
        assert!(matches!(too_many, MetaResponse::Error { ref code, .. } if code == "validation"));
        let dup = s.apply(MetaCommand::CreateTopic { name: "t".into(), partitions: 1, replicas: 1, config: Default::default() });
        assert!(matches!(dup, MetaResponse::Error { ref code, .. } if code == "conflict"));
        // A delete drops the topic's committed offsets (other topics' stay).
        s.apply(MetaCommand::CommitOffset { group: "g".into(), topic: "t".into(), partition: 0, offset: 5, at_ms: 0 });
        s.apply(MetaCommand::CommitOffset { group: "h".into(), topic: "t".into(), partition: 1, offset: 6, at_ms: 0 });
        let MetaResponse::Topic(_) = s.apply(MetaCommand::CreateTopic { name: "v".into(), partitions: 1, replicas: 1, config: Default::default() }) else {
            panic!("expected a topic");
        };
        s.apply(MetaCommand::CommitOffset { group: "g".into(), topic: "v".into(), partition: 0, offset: 7, at_ms: 0 });
        // Group ids are never reused, even after a delete.
        s.apply(MetaCommand::DeleteTopic { name: "t".into() });
        assert!(!s.offsets.contains_key("h"), "{:?}", s.offsets);
        assert!(s.deleted_topics.contains("t"));
        assert_eq!(s.offsets["g"].keys().collect::<Vec<_>>(), vec!["v"]);
        let MetaResponse::Topic(t2) = s.apply(MetaCommand::CreateTopic { name: "t".into(), partitions: 1, replicas: 1, config: Default::default() }) else {
            panic!("expected a topic");
        };
        assert_eq!(t2.partitions[0].group, 4);
        assert!(s.deleted_topics.is_empty(), "created again: no longer deleted");
        // Alter replaces the config; the partition count stays.
        let cfg = serde_json::json!({"partitions": 1, "retention_ms": 1000});
        assert!(matches!(s.apply(MetaCommand::AlterTopic { name: "t".into(), config: cfg.clone() }), MetaResponse::Topic(ref t) if t.config == cfg));
        let more = s.apply(MetaCommand::AlterTopic { name: "t".into(), config: serde_json::json!({"partitions": 3}) });
        assert!(matches!(more, MetaResponse::Error { ref code, .. } if code == "validation"));
        let none = s.apply(MetaCommand::AlterTopic { name: "x".into(), config: cfg });
        assert!(matches!(none, MetaResponse::Error { ref code, .. } if code == "not_found"));
    }

    #[test]
    fn topic_incarnations_differ_per_create_and_group_membership_is_ordered() {
        let mut s = MetaState::default();
        s.apply(node(1, &[Role::Control, Role::Data]));
        let create = |s: &mut MetaState| match s.apply(MetaCommand::CreateTopic { name: "t".into(), partitions: 2, replicas: 1, config: Default::default() }) {
            MetaResponse::Topic(t) => t,
            other => panic!("expected a topic: {other:?}"),
        };
        let first = create(&mut s);
        s.apply(MetaCommand::DeleteTopic { name: "t".into() });
        let second = create(&mut s);
        assert_eq!((first.incarnation(), second.incarnation()), (1, 3));
        // Metadata from before incarnations: derived from the first group, the same everywhere.
        let old: TopicMeta = serde_json::from_str(r#"{"name":"t","partitions":[{"partition":0,"group":7,"replicas":[1]}]}"#).unwrap();
        assert_eq!((old.incarnation, old.incarnation()), (0, 7));

        let set = |epoch, generation| MetaCommand::SetGroup { group: "g".into(), epoch, generation, state: serde_json::json!({"generation": generation}) };
        assert_eq!(s.apply(set(2, 5)), MetaResponse::Ok);
        assert_eq!(s.apply(set(2, 5)), MetaResponse::Ok, "the same generation again (a hand-off) replaces it");
        // An older coordinator's or an older generation's write is refused.
        assert!(matches!(s.apply(set(1, 9)), MetaResponse::Error { ref code, .. } if code == "conflict"));
        assert!(matches!(s.apply(set(2, 4)), MetaResponse::Error { ref code, .. } if code == "conflict"));
        // A later coordinator wins whatever its generation.
        assert_eq!(s.apply(set(3, 1)), MetaResponse::Ok);
        assert_eq!((s.groups["g"].epoch, s.groups["g"].generation), (3, 1));
        let bad = MetaCommand::SetGroup { group: String::new(), epoch: 4, generation: 1, state: serde_json::Value::Null };
        assert!(matches!(s.apply(bad), MetaResponse::Error { ref code, .. } if code == "validation"));
        // A delete takes the group's offsets and membership; others stay.
        s.apply(MetaCommand::CommitOffset { group: "g".into(), topic: "t".into(), partition: 0, offset: 5, at_ms: 900 });
        s.apply(MetaCommand::CommitOffset { group: "k".into(), topic: "t".into(), partition: 0, offset: 6, at_ms: 0 });
        // Each group keeps its newest commit time (for expiry by age); an
        // older one (another node's clock) does not move it back.
        s.apply(MetaCommand::CommitOffset { group: "g".into(), topic: "t".into(), partition: 1, offset: 5, at_ms: 700 });
        assert_eq!(s.group_commit_ms["g"], 900);
        let from_older_node: MetaCommand = serde_json::from_str(r#"{"op":"commit_offset","group":"g","topic":"t","partition":2,"offset":1}"#).unwrap();
        s.apply(from_older_node);
        assert_eq!((s.group_commit_ms["g"], s.offsets["g"]["t"][&2]), (900, 1));
        // An expiry decided before the newest commit is refused.
        let expire = |after| MetaCommand::DeleteGroup { group: "g".into(), unless_committed_after_ms: Some(after) };
        assert!(matches!(s.apply(expire(899)), MetaResponse::Error { ref code, .. } if code == "conflict"));
        assert_eq!(s.offsets["g"]["t"][&0], 5, "a refused expiry changes nothing");
        assert_eq!(s.apply(expire(900)), MetaResponse::Ok);
        assert!(!s.groups.contains_key("g") && !s.offsets.contains_key("g") && !s.group_commit_ms.contains_key("g"));
        s.apply(MetaCommand::CommitOffset { group: "g".into(), topic: "t".into(), partition: 0, offset: 5, at_ms: 900 });
        assert_eq!(s.apply(MetaCommand::DeleteGroup { group: "g".into(), unless_committed_after_ms: None }), MetaResponse::Ok);
        assert_eq!(s.offsets["k"]["t"][&0], 6);
        assert!(matches!(s.apply(MetaCommand::DeleteGroup { group: "g".into(), unless_committed_after_ms: None }), MetaResponse::Error { ref code, .. } if code == "not_found"));
        // Snapshots from before groups were replicated restore with none.
        let old: MetaState = serde_json::from_str(r#"{"nodes":{},"topics":{},"offsets":{},"next_group":1,"applied":0}"#).unwrap();
        assert!(old.groups.is_empty() && old.group_commit_ms.is_empty());
    }

    #[test]
    fn create_table_allocates_a_group_after_partitions_and_places_replicas() {
        let mut s = MetaState::default();
        for id in 1..=3 {
            s.apply(node(id, &[Role::Control, Role::Data]));
        }
        s.apply(MetaCommand::CreateTopic { name: "t".into(), partitions: 2, replicas: 1, config: Default::default() });
        let MetaResponse::Table(t) = s.apply(MetaCommand::CreateTable { name: "cfg".into(), replicas: 3, max_tables: None }) else { panic!("expected a table") };
        assert_eq!(t.group, 3);
        assert_eq!(t.replicas.len(), 3);
        let dup = s.apply(MetaCommand::CreateTable { name: "cfg".into(), replicas: 1, max_tables: None });
        assert!(matches!(dup, MetaResponse::Error { ref code, .. } if code == "conflict"));
        let too_many = s.apply(MetaCommand::CreateTable { name: "x".into(), replicas: 4, max_tables: None });
        assert!(matches!(too_many, MetaResponse::Error { ref code, .. } if code == "validation"));
        assert_eq!(s.apply(MetaCommand::DropTable { name: "cfg".into() }), MetaResponse::Ok);
        let MetaResponse::Table(t2) = s.apply(MetaCommand::CreateTable { name: "cfg".into(), replicas: 1, max_tables: None }) else { panic!("expected a table") };
        assert_eq!(t2.group, 4, "group ids are never reused");
        // tables.max_tables travels in the command and is checked at apply (same answer everywhere).
        let full = s.apply(MetaCommand::CreateTable { name: "y".into(), replicas: 1, max_tables: Some(1) });
        assert!(matches!(full, MetaResponse::Error { ref code, .. } if code == "too_many"));
        assert!(matches!(s.apply(MetaCommand::CreateTable { name: "y".into(), replicas: 1, max_tables: Some(2) }), MetaResponse::Table(_)));
        // gRPC addresses: members only, forgotten with the node.
        assert!(matches!(s.apply(MetaCommand::SetGrpcAddr { id: 9, addr: "h:1".into() }), MetaResponse::Error { ref code, .. } if code == "not_found"));
        assert_eq!(s.apply(MetaCommand::SetGrpcAddr { id: 2, addr: "127.0.0.1:7402".into() }), MetaResponse::Ok);
        assert_eq!(s.grpc_addrs.get(&2).map(String::as_str), Some("127.0.0.1:7402"));
        assert_eq!(s.apply(MetaCommand::RemoveNode { id: 2 }), MetaResponse::Ok);
        assert!(s.grpc_addrs.is_empty());
        // A snapshot without tables (older format) still restores.
        let old: MetaState = serde_json::from_str(r#"{"nodes":{},"topics":{},"offsets":{},"next_group":1,"applied":0}"#).unwrap();
        assert!(old.tables.is_empty());
    }

    #[test]
    fn snapshot_round_trip_and_garbage_commands() {
        let state = Arc::new(RwLock::new(MetaState::default()));
        let mut sm = MetaSm::new(state.clone());
        sm.apply(1, &bytes::Bytes::from(serde_json::to_vec(&node(1, &[Role::Control, Role::Data])).unwrap()));
        let bad: MetaResponse = serde_json::from_slice(&sm.apply(2, &bytes::Bytes::from_static(b"{not json"))).unwrap();
        assert!(matches!(bad, MetaResponse::Error { .. }));
        let snap = sm.snapshot();
        let mut other = MetaSm::new(Arc::default());
        other.restore(&snap).unwrap();
        assert_eq!(*other.state.read().unwrap(), *state.read().unwrap());
        assert!(other.restore(b"garbage").is_err());
        assert_eq!(Role::parse_list("data, control").unwrap(), vec![Role::Control, Role::Data]);
        assert!(Role::parse_list("boss").is_err());
    }
}
