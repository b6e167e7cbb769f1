//! The checker: one pass to index the history, then one check per rule.
//! Every violation carries the events (with their line numbers) that prove it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::history::{Event, History, Process};

/// The rule a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// An acknowledged record is missing from, or different at its acked
    /// offset in, a final full read of its partition.
    LostAck,
    /// A record was read that no one produced (to that partition, or
    /// before it was produced).
    PhantomRead,
    /// One offset holds two different values (across reads, replicas, or
    /// an ack and a read, or two acks).
    Divergence,
    /// A producer's acknowledged records in one partition do not have
    /// increasing offsets in the order it produced them.
    Order,
    /// One produce's value appears at more than one offset.
    Duplicate,
    /// A produce that definitely failed was read.
    FailedRead,
    /// A partition with acknowledged records has no complete final read,
    /// so losses there cannot be ruled out.
    Unverified,
    /// The history itself is inconsistent (a result without an invoke, two
    /// results for one produce, a value produced twice).
    Malformed,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        f.write_str(&s)
    }
}

/// An event of the history and its 1-based line number in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    pub line: usize,
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub rule: Rule,
    pub message: String,
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub events: usize,
    pub invoked: usize,
    pub acked: usize,
    pub failed: usize,
    pub info: usize,
    /// Produces of unknown fate that were read back (written after all).
    pub info_seen: usize,
    pub reads: usize,
    pub final_reads: usize,
    /// (partition, node) pairs with a complete final read.
    pub complete_final_reads: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub stats: Stats,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// Violations per rule.
    pub fn counts(&self) -> BTreeMap<Rule, usize> {
        let mut m = BTreeMap::new();
        for v in &self.violations {
            *m.entry(v.rule).or_default() += 1;
        }
        m
    }

    pub fn has(&self, rule: Rule) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Ok { offset: u64 },
    Fail,
    Info,
}

struct Produce {
    invoke: usize,
    process: Process,
    partition: u32,
    result: Option<(usize, Fate)>,
}

struct Checker<'h> {
    events: &'h [Event],
    violations: Vec<Violation>,
}

impl Checker<'_> {
    fn flag(&mut self, rule: Rule, message: String, lines: &[usize]) {
        let evidence = lines.iter().filter_map(|&i| self.events.get(i).map(|e| Evidence { line: i + 1, event: e.clone() })).collect();
        self.violations.push(Violation { rule, message, evidence });
    }
}

/// Checks a history against every rule.
pub fn check(history: &History) -> Report {
    let events = history.events.as_slice();
    let mut c = Checker { events, violations: vec![] };
    let mut stats = Stats { events: events.len(), ..Stats::default() };

    // Index produces by value.
    let mut produces: HashMap<&str, Produce> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Invoke { process, partition, value, .. } => {
                stats.invoked += 1;
                if let Some(p) = produces.get(value.as_str()) {
                    let first = p.invoke;
                    c.flag(Rule::Malformed, format!("value {value:?} produced twice (values must be unique)"), &[first, i]);
                    continue;
                }
                produces.insert(value, Produce { invoke: i, process: *process, partition: *partition, result: None });
            }
            Event::Ok { process, partition, value, .. }
            | Event::Fail { process, partition, value, .. }
            | Event::Info { process, partition, value, .. } => {
                let fate = match e {
                    Event::Ok { offset, .. } => {
                        stats.acked += 1;
                        Fate::Ok { offset: *offset }
                    }
                    Event::Fail { .. } => {
                        stats.failed += 1;
                        Fate::Fail
                    }
                    _ => {
                        stats.info += 1;
                        Fate::Info
                    }
                };
                let Some(p) = produces.get_mut(value.as_str()) else {
                    c.flag(Rule::Malformed, format!("result for {value:?}, which was never invoked"), &[i]);
                    continue;
                };
                if p.process != *process || p.partition != *partition {
                    let first = p.invoke;
                    c.flag(Rule::Malformed, format!("result for {value:?} names another process or partition than its invoke"), &[first, i]);
                    continue;
                }
                if let Some((prev, _)) = p.result {
                    c.flag(Rule::Malformed, format!("two results for {value:?}"), &[prev, i]);
                    continue;
                }
                p.result = Some((i, fate));
            }
            Event::Read { .. } | Event::ReadEnd { .. } => {}
        }
    }

    // Two acks at one offset.
    let mut acked_at: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    // Every valid ack, conflicting ones included: each must survive.
    let mut acks: Vec<(u32, u64, usize)> = vec![];
    for (i, e) in events.iter().enumerate() {
        if let Event::Ok { partition, offset, value, .. } = e
            && produces.get(value.as_str()).and_then(|p| p.result).map(|(r, _)| r) == Some(i)
        {
            acks.push((*partition, *offset, i));
            if let Some(&prev) = acked_at.get(&(*partition, *offset)) {
                c.flag(Rule::Divergence, format!("partition {partition} offset {offset} acknowledged for two values"), &[prev, i]);
            } else {
                acked_at.insert((*partition, *offset), i);
            }
        }
    }

    // Reads.
    let mut first_read_at: BTreeMap<(u32, u64), usize> = BTreeMap::new();
    let mut diverged: BTreeSet<(u32, u64, &str)> = BTreeSet::new();
    let mut first_offset_of: HashMap<&str, (u32, u64, usize)> = HashMap::new();
    let mut duplicated: BTreeSet<(&str, u64)> = BTreeSet::new();
    let mut info_seen: BTreeSet<&str> = BTreeSet::new();
    let mut failed_seen: BTreeSet<&str> = BTreeSet::new();
    let mut final_reads: BTreeMap<(u32, &str), BTreeMap<u64, usize>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let Event::Read { node, partition, offset, value, final_read, .. } = e else { continue };
        stats.reads += 1;
        let key = (*partition, *offset);
        if *final_read {
            stats.final_reads += 1;
            final_reads.entry((*partition, node.as_str())).or_default().entry(*offset).or_insert(i);
        }
        match produces.get(value.as_str()) {
            None => c.flag(Rule::PhantomRead, format!("{node} returned {value:?} at {partition}/{offset}, which no one produced"), &[i]),
            Some(p) if p.invoke > i => {
                let inv = p.invoke;
                c.flag(Rule::PhantomRead, format!("{node} returned {value:?} at {partition}/{offset} before it was produced"), &[i, inv]);
            }
            Some(p) if p.partition != *partition => {
                let inv = p.invoke;
                c.flag(Rule::PhantomRead, format!("{value:?} was produced to partition {} but read from partition {partition}", p.partition), &[inv, i]);
            }
            Some(p) => match p.result {
                Some((r, Fate::Fail)) if failed_seen.insert(value.as_str()) => {
                    c.flag(Rule::FailedRead, format!("{value:?} definitely failed, yet {node} returned it at {partition}/{offset}"), &[p.invoke, r, i]);
                }
                Some((_, Fate::Info)) => {
                    info_seen.insert(value.as_str());
                }
                _ => {}
            },
        }
        // One value per offset, across reads.
        match first_read_at.get(&key) {
            None => {
                first_read_at.insert(key, i);
            }
            Some(&first) => {
                if let Some(Event::Read { value: v0, node: n0, .. }) = events.get(first)
                    && v0 != value
                    && diverged.insert((*partition, *offset, value.as_str()))
                {
                    c.flag(Rule::Divergence, format!("{partition}/{offset} holds {v0:?} on {n0} and {value:?} on {node}"), &[first, i]);
                }
            }
        }
        // Against the ack at this offset.
        if let Some(&ack) = acked_at.get(&key)
            && let Some(Event::Ok { value: acked, .. }) = events.get(ack)
            && acked != value
            && diverged.insert((*partition, *offset, value.as_str()))
        {
            c.flag(Rule::Divergence, format!("{partition}/{offset} was acknowledged for {acked:?} but {node} returned {value:?}"), &[ack, i]);
        }
        // One offset per value.
        match first_offset_of.get(value.as_str()) {
            None => {
                first_offset_of.insert(value, (*partition, *offset, i));
            }
            Some(&(p0, o0, first)) => {
                if (p0, o0) != key && duplicated.insert((value.as_str(), *offset)) {
                    c.flag(Rule::Duplicate, format!("{value:?} appears at {p0}/{o0} and at {partition}/{offset}"), &[first, i]);
                }
            }
        }
    }
    stats.info_seen = info_seen.len();

    // Complete final reads, per partition.
    let mut read_ends: BTreeMap<u32, Vec<(usize, &str, u64)>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if let Event::ReadEnd { node, partition, end_offset, .. } = e {
            read_ends.entry(*partition).or_default().push((i, node.as_str(), *end_offset));
        }
    }
    stats.complete_final_reads = read_ends.values().map(Vec::len).sum();

    // No acknowledged record lost.
    let mut unverified: BTreeSet<u32> = BTreeSet::new();
    for &(partition, offset, ack) in &acks {
        let Some(Event::Ok { value, .. }) = events.get(ack) else { continue };
        let Some(ends) = read_ends.get(&partition) else {
            if unverified.insert(partition) {
                c.flag(Rule::Unverified, format!("partition {partition} has acknowledged records but no complete final read"), &[ack]);
            }
            continue;
        };
        for &(end, node, end_offset) in ends {
            let read = final_reads.get(&(partition, node)).and_then(|m| m.get(&offset)).copied();
            match read.and_then(|r| events.get(r).map(|e| (r, e))) {
                Some((_, Event::Read { value: v, .. })) if v == value => {}
                Some((r, _)) => c.flag(Rule::LostAck, format!("{value:?} acknowledged at {partition}/{offset}; {node}'s final read has another value there"), &[ack, r, end]),
                None => c.flag(
                    Rule::LostAck,
                    format!("{value:?} acknowledged at {partition}/{offset}; {node}'s final read (up to {end_offset}) does not have it"),
                    &[ack, end],
                ),
            }
        }
    }

    // A producer's acknowledged records keep their order, per partition.
    // (process, partition) -> (invoke line, ok line, offset) of each ack.
    type Acks = Vec<(usize, usize, u64)>;
    let mut by_producer: BTreeMap<(Process, u32), Acks> = BTreeMap::new();
    for p in produces.values() {
        if let Some((r, Fate::Ok { offset })) = p.result {
            by_producer.entry((p.process, p.partition)).or_default().push((p.invoke, r, offset));
        }
    }
    for ((process, partition), mut acks) in by_producer {
        acks.sort_unstable();
        for w in acks.windows(2) {
            if let [(_, ra, oa), (_, rb, ob)] = w
                && ob <= oa
            {
                c.flag(Rule::Order, format!("process {process} produced to partition {partition} one record after another, yet got offsets {oa} then {ob}"), &[*ra, *rb]);
            }
        }
    }

    // Line order keeps a report stable and readable.
    c.violations.sort_by_key(|v| (v.rule, v.evidence.first().map(|e| e.line)));
    Report { stats, violations: c.violations }
}
