//! Property tests: random sequences of put / delete / delete-range / txn /
//! compact / get / range (now and at past revisions) / history / watch
//! replay give the same answers from `TableState` (and from the durable
//! `Table`, reopened half way) as from a simple model: a BTreeMap of key ->
//! every version ever written, never compacted (the model only refuses reads
//! below the compact revision).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use weft_table::*;

// ---------------------------------------------------------------- model

/// (revision, Some(value) | None for a delete).
type ModelVersion = (u64, Option<Vec<u8>>);

#[derive(Default, Clone)]
struct Model {
    /// key -> versions, oldest first.
    keys: BTreeMap<Vec<u8>, Vec<ModelVersion>>,
    rev: u64,
    compact: u64,
}

#[derive(Debug, Clone, PartialEq)]
enum Out {
    Err(String, u64),
    Get(Option<KeyValue>, u64),
    Range(Vec<KeyValue>, bool, u64, u64),
    Write(WriteResult),
    Events(Vec<Event>),
    History(Vec<Event>),
}

fn err_out(e: &Error) -> Out {
    let extra = match e {
        Error::Compacted { compact_revision, .. } => *compact_revision,
        Error::FutureRevision { current, .. } => *current,
        _ => 0,
    };
    Out::Err(e.kind().to_string(), extra)
}

fn in_range(k: &[u8], r: &KeyRange) -> bool {
    k >= &r.from[..] && r.to.as_ref().is_none_or(|t| k < &t[..]) && r.prefix.as_ref().is_none_or(|p| k.starts_with(p))
}

impl Model {
    fn kv_at(&self, k: &[u8], at: u64) -> Option<KeyValue> {
        let vs = self.keys.get(k)?;
        let upto: Vec<_> = vs.iter().filter(|(r, _)| *r <= at).collect();
        let (mod_rev, last) = upto.last()?;
        let value = last.as_ref()?;
        // Puts since the last delete.
        let since: Vec<_> = upto.iter().rev().take_while(|(_, v)| v.is_some()).collect();
        Some(KeyValue {
            key: Bytes::copy_from_slice(k),
            value: Bytes::copy_from_slice(value),
            create_revision: since.last().unwrap().0,
            mod_revision: *mod_rev,
            version: since.len() as u64,
        })
    }

    fn read_rev(&self, at: Option<u64>, current: u64) -> Result<u64, Out> {
        match at {
            None | Some(0) => Ok(current),
            Some(r) if r > current => Err(Out::Err("future_revision".into(), current)),
            Some(r) if r < self.compact => Err(Out::Err("compacted".into(), self.compact)),
            Some(r) => Ok(r),
        }
    }

    fn range_at(&self, spec: &RangeSpec, at: u64, answer_rev: u64) -> Out {
        let r = spec.key_range();
        let mut kvs = Vec::new();
        let mut count = 0;
        let mut more = false;
        let limit = match spec.limit {
            None | Some(0) => u64::MAX,
            Some(n) => n,
        };
        for k in self.keys.keys().filter(|k| in_range(k, &r)) {
            if let Some(mut kv) = self.kv_at(k, at) {
                count += 1;
                if spec.count_only {
                    continue;
                }
                if (kvs.len() as u64) < limit {
                    if spec.keys_only {
                        kv.value = Bytes::new();
                    }
                    kvs.push(kv);
                } else {
                    more = true;
                }
            }
        }
        Out::Range(kvs, more, count, answer_rev)
    }

    fn write(&mut self, k: &[u8], v: Option<&[u8]>, rev: u64) {
        self.keys.entry(k.to_vec()).or_default().push((rev, v.map(|x| x.to_vec())));
    }

    fn live_keys(&self, r: &KeyRange, at: u64) -> Vec<Vec<u8>> {
        self.keys.keys().filter(|k| in_range(k, r) && self.kv_at(k, at).is_some()).cloned().collect()
    }

    fn compare(&self, c: &Compare) -> bool {
        let cur = self.kv_at(&c.key, self.rev);
        let ord = match &c.target {
            CompareTarget::Value(v) => match &cur {
                Some(kv) => kv.value.cmp(v),
                None => return false,
            },
            CompareTarget::Version(n) => cur.as_ref().map_or(0, |kv| kv.version).cmp(n),
            CompareTarget::CreateRevision(n) => cur.as_ref().map_or(0, |kv| kv.create_revision).cmp(n),
            CompareTarget::ModRevision(n) => cur.as_ref().map_or(0, |kv| kv.mod_revision).cmp(n),
            CompareTarget::Exists(b) => return (cur.is_some() == *b) == (c.op == CompareOp::Equal),
        };
        match c.op {
            CompareOp::Equal => ord.is_eq(),
            CompareOp::NotEqual => ord.is_ne(),
            CompareOp::Less => ord.is_lt(),
            CompareOp::Greater => ord.is_gt(),
        }
    }

    fn txn_invalid(&self, t: &Txn) -> Option<Out> {
        if t.compares.iter().any(|c| matches!(c.target, CompareTarget::Exists(_)) && matches!(c.op, CompareOp::Less | CompareOp::Greater)) {
            return Some(Out::Err("invalid_argument".into(), 0));
        }
        for branch in [&t.success, &t.failure] {
            let puts: Vec<&Bytes> = branch.iter().filter_map(|o| if let Op::Put { key, .. } = o { Some(key) } else { None }).collect();
            for (i, a) in puts.iter().enumerate() {
                if puts[i + 1..].contains(a) {
                    return Some(Out::Err("invalid_argument".into(), 0));
                }
            }
            for o in branch.iter() {
                match o {
                    Op::Delete { key } if puts.contains(&key) => return Some(Out::Err("invalid_argument".into(), 0)),
                    Op::DeleteRange(r) if puts.iter().any(|k| in_range(k, r)) => {
                        return Some(Out::Err("invalid_argument".into(), 0));
                    }
                    Op::Range(s) => {
                        if let Err(e) = self.read_rev(s.at, self.rev) {
                            return Some(e);
                        }
                    }
                    _ => {}
                }
            }
        }
        None
    }

    fn apply(&mut self, cmd: &WriteCommand) -> Out {
        let next = self.rev + 1;
        match cmd {
            WriteCommand::Put { key, value } => {
                let prev_kv = self.kv_at(key, self.rev);
                self.write(key, Some(value), next);
                self.rev = next;
                Out::Write(WriteResult::Put(PutResult { revision: next, prev_kv }))
            }
            WriteCommand::Delete { key } => match self.kv_at(key, self.rev) {
                Some(prev) => {
                    self.write(key, None, next);
                    self.rev = next;
                    Out::Write(WriteResult::Delete(DeleteResult { revision: next, deleted: 1, prev_kvs: vec![prev] }))
                }
                None => Out::Write(WriteResult::Delete(DeleteResult { revision: self.rev, deleted: 0, prev_kvs: vec![] })),
            },
            WriteCommand::DeleteRange(r) => {
                let live = self.live_keys(r, self.rev);
                for k in &live {
                    self.write(k, None, next);
                }
                if !live.is_empty() {
                    self.rev = next;
                }
                Out::Write(WriteResult::Delete(DeleteResult { revision: self.rev, deleted: live.len() as u64, prev_kvs: vec![] }))
            }
            WriteCommand::Compact { revision } => {
                if *revision > self.rev {
                    return Out::Err("future_revision".into(), self.rev);
                }
                if *revision <= self.compact {
                    return Out::Err("compacted".into(), self.compact);
                }
                self.compact = *revision;
                // removed_versions is an implementation detail: compared separately.
                Out::Write(WriteResult::Compact(CompactResult { compact_revision: *revision, removed_versions: 0 }))
            }
            WriteCommand::Txn(t) => {
                if let Some(e) = self.txn_invalid(t) {
                    return e;
                }
                let succeeded = t.compares.iter().all(|c| self.compare(c));
                let ops = if succeeded { &t.success } else { &t.failure };
                let mut wrote = false;
                let mut results = Vec::new();
                for op in ops {
                    // Reads see this transaction's earlier writes: read at `next`.
                    results.push(match op {
                        Op::Put { key, value } => {
                            let prev_kv = self.kv_at(key, next);
                            self.write(key, Some(value), next);
                            wrote = true;
                            OpResult::Put(PutResult { revision: next, prev_kv })
                        }
                        Op::Delete { key } => match self.kv_at(key, next) {
                            Some(p) => {
                                self.write(key, None, next);
                                wrote = true;
                                OpResult::Delete(DeleteResult { revision: next, deleted: 1, prev_kvs: vec![p] })
                            }
                            None => OpResult::Delete(DeleteResult { revision: next, deleted: 0, prev_kvs: vec![] }),
                        },
                        Op::DeleteRange(r) => {
                            let live = self.live_keys(r, next);
                            for k in &live {
                                self.write(k, None, next);
                            }
                            wrote |= !live.is_empty();
                            OpResult::Delete(DeleteResult { revision: next, deleted: live.len() as u64, prev_kvs: vec![] })
                        }
                        Op::Get { key } => OpResult::Get(self.kv_at(key, next)),
                        Op::Range(s) => {
                            let at = match s.at {
                                None | Some(0) => next,
                                Some(r) => r,
                            };
                            match self.range_at(s, at, 0) {
                                Out::Range(kvs, more, count, _) => OpResult::Range(RangeResult { kvs, more, count, revision: 0 }),
                                _ => unreachable!(),
                            }
                        }
                    });
                }
                let revision = if wrote { next } else { self.rev };
                self.rev = revision;
                for r in &mut results {
                    match r {
                        OpResult::Put(p) => p.revision = revision,
                        OpResult::Delete(d) => d.revision = revision,
                        OpResult::Range(x) => x.revision = revision,
                        OpResult::Get(_) => {}
                    }
                }
                Out::Write(WriteResult::Txn(TxnResult { succeeded, revision, results }))
            }
        }
    }

    /// Every event with a revision in `[from, to]` matching `set`, in (revision, key) order.
    fn events(&self, from: u64, to: u64, r: &KeyRange) -> Vec<Event> {
        let mut out = Vec::new();
        for (k, vs) in &self.keys {
            if !in_range(k, r) {
                continue;
            }
            for (i, (rev, v)) in vs.iter().enumerate() {
                if *rev < from || *rev > to {
                    continue;
                }
                let prev_kv = if i == 0 { None } else { self.kv_at(k, vs[i - 1].0) };
                out.push(match v {
                    Some(_) => Event { kind: EventKind::Put, kv: self.kv_at(k, *rev).unwrap(), prev_kv, revision: *rev },
                    None => Event {
                        kind: EventKind::Delete,
                        kv: KeyValue { key: Bytes::copy_from_slice(k), value: Bytes::new(), create_revision: 0, mod_revision: *rev, version: 0 },
                        prev_kv,
                        revision: *rev,
                    },
                });
            }
        }
        out.sort_by(|a, b| (a.revision, &a.kv.key).cmp(&(b.revision, &b.kv.key)));
        out
    }

    fn history(&self, k: &[u8]) -> Vec<Event> {
        let r = KeyRange { from: Bytes::copy_from_slice(k), to: None, prefix: Some(Bytes::copy_from_slice(k)) };
        let mut evs: Vec<Event> = self.events(0, self.rev, &r).into_iter().filter(|e| e.kv.key == k).collect();
        for e in &mut evs {
            e.prev_kv = None;
        }
        evs.reverse();
        evs
    }
}

/// Drop what compaction may remove: versions at or below the compact revision.
fn after_compact(evs: Vec<Event>, compact: u64) -> Vec<Event> {
    evs.into_iter().filter(|e| e.revision > compact).collect()
}

fn normalise(out: Out) -> Out {
    match out {
        Out::Write(WriteResult::Compact(c)) => Out::Write(WriteResult::Compact(CompactResult { removed_versions: 0, ..c })),
        o => o,
    }
}

// ---------------------------------------------------------------- generators

#[derive(Debug, Clone)]
enum TOp {
    Write(WriteCommand),
    /// Compact at `current - back`.
    Compact(u8),
    Get(Bytes, u8),
    Range(RangeSpec, u8),
    History(Bytes),
    Events(u8, KeyRange),
}

fn key() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', 0xff]), 1..=3).prop_map(Bytes::from)
}

fn value() -> impl Strategy<Value = Bytes> {
    prop::collection::vec(prop::sample::select(vec![b'x', b'y']), 0..=2).prop_map(Bytes::from)
}

fn key_range() -> impl Strategy<Value = KeyRange> {
    (prop::option::of(key()), prop::option::of(key()), prop::option::of(key())).prop_map(|(f, t, p)| KeyRange {
        from: f.unwrap_or_default(),
        to: t,
        prefix: p,
    })
}

/// A revision picked relative to the current one when the op runs:
/// 0 none, 1 the future, otherwise current - (n % (current + 1)).
fn pick(n: u8, current: u64) -> Option<u64> {
    match n {
        0 => None,
        1 => Some(current + 1),
        _ => Some(current - u64::from(n) % (current + 1)),
    }
}

fn range_spec() -> impl Strategy<Value = RangeSpec> {
    (key_range(), prop::option::of(0u64..4), any::<bool>(), prop::bool::weighted(0.15)).prop_map(|(r, limit, keys_only, count_only)| {
        RangeSpec { from: r.from, to: r.to, prefix: r.prefix, limit, at: None, keys_only, count_only }
    })
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        value().prop_map(CompareTarget::Value),
        (0u64..4).prop_map(CompareTarget::Version),
        (0u64..12).prop_map(CompareTarget::CreateRevision),
        (0u64..12).prop_map(CompareTarget::ModRevision),
        any::<bool>().prop_map(CompareTarget::Exists),
    ];
    let op = prop::sample::select(vec![CompareOp::Equal, CompareOp::NotEqual, CompareOp::Less, CompareOp::Greater]);
    (key(), op, target).prop_map(|(key, op, target)| Compare { key, op, target })
}

fn txn_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (key(), value()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => key().prop_map(|key| Op::Delete { key }),
        1 => key_range().prop_map(Op::DeleteRange),
        1 => key().prop_map(|key| Op::Get { key }),
        1 => (range_spec(), any::<u8>()).prop_map(|(mut s, at)| { s.at = if at % 4 == 0 { Some(u64::from(at / 4) % 6 + 1) } else { None }; Op::Range(s) }),
    ]
}

fn top() -> impl Strategy<Value = TOp> {
    prop_oneof![
        6 => (key(), value()).prop_map(|(key, value)| TOp::Write(WriteCommand::Put { key, value })),
        2 => key().prop_map(|key| TOp::Write(WriteCommand::Delete { key })),
        1 => key_range().prop_map(|r| TOp::Write(WriteCommand::DeleteRange(r))),
        3 => (prop::collection::vec(compare(), 0..3), prop::collection::vec(txn_op(), 0..4), prop::collection::vec(txn_op(), 0..3))
            .prop_map(|(compares, success, failure)| TOp::Write(WriteCommand::Txn(Txn { compares, success, failure }))),
        1 => any::<u8>().prop_map(TOp::Compact),
        3 => (key(), any::<u8>()).prop_map(|(k, a)| TOp::Get(k, a)),
        3 => (range_spec(), any::<u8>()).prop_map(|(s, a)| TOp::Range(s, a)),
        1 => key().prop_map(TOp::History),
        1 => (any::<u8>(), key_range()).prop_map(|(a, r)| TOp::Events(a, r)),
    ]
}

// ---------------------------------------------------------------- runners

/// Run one op on the state and on the model; both answers.
fn step_state(st: &mut TableState, m: &mut Model, op: &TOp, index: &mut u64) -> (Out, Out) {
    match op {
        TOp::Write(cmd) => {
            *index += 1;
            let a = st.apply(*index, cmd);
            (normalise(a.result.map_or_else(|e| err_out(&e), Out::Write)), m.apply(cmd))
        }
        TOp::Compact(back) => {
            let rev = m.rev.saturating_sub(u64::from(*back % 8));
            let cmd = WriteCommand::Compact { revision: rev };
            *index += 1;
            let a = st.apply(*index, &cmd);
            (normalise(a.result.map_or_else(|e| err_out(&e), Out::Write)), m.apply(&cmd))
        }
        TOp::Get(k, a) => {
            let at = pick(*a, m.rev);
            let got = st.get(k, at).map_or_else(|e| err_out(&e), |g| Out::Get(g.kv, g.revision));
            let want = match m.read_rev(at, m.rev) {
                Ok(r) => Out::Get(m.kv_at(k, r), m.rev),
                Err(e) => e,
            };
            (got, want)
        }
        TOp::Range(s, a) => {
            let spec = RangeSpec { at: pick(*a, m.rev), ..s.clone() };
            let got = st.range(&spec).map_or_else(|e| err_out(&e), |r| Out::Range(r.kvs, r.more, r.count, r.revision));
            let want = match m.read_rev(spec.at, m.rev) {
                Ok(r) => m.range_at(&spec, r, m.rev),
                Err(e) => e,
            };
            (got, want)
        }
        TOp::History(k) => {
            let got = after_compact(st.history(k, usize::MAX), m.compact);
            (Out::History(got), Out::History(after_compact(m.history(k), m.compact)))
        }
        TOp::Events(a, r) => {
            let from = pick(*a, m.rev).unwrap_or(1).max(m.compact).max(1);
            let set = KeySet::from_range(r);
            let mut got = Vec::new();
            let mut next = from;
            // Small batches: the batching must not lose or repeat events.
            while next <= m.rev {
                let (evs, n) = st.events_between(next, m.rev, &set, true, 2);
                assert!(n > next, "events_between made no progress");
                got.extend(evs);
                next = n;
            }
            // prev_kv may be gone when the previous version was compacted away.
            let mut want = m.events(from, m.rev, r);
            for (g, w) in got.iter().zip(want.iter_mut()) {
                if g.prev_kv.is_none() && w.prev_kv.as_ref().is_some_and(|p| p.mod_revision <= m.compact) {
                    w.prev_kv = None;
                }
            }
            (Out::Events(got), Out::Events(want))
        }
    }
}

fn check_snapshot(st: &TableState, m: &Model) {
    let back = TableState::restore(&st.snapshot()).unwrap();
    assert_eq!(back.revision(), st.revision());
    assert_eq!(back.compact_revision(), st.compact_revision());
    assert_eq!(back.applied_index(), st.applied_index());
    assert_eq!(back.live_keys(), st.live_keys());
    assert_eq!(back.bytes(), st.bytes());
    assert_eq!(back.versions(), st.versions());
    for at in m.compact.max(1)..=m.rev {
        let spec = RangeSpec { at: Some(at), ..Default::default() };
        assert_eq!(back.range(&spec).unwrap(), st.range(&spec).unwrap(), "range at {at} after restore");
    }
    let live = m.live_keys(&KeyRange::default(), m.rev).len() as u64;
    assert_eq!(st.live_keys(), live, "live key count");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn state_matches_model(ops in prop::collection::vec(top(), 1..60)) {
        let mut st = TableState::new();
        let mut m = Model::default();
        let mut index = 0;
        for (i, op) in ops.iter().enumerate() {
            let (got, want) = step_state(&mut st, &mut m, op, &mut index);
            prop_assert_eq!(got, want, "op #{}: {:?}", i, op);
            prop_assert_eq!(st.revision(), m.rev);
        }
        check_snapshot(&st, &m);
    }
}

// The durable driver: same ops through `Table`, reopened half way.
proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn table_matches_model_across_reopen(ops in prop::collection::vec(top(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let cfg = TablesConfig { wal_checkpoint_bytes: 300, ..TablesConfig::default() };
            let mut tables = Tables::open(dir.path(), cfg.clone()).await.unwrap();
            let mut t = tables.create("t", TableConfig::default()).await.unwrap();
            let mut m = Model::default();
            for (i, op) in ops.iter().enumerate() {
                if i == ops.len() / 2 {
                    drop(t);
                    drop(tables);
                    tables = Tables::open(dir.path(), cfg.clone()).await.unwrap();
                    t = tables.get("t").unwrap();
                    assert_eq!(t.revision(), m.rev, "revision after reopen");
                    assert_eq!(t.compact_revision(), m.compact, "compact revision after reopen");
                }
                let (got, want) = match op {
                    TOp::Write(cmd) => (normalise(t.write(cmd.clone()).await.map_or_else(|e| err_out(&e), Out::Write)), m.apply(cmd)),
                    TOp::Compact(back) => {
                        let rev = m.rev.saturating_sub(u64::from(*back % 8));
                        let got = t.compact(rev).await.map_or_else(|e| err_out(&e), |c| Out::Write(WriteResult::Compact(c)));
                        (normalise(got), m.apply(&WriteCommand::Compact { revision: rev }))
                    }
                    TOp::Get(k, a) => {
                        let at = pick(*a, m.rev);
                        let got = t.get(k, at).await.map_or_else(|e| err_out(&e), |g| Out::Get(g.kv, g.revision));
                        let want = match m.read_rev(at, m.rev) { Ok(r) => Out::Get(m.kv_at(k, r), m.rev), Err(e) => e };
                        (got, want)
                    }
                    TOp::Range(s, a) => {
                        let spec = RangeSpec { at: pick(*a, m.rev), ..s.clone() };
                        let got = t.range(spec.clone()).await.map_or_else(|e| err_out(&e), |r| Out::Range(r.kvs, r.more, r.count, r.revision));
                        let want = match m.read_rev(spec.at, m.rev) { Ok(r) => m.range_at(&spec, r, m.rev), Err(e) => e };
                        (got, want)
                    }
                    TOp::History(k) => {
                        let got = after_compact(t.history(k, None).await.unwrap(), m.compact);
                        (Out::History(got), Out::History(after_compact(m.history(k), m.compact)))
                    }
                    TOp::Events(..) => continue,
                };
                assert_eq!(got, want, "op #{i}: {op:?}");
            }
            let s = t.stats();
            assert_eq!(s.revision, m.rev);
            assert_eq!(s.keys, m.live_keys(&KeyRange::default(), m.rev).len() as u64);
        });
    }
}

#[test]
fn etcd_style_revisions_and_versions() {
    let mut st = TableState::new();
    let put = |st: &mut TableState, i: u64, k: &str, v: &str| {
        st.apply(i, &WriteCommand::Put { key: Bytes::from(k.to_string()), value: Bytes::from(v.to_string()) }).result.unwrap()
    };
    put(&mut st, 1, "a", "1");
    put(&mut st, 2, "a", "2");
    put(&mut st, 3, "b", "1");
    let a = st.get(b"a", None).unwrap().kv.unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
    // A delete of an absent key uses no revision.
    let r = st.apply(4, &WriteCommand::Delete { key: Bytes::from_static(b"zz") });
    assert!(!r.changed);
    assert_eq!(st.revision(), 3);
    st.apply(5, &WriteCommand::Delete { key: Bytes::from_static(b"a") }).result.unwrap();
    put(&mut st, 6, "a", "3");
    let a = st.get(b"a", None).unwrap().kv.unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (5, 5, 1));
    assert_eq!(st.get(b"a", Some(4)).unwrap().kv, None, "deleted at 4");
    assert_eq!(st.get(b"a", Some(2)).unwrap().kv.unwrap().value, Bytes::from_static(b"2"));
    // IF ABSENT on an existing key runs the failure branch, which here is empty: no revision.
    let t = Txn {
        compares: vec![Compare::absent(Bytes::from_static(b"a"))],
        success: vec![Op::Put { key: Bytes::from_static(b"a"), value: Bytes::from_static(b"x") }],
        failure: vec![],
    };
    let WriteResult::Txn(r) = st.apply(7, &WriteCommand::Txn(t)).result.unwrap() else { panic!() };
    assert!(!r.succeeded);
    assert_eq!(r.revision, 5);
    // Compact at 4: reads at 3 are refused, reads at 4 still see b.
    st.apply(8, &WriteCommand::Compact { revision: 4 }).result.unwrap();
    assert!(matches!(st.get(b"b", Some(3)), Err(Error::Compacted { compact_revision: 4, requested: 3 })));
    assert_eq!(st.get(b"b", Some(4)).unwrap().kv.unwrap().mod_revision, 3);
    assert!(matches!(st.get(b"b", Some(9)), Err(Error::FutureRevision { requested: 9, current: 5 })));
    let json = KeyValue { key: Bytes::new(), value: Bytes::from_static(b"{\"a\":1}"), create_revision: 1, mod_revision: 1, version: 1 };
    assert_eq!(json.value_json().unwrap()["a"], 1);
    assert!(matches!(KeyValue { value: Bytes::from_static(b"nope"), ..json }.value_json(), Err(Error::NotJson { .. })));
}
