//! The deterministic state machine of one table: an in-memory MVCC store
//! (key -> versions) driven by `WriteCommand`s.
//!
//! `apply` uses no clock, no randomness and no node configuration, so the
//! same commands applied in the same order give the same state, the same
//! results and the same events on every replica. It never fails half way:
//! a command is checked against the state first and refused whole, or
//! applied whole. `snapshot`/`restore` carry the whole state (raft's
//! snapshot, and the local checkpoint file).

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::*;

/// One stored version of a key. `value: None` is a tombstone (a delete).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Version {
    rev: Revision,
    create: Revision,
    ver: u64,
    value: Option<Bytes>,
}

impl Version {
    fn kv(&self, key: &Bytes) -> Option<KeyValue> {
        self.value.as_ref().map(|v| KeyValue {
            key: key.clone(),
            value: v.clone(),
            create_revision: self.create,
            mod_revision: self.rev,
            version: self.ver,
        })
    }
}

/// What `apply` did: the answer for the proposer, and the events for watchers
/// (sorted by key; all at the command's revision).
#[derive(Debug)]
pub struct Applied {
    pub result: Result<WriteResult>,
    pub events: Vec<Event>,
    /// Whether the state changed (a revision was used, or history was compacted).
    /// A command that changed nothing need not be logged.
    pub changed: bool,
}

/// A resolved set of keys: `[lo, hi)` where `hi: None` is open.
/// Serializable: a cluster node forwards a watch's key set to a replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    lo: Bytes,
    hi: Option<Bytes>,
}

/// The first key after every key starting with `p` (`None`: no such key, all 0xff).
fn prefix_end(p: &[u8]) -> Option<Bytes> {
    let mut end = p.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(Bytes::from(end));
        }
    }
    None
}

impl KeySet {
    pub fn single(key: &Bytes) -> Self {
        let mut hi = key.to_vec();
        hi.push(0);
        KeySet { lo: key.clone(), hi: Some(Bytes::from(hi)) }
    }

    /// `[from, to) ∩ prefix*`.
    pub fn from_range(r: &KeyRange) -> Self {
        let mut lo = r.from.clone();
        let mut hi = r.to.clone();
        if let Some(p) = &r.prefix {
            if p > &lo {
                lo = p.clone();
            }
            if let Some(pe) = prefix_end(p) {
                hi = Some(match hi {
                    Some(h) if h < pe => h,
                    _ => pe,
                });
            }
        }
        KeySet { lo, hi }
    }

    pub fn from_target(t: &WatchTarget) -> Self {
        match t {
            WatchTarget::Key(k) => KeySet::single(k),
            WatchTarget::Range(r) => KeySet::from_range(r),
            WatchTarget::Prefix(p) => KeySet::from_range(&KeyRange::prefix(p.clone())),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= &self.lo[..] && self.hi.as_ref().is_none_or(|h| key < &h[..])
    }

    fn is_empty(&self) -> bool {
        self.hi.as_ref().is_some_and(|h| h <= &self.lo)
    }

    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (Bound::Included(&self.lo[..]), self.hi.as_ref().map_or(Bound::Unbounded, |h| Bound::Excluded(&h[..])))
    }
}

/// The whole state of a table, as a snapshot carries it.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    format: u32,
    revision: Revision,
    compact_revision: Revision,
    applied_index: u64,
    keys: Vec<(Bytes, Vec<Version>)>,
}

const SNAPSHOT_FORMAT: u32 = 1;

/// One table's MVCC state.
#[derive(Debug, Clone, Default)]
pub struct TableState {
    /// Every stored key and its versions, oldest first.
    keys: BTreeMap<Bytes, Vec<Version>>,
    /// Keys changed at each revision (sorted): replays watch history in
    /// revision order without scanning every key.
    by_rev: BTreeMap<Revision, Vec<Bytes>>,
    revision: Revision,
    compact_revision: Revision,
    applied_index: u64,
    live_keys: u64,
    bytes: u64,
    versions: u64,
}

/// The version of a key live at `rev` (`None`: absent at `rev`).
fn live_at(versions: &[Version], rev: Revision) -> Option<&Version> {
    let i = versions.partition_point(|v| v.rev <= rev);
    let v = versions.get(i.checked_sub(1)?)?;
    v.value.is_some().then_some(v)
}

impl TableState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current revision (0: nothing written yet).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Reads below this revision are refused with `Compacted` (0: nothing compacted).
    pub fn compact_revision(&self) -> Revision {
        self.compact_revision
    }

    /// Index of the last command applied (the WAL's record index; raft's log index).
    pub fn applied_index(&self) -> u64 {
        self.applied_index
    }

    /// Live keys at the current revision.
    pub fn live_keys(&self) -> u64 {
        self.live_keys
    }

    /// Bytes held: each stored key once, plus every stored value version.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Stored versions, tombstones included.
    pub fn versions(&self) -> u64 {
        self.versions
    }

    /// The revision a read `at` resolves to: `None` or `Some(0)` is the
    /// current revision (as etcd); others must be in `[compact_revision, revision]`.
    pub fn read_revision(&self, at: Option<Revision>) -> Result<Revision> {
        match at {
            None | Some(0) => Ok(self.revision),
            Some(r) if r > self.revision => Err(Error::FutureRevision { requested: r, current: self.revision }),
            Some(r) if r < self.compact_revision => {
                Err(Error::Compacted { compact_revision: self.compact_revision, requested: r })
            }
            Some(r) => Ok(r),
        }
    }

    /// The key as of `at`.
    pub fn get(&self, key: &[u8], at: Option<Revision>) -> Result<GetResult> {
        let rev = self.read_revision(at)?;
        let kv = self.keys.get_key_value(key).and_then(|(k, vs)| live_at(vs, rev)?.kv(k));
        Ok(GetResult { kv, revision: self.revision })
    }

    /// A range read. `spec.limit` `None` or `Some(0)` means no limit here:
    /// the driver puts the configured limit in before calling.
    pub fn range(&self, spec: &RangeSpec) -> Result<RangeResult> {
        let rev = self.read_revision(spec.at)?;
        Ok(self.range_at(spec, rev))
    }

    fn range_at(&self, spec: &RangeSpec, rev: Revision) -> RangeResult {
        let set = KeySet::from_range(&spec.key_range());
        let limit = match spec.limit {
            None | Some(0) => u64::MAX,
            Some(n) => n,
        };
        let mut out = RangeResult { revision: self.revision, ..Default::default() };
        if set.is_empty() {
            return out;
        }
        for (k, vs) in self.keys.range::<[u8], _>(set.bounds()) {
            let Some(v) = live_at(vs, rev) else { continue };
            out.count += 1;
            if spec.count_only {
                continue;
            }
            if (out.kvs.len() as u64) < limit {
                let mut kv = v.kv(k).unwrap_or_else(|| unreachable_kv(k));
                if spec.keys_only {
                    kv.value = Bytes::new();
                }
                out.kvs.push(kv);
            } else {
                out.more = true;
            }
        }
        out
    }

    /// The key's stored versions, newest first (puts and deletes), at most `limit`.
    pub fn history(&self, key: &[u8], limit: usize) -> Vec<Event> {
        let Some((k, vs)) = self.keys.get_key_value(key) else { return Vec::new() };
        vs.iter().rev().take(limit).map(|v| event_of(k, v, None)).collect()
    }

    /// Events with revisions in `[from, to]` matching `set`, in revision then
    /// key order; stops after the revision where `max_events` is reached.
    /// Returns the events and the next revision to read from. The caller
    /// checks `from >= compact_revision` first (`watch_check`).
    pub fn events_between(
        &self,
        from: Revision,
        to: Revision,
        set: &KeySet,
        prev_kv: bool,
        max_events: usize,
    ) -> (Vec<Event>, Revision) {
        let mut out = Vec::new();
        let mut next = from;
        if from > to {
            return (out, next);
        }
        for (&rev, keys) in self.by_rev.range(from..=to) {
            for k in keys.iter().filter(|k| set.contains(k)) {
                let Some((key, vs)) = self.keys.get_key_value(k) else { continue };
                let i = vs.partition_point(|v| v.rev < rev);
                let Some(v) = vs.get(i).filter(|v| v.rev == rev) else { continue };
                let prev = if prev_kv { i.checked_sub(1).and_then(|j| vs.get(j)).and_then(|p| p.kv(key)) } else { None };
                out.push(event_of(key, v, prev));
            }
            next = rev + 1;
            if out.len() >= max_events {
                return (out, next);
            }
        }
        (out, to + 1)
    }

    /// Whether a watcher may start at `start` (stored history begins at the compact revision).
    pub fn watch_check(&self, start: Revision) -> Result<()> {
        if start < self.compact_revision {
            return Err(Error::Compacted { compact_revision: self.compact_revision, requested: start });
        }
        Ok(())
    }

    /// Apply one write command. `index` is its position in the log (WAL
    /// record index, raft entry index); it is recorded whatever the outcome.
    pub fn apply(&mut self, index: u64, cmd: &WriteCommand) -> Applied {
        self.applied_index = index;
        let next = self.revision + 1;
        let mut events = Vec::new();
        let result = match cmd {
            WriteCommand::Put { key, value } => {
                let prev_kv = self.put(key, value, next, &mut events);
                Ok(WriteResult::Put(PutResult { revision: next, prev_kv }))
            }
            WriteCommand::Delete { key } => {
                let prev = self.delete(key, next, &mut events);
                let deleted = u64::from(prev.is_some());
                Ok(WriteResult::Delete(DeleteResult { revision: next, deleted, prev_kvs: prev.into_iter().collect() }))
            }
            WriteCommand::DeleteRange(r) => {
                let deleted = self.delete_range(&KeySet::from_range(r), next, &mut events);
                Ok(WriteResult::Delete(DeleteResult { revision: next, deleted, prev_kvs: Vec::new() }))
            }
            WriteCommand::Txn(txn) => self.txn(txn, next, &mut events).map(WriteResult::Txn),
            WriteCommand::Compact { revision } => {
                return match self.compact(*revision) {
                    Ok(r) => Applied { changed: true, result: Ok(WriteResult::Compact(r)), events },
                    Err(e) => Applied { changed: false, result: Err(e), events },
                };
            }
        };
        let changed = !events.is_empty();
        if changed {
            self.revision = next;
            events.sort_by(|a, b| a.kv.key.cmp(&b.kv.key));
            let keys: Vec<Bytes> = events.iter().map(|e| e.kv.key.clone()).collect();
            self.by_rev.insert(next, keys);
        }
        // A command that wrote nothing used no revision: its answer carries the current one.
        let result = result.map(|mut r| {
            if !changed {
                set_revision(&mut r, self.revision);
            }
            r
        });
        Applied { result, events, changed }
    }

    fn put(&mut self, key: &Bytes, value: &Bytes, rev: Revision, events: &mut Vec<Event>) -> Option<KeyValue> {
        let vs = match self.keys.get_mut(key) {
            Some(vs) => vs,
            None => {
                self.bytes += key.len() as u64;
                self.keys.entry(key.clone()).or_default()
            }
        };
        let prev = vs.last().filter(|v| v.value.is_some()).cloned();
        let (create, ver) = match &prev {
            Some(p) => (p.create, p.ver + 1),
            None => (rev, 1),
        };
        let v = Version { rev, create, ver, value: Some(value.clone()) };
        let prev_kv = prev.as_ref().and_then(|p| p.kv(key));
        events.push(Event { kind: EventKind::Put, kv: v.kv(key).unwrap_or_else(|| unreachable_kv(key)), prev_kv: prev_kv.clone(), revision: rev });
        vs.push(v);
        self.versions += 1;
        self.bytes += value.len() as u64;
        if prev.is_none() {
            self.live_keys += 1;
        }
        prev_kv
    }

    fn delete(&mut self, key: &Bytes, rev: Revision, events: &mut Vec<Event>) -> Option<KeyValue> {
        let vs = self.keys.get_mut(key)?;
        let prev_kv = vs.last()?.kv(key)?;
        let v = Version { rev, create: 0, ver: 0, value: None };
        events.push(event_of(key, &v, Some(prev_kv.clone())));
        vs.push(v);
        self.versions += 1;
        self.live_keys -= 1;
        Some(prev_kv)
    }

    fn delete_range(&mut self, set: &KeySet, rev: Revision, events: &mut Vec<Event>) -> u64 {
        if set.is_empty() {
            return 0;
        }
        let live: Vec<Bytes> = self
            .keys
            .range::<[u8], _>(set.bounds())
            .filter(|(_, vs)| vs.last().is_some_and(|v| v.value.is_some()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &live {
            self.delete(k, rev, events);
        }
        live.len() as u64
    }

    fn compare(&self, c: &Compare) -> bool {
        let cur = self.keys.get(&c.key).and_then(|vs| live_at(vs, self.revision));
        let ord = match &c.target {
            CompareTarget::Value(v) => match cur.and_then(|x| x.value.as_ref()) {
                Some(val) => val.cmp(v),
                None => return false,
            },
            CompareTarget::Version(n) => cur.map_or(0, |x| x.ver).cmp(n),
            CompareTarget::CreateRevision(n) => cur.map_or(0, |x| x.create).cmp(n),
            CompareTarget::ModRevision(n) => cur.map_or(0, |x| x.rev).cmp(n),
            CompareTarget::Exists(b) => return (cur.is_some() == *b) == (c.op == CompareOp::Equal),
        };
        match c.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Less => ord.is_lt(),
            CompareOp::Greater => ord.is_gt(),
        }
    }

    /// Refuse a transaction that cannot be applied whole: a key written twice
    /// (one revision can hold one version per key), an `Exists` compare with
    /// `<`/`>`, a read at a revision outside `[compact, current]`.
    fn check_txn(&self, txn: &Txn) -> Result<()> {
        for c in &txn.compares {
            if matches!(c.target, CompareTarget::Exists(_)) && matches!(c.op, CompareOp::Less | CompareOp::Greater) {
                return Err(Error::invalid("an EXISTS compare takes = or != only"));
            }
        }
        for branch in [&txn.success, &txn.failure] {
            let mut puts: Vec<&Bytes> = Vec::new();
            for op in branch.iter() {
                if let Op::Put { key, .. } = op {
                    puts.push(key);
                }
            }
            puts.sort();
            if puts.windows(2).any(|w| w[0] == w[1]) {
                return Err(Error::invalid("a key is put twice in one transaction"));
            }
            for op in branch.iter() {
                let covered = match op {
                    Op::Delete { key } => puts.binary_search(&key).is_ok(),
                    Op::DeleteRange(r) => {
                        let set = KeySet::from_range(r);
                        puts.iter().any(|k| set.contains(k))
                    }
                    Op::Range(spec) => {
                        if let Some(at) = spec.at.filter(|&a| a != 0) {
                            self.read_revision(Some(at))?;
                        }
                        false
                    }
                    _ => false,
                };
                if covered {
                    return Err(Error::invalid("a key is both put and deleted in one transaction"));
                }
            }
        }
        Ok(())
    }

    fn txn(&mut self, txn: &Txn, next: Revision, events: &mut Vec<Event>) -> Result<TxnResult> {
        self.check_txn(txn)?;
        let succeeded = txn.compares.iter().all(|c| self.compare(c));
        let ops = if succeeded { &txn.success } else { &txn.failure };
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            // Reads inside the transaction see its earlier writes: they read at `next`.
            let r = match op {
                Op::Put { key, value } => {
                    let prev_kv = self.put(key, value, next, events);
                    OpResult::Put(PutResult { revision: next, prev_kv })
                }
                Op::Delete { key } => {
                    let prev = self.delete(key, next, events);
                    OpResult::Delete(DeleteResult {
                        revision: next,
                        deleted: u64::from(prev.is_some()),
                        prev_kvs: prev.into_iter().collect(),
                    })
                }
                Op::DeleteRange(r) => {
                    let deleted = self.delete_range(&KeySet::from_range(r), next, events);
                    OpResult::Delete(DeleteResult { revision: next, deleted, prev_kvs: Vec::new() })
                }
                Op::Get { key } => {
                    OpResult::Get(self.keys.get_key_value(key).and_then(|(k, vs)| live_at(vs, next)?.kv(k)))
                }
                Op::Range(spec) => {
                    let rev = match spec.at {
                        None | Some(0) => next,
                        Some(r) => r,
                    };
                    OpResult::Range(self.range_at(spec, rev))
                }
            };
            results.push(r);
        }
        let revision = if events.is_empty() { self.revision } else { next };
        for r in &mut results {
            match r {
                OpResult::Range(rr) => rr.revision = revision,
                OpResult::Put(p) => p.revision = revision,
                OpResult::Delete(d) => d.revision = revision,
                OpResult::Get(_) => {}
            }
        }
        Ok(TxnResult { succeeded, revision, results })
    }

    fn compact(&mut self, rev: Revision) -> Result<CompactResult> {
        if rev > self.revision {
            return Err(Error::FutureRevision { requested: rev, current: self.revision });
        }
        if rev <= self.compact_revision {
            return Err(Error::Compacted { compact_revision: self.compact_revision, requested: rev });
        }
        let mut removed = 0u64;
        let mut empty = Vec::new();
        for (k, vs) in self.keys.iter_mut() {
            // Keep the version live at `rev` (reads at `rev` still work) and a
            // tombstone written exactly at `rev` (a watcher may start at `rev`).
            let i = vs.partition_point(|v| v.rev <= rev);
            let keep_from = match i.checked_sub(1).and_then(|j| vs.get(j)) {
                None => 0,
                Some(v) if v.value.is_none() && v.rev < rev => i,
                Some(_) => i - 1,
            };
            for v in vs.drain(..keep_from) {
                removed += 1;
                self.bytes -= v.value.map_or(0, |b| b.len() as u64);
            }
            if vs.is_empty() {
                empty.push(k.clone());
            }
        }
        for k in empty {
            self.bytes -= k.len() as u64;
            self.keys.remove(&k);
        }
        self.versions -= removed;
        self.by_rev = self.by_rev.split_off(&rev);
        self.compact_revision = rev;
        Ok(CompactResult { compact_revision: rev, removed_versions: removed })
    }

    /// The whole state, msgpack-encoded (raft snapshot, checkpoint file body).
    pub fn snapshot(&self) -> Vec<u8> {
        let data = SnapshotData {
            format: SNAPSHOT_FORMAT,
            revision: self.revision,
            compact_revision: self.compact_revision,
            applied_index: self.applied_index,
            keys: self.keys.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        // Encoding plain structs of bytes and integers into a Vec cannot fail.
        rmp_serde::to_vec(&data).unwrap_or_default()
    }

    /// Rebuild a state from `snapshot` output. Checks what apply relies on
    /// (sorted keys and versions, revisions within bounds) and refuses the
    /// snapshot with `InvalidArgument` otherwise, never panicking later.
    pub fn restore(data: &[u8]) -> Result<Self> {
        let snap: SnapshotData =
            rmp_serde::from_slice(data).map_err(|e| Error::invalid(format!("snapshot does not decode: {e}")))?;
        if snap.format != SNAPSHOT_FORMAT {
            return Err(Error::invalid(format!("snapshot format {} unknown", snap.format)));
        }
        if snap.compact_revision > snap.revision {
            return Err(Error::invalid("snapshot compact revision after its revision"));
        }
        let mut s = TableState {
            revision: snap.revision,
            compact_revision: snap.compact_revision,
            applied_index: snap.applied_index,
            ..Default::default()
        };
        let mut by_rev: BTreeMap<Revision, Vec<Bytes>> = BTreeMap::new();
        let mut last_key: Option<Bytes> = None;
        for (k, vs) in snap.keys {
            if last_key.as_ref().is_some_and(|l| l >= &k) || vs.is_empty() {
                return Err(Error::invalid("snapshot keys unsorted or without versions"));
            }
            let mut prev_rev = 0;
            for v in &vs {
                if v.rev <= prev_rev || v.rev > snap.revision || (v.value.is_some() && (v.ver == 0 || v.create > v.rev)) {
                    return Err(Error::invalid("snapshot versions out of order"));
                }
                prev_rev = v.rev;
                s.versions += 1;
                s.bytes += v.value.as_ref().map_or(0, |b| b.len() as u64);
                if v.rev >= snap.compact_revision {
                    by_rev.entry(v.rev).or_default().push(k.clone());
                }
            }
            if vs.last().is_some_and(|v| v.value.is_some()) {
                s.live_keys += 1;
            }
            s.bytes += k.len() as u64;
            last_key = Some(k.clone());
            s.keys.insert(k, vs);
        }
        // Keys were visited in order, so each revision's key list is sorted.
        s.by_rev = by_rev;
        Ok(s)
    }
}

fn event_of(key: &Bytes, v: &Version, prev_kv: Option<KeyValue>) -> Event {
    match v.kv(key) {
        Some(kv) => Event { kind: EventKind::Put, kv, prev_kv, revision: v.rev },
        None => Event {
            kind: EventKind::Delete,
            kv: KeyValue { key: key.clone(), value: Bytes::new(), create_revision: 0, mod_revision: v.rev, version: 0 },
            prev_kv,
            revision: v.rev,
        },
    }
}

/// Only reached if a version known to be live had no value, which `live_at`
/// and the callers' checks rule out; an empty key-value is safer than a panic.
fn unreachable_kv(key: &Bytes) -> KeyValue {
    KeyValue { key: key.clone(), value: Bytes::new(), create_revision: 0, mod_revision: 0, version: 0 }
}

fn set_revision(r: &mut WriteResult, rev: Revision) {
    match r {
        WriteResult::Put(p) => p.revision = rev,
        WriteResult::Delete(d) => d.revision = rev,
        WriteResult::Txn(t) => t.revision = rev,
        WriteResult::Compact(_) => {}
    }
}
