//! The multi-raft host: every raft group of one node, driven by one caller
//! (sans-IO). The caller ticks, steps received messages, proposes, and calls
//! [`MultiRaft::handle_ready`], which persists (and fsyncs) before it hands
//! back any message, then applies committed entries to each group's
//! [`StateMachine`].

use std::collections::BTreeMap;

use raft::prelude::{ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot};
use raft::{RawNode, ReadOnlyOption, StateRole};
use rand::Rng;

use crate::error::{ClusterError, Result};
use crate::storage::{Disk, GroupStorage};

/// Raft group id. 0 is the metadata group.
pub type GroupId = u64;
/// Raft node id (≥ 1).
pub type NodeId = u64;

pub const META_GROUP: GroupId = 0;

/// What a group replicates. `apply` must be deterministic: every replica
/// applies the same entries in the same order and must reach the same state.
pub trait StateMachine: Send {
    /// Apply one committed command; the returned bytes go to the proposer.
    fn apply(&mut self, index: u64, data: &[u8]) -> Vec<u8>;
    /// The whole state, for a snapshot.
    fn snapshot(&self) -> Vec<u8>;
    /// Replace the state with a snapshot's.
    fn restore(&mut self, data: &[u8]) -> Result<()>;
    /// Where a snapshot may be taken now: the highest applied index whose
    /// state is safe to keep instead of the log (default: everything
    /// applied), and the state as of that index. A state machine whose
    /// effects reach the disk later (a partition's applier) answers the
    /// point its disk has; None: no point yet.
    fn snapshot_point(&mut self, applied: u64) -> Option<(u64, Vec<u8>)> {
        Some((applied, self.snapshot()))
    }
}

/// Tunables of every group on a node (config keys `cluster.*`).
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub max_size_per_msg: u64,
    pub max_inflight_msgs: usize,
    pub max_record_bytes: u32,
    /// Compact a group's log once this many entries were applied past the last snapshot.
    pub snapshot_entries: u64,
    /// `cluster.rebalance.*`: moves of partition replicas and leadership balance.
    pub rebalance: crate::rebalancer::RebalanceConfig,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_record_bytes: 64 << 20,
            snapshot_entries: 10_000,
            rebalance: crate::rebalancer::RebalanceConfig::default(),
        }
    }
}

/// One applied command, reported to the caller (to answer proposers).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub group: GroupId,
    pub index: u64,
    pub term: u64,
    /// The proposal context (the proposer's tag), empty for none.
    pub context: Vec<u8>,
    pub response: Vec<u8>,
}

/// What one `handle_ready` pass produced.
#[derive(Debug, Default)]
pub struct ReadyOutput {
    /// (to, group, message): send only now, the state they depend on is durable.
    pub messages: Vec<(NodeId, GroupId, Message)>,
    pub applied: Vec<Applied>,
    /// Confirmed read indexes: (group, read index, the request context).
    pub reads: Vec<(GroupId, u64, Vec<u8>)>,
    /// Membership changes applied: (group, the new configuration, context).
    pub conf_changes: Vec<(GroupId, ConfState, Vec<u8>)>,
    /// Normal entries this node appended and synced, before any commit:
    /// (group, the context's 16-byte proposer tag), for acks=leader.
    pub persisted: Vec<(GroupId, Vec<u8>)>,
}

struct Group {
    raw: RawNode<GroupStorage>,
    sm: Box<dyn StateMachine>,
    applied: u64,
    /// The configuration as of `applied`, for snapshots.
    conf: ConfState,
    /// Take a snapshot at the next opportunity: a node was added, and a new
    /// member can only start from a snapshot that already counts it in (raft
    /// refuses to restore a snapshot whose configuration lacks the node, and
    /// the founding configuration is not in the log for it to replay).
    force_snapshot: bool,
    /// Log compaction allowed.
    compact: bool,
    /// Index of the last membership change applied: a snapshot below it would
    /// carry the wrong configuration.
    conf_index: u64,
    /// Elections this node started since it opened the group (metrics).
    elections: u64,
    /// Leader changes this node saw since it opened the group (metrics).
    leader_changes: u64,
    /// The term of the last hard state seen, and the last known leader (0: none).
    last_term: u64,
    last_leader: NodeId,
}

/// Every group of one node.
pub struct MultiRaft {
    id: NodeId,
    tuning: RaftTuning,
    groups: BTreeMap<GroupId, Group>,
    logger: slog::Logger,
}

/// Status of one group as this node sees it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupStatus {
    pub group: GroupId,
    pub leader: NodeId,
    pub term: u64,
    pub role: String,
    pub commit: u64,
    pub applied: u64,
    pub last_index: u64,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// The previous voters while a joint configuration is in effect (else empty).
    pub voters_outgoing: Vec<NodeId>,
    /// Leader only: per voter, the highest index known replicated there.
    pub matched: BTreeMap<NodeId, u64>,
    /// The log is compacted up to here (the last snapshot's index; 0: never).
    pub snapshot_index: u64,
    /// Elections this node started for the group since it opened it.
    pub elections: u64,
    /// Times this node saw the group's leader become a different node (the
    /// first leader known counts) since it opened the group.
    pub leader_changes: u64,
}

impl MultiRaft {
    pub fn new(id: NodeId, tuning: RaftTuning) -> Self {
        // raft-rs logs through slog; we log through tracing, so its logs are discarded.
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        MultiRaft { id, tuning, groups: BTreeMap::new(), logger }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Open (or create) group `group` on `disk`. `bootstrap_voters` seeds the
    /// first configuration of a new group (all founding members pass the same
    /// list; a node joining later passes none and learns it from the leader).
    /// The election timeout is drawn from `rng` in [election, 2·election)
    /// ticks: raft-rs's own draw uses the thread RNG, which would break
    /// reproducible simulations, so its range is pinned to one value.
    pub fn open_group(
        &mut self,
        group: GroupId,
        disk: Box<dyn Disk>,
        sm: Box<dyn StateMachine>,
        bootstrap_voters: &[NodeId],
        rng: &mut impl Rng,
    ) -> Result<()> {
        let mut storage = GroupStorage::open(disk, self.tuning.max_record_bytes)?;
        storage.bootstrap(bootstrap_voters)?;
        let mut sm = sm;
        let snap = storage.snapshot_ref().clone();
        let applied = snap.get_metadata().index;
        if applied > 0 {
            sm.restore(&snap.data)?;
        }
        let conf = storage.conf_state().clone();
        let e = self.tuning.election_ticks;
        let timeout = rng.gen_range(e..2 * e);
        let cfg = raft::Config {
            id: self.id,
            election_tick: e,
            min_election_tick: timeout,
            max_election_tick: timeout + 1,
            heartbeat_tick: self.tuning.heartbeat_ticks,
            applied,
            max_size_per_msg: self.tuning.max_size_per_msg,
            max_inflight_msgs: self.tuning.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            read_only_option: ReadOnlyOption::Safe,
            ..Default::default()
        };
        let raw = RawNode::new(&cfg, storage, &self.logger)?;
        let last_term = raw.raft.term;
        self.groups.insert(
            group,
            Group { raw, sm, applied, conf, force_snapshot: false, compact: true, conf_index: 0, elections: 0, leader_changes: 0, last_term, last_leader: 0 },
        );
        Ok(())
    }

    /// Turn log compaction of one group on or off.
    pub fn set_compaction(&mut self, group: GroupId, on: bool) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.compact = on;
        }
    }

    pub fn has_group(&self, group: GroupId) -> bool {
        self.groups.contains_key(&group)
    }

    /// Close a group: drop its raft node, state machine and storage (the
    /// caller removes the storage's file). Messages for it are then refused
    /// as for any group not hosted here. False when it was not open.
    pub fn close_group(&mut self, group: GroupId) -> bool {
        self.groups.remove(&group).is_some()
    }

    pub fn group_ids(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups.keys().copied()
    }

    /// One tick of every group's logical clock.
    pub fn tick(&mut self) {
        for g in self.groups.values_mut() {
            g.raw.tick();
        }
    }

    /// Deliver a message received from a peer. Messages for groups this node
    /// does not host are refused with `UnknownGroup` (the caller may count them).
    pub fn step(&mut self, group: GroupId, msg: Message) -> Result<()> {
        let g = self.groups.get_mut(&group).ok_or(ClusterError::UnknownGroup(group))?;
        // A member that joined empty (no founding configuration) must start
        // from a snapshot that counts it in: the log from index 1 lacks the
        // founding configuration, and replaying its membership changes onto
        // an empty one fails. Dropped, the leader probes again and sends a
        // snapshot once its log is compacted past the change that added us.
        if msg.get_msg_type() == raft::prelude::MessageType::MsgAppend && msg.index == 0 && !msg.get_entries().is_empty() && g.raw.store().is_blank() {
            return Ok(());
        }
        match g.raw.step(msg) {
            // Stale or foreign messages are routine in raft; not an error for the caller.
            Ok(()) | Err(raft::Error::StepPeerNotFound) | Err(raft::Error::StepLocalMsg) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Propose a command; `context` comes back in [`Applied`] when it applies.
    pub fn propose(&mut self, group: GroupId, context: Vec<u8>, data: Vec<u8>) -> Result<()> {
        let g = self.groups.get_mut(&group).ok_or(ClusterError::UnknownGroup(group))?;
        if g.raw.raft.state != StateRole::Leader {
            return Err(ClusterError::NotLeader { group, leader: g.raw.raft.leader_id, addr: None });
        }
        g.raw.propose(context, data)?;
        Ok(())
    }

    /// Propose on any member: a follower forwards it to the leader (raft's
    /// MsgProp); it is dropped silently if leadership changes meanwhile, so
    /// callers time out and report the outcome as unknown.
    pub fn propose_forwarding(&mut self, group: GroupId, context: Vec<u8>, data: Vec<u8>) -> Result<()> {
        let g = self.groups.get_mut(&group).ok_or(ClusterError::UnknownGroup(group))?;
        match g.raw.propose(context, data) {
            Ok(()) => Ok(()),
            Err(raft::Error::ProposalDropped) => Err(ClusterError::NotLeader { group, leader: g.raw.raft.leader_id, addr: None }),
            Err(e) => Err(e.into()),
        }
    }

    /// Propose a membership change (joint consensus when it touches more than one voter;
    /// raft-rs leaves the joint state automatically).
    pub fn propose_conf_change(&mut self, group: GroupId, context: Vec<u8>, cc: ConfChangeV2) -> Result<()> {
        let g = self.groups.get_mut(&group).ok_or(ClusterError::UnknownGroup(group))?;
        // Forwarded to the leader like any proposal; the leader refuses (drops) it
        // while another change is still pending, so callers retry after a timeout.
        match g.raw.propose_conf_change(context, cc) {
            Ok(()) => Ok(()),
            Err(raft::Error::ProposalDropped) => Err(ClusterError::NotLeader { group, leader: g.raw.raft.leader_id, addr: None }),
            Err(e) => Err(e.into()),
        }
    }

    /// True when `msg` is a proposal to remove this node while it leads `group`.
    /// raft-rs cannot remove its own leader (its progress disappears under it),
    /// so such a proposal is refused and leadership handed over first.
    pub fn removes_leader_self(&self, group: GroupId, msg: &Message) -> bool {
        if !self.is_leader(group) || msg.get_msg_type() != raft::prelude::MessageType::MsgPropose {
            return false;
        }
        msg.get_entries().iter().any(|e| removes(e, self.id))
    }

    /// Ask raft to hand leadership of `group` (led here) to `to`.
    pub fn transfer_leader(&mut self, group: GroupId, to: NodeId) {
        if let Some(g) = self.groups.get_mut(&group) {
            g.raw.transfer_leader(to);
        }
    }

    /// Hand leadership of `group` to the most caught-up other voter.
    pub fn step_down(&mut self, group: GroupId) {
        let Some(g) = self.groups.get_mut(&group) else { return };
        let me = self.id;
        let voters = g.raw.raft.prs().conf().to_conf_state().voters;
        let best = g.raw.raft.prs().iter().filter(|(id, _)| **id != me && voters.contains(id)).max_by_key(|(_, pr)| pr.matched).map(|(id, _)| *id);
        if let Some(to) = best {
            g.raw.transfer_leader(to);
        }
    }

    /// Ask for a linearizable read point (ReadIndex); it comes back in
    /// [`ReadyOutput::reads`] once a quorum confirmed the leadership.
    pub fn read_index(&mut self, group: GroupId, context: Vec<u8>) -> Result<()> {
        let g = self.groups.get_mut(&group).ok_or(ClusterError::UnknownGroup(group))?;
        g.raw.read_index(context);
        Ok(())
    }

    pub fn campaign(&mut self, group: GroupId) -> Result<()> {
        let g = self.groups.get_mut(&group).ok_or(ClusterError::UnknownGroup(group))?;
        g.raw.campaign()?;
        Ok(())
    }

    pub fn report_unreachable(&mut self, to: NodeId) {
        for g in self.groups.values_mut() {
            g.raw.report_unreachable(to);
        }
    }

    pub fn leader(&self, group: GroupId) -> Option<NodeId> {
        self.groups.get(&group).map(|g| g.raw.raft.leader_id).filter(|l| *l != 0)
    }

    pub fn is_leader(&self, group: GroupId) -> bool {
        self.groups.get(&group).is_some_and(|g| g.raw.raft.state == StateRole::Leader)
    }

    pub fn applied(&self, group: GroupId) -> u64 {
        self.groups.get(&group).map_or(0, |g| g.applied)
    }

    pub fn state_machine(&self, group: GroupId) -> Option<&dyn StateMachine> {
        self.groups.get(&group).map(|g| g.sm.as_ref())
    }

    pub fn status(&self, group: GroupId) -> Option<GroupStatus> {
        let g = self.groups.get(&group)?;
        let r = &g.raw.raft;
        let conf = r.prs().conf().to_conf_state();
        let mut matched = BTreeMap::new();
        if r.state == StateRole::Leader {
            for (id, pr) in r.prs().iter() {
                matched.insert(*id, pr.matched);
            }
        }
        Some(GroupStatus {
            group,
            leader: r.leader_id,
            term: r.term,
            role: format!("{:?}", r.state),
            commit: r.raft_log.committed,
            applied: g.applied,
            last_index: r.raft_log.last_index(),
            voters: conf.voters.clone(),
            learners: conf.learners.clone(),
            voters_outgoing: conf.voters_outgoing.clone(),
            matched,
            snapshot_index: g.raw.store().snapshot_ref().get_metadata().index,
            elections: g.elections,
            leader_changes: g.leader_changes,
        })
    }

    /// Persist, then collect messages, then apply, for every group with a Ready.
    pub fn handle_ready(&mut self) -> Result<ReadyOutput> {
        let mut out = ReadyOutput::default();
        let snapshot_entries = self.tuning.snapshot_entries;
        for (&gid, g) in self.groups.iter_mut() {
            if !g.raw.has_ready() {
                continue;
            }
            let mut rd = g.raw.ready();
            let mut msgs: Vec<Message> = rd.take_messages();
            if !rd.snapshot().is_empty() {
                let snap = rd.snapshot().clone();
                g.raw.mut_store().apply_snapshot(snap.clone())?;
                g.sm.restore(&snap.data)?;
                g.applied = snap.get_metadata().index;
                g.conf = snap.get_metadata().get_conf_state().clone();
            }
            // A traced proposal among the entries (its context carries the
            // caller's traceparent): persisting them is part of that trace,
            // `raft.append` with the `raft.fsync` under it. Untraced Readies
            // (heartbeats, most writes) make no span.
            let append_span = rd.entries().iter().find_map(entry_trace).map_or_else(tracing::Span::none, |tp| {
                let s = tracing::info_span!(parent: None, "raft.append", group = gid, entries = rd.entries().len(), trace_id = tracing::field::Empty);
                weft_service::trace::start(&s, Some(tp));
                s
            });
            let appending = append_span.enter();
            g.raw.mut_store().append(rd.entries())?;
            if let Some(ss) = rd.ss()
                && ss.leader_id != 0
                && ss.leader_id != g.last_leader
            {
                g.leader_changes += 1;
                g.last_leader = ss.leader_id;
            }
            if let Some(hs) = rd.hs() {
                // An election this node started: raft-rs raises the term and
                // votes for itself when it becomes candidate (pre-vote does
                // neither), so a higher term with our own vote is a campaign.
                if hs.term > g.last_term {
                    if hs.vote == self.id {
                        g.elections += 1;
                    }
                    g.last_term = hs.term;
                }
                g.raw.mut_store().set_hard_state(hs.clone())?;
            }
            // The Ready contract: votes and append acks only after this fsync.
            let fsync_span = if append_span.is_none() { tracing::Span::none() } else { tracing::info_span!("raft.fsync", group = gid) };
            fsync_span.in_scope(|| g.raw.mut_store().sync())?;
            drop(appending);
            for e in rd.entries() {
                if e.get_entry_type() == EntryType::EntryNormal
                    && let Some(tag) = e.context.get(..16)
                {
                    out.persisted.push((gid, tag.to_vec()));
                }
            }
            msgs.extend(rd.take_persisted_messages());
            for rs in rd.take_read_states() {
                out.reads.push((gid, rs.index, rs.request_ctx));
            }
            let committed = rd.take_committed_entries();
            apply_entries(gid, g, committed, &mut out)?;
            let mut light = g.raw.advance(rd);
            if let Some(commit) = light.commit_index() {
                g.raw.mut_store().set_commit(commit)?;
                g.raw.mut_store().sync()?;
            }
            msgs.extend(light.take_messages());
            let committed = light.take_committed_entries();
            apply_entries(gid, g, committed, &mut out)?;
            g.raw.advance_apply();
            for m in msgs {
                if m.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                    // Snapshots travel inline in a frame: once queued it is as good as
                    // sent; if lost, the probe that follows sends it again.
                    g.raw.report_snapshot(m.to, raft::SnapshotStatus::Finish);
                }
                out.messages.push((m.to, gid, m));
            }
            maybe_compact(g, snapshot_entries)?;
        }
        Ok(out)
    }
}

/// The `traceparent` a normal entry's context carries after the 16-byte
/// proposer tag (node.rs), if any.
fn entry_trace(e: &Entry) -> Option<&str> {
    if e.get_entry_type() != EntryType::EntryNormal {
        return None;
    }
    std::str::from_utf8(e.context.get(16..)?).ok().filter(|t| !t.is_empty())
}

fn apply_entries(gid: GroupId, g: &mut Group, entries: Vec<Entry>, out: &mut ReadyOutput) -> Result<()> {
    for e in entries {
        if e.index <= g.applied {
            continue;
        }
        match e.get_entry_type() {
            EntryType::EntryNormal => {
                // Empty entries are a new leader's no-op; nothing to apply.
                let response = match (e.data.is_empty(), entry_trace(&e)) {
                    (true, _) => Vec::new(),
                    (false, None) => g.sm.apply(e.index, &e.data),
                    // A traced proposal: its apply (and what the state
                    // machine does from inside it) joins the caller's trace.
                    (false, Some(tp)) => {
                        let s = tracing::info_span!(parent: None, "raft.apply", group = gid, index = e.index, trace_id = tracing::field::Empty);
                        weft_service::trace::start(&s, Some(tp));
                        s.in_scope(|| g.sm.apply(e.index, &e.data))
                    }
                };
                if !e.data.is_empty() {
                    out.applied.push(Applied { group: gid, index: e.index, term: e.term, context: e.context.to_vec(), response });
                }
            }
            EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                let cs = if e.get_entry_type() == EntryType::EntryConfChangeV2 {
                    let mut cc = ConfChangeV2::default();
                    protobuf::Message::merge_from_bytes(&mut cc, &e.data)?;
                    if cc.get_changes().iter().any(|c| c.get_change_type() != ConfChangeType::RemoveNode) {
                        g.force_snapshot = true;
                    }
                    g.raw.apply_conf_change(&cc)?
                } else {
                    let mut cc = raft::prelude::ConfChange::default();
                    protobuf::Message::merge_from_bytes(&mut cc, &e.data)?;
                    if cc.get_change_type() != ConfChangeType::RemoveNode {
                        g.force_snapshot = true;
                    }
                    g.raw.apply_conf_change(&cc)?
                };
                // Not persisted here: state machines restart from the last snapshot and
                // replay the log, so the stored configuration must be the snapshot's too
                // (replaying a change onto a configuration that already has it fails).
                g.conf = cs.clone();
                g.conf_index = e.index;
                out.conf_changes.push((gid, cs, e.context.to_vec()));
            }
        }
        g.applied = e.index;
    }
    Ok(())
}

fn removes(e: &Entry, id: NodeId) -> bool {
    if e.get_entry_type() != EntryType::EntryConfChangeV2 {
        return false;
    }
    let mut cc = ConfChangeV2::default();
    protobuf::Message::merge_from_bytes(&mut cc, &e.data).is_ok()
        && cc.get_changes().iter().any(|c| c.get_change_type() == ConfChangeType::RemoveNode && c.node_id == id)
}

/// Whether a locally proposed change would remove `id`.
pub fn cc_removes(cc: &ConfChangeV2, id: NodeId) -> bool {
    cc.get_changes().iter().any(|c| c.get_change_type() == ConfChangeType::RemoveNode && c.node_id == id)
}

fn maybe_compact(g: &mut Group, snapshot_entries: u64) -> Result<()> {
    if !g.compact {
        return Ok(());
    }
    let snap_index = g.raw.store().snapshot_ref().get_metadata().index;
    let due = g.applied >= snap_index + snapshot_entries.max(1) || (g.force_snapshot && g.applied > snap_index);
    if !due {
        return Ok(());
    }
    // The state machine says how far its state is safe (a partition: what its
    // copy has on disk); never past applied, never below a membership change
    // (the snapshot carries the configuration as of `applied`).
    let Some((index, data)) = g.sm.snapshot_point(g.applied) else { return Ok(()) };
    let index = index.min(g.applied);
    // At or past the last membership change the snapshot's configuration
    // (as of `applied`) is right, and it counts in a member just added.
    if index <= snap_index || index < g.conf_index {
        return Ok(());
    }
    g.force_snapshot = false;
    let term = raft::Storage::term(g.raw.store(), index)?;
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = index;
    snap.mut_metadata().term = term;
    snap.mut_metadata().set_conf_state(g.conf.clone());
    snap.data = data.into();
    g.raw.mut_store().compact(snap)
}
