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
//!   stop consuming the partitions it lost, commit, and adopt the new
//!   assignment. An unknown member (expired) must join again.
//! - A member is expired when no heartbeat arrived for `session_timeout_ms`.
//! - Commits carrying a member id must carry the current generation
//!   (fencing of zombies); commits without a member id are accepted only
//!   while the group has no members (standalone consumers).
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
use crate::model::{PartitionId, TopicName};

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

/// What a member gets back from join and heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub group: String,
    pub member_id: String,
    pub generation: u32,
    pub assignment: Assignment,
    pub members: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub topics: Vec<TopicName>,
    pub assignment: Assignment,
    pub session_timeout_ms: u64,
    pub last_heartbeat_ms: i64,
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
    assignment: BTreeMap<String, Assignment>,
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
        if changed {
            rebalance(g, partitions);
        }
        Ok(state(group, g, &id))
    }

    /// Keeps a member alive; returns its current generation and assignment.
    pub fn heartbeat(&mut self, group: &str, member_id: &str, now_ms: i64) -> Result<MemberState> {
        let g = self.groups.get_mut(group).ok_or_else(|| LogError::UnknownMember { group: group.into(), member: member_id.into() })?;
        let m = g.members.get_mut(member_id).ok_or_else(|| LogError::UnknownMember { group: group.into(), member: member_id.into() })?;
        m.last_heartbeat_ms = now_ms;
        Ok(state(group, g, member_id))
    }

    /// Removes a member and rebalances the others.
    pub fn leave(&mut self, group: &str, member_id: &str, partitions: &dyn Fn(&TopicName) -> Option<u32>) -> Result<()> {
        let g = self.groups.get_mut(group).ok_or_else(|| LogError::UnknownMember { group: group.into(), member: member_id.into() })?;
        if g.members.remove(member_id).is_none() {
            return Err(LogError::UnknownMember { group: group.into(), member: member_id.into() });
        }
        rebalance(g, partitions);
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
            if dead.is_empty() {
                continue;
            }
            for id in dead {
                tracing::info!(group = %name, member = %id, "consumer group member expired");
                g.members.remove(&id);
                out.push((name.clone(), id));
            }
            rebalance(g, partitions);
        }
        out
    }

    /// Reassigns when partition counts changed (topic created or deleted).
    pub fn refresh(&mut self, partitions: &dyn Fn(&TopicName) -> Option<u32>) {
        for g in self.groups.values_mut() {
            if g.members.is_empty() {
                continue;
            }
            let fresh = assign(g.strategy, &g.members, partitions);
            if fresh != g.assignment {
                rebalance(g, partitions);
            }
        }
    }

    /// Fencing check for a commit.
    pub fn check_commit(&self, group: &str, member: Option<(&str, u32)>) -> Result<()> {
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
                Ok(())
            }
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
                assignment: g.assignment.get(id).cloned().unwrap_or_default(),
                session_timeout_ms: m.session_timeout_ms,
                last_heartbeat_ms: m.last_heartbeat_ms,
            })
            .collect();
        Some((g.generation, g.strategy, members))
    }
}

fn state(group: &str, g: &Group, id: &str) -> MemberState {
    MemberState {
        group: group.to_string(),
        member_id: id.to_string(),
        generation: g.generation,
        assignment: g.assignment.get(id).cloned().unwrap_or_default(),
        members: g.members.len(),
    }
}

fn rebalance(g: &mut Group, partitions: &dyn Fn(&TopicName) -> Option<u32>) {
    g.generation = g.generation.wrapping_add(1);
    g.assignment = assign(g.strategy, &g.members, partitions);
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
        let h1 = c.heartbeat("g", &m1.member_id, 20).unwrap();
        assert_eq!(h1.generation, 2);
        // 5 partitions over 2 members: 3 + 2, contiguous.
        let ps: Vec<u32> = h1.assignment.iter().map(|(_, p)| p.0).collect();
        assert_eq!(ps, vec![0, 1, 2]);
        assert_eq!(m2.assignment.iter().map(|(_, p)| p.0).collect::<Vec<_>>(), vec![3, 4]);
        // Stale generation is fenced.
        assert!(matches!(c.check_commit("g", Some((&m1.member_id, 1))), Err(LogError::IllegalGeneration { .. })));
        assert!(c.check_commit("g", Some((&m1.member_id, 2))).is_ok());
        assert!(c.check_commit("g", None).is_err());
        // m2 stops heartbeating: expired after its session timeout.
        assert!(c.expire(900, &counts).is_empty());
        c.heartbeat("g", &m1.member_id, 1500).unwrap();
        let gone = c.expire(1500, &counts);
        assert_eq!(gone, vec![("g".to_string(), m2.member_id.clone())]);
        let h1 = c.heartbeat("g", &m1.member_id, 1600).unwrap();
        assert_eq!(h1.generation, 3);
        assert_eq!(h1.assignment.len(), 5);
        assert!(matches!(c.heartbeat("g", &m2.member_id, 1600), Err(LogError::UnknownMember { .. })));
        c.leave("g", &m1.member_id, &counts).unwrap();
        assert!(c.check_commit("g", None).is_ok());
    }

    #[test]
    fn roundrobin_mixed_subscriptions() {
        let mut c = GroupCoordinator::new(10, 10, 60_000);
        let m1 = c.join("g", None, "x", &[t("a"), t("b")], AssignmentStrategy::RoundRobin, 1000, 0, &counts).unwrap();
        let m2 = c.join("g", None, "y", &[t("a")], AssignmentStrategy::Range, 1000, 0, &counts).unwrap();
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
                        c.leave("g", &id, &counts).unwrap();
                    }
                    _ => {
                        for id in &live {
                            if next() % 4 != 0 {
                                c.heartbeat("g", id, now).unwrap();
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
                let mut seen = BTreeSet::new();
                for m in &members {
                    for (topic, p) in &m.assignment {
                        assert!(m.topics.contains(topic), "assigned an unsubscribed topic");
                        assert!(seen.insert((topic.clone(), *p)), "partition assigned twice");
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
