//! Property test over seeds: histories generated from a model log pass;
//! the same history with one event mutated fails with the expected rule.
//! A failing seed is printed; rerun one with `WEFT_CHECKER_SEED=N`.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_checker::{check, Event, History, Rule};

const SEEDS: u64 = 300;

/// Sequential processes producing into a model log, interleaved at random;
/// unknown-fate produces are written half of the time; mid-run reads of a
/// prefix; then final full reads from every node.
fn generate(rng: &mut StdRng) -> History {
    let processes = rng.gen_range(1..5u64);
    let partitions = rng.gen_range(1..4u32);
    let nodes = rng.gen_range(1..4usize);
    let ops = rng.gen_range(1..60);
    let mut log: BTreeMap<u32, Vec<String>> = (0..partitions).map(|p| (p, vec![])).collect();
    let mut outstanding: BTreeMap<u64, (u32, String)> = BTreeMap::new();
    let mut events = vec![];
    let mut t = 0u64;
    let mut tick = || {
        t += 1;
        t
    };
    let mut n = 0;
    while n < ops || !outstanding.is_empty() {
        let process = rng.gen_range(0..processes);
        if let Some((partition, value)) = outstanding.remove(&process) {
            let part = log.entry(partition).or_default();
            let time_us = tick();
            match rng.gen_range(0..4) {
                0 => events.push(Event::Fail { process, partition, value, time_us, error: "refused".into() }),
                1 => {
                    if rng.gen_bool(0.5) {
                        part.push(value.clone());
                    }
                    events.push(Event::Info { process, partition, value, time_us, error: "timeout".into() });
                }
                _ => {
                    part.push(value.clone());
                    events.push(Event::Ok { process, partition, value, offset: part.len() as u64 - 1, time_us });
                }
            }
        } else if n < ops {
            let partition = rng.gen_range(0..partitions);
            let value = format!("v{n}");
            n += 1;
            events.push(Event::Invoke { process, partition, value: value.clone(), time_us: tick() });
            outstanding.insert(process, (partition, value));
        }
        if rng.gen_bool(0.05) {
            // A consumer's read of some prefix of a partition.
            let partition = rng.gen_range(0..partitions);
            let part = &log[&partition];
            for (o, v) in part.iter().enumerate().take(rng.gen_range(0..=part.len())) {
                events.push(Event::Read { process: 100, node: "n0".into(), partition, offset: o as u64, value: v.clone(), time_us: tick(), final_read: false });
            }
        }
    }
    for node in 0..nodes {
        for (&partition, part) in &log {
            for (o, v) in part.iter().enumerate() {
                events.push(Event::Read { process: 200, node: format!("n{node}"), partition, offset: o as u64, value: v.clone(), time_us: tick(), final_read: true });
            }
            events.push(Event::ReadEnd { process: 200, node: format!("n{node}"), partition, end_offset: part.len() as u64, time_us: tick() });
        }
    }
    History { events }
}

fn indices(h: &History, f: impl Fn(&Event) -> bool) -> Vec<usize> {
    h.events.iter().enumerate().filter(|(_, e)| f(e)).map(|(i, _)| i).collect()
}

fn pick(rng: &mut StdRng, v: &[usize]) -> Option<usize> {
    (!v.is_empty()).then(|| v[rng.gen_range(0..v.len())])
}

/// Applies one mutation that must be caught; returns the rule that must
/// report it, or None when this history has nothing to mutate that way.
fn mutate(rng: &mut StdRng, h: &mut History, kind: u32) -> Option<Rule> {
    let acked: BTreeMap<String, (u32, u64)> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Ok { value, partition, offset, .. } => Some((value.clone(), (*partition, *offset))),
            _ => None,
        })
        .collect();
    match kind {
        // Drop one node's final read of an acknowledged record.
        0 => {
            let i = pick(rng, &indices(h, |e| matches!(e, Event::Read { value, final_read: true, .. } if acked.contains_key(value))))?;
            h.events.remove(i);
            Some(Rule::LostAck)
        }
        // A final read returns something no one produced.
        1 => {
            let i = pick(rng, &indices(h, |e| matches!(e, Event::Read { final_read: true, .. })))?;
            if let Some(Event::Read { value, .. }) = h.events.get_mut(i) {
                *value = "never-produced".into();
            }
            Some(Rule::PhantomRead)
        }
        // An acknowledged produce reported as definitely failed, but read.
        2 => {
            let i = pick(rng, &indices(h, |e| matches!(e, Event::Ok { .. })))?;
            if let Some(Event::Ok { process, partition, value, time_us, .. }) = h.events.get(i).cloned() {
                h.events[i] = Event::Fail { process, partition, value, time_us, error: "mutated".into() };
            }
            Some(Rule::FailedRead)
        }
        // A record shows up a second time past the end of one node's read.
        3 => {
            let end = pick(rng, &indices(h, |e| matches!(e, Event::ReadEnd { .. })))?;
            let Some(Event::ReadEnd { node, partition, end_offset, time_us, .. }) = h.events.get(end).cloned() else { return None };
            let any = indices(h, |e| matches!(e, Event::Read { partition: p, .. } if *p == partition));
            let Some(Event::Read { value, .. }) = pick(rng, &any).and_then(|i| h.events.get(i).cloned()) else { return None };
            h.events.insert(end, Event::Read { process: 200, node, partition, offset: end_offset, value, time_us, final_read: true });
            if let Some(Event::ReadEnd { end_offset, .. }) = h.events.get_mut(end + 1) {
                *end_offset += 1;
            }
            Some(Rule::Duplicate)
        }
        // An ack names an offset that holds another record.
        4 => {
            let i = pick(rng, &indices(h, |e| matches!(e, Event::Ok { .. })))?;
            let Some(Event::Ok { partition, offset, .. }) = h.events.get(i).cloned() else { return None };
            let others = indices(h, |e| matches!(e, Event::Read { partition: p, offset: o, final_read: true, .. } if *p == partition && *o != offset));
            let Some(Event::Read { offset: other, .. }) = pick(rng, &others).and_then(|j| h.events.get(j).cloned()) else { return None };
            if let Some(Event::Ok { offset, .. }) = h.events.get_mut(i) {
                *offset = other;
            }
            Some(Rule::LostAck)
        }
        // Two of a producer's acks in one partition swap offsets.
        _ => {
            let oks = indices(h, |e| matches!(e, Event::Ok { .. }));
            let pairs: Vec<(usize, usize)> = oks
                .iter()
                .flat_map(|&a| oks.iter().map(move |&b| (a, b)))
                .filter(|&(a, b)| {
                    a < b && matches!((&h.events[a], &h.events[b]), (Event::Ok { process: pa, partition: qa, .. }, Event::Ok { process: pb, partition: qb, .. }) if pa == pb && qa == qb)
                })
                .collect();
            let (a, b) = *pairs.get(rng.gen_range(0..pairs.len().max(1)))?;
            let (Event::Ok { offset: oa, .. }, Event::Ok { offset: ob, .. }) = (h.events[a].clone(), h.events[b].clone()) else { return None };
            if let Event::Ok { offset, .. } = &mut h.events[a] {
                *offset = ob;
            }
            if let Event::Ok { offset, .. } = &mut h.events[b] {
                *offset = oa;
            }
            Some(Rule::Order)
        }
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("WEFT_CHECKER_SEED") {
        Ok(s) => vec![s.parse().expect("WEFT_CHECKER_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    }
}

#[test]
fn model_histories_pass() {
    for seed in seeds() {
        let h = generate(&mut StdRng::seed_from_u64(seed));
        let r = check(&h);
        assert!(r.ok(), "seed {seed}: a valid history was flagged: {:#?}", r.violations);
    }
}

#[test]
fn one_mutated_event_is_caught() {
    let mut caught: BTreeMap<Rule, usize> = BTreeMap::new();
    for seed in seeds() {
        for kind in 0..6 {
            let mut rng = StdRng::seed_from_u64(seed * 10 + u64::from(kind));
            let mut h = generate(&mut rng);
            let Some(rule) = mutate(&mut rng, &mut h, kind) else { continue };
            let r = check(&h);
            assert!(r.has(rule), "seed {seed} mutation {kind}: expected {rule}, got {:?}", r.counts());
            *caught.entry(rule).or_default() += 1;
        }
    }
    // Every kind of mutation was actually exercised, not skipped.
    if std::env::var("WEFT_CHECKER_SEED").is_err() {
        for rule in [Rule::LostAck, Rule::PhantomRead, Rule::FailedRead, Rule::Duplicate, Rule::Order] {
            assert!(caught.get(&rule).copied().unwrap_or(0) >= 20, "{rule} exercised only {:?} times", caught.get(&rule));
        }
    }
}
