//! The rebalancer (docs/cluster.md, "Rebalancer"): sans-IO decisions about
//! where partition replicas live and which replica leads.
//!
//! Two halves, because only a member of a raft group can change that
//! group's membership:
//!
//! - [`Planner`] runs on the metadata leader. From the metadata, node
//!   liveness and time it decides *what* to move: a replica on a removed
//!   node or on a node down past `down_after_ms` (repair), or from the most
//!   to the least loaded live data node (spread), at most
//!   `max_concurrent_moves` at once. A move is recorded in the metadata
//!   (`MetaCommand::StartMove`); it reorders replicas so preferred leaders
//!   (the first replica) spread evenly (`SetReplicas`).
//! - [`Executor`] runs on every node, for every partition group it hosts. On
//!   the group's leader it carries a recorded move out as membership
//!   changes of that group: add the target as a learner, wait until it has
//!   caught up (snapshot + log tail), then one joint change that promotes
//!   it and removes the source, and finally `MetaCommand::FinishMove`,
//!   which updates the placement. It also hands leadership to the
//!   preferred replica once the group has been stable for
//!   `leader_settle_ms`.
//!
//! Every decision is a function of durable, replicated state (the metadata
//! and the group's configuration), so a controller that crashes or loses
//! leadership in the middle is replaced by one that takes the next step
//! from what it reads: nothing is remembered between steps except when an
//! action was last tried (to pace retries).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::host::{GroupId, NodeId};
use crate::meta::{MetaCommand, MetaState, Move};

/// `cluster.rebalance.*` (docs/cluster.md, "Configuration").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebalanceConfig {
    /// Off: no moves are planned and no leadership is balanced (moves
    /// already recorded are still carried out).
    pub enabled: bool,
    /// A data node not heard from for this long loses its replicas to other nodes.
    pub down_after_ms: u64,
    /// Moves in flight at once (cluster-wide).
    pub max_concurrent_moves: u64,
    /// A group's leadership goes to its preferred replica once the group had
    /// one leader and no move for this long (0: never balance leadership).
    pub leader_settle_ms: u64,
    /// A step that did not take effect is tried again after this long.
    pub retry_ms: u64,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        RebalanceConfig { enabled: true, down_after_ms: 300_000, max_concurrent_moves: 2, leader_settle_ms: 30_000, retry_ms: 2_000 }
    }
}

/// Most replica reorderings (preferred leaders) the planner proposes per round.
const MAX_REORDERS_PER_ROUND: usize = 8;

/// Decides moves on the metadata leader. Its only memory is when it first
/// saw each node down (a new leader starts counting afresh: conservative).
#[derive(Debug, Default)]
pub struct Planner {
    down_since: BTreeMap<NodeId, u64>,
}

impl Planner {
    pub fn new() -> Self {
        Planner::default()
    }

    /// Data nodes considered down now (not heard from for `down_after_ms` as seen by this planner).
    pub fn down(&self, now_ms: u64, cfg: &RebalanceConfig) -> BTreeSet<NodeId> {
        self.down_since.iter().filter(|(_, since)| now_ms.saturating_sub(**since) >= cfg.down_after_ms).map(|(n, _)| *n).collect()
    }

    /// One planning round. `live`: nodes heard from recently (this node included).
    pub fn plan(&mut self, now_ms: u64, cfg: &RebalanceConfig, meta: &MetaState, live: &BTreeSet<NodeId>) -> Vec<MetaCommand> {
        let data = meta.data_nodes();
        self.down_since.retain(|n, _| data.contains(n) && !live.contains(n));
        for n in &data {
            if !live.contains(n) {
                self.down_since.entry(*n).or_insert(now_ms);
            }
        }
        if !cfg.enabled {
            return Vec::new();
        }
        let down = self.down(now_ms, cfg);
        // Where replicas may go: live data nodes.
        let targets: Vec<NodeId> = data.iter().copied().filter(|n| live.contains(n)).collect();
        // Nodes that may keep replicas: registered data nodes not down.
        let healthy: BTreeSet<NodeId> = data.iter().copied().filter(|n| !down.contains(n)).collect();
        let groups = meta.replica_groups();
        let mut load: BTreeMap<NodeId, u64> = healthy.iter().map(|n| (*n, 0)).collect();
        for (_, replicas) in &groups {
            for r in replicas {
                if let Some(l) = load.get_mut(r) {
                    *l += 1;
                }
            }
        }
        for m in meta.moves.values() {
            // A move in flight already counts for its target.
            if let Some(l) = load.get_mut(&m.to) {
                *l += 1;
            }
        }
        let mut out = Vec::new();
        let mut budget = cfg.max_concurrent_moves.saturating_sub(meta.moves.len() as u64);
        let mut busy: BTreeSet<GroupId> = meta.moves.keys().copied().collect();
        let least_loaded = |load: &BTreeMap<NodeId, u64>, replicas: &[NodeId]| {
            targets.iter().copied().filter(|t| !replicas.contains(t)).min_by_key(|t| (load.get(t).copied().unwrap_or(0), *t))
        };
        // Repairs first: replicas on removed nodes, then on nodes down too long.
        for (group, replicas) in &groups {
            if budget == 0 {
                break;
            }
            if busy.contains(group) {
                continue;
            }
            let lost = replicas.iter().copied().find(|r| !meta.nodes.contains_key(r) || !data.contains(r)).map(|r| (r, "removed")).or_else(|| replicas.iter().copied().find(|r| down.contains(r)).map(|r| (r, "down")));
            let Some((from, reason)) = lost else { continue };
            let Some(to) = least_loaded(&load, replicas) else { continue }; // no spare data node: stays as is
            *load.entry(to).or_default() += 1;
            budget -= 1;
            busy.insert(*group);
            out.push(MetaCommand::StartMove { group: *group, from, to, reason: reason.into(), max_moves: Some(cfg.max_concurrent_moves) });
        }
        // Spread: from the most to the least loaded until they differ by at most one.
        while budget > 0 && !targets.is_empty() {
            let Some((&most, &hi)) = load.iter().filter(|(n, _)| healthy.contains(n)).max_by_key(|(n, l)| (**l, std::cmp::Reverse(**n))) else { break };
            let Some((&least, &lo)) = load.iter().filter(|(n, _)| targets.contains(n)).min_by_key(|(n, l)| (**l, **n)) else { break };
            if hi <= lo + 1 {
                break;
            }
            let pick = groups.iter().find(|(g, r)| !busy.contains(g) && r.contains(&most) && !r.contains(&least)).map(|(g, _)| *g);
            let Some(group) = pick else { break };
            *load.entry(most).or_default() -= 1;
            *load.entry(least).or_default() += 1;
            budget -= 1;
            busy.insert(group);
            out.push(MetaCommand::StartMove { group, from: most, to: least, reason: "balance".into(), max_moves: Some(cfg.max_concurrent_moves) });
        }
        if cfg.leader_settle_ms > 0 {
            out.extend(preferred_leader_reorders(&groups, &busy, &healthy));
        }
        out
    }
}

/// Reorder replicas so every healthy data node is the preferred leader (the
/// first replica) of about the same number of groups. Metadata only: the
/// executor then moves leadership.
fn preferred_leader_reorders(groups: &[(GroupId, Vec<NodeId>)], busy: &BTreeSet<GroupId>, healthy: &BTreeSet<NodeId>) -> Vec<MetaCommand> {
    let mut firsts: BTreeMap<NodeId, u64> = healthy.iter().map(|n| (*n, 0)).collect();
    let mut order: BTreeMap<GroupId, Vec<NodeId>> = BTreeMap::new();
    for (g, r) in groups {
        order.insert(*g, r.clone());
        if let Some(f) = r.first().and_then(|f| firsts.get_mut(f)) {
            *f += 1;
        }
    }
    let mut out = Vec::new();
    // A group whose preferred leader is not healthy gets a healthy one first.
    for (g, r) in order.iter_mut() {
        if out.len() >= MAX_REORDERS_PER_ROUND || busy.contains(g) || r.first().is_none_or(|f| healthy.contains(f)) {
            continue;
        }
        let Some(pos) = r.iter().enumerate().filter(|(_, n)| healthy.contains(n)).min_by_key(|(_, n)| (firsts.get(n).copied().unwrap_or(0), **n)).map(|(i, _)| i) else { continue };
        let n = r.remove(pos);
        r.insert(0, n);
        *firsts.entry(n).or_default() += 1;
        out.push(MetaCommand::SetReplicas { group: *g, replicas: r.clone() });
    }
    while out.len() < MAX_REORDERS_PER_ROUND {
        let Some((&most, &hi)) = firsts.iter().max_by_key(|(n, c)| (**c, std::cmp::Reverse(**n))) else { break };
        let Some((&least, &lo)) = firsts.iter().min_by_key(|(n, c)| (**c, **n)) else { break };
        if hi <= lo + 1 {
            break;
        }
        let pick = order.iter().find(|(g, r)| !busy.contains(g) && r.first() == Some(&most) && r.contains(&least)).map(|(g, _)| *g);
        let Some(g) = pick else { break };
        let Some(r) = order.get_mut(&g) else { break };
        r.retain(|n| *n != least);
        r.insert(0, least);
        *firsts.entry(most).or_default() -= 1;
        *firsts.entry(least).or_default() += 1;
        out.push(MetaCommand::SetReplicas { group: g, replicas: r.clone() });
    }
    out
}

/// One partition group as its host sees it.
#[derive(Debug, Clone)]
pub struct GroupView {
    pub group: GroupId,
    pub me: NodeId,
    pub leader: NodeId,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// The old voters while a joint configuration is in effect.
    pub voters_outgoing: Vec<NodeId>,
    /// Leader only: highest index known replicated on each member.
    pub matched: BTreeMap<NodeId, u64>,
    pub commit: u64,
    /// The placement in the metadata (first = preferred leader).
    pub replicas: Vec<NodeId>,
    pub pending: Option<Move>,
}

/// One step of a move, or a leadership hand-over, for the driver to carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupAction {
    AddLearner(NodeId),
    /// One joint change: promote `add` (a caught-up learner) and remove `remove`.
    Replace { add: NodeId, remove: NodeId },
    Promote(NodeId),
    Remove(NodeId),
    TransferLeader(NodeId),
    /// Follower side: ask a leader that no longer sees the metadata (a removed
    /// node) to step down, by forwarding a proposal that removes it (a leader
    /// never applies its own removal: it hands over instead).
    NudgeLeader(NodeId),
    Meta(MetaCommand),
}

/// The next step for one group, from its configuration, the metadata's
/// placement and pending move, and the registered data nodes.
pub fn next_step(v: &GroupView, data_nodes: &BTreeSet<NodeId>) -> Option<GroupAction> {
    let is_leader = v.leader == v.me;
    if !is_leader {
        let lowest_other = v.voters.iter().copied().filter(|n| *n != v.leader).min();
        if v.leader != 0 && v.voters.contains(&v.leader) && !data_nodes.contains(&v.leader) && lowest_other == Some(v.me) {
            return Some(GroupAction::NudgeLeader(v.leader));
        }
        return None;
    }
    if !v.voters_outgoing.is_empty() {
        return None; // joint: raft-rs leaves it by itself once it commits
    }
    let caught_up = |n: NodeId| v.matched.get(&n).is_some_and(|m| *m >= v.commit);
    // Hand over to the caught-up voter with the most log (ties: lowest id), never `avoid`.
    let successor = |avoid: NodeId| v.voters.iter().copied().filter(|n| *n != avoid && caught_up(*n)).max_by_key(|n| (v.matched.get(n).copied().unwrap_or(0), std::cmp::Reverse(*n)));
    match &v.pending {
        Some(m) => {
            let (from, to) = (m.from, m.to);
            if !v.voters.contains(&to) {
                if !data_nodes.contains(&to) {
                    // The target left the cluster before it became a voter: undo.
                    return Some(if v.learners.contains(&to) { GroupAction::Remove(to) } else { GroupAction::Meta(MetaCommand::CancelMove { group: v.group, to }) });
                }
                if !v.learners.contains(&to) {
                    return Some(GroupAction::AddLearner(to));
                }
                if !caught_up(to) {
                    return None; // snapshot and log tail on their way
                }
                if !v.voters.contains(&from) {
                    return Some(GroupAction::Promote(to));
                }
                if from == v.me {
                    // raft-rs cannot remove its own leader: hand over first; with
                    // no other voter (one replica) promote the target first.
                    return Some(match successor(from) {
                        Some(s) => GroupAction::TransferLeader(s),
                        None => GroupAction::Promote(to),
                    });
                }
                return Some(GroupAction::Replace { add: to, remove: from });
            }
            if v.voters.contains(&from) {
                if from == v.me {
                    return successor(from).map(GroupAction::TransferLeader);
                }
                return Some(GroupAction::Remove(from));
            }
            if v.learners.contains(&from) {
                return Some(GroupAction::Remove(from));
            }
            Some(GroupAction::Meta(MetaCommand::FinishMove { group: v.group, from, to }))
        }
        None => {
            // A learner nobody wants (a cancelled move's target): remove it.
            if let Some(l) = v.learners.iter().copied().find(|l| !v.replicas.contains(l)) {
                return Some(GroupAction::Remove(l));
            }
            None
        }
    }
}

/// Paces the executor's actions per group and tracks how long each group
/// had its current leader (for leadership balance).
#[derive(Debug, Default)]
pub struct Executor {
    last: BTreeMap<GroupId, (u64, GroupAction)>,
    leader_since: BTreeMap<GroupId, (NodeId, u64)>,
}

impl Executor {
    pub fn new() -> Self {
        Executor::default()
    }

    /// The actions to take now for the hosted groups in `views`. The same
    /// action for the same group is repeated only after `retry_ms` (raft
    /// drops a membership change while another is pending; a lost one is
    /// simply tried again).
    pub fn step(&mut self, now_ms: u64, cfg: &RebalanceConfig, views: &[GroupView], data_nodes: &BTreeSet<NodeId>) -> Vec<(GroupId, GroupAction)> {
        let hosted: BTreeSet<GroupId> = views.iter().map(|v| v.group).collect();
        self.last.retain(|g, _| hosted.contains(g));
        self.leader_since.retain(|g, _| hosted.contains(g));
        let mut out = Vec::new();
        for v in views {
            let since = self.leader_since.entry(v.group).or_insert((v.leader, now_ms));
            if since.0 != v.leader {
                *since = (v.leader, now_ms);
            }
            let settled = now_ms.saturating_sub(since.1) >= cfg.leader_settle_ms;
            let mut action = next_step(v, data_nodes);
            if action.is_none() && cfg.enabled && cfg.leader_settle_ms > 0 && settled && v.leader == v.me && v.pending.is_none() && v.voters_outgoing.is_empty() {
                // Leadership balance: the preferred replica, once it has everything committed.
                if let Some(&p) = v.replicas.first() {
                    if p != v.me && v.voters.contains(&p) && v.matched.get(&p).is_some_and(|m| *m >= v.commit) {
                        action = Some(GroupAction::TransferLeader(p));
                    }
                }
            }
            let Some(action) = action else {
                self.last.remove(&v.group);
                continue;
            };
            if let Some((at, prev)) = self.last.get(&v.group) {
                if *prev == action && now_ms.saturating_sub(*at) < cfg.retry_ms {
                    continue;
                }
            }
            self.last.insert(v.group, (now_ms, action.clone()));
            out.push((v.group, action));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{MetaResponse, NodeInfo, Role};

    fn state(data: &[NodeId], partitions: u32, replicas: u32) -> MetaState {
        let mut s = MetaState::default();
        for id in data {
            s.apply(MetaCommand::RegisterNode { node: NodeInfo { id: *id, cluster_addr: format!("a{id}"), native_addr: None, roles: vec![Role::Control, Role::Data] } });
        }
        let r = s.apply(MetaCommand::CreateTopic { name: "t".into(), partitions, replicas, config: Default::default() });
        assert!(matches!(r, MetaResponse::Topic(_)), "{r:?}");
        s
    }

    fn live(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn cfg() -> RebalanceConfig {
        RebalanceConfig { down_after_ms: 1000, ..Default::default() }
    }

    fn moves(cmds: &[MetaCommand]) -> Vec<(GroupId, NodeId, NodeId)> {
        cmds.iter().filter_map(|c| if let MetaCommand::StartMove { group, from, to, .. } = c { Some((*group, *from, *to)) } else { None }).collect()
    }

    #[test]
    fn a_balanced_cluster_plans_nothing() {
        let s = state(&[1, 2, 3], 3, 3);
        let mut p = Planner::new();
        assert!(p.plan(0, &cfg(), &s, &live(&[1, 2, 3])).is_empty());
        // 4 nodes, 2 partitions of 3: loads 1,2,2,1 differ by at most one.
        let s = state(&[1, 2, 3, 4], 2, 3);
        assert!(p.plan(0, &cfg(), &s, &live(&[1, 2, 3, 4])).is_empty());
    }

    #[test]
    fn a_removed_node_loses_its_replicas_to_a_spare_node() {
        let mut s = state(&[1, 2, 3, 4], 4, 3);
        s.apply(MetaCommand::RemoveNode { id: 2 });
        let mut p = Planner::new();
        let c = RebalanceConfig { max_concurrent_moves: 10, ..cfg() };
        let m = moves(&p.plan(0, &c, &s, &live(&[1, 3, 4])));
        // Partitions 0, 1 and 3 had a replica on node 2 ([1,2,3], [2,3,4], [4,1,2]).
        assert_eq!(m.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), vec![(1, 2), (2, 2), (4, 2)]);
        for (g, _, to) in &m {
            let replicas = &s.partition_groups().into_iter().find(|x| x.0 == *g).unwrap().1;
            assert!(!replicas.contains(to), "group {g}: target {to} already a replica");
        }
        // With no spare node (3 nodes, replicas 3) nothing can be planned.
        let mut s = state(&[1, 2, 3], 1, 3);
        s.apply(MetaCommand::RemoveNode { id: 3 });
        assert!(moves(&p.plan(0, &c, &s, &live(&[1, 2]))).is_empty());
    }

    #[test]
    fn a_node_is_repaired_only_after_down_after_and_moves_are_bounded() {
        let s = state(&[1, 2, 3, 4], 4, 3);
        let mut p = Planner::new();
        let c = cfg();
        let up = live(&[1, 2, 3]);
        assert!(moves(&p.plan(0, &c, &s, &up)).is_empty(), "node 4 just went quiet");
        assert!(moves(&p.plan(999, &c, &s, &up)).is_empty());
        let m = moves(&p.plan(1000, &c, &s, &up));
        assert_eq!(m.len(), 2, "max_concurrent_moves = 2: {m:?}");
        assert!(m.iter().all(|(_, from, _)| *from == 4));
        // Heard from again: no longer down.
        assert!(moves(&p.plan(1001, &c, &s, &live(&[1, 2, 3, 4]))).is_empty());
        // Quiet again: counted afresh. Moves already recorded count against the bound.
        assert!(moves(&p.plan(2000, &c, &s, &up)).is_empty());
        let mut s2 = s.clone();
        for cmd in p.plan(3000, &c, &s, &up) {
            s2.apply(cmd);
        }
        assert_eq!(s2.moves.len(), 2);
        assert!(moves(&p.plan(4000, &c, &s2, &up)).is_empty());
        // Disabled: nothing.
        assert!(p.plan(7000, &RebalanceConfig { enabled: false, ..c }, &s, &up).is_empty());
    }

    #[test]
    fn a_new_node_gets_its_share_and_preferred_leaders_spread() {
        let mut s = state(&[1, 2, 3], 6, 3);
        s.apply(MetaCommand::RegisterNode { node: NodeInfo { id: 4, cluster_addr: "a4".into(), native_addr: None, roles: vec![Role::Data] } });
        let mut p = Planner::new();
        let c = RebalanceConfig { max_concurrent_moves: 100, ..cfg() };
        let all = live(&[1, 2, 3, 4]);
        // 18 replicas over 4 nodes: node 4 should end with 4 or 5.
        let m = moves(&p.plan(0, &c, &s, &all));
        assert!(m.iter().all(|(_, _, to)| *to == 4), "{m:?}");
        assert!((4..=5).contains(&m.len()), "{m:?}");
        // Apply the moves as if done, then leaders: every node prefers 1 or 2 groups.
        for (g, from, to) in &m {
            s.apply(MetaCommand::StartMove { group: *g, from: *from, to: *to, reason: "t".into(), max_moves: None });
            assert_eq!(s.apply(MetaCommand::FinishMove { group: *g, from: *from, to: *to }), MetaResponse::Ok);
        }
        assert_eq!(s.moves_done, m.len() as u64);
        // A moved partition counts its moves (its replicas are no longer the founding configuration).
        let moved: u64 = s.topics["t"].partitions.iter().map(|p| p.moves).sum();
        assert_eq!(moved, m.len() as u64);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<MetaState>(&json).unwrap(), s, "snapshot round trip");
        let old: crate::meta::PartitionMeta = serde_json::from_str(r#"{"partition":0,"group":1,"replicas":[1]}"#).unwrap();
        assert_eq!(old.moves, 0, "older snapshots: no moves");
        assert!(moves(&p.plan(0, &c, &s, &all)).is_empty(), "balanced now");
        for _ in 0..4 {
            for cmd in p.plan(0, &c, &s, &all) {
                assert_eq!(s.apply(cmd), MetaResponse::Ok);
            }
        }
        let mut firsts: BTreeMap<NodeId, u64> = BTreeMap::new();
        for (_, r) in s.partition_groups() {
            *firsts.entry(r[0]).or_default() += 1;
        }
        assert!(firsts.len() == 4 && firsts.values().all(|c| (1..=2).contains(c)), "{firsts:?}");
    }

    fn view(me: NodeId, leader: NodeId, voters: &[NodeId], learners: &[NodeId], matched: &[(NodeId, u64)], replicas: &[NodeId], mv: Option<(NodeId, NodeId)>) -> GroupView {
        GroupView {
            group: 7,
            me,
            leader,
            voters: voters.to_vec(),
            learners: learners.to_vec(),
            voters_outgoing: Vec::new(),
            matched: matched.iter().copied().collect(),
            commit: 10,
            replicas: replicas.to_vec(),
            pending: mv.map(|(from, to)| Move { group: 7, from, to, reason: "t".into() }),
        }
    }

    #[test]
    fn a_move_walks_through_learner_joint_change_and_finish() {
        let nodes = live(&[1, 2, 3, 4]);
        let r = [1, 2, 3];
        let mv = Some((3, 4));
        let full = [(1, 10), (2, 10), (3, 10)];
        // Leader 1 adds the learner.
        assert_eq!(next_step(&view(1, 1, &r, &[], &full, &r, mv), &nodes), Some(GroupAction::AddLearner(4)));
        // Not caught up yet: wait.
        assert_eq!(next_step(&view(1, 1, &r, &[4], &[(1, 10), (2, 10), (3, 10), (4, 3)], &r, mv), &nodes), None);
        // Caught up: one joint change.
        let caught = [(1, 10), (2, 10), (3, 10), (4, 10)];
        assert_eq!(next_step(&view(1, 1, &r, &[4], &caught, &r, mv), &nodes), Some(GroupAction::Replace { add: 4, remove: 3 }));
        // Joint in effect: wait.
        let mut joint = view(1, 1, &[1, 2, 4], &[], &caught, &r, mv);
        joint.voters_outgoing = vec![1, 2, 3];
        assert_eq!(next_step(&joint, &nodes), None);
        // Done: record it in the metadata.
        assert_eq!(next_step(&view(1, 1, &[1, 2, 4], &[], &caught, &r, mv), &nodes), Some(GroupAction::Meta(MetaCommand::FinishMove { group: 7, from: 3, to: 4 })));
        // Followers do nothing.
        assert_eq!(next_step(&view(2, 1, &r, &[], &[], &r, mv), &nodes), None);
    }

    #[test]
    fn a_leader_that_is_the_source_hands_over_first() {
        let nodes = live(&[1, 2, 3, 4]);
        let caught = [(1, 10), (2, 9), (3, 10), (4, 10)];
        // Leader 3 is moving away: transfer to the caught-up voter with most log (1; 2 lags).
        assert_eq!(next_step(&view(3, 3, &[1, 2, 3], &[4], &caught, &[1, 2, 3], Some((3, 4))), &nodes), Some(GroupAction::TransferLeader(1)));
        // One replica: promote the target first, then hand over to it.
        assert_eq!(next_step(&view(3, 3, &[3], &[4], &[(3, 10), (4, 10)], &[3], Some((3, 4))), &nodes), Some(GroupAction::Promote(4)));
        assert_eq!(next_step(&view(3, 3, &[3, 4], &[], &[(3, 10), (4, 10)], &[3], Some((3, 4))), &nodes), Some(GroupAction::TransferLeader(4)));
        assert_eq!(next_step(&view(4, 4, &[3, 4], &[], &[(3, 10), (4, 10)], &[3], Some((3, 4))), &nodes), Some(GroupAction::Remove(3)));
        // A removed node still leading: the lowest other voter nudges it.
        let gone = live(&[1, 2, 4]);
        assert_eq!(next_step(&view(1, 3, &[1, 2, 3], &[], &[], &[1, 2, 3], Some((3, 4))), &gone), Some(GroupAction::NudgeLeader(3)));
        assert_eq!(next_step(&view(2, 3, &[1, 2, 3], &[], &[], &[1, 2, 3], Some((3, 4))), &gone), None);
    }

    #[test]
    fn a_target_that_left_is_undone_and_stray_learners_removed() {
        let nodes = live(&[1, 2, 3]);
        let full = [(1, 10), (2, 10), (3, 10)];
        assert_eq!(next_step(&view(1, 1, &[1, 2, 3], &[4], &full, &[1, 2, 3], Some((3, 4))), &nodes), Some(GroupAction::Remove(4)));
        assert_eq!(next_step(&view(1, 1, &[1, 2, 3], &[], &full, &[1, 2, 3], Some((3, 4))), &nodes), Some(GroupAction::Meta(MetaCommand::CancelMove { group: 7, to: 4 })));
        assert_eq!(next_step(&view(1, 1, &[1, 2, 3], &[4], &full, &[1, 2, 3], None), &nodes), Some(GroupAction::Remove(4)));
    }

    #[test]
    fn the_executor_paces_retries_and_balances_leadership_after_settling() {
        let nodes = live(&[1, 2, 3]);
        let c = RebalanceConfig { retry_ms: 100, leader_settle_ms: 500, ..Default::default() };
        let mut e = Executor::new();
        let full = [(1, 10), (2, 10), (3, 10)];
        let v = view(2, 2, &[1, 2, 3], &[], &full, &[1, 2, 3], None);
        assert!(e.step(0, &c, std::slice::from_ref(&v), &nodes).is_empty());
        assert!(e.step(499, &c, std::slice::from_ref(&v), &nodes).is_empty());
        assert_eq!(e.step(500, &c, std::slice::from_ref(&v), &nodes), vec![(7, GroupAction::TransferLeader(1))]);
        assert!(e.step(550, &c, std::slice::from_ref(&v), &nodes).is_empty(), "paced");
        assert_eq!(e.step(600, &c, std::slice::from_ref(&v), &nodes).len(), 1);
        // A new leader restarts the settle clock.
        let v1 = view(1, 1, &[1, 2, 3], &[], &full, &[2, 1, 3], None);
        assert!(e.step(700, &c, std::slice::from_ref(&v1), &nodes).is_empty());
    }
}
