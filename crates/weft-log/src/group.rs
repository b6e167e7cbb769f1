//! Consumer-group membership and partition assignment: pure logic, no I/O.
//! Time comes in as `now_ms` arguments; member ids are made from a counter
//! and the time (no randomness inside).
//!
//! Protocol (simpler than Kafka's two-round join/sync: the coordinator
//! assigns, as in Kafka's KIP-848):
//! - `join` adds (or refreshes) a member with its subscribed topics. A new
//!   member, a changed subscription, a `leave` or an expired session starts
//!   a new generation: the generation id goes up by one and every
//!   partition of the subscribed topics is reassigned among the members.
//! - `heartbeat` keeps a member alive and returns the current generation
//!   and the member's assignment; a member whose generation differs must
//!   stop consuming the partitions it lost, commit them, and then
//!   acknowledge the generation (a heartbeat carrying it). An unknown member
//!   (expired) must join again.
//! - Hand-off (cooperative, as Kafka's KIP-429/848): a partition that moves
//!   from a live member A to B in a new generation stays A's (A may still
//!   commit it; B is not given it) until A acknowledges the generation,
//!   leaves, expires, or lets its session timeout pass without
//!   acknowledging. So at any moment a partition has one owner, and the new
//!   owner starts from what the previous one committed.
//! - A member is expired when no heartbeat arrived for `session_timeout_ms`.
//! - Commits carrying a member id must carry the current generation, and
//!   each partition must be owned by that member (fencing of zombies);
//!   commits without a member id are accepted only while the group has no
//!   members (standalone consumers, `reset-offsets`).
//!
//! Assignment strategies (chosen by the first member; the group keeps it
//! while it has members):
//! - `range`: for each topic, its subscribers sorted by member id get
//!   contiguous partition ranges; with P partitions and M subscribers each
//!   gets P / M and the first P % M get one more.
//! - `roundrobin`: all (topic, partition) pairs sorted by topic then
//!   partition are dealt one by one to the members sorted by id, skipping
//!   members not subscribed to that topic.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::log::{Log, OffsetCommit, OffsetSpec};
use crate::model::{Offset, PartitionId, TopicName};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentStrategy {
    #[default]
    Range,
    RoundRobin,
}

impl std::str::FromStr for AssignmentStrategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "range" => Ok(AssignmentStrategy::Range),
            "roundrobin" | "round-robin" => Ok(AssignmentStrategy::RoundRobin),
            _ => Err(format!("unknown assignment strategy {s:?} (range, roundrobin)")),
        }
    }
}

pub type Assignment = Vec<(TopicName, PartitionId)>;

/// Where a consumer starts when it has no valid position: no committed
/// offset, or a committed / requested offset outside the log (removed by
/// retention, or past the end). Kafka's `auto.offset.reset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetPolicy {
    /// The first offset still stored (Weft's default: nothing is skipped).
    #[default]
    Earliest,
    /// The end of the log: only records written from now on.
    Latest,
    /// No reset: the consumer gets an `out_of_range` error.
    None,
}

impl ResetPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ResetPolicy::Earliest => "earliest",
            ResetPolicy::Latest => "latest",
            ResetPolicy::None => "none",
        }
    }
}

impl std::fmt::Display for ResetPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ResetPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "earliest" => Ok(ResetPolicy::Earliest),
            "latest" => Ok(ResetPolicy::Latest),
            "none" => Ok(ResetPolicy::None),
            _ => Err(format!("unknown reset policy {s:?} (earliest, latest, none)")),
        }
    }
}

/// What a member gets back from join and heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub group: String,
    pub member_id: String,
    pub generation: u32,
    pub assignment: Assignment,
    pub members: usize,
    /// Partitions of this member's target assignment still held by their
    /// previous owner (they arrive in a later heartbeat, after hand-off).
    #[serde(default)]
    pub pending: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub topics: Vec<TopicName>,
    pub assignment: Assignment,
    pub session_timeout_ms: u64,
    pub last_heartbeat_ms: i64,
    /// Partitions it still holds from an earlier generation (hand-off not
    /// yet acknowledged).
    #[serde(default)]
    pub revoking: Assignment,
}

/// A group's membership without the heartbeat times: what a cluster
/// replicates so that another node can take over as coordinator and keep
/// the generation (docs/cluster.md, "Consumer groups").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub generation: u32,
    #[serde(default)]
    pub strategy: AssignmentStrategy,
    pub members: BTreeMap<String, MemberSnapshot>,
    /// Target assignment of the current generation, per member.
    #[serde(default)]
    pub assignment: BTreeMap<String, Assignment>,
    /// Who holds each partition now (the target, or the previous owner until it acknowledged).
    #[serde(default)]
    pub owners: Vec<(TopicName, PartitionId, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub client_id: String,
    pub topics: Vec<TopicName>,
    pub session_timeout_ms: u64,
}

#[derive(Debug, Clone)]
struct Member {
    client_id: String,
    topics: BTreeSet<TopicName>,
    session_timeout_ms: u64,
    last_heartbeat_ms: i64,
}

#[derive(Debug, Clone, Default)]
struct Group {
    generation: u32,
    strategy: AssignmentStrategy,
    members: BTreeMap<String, Member>,
    /// Target assignment of the current generation.
    assignment: BTreeMap<String, Assignment>,
    /// Who holds each partition now: the target member, or the previous
    /// owner until it acknowledges the generation.
    owners: BTreeMap<(TopicName, PartitionId), String>,
    rebalanced_ms: i64,
}

/// Membership of all groups.
#[derive(Debug)]
pub struct GroupCoordinator {
    groups: BTreeMap<String, Group>,
    next_member: u64,
    max_groups: usize,
    max_members: usize,
    max_session_timeout_ms: u64,
}

/// Limits on a group name.
pub const GROUP_NAME_MAX_LEN: usize = 255;

pub fn validate_group_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > GROUP_NAME_MAX_LEN || name.chars().any(|c| c.is_control()) {
        return Err(LogError::InvalidRequest(format!(
            "group name must be 1..={GROUP_NAME_MAX_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

impl GroupCoordinator {
    pub fn new(max_groups: usize, max_members: usize, max_session_timeout_ms: u64) -> Self {
        GroupCoordinator { groups: BTreeMap::new(), next_member: 0, max_groups, max_members, max_session_timeout_ms }
    }

    /// Joins (or re-joins) a group. `partitions(topic)` gives a topic's
    /// partition count (`None` = unknown topic, which gets nothing assigned).
    #[allow(clippy::too_many_arguments)]
    pub fn join(
        &mut self,
        group: &str,
        member_id: Option<&str>,
        client_id: &str,
        topics: &[TopicName],
        strategy: AssignmentStrategy,
        session_timeout_ms: u64,
        now_ms: i64,
        partitions: &dyn Fn(&TopicName) -> Option<u32>,
    ) -> Result<MemberState> {
        validate_group_name(group)?;
        if topics.is_empty() {
            return Err(LogError::InvalidRequest("a member must subscribe to at least one topic".into()));
        }
        if session_timeout_ms == 0 || session_timeout_ms > self.max_session_timeout_ms {
            return Err(LogError::InvalidRequest(format!(
                "session_timeout_ms must be 1..={}",
                self.max_session_timeout_ms
            )));
        }
        if !self.groups.contains_key(group) && self.groups.len() >= self.max_groups {
            return Err(LogError::InvalidRequest(format!("too many groups (limit {})", self.max_groups)));
        }
        let g = self.groups.entry(group.to_string()).or_default();
        let id = match member_id {
            Some(id) if g.members.contains_key(id) => id.to_string(),
            Some(id) => return Err(LogError::UnknownMember { group: group.into(), member: id.into() }),
            None => {
                if g.members.len() >= self.max_members {
                    return Err(LogError::InvalidRequest(format!("group {group:?} is full (limit {})", self.max_members)));
                }
                self.next_member += 1;
                format!("{}-{}-{}", if client_id.is_empty() { "member" } else { client_id }, now_ms, self.next_member)
            }
        };
        let topics: BTreeSet<TopicName> = topics.iter().cloned().collect();
        // A rejoin with a known id acknowledges the current generation.
        let rejoin = g.members.contains_key(&id);
        let changed = match g.members.get_mut(&id) {
            Some(m) => {
                m.last_heartbeat_ms = now_ms;
                m.session_timeout_ms = session_timeout_ms;
                let changed = m.topics != topics;
                m.topics = topics;
                changed
            }
            None => {
                if g.members.is_empty() {
                    g.strategy = strategy;
                }
                g.members.insert(
                    id.clone(),
                    Member { client_id: client_id.to_string(), topics, session_timeout_ms, last_heartbeat_ms: now_ms },
                );
                true
            }
        };
        if rejoin {
            release(g, &id);
        }
        if changed {
            rebalance(g, partitions, now_ms);
        }
        Ok(state(group, g, &id))
    }

    /// Keeps a member alive; returns its current generation and assignment.
    /// `ack` is the generation the member has adopted (it stopped consuming
    /// and committed what it lost): when it is the current one, partitions
    /// it gave up go to their new owners. `None` (older clients) counts as
    /// an acknowledgement too.
    pub fn heartbeat(&mut self, group: &str, member_id: &str, ack: Option<u32>, now_ms: i64) -> Result<MemberState> {
        let g = self.groups.get_mut(group).ok_or_else(|| LogError::UnknownMember { group: group.into(), member: member_id.into() })?;
        let m = g.members.get_mut(member_id).ok_or_else(|| LogError::UnknownMember { group: group.into(), member: member_id.into() })?;
        m.last_heartbeat_ms = now_ms;
        if ack.is_none_or(|a| a == g.generation) {
            release(g, member_id);
        }
        Ok(state(group, g, member_id))
    }

    /// Removes a member and rebalances the others.
    pub fn leave(&mut self, group: &str, member_id: &str, now_ms: i64, partitions: &dyn Fn(&TopicName) -> Option<u32>) -> Result<()> {
        let g = self.groups.get_mut(group).ok_or_else(|| LogError::UnknownMember { group: group.into(), member: member_id.into() })?;
        if g.members.remove(member_id).is_none() {
            return Err(LogError::UnknownMember { group: group.into(), member: member_id.into() });
        }
        rebalance(g, partitions, now_ms);
        Ok(())
    }

    /// Expires members whose session timed out; returns (group, member) removed.
    pub fn expire(&mut self, now_ms: i64, partitions: &dyn Fn(&TopicName) -> Option<u32>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, g) in self.groups.iter_mut() {
            let dead: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| now_ms.saturating_sub(m.last_heartbeat_ms) > m.session_timeout_ms as i64)
                .map(|(id, _)| id.clone())
                .collect();
            // A live member that has not handed off what it lost within its
            // session timeout loses it anyway (Kafka's rebalance timeout), so
            // a stuck or old client cannot hold a partition forever.
            let slow: Vec<String> = g
                .members
                .iter()
                .filter(|(_, m)| now_ms.saturating_sub(g.rebalanced_ms) > m.session_timeout_ms as i64)
                .map(|(id, _)| id.clone())
                .collect();
            for id in slow {
                release(g, &id);
            }
            if dead.is_empty() {
                continue;
            }
            for id in dead {
                tracing::info!(group = %name, member = %id, "consumer group member expired");
                g.members.remove(&id);
                out.push((name.clone(), id));
            }
            rebalance(g, partitions, now_ms);
        }
        out
    }

    /// Reassigns when partition counts changed (topic created or deleted).
    pub fn refresh(&mut self, now_ms: i64, partitions: &dyn Fn(&TopicName) -> Option<u32>) {
        for g in self.groups.values_mut() {
            if g.members.is_empty() {
                continue;
            }
            let fresh = assign(g.strategy, &g.members, partitions);
            if fresh != g.assignment {
                rebalance(g, partitions, now_ms);
            }
        }
    }

    /// Number of live members of a group (0 for an unknown group).
    pub fn member_count(&self, group: &str) -> usize {
        self.groups.get(group).map_or(0, |g| g.members.len())
    }

    /// Fencing check for a commit of `parts` (topic, partition).
    pub fn check_commit(&self, group: &str, member: Option<(&str, u32)>, parts: &[(&str, PartitionId)]) -> Result<()> {
        validate_group_name(group)?;
        let g = self.groups.get(group);
        match (member, g) {
            (None, None) => Ok(()),
            (None, Some(g)) if g.members.is_empty() => Ok(()),
            (None, Some(_)) => Err(LogError::InvalidRequest(format!(
                "group {group:?} has active members: commits must carry a member id and generation"
            ))),
            (Some((id, _)), None) => Err(LogError::UnknownMember { group: group.into(), member: id.into() }),
            (Some((id, generation)), Some(g)) => {
                if !g.members.contains_key(id) {
                    return Err(LogError::UnknownMember { group: group.into(), member: id.into() });
                }
                if generation != g.generation {
                    return Err(LogError::IllegalGeneration { group: group.into(), got: generation, current: g.generation });
                }
                for (t, p) in parts {
                    let owner = g.owners.iter().find(|((ot, op), _)| ot.as_str() == *t && op == p).map(|(_, o)| o.as_str());
                    if owner != Some(id) {
                        return Err(LogError::NotAssigned {
                            group: group.into(),
                            member: id.into(),
                            topic: (*t).to_string(),
                            partition: *p,
                        });
                    }
                }
                Ok(())
            }
        }
    }

    /// Every group's membership, generation, assignment and owners (no heartbeat times).
    pub fn export(&self) -> BTreeMap<String, GroupSnapshot> {
        self.groups
            .iter()
            .map(|(name, g)| {
                let members = g
                    .members
                    .iter()
                    .map(|(id, m)| (id.clone(), MemberSnapshot { client_id: m.client_id.clone(), topics: m.topics.iter().cloned().collect(), session_timeout_ms: m.session_timeout_ms }))
                    .collect();
                let owners = g.owners.iter().map(|((t, p), o)| (t.clone(), *p, o.clone())).collect();
                (name.clone(), GroupSnapshot { generation: g.generation, strategy: g.strategy, members, assignment: g.assignment.clone(), owners })
            })
            .collect()
    }

    /// Replace every group with `groups` (a new coordinator taking over).
    /// Each member's session starts afresh at `now_ms`: heartbeats were
    /// not replicated, so each gets a full session timeout to reach the new
    /// coordinator; the hand-off timer restarts too.
    pub fn import(&mut self, groups: BTreeMap<String, GroupSnapshot>, now_ms: i64) {
        let mut out = BTreeMap::new();
        for (name, s) in groups {
            let members: BTreeMap<String, Member> = s
                .members
                .into_iter()
                .map(|(id, m)| {
                    // Member ids end in a counter: new ones must not repeat an imported one.
                    if let Some(n) = id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()) {
                        self.next_member = self.next_member.max(n);
                    }
                    (id, Member { client_id: m.client_id, topics: m.topics.into_iter().collect(), session_timeout_ms: m.session_timeout_ms, last_heartbeat_ms: now_ms })
                })
                .collect();
            let owners = s.owners.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
            out.insert(name, Group { generation: s.generation, strategy: s.strategy, members, assignment: s.assignment, owners, rebalanced_ms: now_ms });
        }
        self.groups = out;
    }

    /// Forget a group with no members (deleted); whether it was known.
    /// Refused ([`LogError::GroupActive`]) while it has members.
    pub fn forget(&mut self, group: &str) -> Result<bool> {
        match self.groups.get(group).map(|g| g.members.len()) {
            Some(members) if members > 0 => Err(LogError::GroupActive { group: group.into(), members }),
            _ => Ok(self.groups.remove(group).is_some()),
        }
    }

    pub fn group_names(&self) -> Vec<String> {
        self.groups.keys().cloned().collect()
    }

    /// (generation, strategy, members) of a group, if known.
    pub fn describe(&self, group: &str) -> Option<(u32, AssignmentStrategy, Vec<MemberDescription>)> {
        let g = self.groups.get(group)?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                client_id: m.client_id.clone(),
                topics: m.topics.iter().cloned().collect(),
                assignment: owned(g, id),
                session_timeout_ms: m.session_timeout_ms,
                last_heartbeat_ms: m.last_heartbeat_ms,
                revoking: revoking(g, id),
            })
            .collect();
        Some((g.generation, g.strategy, members))
    }
}

fn state(group: &str, g: &Group, id: &str) -> MemberState {
    let target = g.assignment.get(id).map_or(0, Vec::len);
    let assignment = owned(g, id);
    MemberState {
        group: group.to_string(),
        member_id: id.to_string(),
        generation: g.generation,
        pending: target.saturating_sub(assignment.len()),
        assignment,
        members: g.members.len(),
    }
}

/// The part of `id`'s target assignment it holds now.
fn owned(g: &Group, id: &str) -> Assignment {
    let target = g.assignment.get(id).map(Vec::as_slice).unwrap_or_default();
    target.iter().filter(|tp| g.owners.get(*tp).is_some_and(|o| o == id)).cloned().collect()
}

/// Partitions `id` holds that belong to someone else's target.
fn revoking(g: &Group, id: &str) -> Assignment {
    let target = g.assignment.get(id).map(Vec::as_slice).unwrap_or_default();
    g.owners.iter().filter(|(tp, o)| *o == id && !target.contains(tp)).map(|(tp, _)| tp.clone()).collect()
}

/// `id` acknowledged the generation: what it gave up goes to the targets.
fn release(g: &mut Group, id: &str) {
    for (member, parts) in &g.assignment {
        if member == id {
            continue;
        }
        for tp in parts {
            if let Some(o) = g.owners.get_mut(tp)
                && o == id
            {
                tracing::debug!(from = %id, to = %member, topic = %tp.0, partition = tp.1.0, "partition handed off");
                *o = member.clone();
            }
        }
    }
}

fn rebalance(g: &mut Group, partitions: &dyn Fn(&TopicName) -> Option<u32>, now_ms: i64) {
    g.generation = g.generation.wrapping_add(1);
    g.assignment = assign(g.strategy, &g.members, partitions);
    // A partition stays with a live previous owner until it acknowledges;
    // one whose owner is gone (left, expired) or that is new goes straight
    // to its target. Partitions no longer assigned at all are forgotten.
    let mut owners = BTreeMap::new();
    for (member, parts) in &g.assignment {
        for tp in parts {
            let owner = match g.owners.get(tp) {
                Some(prev) if prev != member && g.members.contains_key(prev) => prev.clone(),
                _ => member.clone(),
            };
            owners.insert(tp.clone(), owner);
        }
    }
    g.owners = owners;
    g.rebalanced_ms = now_ms;
    tracing::debug!(generation = g.generation, members = g.members.len(), "consumer group rebalanced");
}

fn assign(
    strategy: AssignmentStrategy,
    members: &BTreeMap<String, Member>,
    partitions: &dyn Fn(&TopicName) -> Option<u32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members.keys().map(|k| (k.clone(), Vec::new())).collect();
    let topics: BTreeSet<&TopicName> = members.values().flat_map(|m| m.topics.iter()).collect();
    match strategy {
        AssignmentStrategy::Range => {
            for t in topics {
                let n = partitions(t).unwrap_or(0);
                let subs: Vec<&String> = members.iter().filter(|(_, m)| m.topics.contains(t)).map(|(id, _)| id).collect();
                let m = subs.len() as u32;
                if m == 0 {
                    continue;
                }
                let (each, extra) = (n / m, n % m);
                let mut p = 0;
                for (i, id) in subs.iter().enumerate() {
                    let count = each + u32::from((i as u32) < extra);
                    if let Some(a) = out.get_mut(*id) {
                        a.extend((p..p + count).map(|x| (t.clone(), PartitionId(x))));
                    }
                    p += count;
                }
            }
        }
        AssignmentStrategy::RoundRobin => {
            let ids: Vec<&String> = members.keys().collect();
            let mut next = 0usize;
            for t in topics {
                for p in 0..partitions(t).unwrap_or(0) {
                    // Deal to the next subscribed member (at most one full turn).
                    for _ in 0..ids.len() {
                        let id = ids[next % ids.len()];
                        next += 1;
                        if members.get(id).is_some_and(|m| m.topics.contains(t)) {
                            if let Some(a) = out.get_mut(id) {
                                a.push((t.clone(), PartitionId(p)));
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
    out
}

/// Where `reset_group_offsets` moves a group (kafka-consumer-groups
/// `--to-earliest`, `--to-latest`, `--to-offset`, `--to-datetime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTarget {
    Earliest,
    Latest,
    /// Clamped to [log start, end], as Kafka does.
    Offset(u64),
    /// The first record at or after this time (ms since the epoch), by the
    /// time index; the end when there is none.
    Timestamp(i64),
}

/// One partition of a `reset_group_offsets` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetReset {
    pub topic: String,
    pub partition: PartitionId,
    /// Committed offset before the reset.
    pub previous: Option<Offset>,
    /// Committed offset after it (or that would be, on a dry run).
    pub offset: Offset,
    pub log_start: Offset,
    pub latest: Offset,
}

/// Where a consumer starts on one partition, and whether a policy chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartOffset {
    pub offset: Offset,
    /// Set when `wanted` was absent or outside the log and `policy` chose.
    pub reset: bool,
}

impl Log {
    /// Moves a group's committed offsets on `topic` (one partition or all).
    /// Refused while the group has live members ([`LogError::GroupActive`]):
    /// they would overwrite it with their next commit. A group that does not
    /// exist yet is created with these offsets. `dry_run` computes without
    /// writing.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        partition: Option<PartitionId>,
        to: ResetTarget,
        dry_run: bool,
    ) -> Result<Vec<OffsetReset>> {
        validate_group_name(group)?;
        let members = self.group_member_count(group);
        if members > 0 {
            return Err(LogError::GroupActive { group: group.into(), members });
        }
        let count = self.describe_topic(topic)?.partitions.len() as u32;
        let parts: Vec<PartitionId> = match partition {
            Some(p) if p.0 >= count => {
                return Err(LogError::UnknownPartition { topic: topic.into(), partition: p, partitions: count });
            }
            Some(p) => vec![p],
            None => (0..count).map(PartitionId).collect(),
        };
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            let log_start = self.list_offset(topic, p, OffsetSpec::Earliest)?;
            let latest = self.list_offset(topic, p, OffsetSpec::Latest)?;
            let offset = match to {
                ResetTarget::Earliest => log_start,
                ResetTarget::Latest => latest,
                ResetTarget::Offset(o) => Offset(o).clamp(log_start, latest),
                ResetTarget::Timestamp(ts) => self.list_offset(topic, p, OffsetSpec::Timestamp(ts))?.clamp(log_start, latest),
            };
            let previous = self.committed_offset(group, topic, p).map(|c| c.offset);
            out.push(OffsetReset { topic: topic.into(), partition: p, previous, offset, log_start, latest });
        }
        if !dry_run {
            let commits = out
                .iter()
                .map(|r| OffsetCommit { topic: r.topic.clone(), partition: r.partition, offset: r.offset, metadata: "reset-offsets".into() })
                .collect();
            self.commit_offsets(group, None, commits).await?;
            tracing::info!(group, topic, partitions = out.len(), ?to, "group offsets reset");
        }
        Ok(out)
    }

    /// Where to start on a partition: `wanted` (a committed or requested
    /// offset) when it is inside the log (log start ..= end), else what
    /// `policy` says; [`LogError::NoResetPolicy`] for `none`.
    pub fn start_offset(&self, topic: &str, partition: PartitionId, wanted: Option<Offset>, policy: ResetPolicy) -> Result<StartOffset> {
        let earliest = self.list_offset(topic, partition, OffsetSpec::Earliest)?;
        let latest = self.list_offset(topic, partition, OffsetSpec::Latest)?;
        if let Some(w) = wanted
            && (earliest..=latest).contains(&w)
        {
            return Ok(StartOffset { offset: w, reset: false });
        }
        let offset = match policy {
            ResetPolicy::Earliest => earliest,
            ResetPolicy::Latest => latest,
            ResetPolicy::None => {
                let what = match wanted {
                    Some(w) => format!("offset {w} is out of range"),
                    None => "no committed offset".to_string(),
                };
                return Err(LogError::NoResetPolicy { what, topic: topic.into(), partition, requested: wanted, earliest, latest });
            }
        };
        Ok(StartOffset { offset, reset: true })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t(s: &str) -> TopicName {
        TopicName::new(s).unwrap()
    }
    fn counts(t: &TopicName) -> Option<u32> {
        match t.as_str() {
            "a" => Some(5),
            "b" => Some(2),
            _ => None,
        }
    }

    #[test]
    fn range_and_rebalance_on_join_leave_expire() {
        let mut c = GroupCoordinator::new(10, 10, 60_000);
        let m1 = c.join("g", None, "c1", &[t("a")], AssignmentStrategy::Range, 1000, 0, &counts).unwrap();
        assert_eq!(m1.generation, 1);
        assert_eq!(m1.assignment.len(), 5);
        let m2 = c.join("g", None, "c2", &[t("a")], AssignmentStrategy::Range, 1000, 10, &counts).unwrap();
        assert_eq!(m2.generation, 2);
        let h1 = c.heartbeat("g", &m1.member_id, None, 20).unwrap();
        assert_eq!(h1.generation, 2);
        // 5 partitions over 2 members: 3 + 2, contiguous.
        let ps: Vec<u32> = h1.assignment.iter().map(|(_, p)| p.0).collect();
        assert_eq!(ps, vec![0, 1, 2]);
        // m2 got nothing at join: m1 held 3 and 4 until its heartbeat
        // acknowledged generation 2.
        assert!(m2.assignment.is_empty());
        assert_eq!(m2.pending, 2);
        let h2 = c.heartbeat("g", &m2.member_id, Some(2), 25).unwrap();
        assert_eq!(h2.assignment.iter().map(|(_, p)| p.0).collect::<Vec<_>>(), vec![3, 4]);
        // Stale generation is fenced.
        let p0 = [("a", PartitionId(0))];
        assert!(matches!(c.check_commit("g", Some((&m1.member_id, 1)), &p0), Err(LogError::IllegalGeneration { .. })));
        assert!(c.check_commit("g", Some((&m1.member_id, 2)), &p0).is_ok());
        // m1 gave partition 3 to m2: it can no longer commit it.
        let p3 = [("a", PartitionId(3))];
        assert!(matches!(c.check_commit("g", Some((&m1.member_id, 2)), &p3), Err(LogError::NotAssigned { .. })));
        assert!(c.check_commit("g", None, &[]).is_err());
        // m2 stops heartbeating: expired after its session timeout.
        assert!(c.expire(900, &counts).is_empty());
        c.heartbeat("g", &m1.member_id, None, 1500).unwrap();
        let gone = c.expire(1500, &counts);
        assert_eq!(gone, vec![("g".to_string(), m2.member_id.clone())]);
        let h1 = c.heartbeat("g", &m1.member_id, None, 1600).unwrap();
        assert_eq!(h1.generation, 3);
        assert_eq!(h1.assignment.len(), 5);
        assert!(matches!(c.heartbeat("g", &m2.member_id, None, 1600), Err(LogError::UnknownMember { .. })));
        c.leave("g", &m1.member_id, 1700, &counts).unwrap();
        assert!(c.check_commit("g", None, &[]).is_ok());
    }

    #[test]
    fn export_import_keeps_generation_and_restarts_sessions() {
        let mut c = GroupCoordinator::new(10, 10, 60_000);
        let m1 = c.join("g", None, "c1", &[t("a")], AssignmentStrategy::Range, 1000, 0, &counts).unwrap();
        let m2 = c.join("g", None, "c2", &[t("a")], AssignmentStrategy::Range, 1000, 10, &counts).unwrap();
        let snap = c.export();
        // Through JSON, as a cluster replicates it.
        let snap: BTreeMap<String, GroupSnapshot> = serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();
        let mut d = GroupCoordinator::new(10, 10, 60_000);
        d.import(snap, 5000);
        assert_eq!(d.export(), c.export());
        // Sessions restart at the import: nobody expires before 5000 + 1000.
        assert!(d.expire(5900, &counts).is_empty());
        // The same generation, and the hand-off still waits for m1's acknowledgement.
        let h2 = d.heartbeat("g", &m2.member_id, Some(2), 5100).unwrap();
        assert_eq!((h2.generation, h2.assignment.len(), h2.pending), (2, 0, 2));
        let h1 = d.heartbeat("g", &m1.member_id, Some(2), 5200).unwrap();
        assert_eq!((h1.generation, h1.assignment.len()), (2, 3));
        assert_eq!(d.heartbeat("g", &m2.member_id, Some(2), 5300).unwrap().assignment.len(), 2);
        // A new member's id does not repeat an imported one.
        let m3 = d.join("g", None, "c2", &[t("a")], AssignmentStrategy::Range, 1000, 10, &counts).unwrap();
        assert_ne!(m3.member_id, m2.member_id);
        assert_eq!(m3.generation, 3);
        // Importing nothing forgets every group.
        d.import(BTreeMap::new(), 6000);
        assert!(d.group_names().is_empty());
    }

    #[test]
    fn roundrobin_mixed_subscriptions() {
        let mut c = GroupCoordinator::new(10, 10, 60_000);
        let m1 = c.join("g", None, "x", &[t("a"), t("b")], AssignmentStrategy::RoundRobin, 1000, 0, &counts).unwrap();
        let m2 = c.join("g", None, "y", &[t("a")], AssignmentStrategy::Range, 1000, 0, &counts).unwrap();
        c.heartbeat("g", &m1.member_id, Some(m2.generation), 1).unwrap();
        let (_, strategy, members) = c.describe("g").unwrap();
        assert_eq!(strategy, AssignmentStrategy::RoundRobin);
        let total: usize = members.iter().map(|m| m.assignment.len()).sum();
        assert_eq!(total, 7);
        let a2 = &members.iter().find(|m| m.member_id == m2.member_id).unwrap().assignment;
        assert!(a2.iter().all(|(t, _)| t.as_str() == "a"));
        let a1 = &members.iter().find(|m| m.member_id == m1.member_id).unwrap().assignment;
        assert_eq!(a1.iter().filter(|(t, _)| t.as_str() == "b").count(), 2);
        // Every partition exactly once.
        let mut all: Vec<_> = members.iter().flat_map(|m| m.assignment.clone()).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 7);
    }

    /// Random joins, leaves, heartbeats and expiries: after every step each
    /// partition of a subscribed topic belongs to exactly one live member
    /// subscribed to it, and the generation never goes down.
    #[test]
    fn random_membership_keeps_assignment_invariants() {
        let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for strategy in [AssignmentStrategy::Range, AssignmentStrategy::RoundRobin] {
            let mut c = GroupCoordinator::new(10, 50, 60_000);
            let mut live: Vec<String> = Vec::new();
            let mut now = 0i64;
            let mut last_gen = 0;
            for _ in 0..500 {
                now += (next() % 300) as i64;
                match next() % 5 {
                    0 | 1 => {
                        let topics = match next() % 3 {
                            0 => vec![t("a")],
                            1 => vec![t("b")],
                            _ => vec![t("a"), t("b")],
                        };
                        let m = c.join("g", None, "c", &topics, strategy, 1000, now, &counts).unwrap();
                        live.push(m.member_id);
                    }
                    2 if !live.is_empty() => {
                        let id = live.remove((next() as usize) % live.len());
                        c.leave("g", &id, now, &counts).unwrap();
                    }
                    _ => {
                        for id in &live {
                            match next() % 4 {
                                0 => {}
                                1 => {
                                    // a stale acknowledgement hands nothing off
                                    c.heartbeat("g", id, Some(0), now).unwrap();
                                }
                                _ => {
                                    c.heartbeat("g", id, None, now).unwrap();
                                }
                            }
                        }
                        for (_, id) in c.expire(now, &counts) {
                            live.retain(|l| *l != id);
                        }
                    }
                }
                let Some((generation, _, members)) = c.describe("g") else { continue };
                assert!(generation >= last_gen);
                last_gen = generation;
                let mut ids: Vec<&String> = members.iter().map(|m| &m.member_id).collect();
                ids.sort();
                let mut l: Vec<&String> = live.iter().collect();
                l.sort();
                assert_eq!(ids, l);
                // Every partition has exactly one holder: its target member
                // or the previous owner that has not handed it off yet.
                let mut seen = BTreeSet::new();
                for m in &members {
                    for (topic, p) in &m.assignment {
                        assert!(m.topics.contains(topic), "assigned an unsubscribed topic");
                        assert!(seen.insert((topic.clone(), *p)), "partition assigned twice");
                    }
                    for tp in &m.revoking {
                        assert!(seen.insert(tp.clone()), "partition held twice");
                    }
                }
                for topic in [t("a"), t("b")] {
                    if members.iter().any(|m| m.topics.contains(&topic)) {
                        for p in 0..counts(&topic).unwrap() {
                            assert!(seen.contains(&(topic.clone(), PartitionId(p))), "{topic}/{p} unassigned");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn limits() {
        let mut c = GroupCoordinator::new(1, 1, 1000);
        assert!(c.join("g", None, "", &[t("a")], AssignmentStrategy::Range, 5000, 0, &counts).is_err());
        c.join("g", None, "", &[t("a")], AssignmentStrategy::Range, 500, 0, &counts).unwrap();
        assert!(c.join("g", None, "", &[t("a")], AssignmentStrategy::Range, 500, 0, &counts).is_err());
        assert!(c.join("h", None, "", &[t("a")], AssignmentStrategy::Range, 500, 0, &counts).is_err());
        assert!(c.join("", None, "", &[t("a")], AssignmentStrategy::Range, 500, 0, &counts).is_err());
    }
}
