//! Linearizability of key-value histories (issue #13's proof side): get,
//! put, delete and compare-and-set on the keys of one table, each with its
//! invoke and complete times and an outcome, checked against a sequential
//! model of a key as a register holding (value, version, mod revision).
//!
//! Keys are independent registers (Herlihy and Wing's locality, Porcupine's
//! "P-compositionality"), so each key's operations are checked alone with
//! the Wing-Gong search as Lowe improved it (and as Knossos and Porcupine
//! implement it): walk the operations in real-time order, linearize any
//! pending call the model accepts, backtrack on a return that was reached
//! unlinearized, and remember every (linearized set, state) seen so the
//! search never repeats itself. A step budget bounds the search: a key that
//! runs out answers [`Verdict::TooBig`], never a hang and never a pass.
//!
//! Outcomes: `ok`; `failed`, a compare that was evaluated and did not hold
//! (a definite read of the state: the operation happened and changed
//! nothing); `refused`, an error given before the operation could have had
//! any effect (it is left out); `unknown` (a timeout, a lost connection, an
//! UNAVAILABLE after proposing): it may or may not have taken effect, at
//! any time after its invoke. An unknown operation gets an infinite
//! complete time; one that never took effect is equivalent to one
//! linearized after everything else, where no one can observe it, so the
//! search succeeds as soon as every definite operation is linearized.
//!
//! The model knows a write's mod revision when the write was acknowledged
//! with it, or when a read saw the write's value with one (values must be
//! unique per write; the checker reports duplicates as malformed). A
//! compare on the mod revision against a write whose revision is unknown
//! does not hold: that revision was never seen by anyone, so a client can
//! only have compared against another write's.
//!
//! Besides the per-key search, three table-wide rules on the revision
//! counter (one counter per table, etcd's): acknowledged writes carry
//! distinct revisions; a write acknowledged before another was invoked has
//! the smaller revision; a read's header revision is not below the revision
//! of a write acknowledged before the read was invoked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::CheckerError;

/// What an operation asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum KvOp {
    Get,
    Put {
        value: String,
    },
    /// A conditional put (`SET ... IF VERSION = n`, `IF ABSENT` = version 0,
    /// or a BATCH with one compare and one SET).
    Cas {
        cmp: Compare,
        value: String,
    },
    Delete,
}

/// The compare of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compare {
    /// The key's version (0 = absent).
    Version(u64),
    /// The key's mod revision (the revision of its last write; 0 = absent).
    ModRevision(u64),
    /// The key's value (an absent key has none: false).
    Value(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The compare was evaluated and did not hold: a definite no-op.
    Failed,
    /// Refused before it could take effect (left out of the check).
    Refused,
    /// May or may not have taken effect.
    Unknown,
}

/// What a get saw of a present key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    pub value: String,
    pub version: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<u64>,
}

/// One operation of a history (a JSON line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEvent {
    pub process: u64,
    pub key: String,
    #[serde(flatten)]
    pub op: KvOp,
    pub outcome: Outcome,
    /// Microseconds since the history started.
    pub invoke_us: u64,
    /// Absent for `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete_us: Option<u64>,
    /// An ok get: what it read (`Some(None)`, JSON `null`: the key was absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub read: Option<Option<Observed>>,
    /// An ok write: the revision it got. An ok get: the table's revision
    /// the read was served at (the answer's header revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `read` absent = no read, `null` = read an absent key (serde would
/// otherwise fold both into `None`).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::Observed;

    pub fn serialize<S: Serializer>(v: &Option<Option<Observed>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<Observed>>, D::Error> {
        Option::<Observed>::deserialize(d).map(Some)
    }
}

/// A key-value history; file order does not matter (times do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvHistory {
    pub events: Vec<KvEvent>,
}

impl KvHistory {
    pub fn load(path: &Path) -> Result<KvHistory, CheckerError> {
        let f = std::fs::File::open(path).map_err(CheckerError::Io)?;
        Self::read(std::io::BufReader::new(f))
    }

    pub fn read(r: impl BufRead) -> Result<KvHistory, CheckerError> {
        let mut events = vec![];
        for (i, line) in r.lines().enumerate() {
            let line = line.map_err(CheckerError::Io)?;
            if line.trim().is_empty() {
                continue;
            }
            events.push(
                serde_json::from_str(&line).map_err(|source| CheckerError::Parse {
                    line: i + 1,
                    source,
                })?,
            );
        }
        Ok(KvHistory { events })
    }

    pub fn save(&self, path: &Path) -> Result<(), CheckerError> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(CheckerError::Io)?);
        for e in &self.events {
            let line = serde_json::to_string(e)
                .map_err(|source| CheckerError::Parse { line: 0, source })?;
            writeln!(f, "{line}").map_err(CheckerError::Io)?;
        }
        f.flush().map_err(CheckerError::Io)
    }
}

/// Search limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Search steps per key (one step: one call tried or one backtrack).
    /// Past it the key is [`Verdict::TooBig`].
    pub max_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // About a second per key on a slow machine; histories of a few
        // thousand operations per key with modest overlap stay far below.
        Limits {
            max_steps: 5_000_000,
        }
    }
}

/// A key's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    /// No linearization exists. `linearized`: the longest prefix the search
    /// found (history line numbers, 1-based, in linearization order);
    /// `state`: the model after it; `stuck`: the definite operations that
    /// had to come next, none of which the model accepts from that state
    /// (or whose order among themselves cannot be made to work).
    NotLinearizable {
        linearized: Vec<usize>,
        state: String,
        stuck: Vec<usize>,
    },
    /// The step budget ran out: neither proven nor refuted.
    TooBig {
        steps: u64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct KeyResult {
    pub key: String,
    /// Operations checked (refused ones and unknown gets left out).
    pub ops: usize,
    pub steps: u64,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// A table-wide rule broken, with the history lines that prove it.
#[derive(Debug, Clone, Serialize)]
pub struct RevisionViolation {
    pub rule: &'static str,
    pub message: String,
    pub lines: Vec<usize>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KvStats {
    pub ops: usize,
    pub ok: usize,
    pub failed: usize,
    pub refused: usize,
    pub unknown: usize,
    pub gets: usize,
    pub writes_ok: usize,
    pub keys: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct KvReport {
    pub stats: KvStats,
    /// Events that do not make sense (a read without a result, a failed put,
    /// complete before invoke, a value written twice), with their lines.
    pub malformed: Vec<String>,
    pub keys: Vec<KeyResult>,
    pub revisions: Vec<RevisionViolation>,
}

impl KvReport {
    /// Every key linearizable, every table-wide rule kept, nothing malformed.
    pub fn ok(&self) -> bool {
        self.malformed.is_empty()
            && self.revisions.is_empty()
            && self.keys.iter().all(|k| k.verdict == Verdict::Linearizable)
    }

    pub fn violations(&self) -> impl Iterator<Item = &KeyResult> {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, Verdict::NotLinearizable { .. }))
    }

    pub fn too_big(&self) -> impl Iterator<Item = &KeyResult> {
        self.keys
            .iter()
            .filter(|k| matches!(k.verdict, Verdict::TooBig { .. }))
    }
}

/// Checks a history with the default limits.
pub fn check_kv(h: &KvHistory) -> KvReport {
    check_kv_with(h, Limits::default())
}

pub fn check_kv_with(h: &KvHistory, limits: Limits) -> KvReport {
    let mut report = KvReport::default();
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    // Each value identifies one write (to learn unknown writes' revisions
    // from reads, and to make "a stale value" mean one thing).
    let mut writers: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, e) in h.events.iter().enumerate() {
        let line = i + 1;
        let s = &mut report.stats;
        s.ops += 1;
        match e.outcome {
            Outcome::Ok => s.ok += 1,
            Outcome::Failed => s.failed += 1,
            Outcome::Refused => s.refused += 1,
            Outcome::Unknown => s.unknown += 1,
        }
        if let Some(bad) = malformed(e) {
            report.malformed.push(format!("line {line}: {bad}"));
            continue;
        }
        if e.op == KvOp::Get && e.outcome == Outcome::Ok {
            s.gets += 1;
        }
        if e.op != KvOp::Get && e.outcome == Outcome::Ok {
            s.writes_ok += 1;
        }
        if let KvOp::Put { value } | KvOp::Cas { value, .. } = &e.op
            && let Some(first) = writers.insert((e.key.as_str(), value.as_str()), i)
        {
            report.malformed.push(format!(
                "line {line}: value {value:?} of key {:?} also written at line {}",
                e.key,
                first + 1
            ));
            continue;
        }
        // Refused operations had no effect; unknown gets observed nothing.
        if e.outcome == Outcome::Refused || (e.op == KvOp::Get && e.outcome == Outcome::Unknown) {
            continue;
        }
        by_key.entry(e.key.as_str()).or_default().push(i);
    }
    report.stats.keys = by_key.len();
    if !report.malformed.is_empty() {
        return report;
    }
    // Revisions of writes learned from reads of their (unique) values.
    let mut learned: HashMap<usize, u64> = HashMap::new();
    for e in &h.events {
        if let Some(Some(o)) = &e.read
            && let (Some(r), Some(&w)) = (
                o.mod_revision,
                writers.get(&(e.key.as_str(), o.value.as_str())),
            )
        {
            learned.insert(w, r);
        }
    }
    for (key, idx) in by_key {
        let ops: Vec<&KvEvent> = idx.iter().map(|&i| &h.events[i]).collect();
        let revs: Vec<Option<u64>> = idx
            .iter()
            .map(|i| {
                h.events[*i]
                    .revision
                    .filter(|_| h.events[*i].op != KvOp::Get)
                    .or_else(|| learned.get(i).copied())
            })
            .collect();
        let (verdict, steps) = search(&ops, &revs, limits);
        let verdict = match verdict {
            Verdict::NotLinearizable {
                linearized,
                state,
                stuck,
            } => Verdict::NotLinearizable {
                linearized: linearized.into_iter().map(|j| idx[j] + 1).collect(),
                state,
                stuck: stuck.into_iter().map(|j| idx[j] + 1).collect(),
            },
            v => v,
        };
        report.keys.push(KeyResult {
            key: key.to_owned(),
            ops: ops.len(),
            steps,
            verdict,
        });
    }
    report.revisions = revision_rules(h);
    report
}

fn malformed(e: &KvEvent) -> Option<String> {
    match (e.outcome, e.complete_us) {
        (Outcome::Unknown, _) => {}
        (_, None) => return Some("a definite outcome without a complete time".into()),
        (_, Some(c)) if c < e.invoke_us => {
            return Some(format!("complete {c} before invoke {}", e.invoke_us));
        }
        _ => {}
    }
    if e.outcome == Outcome::Failed && !matches!(e.op, KvOp::Cas { .. }) {
        return Some("only a compare can fail".into());
    }
    if e.op == KvOp::Get && e.outcome == Outcome::Ok && e.read.is_none() {
        return Some("an ok get without what it read".into());
    }
    None
}

/// A key's model state. Values are interned (0: absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct State {
    value: u32,
    version: u64,
    /// 0: unknown (an unacknowledged write nobody read with a revision).
    mod_revision: u64,
}

const ABSENT: State = State {
    value: 0,
    version: 0,
    mod_revision: 0,
};

/// One operation, prepared for the search.
#[derive(Debug, Clone)]
struct Prep {
    kind: PKind,
    definite: bool,
}

#[derive(Debug, Clone)]
enum PKind {
    /// What an ok get read (value 0: absent).
    Read {
        value: u32,
        version: u64,
        mod_revision: Option<u64>,
    },
    /// A write (put or cas) of `value`, conditional on `cmp`; `expect`:
    /// Some(true) ok, Some(false) failed, None unknown.
    Write {
        value: u32,
        revision: u64,
        cmp: Option<PCmp>,
        expect: Option<bool>,
    },
    Delete,
}

#[derive(Debug, Clone)]
enum PCmp {
    Version(u64),
    ModRevision(u64),
    /// u32::MAX: a value no write wrote (never equal).
    Value(u32),
}

impl PCmp {
    fn holds(&self, s: &State) -> bool {
        match self {
            PCmp::Version(v) => s.version == *v,
            // Absent keys have mod revision 0, as etcd's compare; an
            // unknown revision (0 on a present key) never equals a seen one.
            PCmp::ModRevision(r) => {
                if s.value == 0 {
                    *r == 0
                } else {
                    s.mod_revision != 0 && s.mod_revision == *r
                }
            }
            PCmp::Value(v) => s.value != 0 && s.value == *v,
        }
    }
}

impl Prep {
    /// The model's step: the next state, or None when the operation cannot
    /// take effect (with its recorded result) in `s`.
    fn step(&self, s: &State) -> Option<State> {
        match &self.kind {
            PKind::Read {
                value,
                version,
                mod_revision,
            } => {
                if *value == 0 {
                    return (s.value == 0).then_some(*s);
                }
                let rev_ok = match mod_revision {
                    Some(r) => s.mod_revision == 0 || s.mod_revision == *r,
                    None => true,
                };
                (s.value == *value && s.version == *version && rev_ok).then_some(*s)
            }
            PKind::Write {
                value,
                revision,
                cmp,
                expect,
            } => {
                let holds = cmp.as_ref().is_none_or(|c| c.holds(s));
                let written = State {
                    value: *value,
                    version: s.version + 1,
                    mod_revision: *revision,
                };
                match expect {
                    Some(true) => holds.then_some(written),
                    Some(false) => (!holds).then_some(*s),
                    None => Some(if holds { written } else { *s }),
                }
            }
            PKind::Delete => Some(ABSENT),
        }
    }
}

/// An entry of the time-ordered list: the call or the return of op `op`.
#[derive(Debug, Clone, Copy)]
struct Entry {
    op: usize,
    call: bool,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// The Wing-Gong-Lowe search over one key's operations. Returns the
/// verdict (with indices into `ops`) and the steps used.
fn search(ops: &[&KvEvent], revs: &[Option<u64>], limits: Limits) -> (Verdict, u64) {
    let mut values: HashMap<&str, u32> = HashMap::new();
    let mut names: Vec<&str> = vec!["<absent>"];
    let mut prepped = Vec::with_capacity(ops.len());
    for (e, rev) in ops.iter().zip(revs) {
        let definite = e.outcome != Outcome::Unknown;
        let expect = match e.outcome {
            Outcome::Ok => Some(true),
            Outcome::Failed => Some(false),
            _ => None,
        };
        let kind = match &e.op {
            KvOp::Get => match e.read.as_ref().and_then(|r| r.as_ref()) {
                Some(o) => PKind::Read {
                    value: intern_value(&o.value, &mut values, &mut names),
                    version: o.version,
                    mod_revision: o.mod_revision,
                },
                None => PKind::Read {
                    value: 0,
                    version: 0,
                    mod_revision: None,
                },
            },
            KvOp::Put { value } => PKind::Write {
                value: intern_value(value, &mut values, &mut names),
                revision: rev.unwrap_or(0),
                cmp: None,
                expect,
            },
            KvOp::Cas { cmp, value } => {
                let c = match cmp {
                    Compare::Version(v) => PCmp::Version(*v),
                    Compare::ModRevision(r) => PCmp::ModRevision(*r),
                    Compare::Value(v) => {
                        PCmp::Value(values.get(v.as_str()).copied().unwrap_or(u32::MAX))
                    }
                };
                PKind::Write {
                    value: intern_value(value, &mut values, &mut names),
                    revision: rev.unwrap_or(0),
                    cmp: Some(c),
                    expect,
                }
            }
            KvOp::Delete => PKind::Delete,
        };
        prepped.push(Prep { kind, definite });
    }
    // Compare values are resolved after every write is interned (a compare
    // may name a value written later in file order).
    for (p, e) in prepped.iter_mut().zip(ops) {
        if let (
            PKind::Write {
                cmp: Some(c @ PCmp::Value(_)),
                ..
            },
            KvOp::Cas {
                cmp: Compare::Value(v),
                ..
            },
        ) = (&mut p.kind, &e.op)
        {
            *c = PCmp::Value(values.get(v.as_str()).copied().unwrap_or(u32::MAX));
        }
    }

    // Events in time order; at equal times calls first (treating touching
    // operations as concurrent can only accept more, never cry wolf).
    let mut times: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, e) in ops.iter().enumerate() {
        times.push((e.invoke_us, true, i));
        times.push((
            e.complete_us
                .filter(|_| prepped[i].definite)
                .unwrap_or(u64::MAX),
            false,
            i,
        ));
    }
    times.sort_by_key(|&(t, call, i)| (t, !call, i));
    // A doubly linked list with a head sentinel at index 0.
    let mut list: Vec<Entry> = Vec::with_capacity(times.len() + 1);
    list.push(Entry {
        op: NIL,
        call: false,
        prev: NIL,
        next: NIL,
    });
    let mut call_at = vec![0usize; ops.len()];
    let mut ret_at = vec![0usize; ops.len()];
    for (t, &(_, call, op)) in times.iter().enumerate() {
        let at = t + 1;
        list.push(Entry {
            op,
            call,
            prev: at - 1,
            next: if t + 1 < times.len() { at + 1 } else { NIL },
        });
        if call {
            call_at[op] = at;
        } else {
            ret_at[op] = at;
        }
    }
    if let Some(h) = list.first_mut() {
        h.next = if times.is_empty() { NIL } else { 1 };
    }
    let unlink = |list: &mut Vec<Entry>, at: usize| {
        let (p, n) = (list[at].prev, list[at].next);
        list[p].next = n;
        if n != NIL {
            list[n].prev = p;
        }
    };
    let relink = |list: &mut Vec<Entry>, at: usize| {
        let (p, n) = (list[at].prev, list[at].next);
        list[p].next = at;
        if n != NIL {
            list[n].prev = at;
        }
    };

    let definite_total = prepped.iter().filter(|p| p.definite).count();
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = vec![]; // (op, state before it)
    let mut definite_done = 0usize;
    let mut state = ABSENT;
    let mut steps = 0u64;
    let mut best: (Vec<usize>, State) = (vec![], ABSENT);
    let mut entry = list[0].next;
    loop {
        if definite_done == definite_total {
            return (Verdict::Linearizable, steps);
        }
        steps += 1;
        if steps > limits.max_steps {
            return (
                Verdict::TooBig {
                    steps: limits.max_steps,
                },
                steps,
            );
        }
        // The end of the list (only unknown operations' calls were left,
        // none new to the memo) is the same as reaching a return.
        let e = (entry != NIL).then(|| list[entry]);
        match e {
            Some(Entry {
                op,
                call: true,
                next,
                ..
            }) => {
                let stepped = prepped[op].step(&state);
                let mut moved = false;
                if let Some(ns) = stepped {
                    linearized[op / 64] |= 1 << (op % 64);
                    if seen.insert((linearized.clone(), ns)) {
                        stack.push((op, state));
                        state = ns;
                        if prepped[op].definite {
                            definite_done += 1;
                        }
                        unlink(&mut list, call_at[op]);
                        unlink(&mut list, ret_at[op]);
                        if stack.len() > best.0.len() {
                            best = (stack.iter().map(|&(o, _)| o).collect(), state);
                        }
                        entry = list[0].next;
                        moved = true;
                    } else {
                        linearized[op / 64] &= !(1 << (op % 64));
                    }
                }
                if !moved {
                    entry = next;
                }
            }
            _ => {
                // A return reached with its call unlinearized: backtrack.
                let Some((op, before)) = stack.pop() else {
                    let stuck = stuck_after(ops, &prepped, &best.0);
                    return (
                        Verdict::NotLinearizable {
                            linearized: best.0,
                            state: describe(&best.1, &names),
                            stuck,
                        },
                        steps,
                    );
                };
                if prepped[op].definite {
                    definite_done -= 1;
                }
                state = before;
                linearized[op / 64] &= !(1 << (op % 64));
                relink(&mut list, ret_at[op]);
                relink(&mut list, call_at[op]);
                entry = list[call_at[op]].next;
            }
        }
    }
}

fn intern_value<'a>(
    v: &'a str,
    values: &mut HashMap<&'a str, u32>,
    names: &mut Vec<&'a str>,
) -> u32 {
    if let Some(&id) = values.get(v) {
        return id;
    }
    let id = u32::try_from(names.len()).unwrap_or(u32::MAX - 1);
    names.push(v);
    values.insert(v, id);
    id
}

/// After the longest linearized prefix: the operations left whose call
/// came before the earliest return among them (definite ones; one of these
/// had to be next, and none could be).
fn stuck_after(ops: &[&KvEvent], prepped: &[Prep], prefix: &[usize]) -> Vec<usize> {
    let done: HashSet<usize> = prefix.iter().copied().collect();
    let left = || (0..ops.len()).filter(|i| !done.contains(i));
    let first_return = left()
        .filter(|&i| prepped[i].definite)
        .filter_map(|i| ops[i].complete_us)
        .min()
        .unwrap_or(u64::MAX);
    left()
        .filter(|&i| prepped[i].definite && ops[i].invoke_us <= first_return)
        .collect()
}

fn describe(s: &State, names: &[&str]) -> String {
    if s.value == 0 {
        return "absent".into();
    }
    let v = names.get(s.value as usize).copied().unwrap_or("?");
    let rev = if s.mod_revision == 0 {
        "unknown".to_string()
    } else {
        s.mod_revision.to_string()
    };
    format!("value {v:?}, version {}, mod revision {rev}", s.version)
}

/// The table-wide rules on the revision counter.
fn revision_rules(h: &KvHistory) -> Vec<RevisionViolation> {
    let mut out = vec![];
    // Acknowledged writes with their revision: (line, invoke, complete, revision).
    let writes: Vec<(usize, u64, u64, u64)> = h
        .events
        .iter()
        .enumerate()
        // Only puts and CASes: a delete of an absent key writes nothing and
        // answers the current revision, not one of its own.
        .filter(|(_, e)| {
            matches!(e.op, KvOp::Put { .. } | KvOp::Cas { .. }) && e.outcome == Outcome::Ok
        })
        .filter_map(|(i, e)| Some((i + 1, e.invoke_us, e.complete_us?, e.revision?)))
        .collect();
    let mut by_rev: HashMap<u64, usize> = HashMap::new();
    for &(line, _, _, r) in &writes {
        if let Some(other) = by_rev.insert(r, line) {
            out.push(RevisionViolation {
                rule: "duplicate_revision",
                message: format!("two acknowledged writes got revision {r}"),
                lines: vec![other, line],
            });
        }
    }
    // Writes and reads sorted by invoke; writes by complete: sweep the
    // highest revision acknowledged before each invoke.
    let mut done: Vec<(u64, u64, usize)> = writes.iter().map(|&(l, _, c, r)| (c, r, l)).collect();
    done.sort_unstable();
    let mut later: Vec<(u64, usize, u64, bool)> =
        writes.iter().map(|&(l, i, _, r)| (i, l, r, true)).collect();
    for (i, e) in h.events.iter().enumerate() {
        if e.op == KvOp::Get
            && e.outcome == Outcome::Ok
            && let Some(r) = e.revision
        {
            later.push((e.invoke_us, i + 1, r, false));
        }
    }
    later.sort_unstable();
    let mut k = 0;
    let mut max: Option<(u64, usize)> = None;
    for (invoke, line, r, is_write) in later {
        while k < done.len() && done[k].0 < invoke {
            if max.is_none_or(|(m, _)| done[k].1 > m) {
                max = Some((done[k].1, done[k].2));
            }
            k += 1;
        }
        if let Some((m, ml)) = max {
            if is_write && r <= m {
                out.push(RevisionViolation {
                    rule: "revision_order",
                    message: format!("a write got revision {r}, not above revision {m} acknowledged before it was invoked"),
                    lines: vec![ml, line],
                });
            } else if !is_write && r < m {
                out.push(RevisionViolation {
                    rule: "stale_revision",
                    message: format!("a read was served at revision {r}, below revision {m} acknowledged before it was invoked"),
                    lines: vec![ml, line],
                });
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A small history builder: times in arbitrary units.
    #[derive(Default)]
    struct H(Vec<KvEvent>);

    impl H {
        fn op(
            &mut self,
            p: u64,
            op: KvOp,
            t: (u64, Option<u64>),
            outcome: Outcome,
        ) -> &mut KvEvent {
            self.0.push(KvEvent {
                process: p,
                key: "x".into(),
                op,
                outcome,
                invoke_us: t.0,
                complete_us: t.1,
                read: None,
                revision: None,
                node: None,
                error: None,
            });
            self.0.last_mut().unwrap()
        }
        fn put(&mut self, p: u64, v: &str, a: u64, b: u64) -> &mut KvEvent {
            self.op(p, KvOp::Put { value: v.into() }, (a, Some(b)), Outcome::Ok)
        }
        fn put_unknown(&mut self, p: u64, v: &str, a: u64) -> &mut KvEvent {
            self.op(
                p,
                KvOp::Put { value: v.into() },
                (a, None),
                Outcome::Unknown,
            )
        }
        fn get(&mut self, p: u64, seen: Option<(&str, u64)>, a: u64, b: u64) -> &mut KvEvent {
            let e = self.op(p, KvOp::Get, (a, Some(b)), Outcome::Ok);
            e.read = Some(seen.map(|(v, n)| Observed {
                value: v.into(),
                version: n,
                mod_revision: None,
            }));
            e
        }
        fn cas(
            &mut self,
            p: u64,
            cmp: Compare,
            v: &str,
            a: u64,
            b: Option<u64>,
            outcome: Outcome,
        ) -> &mut KvEvent {
            self.op(
                p,
                KvOp::Cas {
                    cmp,
                    value: v.into(),
                },
                (a, b),
                outcome,
            )
        }
        fn check(&self) -> KvReport {
            check_kv(&KvHistory {
                events: self.0.clone(),
            })
        }
        fn linearizable(&self) -> bool {
            let r = self.check();
            assert!(r.malformed.is_empty(), "{:?}", r.malformed);
            assert!(r.too_big().next().is_none());
            r.ok()
        }
    }

    #[test]
    fn sequential_puts_and_reads_are_linearizable() {
        let mut h = H::default();
        h.get(1, None, 0, 1);
        h.put(1, "a", 2, 3);
        h.get(2, Some(("a", 1)), 4, 5);
        h.put(2, "b", 6, 7);
        h.get(1, Some(("b", 2)), 8, 9);
        h.op(1, KvOp::Delete, (10, Some(11)), Outcome::Ok);
        h.get(2, None, 12, 13);
        h.put(1, "c", 14, 15);
        h.get(2, Some(("c", 1)), 16, 17); // version restarts after a delete
        assert!(h.linearizable());
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_not() {
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.put(1, "b", 2, 3);
        h.get(2, Some(("a", 1)), 4, 5);
        let r = h.check();
        assert!(!r.ok());
        let Verdict::NotLinearizable {
            linearized,
            state,
            stuck,
        } = &r.keys[0].verdict
        else {
            panic!("{r:?}")
        };
        assert_eq!(
            linearized,
            &vec![1, 2],
            "the puts linearize, then the read cannot"
        );
        assert!(state.contains("\"b\""), "{state}");
        assert_eq!(stuck, &vec![3]);
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either() {
        for seen in [Some(("a", 1)), Some(("b", 2))] {
            let mut h = H::default();
            h.put(1, "a", 0, 1);
            h.put(1, "b", 2, 10);
            h.get(2, seen, 3, 4);
            assert!(h.linearizable(), "{seen:?}");
        }
        // But two reads in sequence cannot go back in time.
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.put(1, "b", 2, 10);
        h.get(2, Some(("b", 2)), 3, 4);
        h.get(2, Some(("a", 1)), 5, 6);
        assert!(!h.linearizable());
    }

    #[test]
    fn a_lost_write_is_caught() {
        // An acknowledged put whose value no later read sees, the previous
        // value read instead.
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.put(2, "b", 2, 3);
        h.get(3, Some(("a", 1)), 10, 11);
        h.get(3, Some(("a", 1)), 12, 13);
        assert!(!h.linearizable());
        // Or the key read as absent after it.
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.get(3, None, 2, 3);
        assert!(!h.linearizable());
    }

    #[test]
    fn two_cas_from_the_same_version_cannot_both_succeed() {
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.cas(1, Compare::Version(1), "b", 2, Some(10), Outcome::Ok);
        h.cas(2, Compare::Version(1), "c", 3, Some(9), Outcome::Ok);
        assert!(!h.linearizable());
        // One of them failing is fine, either one.
        for loser in [0, 1] {
            let mut h = H::default();
            h.put(1, "a", 0, 1);
            h.cas(
                1,
                Compare::Version(1),
                "b",
                2,
                Some(10),
                if loser == 0 {
                    Outcome::Failed
                } else {
                    Outcome::Ok
                },
            );
            h.cas(
                2,
                Compare::Version(1),
                "c",
                3,
                Some(9),
                if loser == 1 {
                    Outcome::Failed
                } else {
                    Outcome::Ok
                },
            );
            assert!(h.linearizable());
        }
        // A CAS that failed though nothing else could have changed the key.
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.cas(1, Compare::Version(1), "b", 2, Some(3), Outcome::Failed);
        assert!(!h.linearizable());
    }

    #[test]
    fn compares_on_value_and_mod_revision() {
        let mut h = H::default();
        h.put(1, "a", 0, 1).revision = Some(5);
        h.cas(1, Compare::Value("a".into()), "b", 2, Some(3), Outcome::Ok)
            .revision = Some(6);
        h.cas(1, Compare::ModRevision(6), "c", 4, Some(5), Outcome::Ok)
            .revision = Some(7);
        h.cas(1, Compare::ModRevision(6), "d", 6, Some(7), Outcome::Failed);
        h.cas(
            1,
            Compare::Value("a".into()),
            "e",
            8,
            Some(9),
            Outcome::Failed,
        );
        let g = h.get(2, Some(("c", 3)), 10, 11);
        g.read.as_mut().unwrap().as_mut().unwrap().mod_revision = Some(7);
        assert!(h.linearizable());
        // The read reporting another revision for "c" is not.
        let mut bad = H(h.0.clone());
        bad.0[5]
            .read
            .as_mut()
            .unwrap()
            .as_mut()
            .unwrap()
            .mod_revision = Some(6);
        assert!(!bad.linearizable());
        // A compare on the value of a write that was replaced succeeds: not.
        let mut bad = H(h.0.clone());
        bad.0[4].outcome = Outcome::Ok;
        assert!(!bad.linearizable());
    }

    #[test]
    fn unknown_writes_may_or_may_not_take_effect() {
        // Never seen: fine.
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.put_unknown(2, "b", 2);
        h.get(3, Some(("a", 1)), 5, 6);
        assert!(h.linearizable());
        // Seen late, after reads that did not see it: fine (it took effect late).
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.put_unknown(2, "b", 2);
        h.get(3, Some(("a", 1)), 5, 6);
        h.get(3, Some(("b", 2)), 7, 8);
        assert!(h.linearizable());
        // But not seen before it was invoked.
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.get(3, Some(("b", 2)), 2, 3);
        h.put_unknown(2, "b", 4);
        assert!(!h.linearizable());
        // Nor seen, then unseen (it happened once).
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.put_unknown(2, "b", 2);
        h.get(3, Some(("b", 2)), 5, 6);
        h.get(3, Some(("a", 1)), 7, 8);
        assert!(!h.linearizable());
        // An unknown CAS whose compare held may have taken effect...
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.cas(2, Compare::Version(1), "b", 2, None, Outcome::Unknown);
        h.get(3, Some(("b", 2)), 5, 6);
        assert!(h.linearizable());
        // ... one whose compare could never hold did not.
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.cas(2, Compare::Version(7), "b", 2, None, Outcome::Unknown);
        h.get(3, Some(("b", 2)), 5, 6);
        assert!(!h.linearizable());
        // A refused write is as if never sent.
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.op(
            2,
            KvOp::Put { value: "b".into() },
            (2, Some(3)),
            Outcome::Refused,
        );
        h.get(3, Some(("b", 2)), 5, 6);
        assert!(!h.linearizable());
    }

    #[test]
    fn an_unknown_write_learns_its_revision_from_a_read() {
        let mut h = H::default();
        h.put(1, "a", 0, 1).revision = Some(1);
        h.put_unknown(2, "b", 2);
        h.get(3, Some(("b", 2)), 5, 6)
            .read
            .as_mut()
            .unwrap()
            .as_mut()
            .unwrap()
            .mod_revision = Some(2);
        h.cas(3, Compare::ModRevision(2), "c", 7, Some(8), Outcome::Ok);
        assert!(h.linearizable());
        let mut h2 = H(h.0.clone());
        h2.0[3].outcome = Outcome::Failed;
        assert!(!h2.linearizable());
    }

    #[test]
    fn keys_are_independent() {
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.put(1, "b", 2, 3).key = "y".into();
        h.get(2, Some(("a", 1)), 4, 5);
        h.get(2, None, 6, 7).key = "z".into();
        let r = h.check();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.keys.len(), 3);
    }

    #[test]
    fn malformed_histories_are_reported() {
        let mut h = H::default();
        h.put(1, "a", 0, 1);
        h.put(1, "a", 2, 3);
        assert!(!h.check().malformed.is_empty(), "a value written twice");
        let mut h = H::default();
        h.op(
            1,
            KvOp::Put { value: "a".into() },
            (0, Some(1)),
            Outcome::Failed,
        );
        assert!(!h.check().malformed.is_empty(), "a failed put");
        let mut h = H::default();
        h.put(1, "a", 5, 1);
        assert!(!h.check().malformed.is_empty(), "complete before invoke");
    }

    #[test]
    fn the_step_budget_answers_too_big() {
        // Many fully concurrent writes and a read of an early one: every
        // order is tried before the search gives up.
        let mut h = H::default();
        for i in 0..40 {
            h.put(i, &format!("v{i}"), 0, 1000);
        }
        h.get(99, Some(("nope", 1)), 2000, 2001);
        let r = check_kv_with(
            &KvHistory {
                events: h.0.clone(),
            },
            Limits { max_steps: 1000 },
        );
        assert!(
            matches!(r.keys[0].verdict, Verdict::TooBig { .. }),
            "{:?}",
            r.keys[0].verdict
        );
        assert!(!r.ok(), "too big is never a pass");
    }

    #[test]
    fn table_wide_revision_rules() {
        let mut h = H::default();
        h.put(1, "a", 0, 1).revision = Some(2);
        h.put(1, "b", 2, 3).revision = Some(1);
        h.0[1].key = "y".into();
        let r = h.check();
        assert!(
            r.revisions.iter().any(|v| v.rule == "revision_order"),
            "{r:?}"
        );
        let mut h = H::default();
        h.put(1, "a", 0, 1).revision = Some(2);
        h.put(1, "b", 0, 3).revision = Some(2);
        h.0[1].key = "y".into();
        assert!(
            h.check()
                .revisions
                .iter()
                .any(|v| v.rule == "duplicate_revision")
        );
        let mut h = H::default();
        h.put(1, "a", 0, 1).revision = Some(2);
        h.get(2, None, 3, 4).revision = Some(1);
        h.0[1].key = "y".into();
        assert!(
            h.check()
                .revisions
                .iter()
                .any(|v| v.rule == "stale_revision")
        );
        h.0[1].revision = Some(2);
        assert!(h.check().ok());
    }

    #[test]
    fn the_history_round_trips_as_json_lines() {
        let mut h = H::default();
        h.put(1, "a", 0, 1).revision = Some(3);
        h.get(2, None, 2, 3);
        h.cas(
            1,
            Compare::Value("a".into()),
            "b",
            4,
            None,
            Outcome::Unknown,
        );
        let hist = KvHistory {
            events: h.0.clone(),
        };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.jsonl");
        hist.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.lines().next().unwrap().contains("\"f\":\"put\""),
            "{text}"
        );
        assert_eq!(KvHistory::load(&p).unwrap(), hist);
    }
}
