//! Hand-made histories: one that passes, and for each rule one that must fail.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use weft_checker::{check, Event, History, Rule};

/// A small builder so each history reads like the story it tells.
#[derive(Default)]
struct H {
    events: Vec<Event>,
    t: u64,
}

impl H {
    fn tick(&mut self) -> u64 {
        self.t += 1;
        self.t
    }
    fn invoke(&mut self, process: u64, partition: u32, value: &str) -> &mut Self {
        let time_us = self.tick();
        self.events.push(Event::Invoke { process, partition, value: value.into(), time_us });
        self
    }
    fn ok(&mut self, process: u64, partition: u32, value: &str, offset: u64) -> &mut Self {
        let time_us = self.tick();
        self.events.push(Event::Ok { process, partition, value: value.into(), offset, time_us });
        self
    }
    fn fail(&mut self, process: u64, partition: u32, value: &str) -> &mut Self {
        let time_us = self.tick();
        self.events.push(Event::Fail { process, partition, value: value.into(), time_us, error: "not_leader".into() });
        self
    }
    fn info(&mut self, process: u64, partition: u32, value: &str) -> &mut Self {
        let time_us = self.tick();
        self.events.push(Event::Info { process, partition, value: value.into(), time_us, error: "timeout".into() });
        self
    }
    fn produce_ok(&mut self, process: u64, partition: u32, value: &str, offset: u64) -> &mut Self {
        self.invoke(process, partition, value).ok(process, partition, value, offset)
    }
    fn read(&mut self, node: &str, partition: u32, offset: u64, value: &str, final_read: bool) -> &mut Self {
        let time_us = self.tick();
        self.events.push(Event::Read { process: 99, node: node.into(), partition, offset, value: value.into(), time_us, final_read });
        self
    }
    /// A complete final read of `partition` from `node` holding `values` at 0, 1, ...
    fn final_read(&mut self, node: &str, partition: u32, values: &[&str]) -> &mut Self {
        for (o, v) in values.iter().enumerate() {
            self.read(node, partition, o as u64, v, true);
        }
        let time_us = self.tick();
        self.events.push(Event::ReadEnd { process: 99, node: node.into(), partition, end_offset: values.len() as u64, time_us });
        self
    }
    fn history(&self) -> History {
        History { events: self.events.clone() }
    }
}

/// Two producers, two partitions, a failed and an unknown produce (one
/// written after all, one not), two nodes agreeing.
fn valid() -> H {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0)
        .produce_ok(2, 1, "x", 0)
        .produce_ok(1, 0, "b", 1)
        .invoke(1, 0, "c")
        .fail(1, 0, "c")
        .invoke(2, 1, "y")
        .info(2, 1, "y")
        .invoke(2, 0, "z")
        .info(2, 0, "z")
        .produce_ok(2, 1, "w", 2)
        .read("n1", 0, 0, "a", false)
        .final_read("n1", 0, &["a", "b"])
        .final_read("n1", 1, &["x", "y", "w"])
        .final_read("n2", 0, &["a", "b"])
        .final_read("n2", 1, &["x", "y", "w"]);
    h
}

#[test]
fn a_valid_history_passes_and_is_counted() {
    let r = check(&valid().history());
    assert!(r.ok(), "{:#?}", r.violations);
    assert_eq!((r.stats.invoked, r.stats.acked, r.stats.failed, r.stats.info, r.stats.info_seen), (7, 4, 1, 2, 1));
    assert_eq!(r.stats.complete_final_reads, 4);
}

#[test]
fn jsonl_round_trip_keeps_every_event() {
    let h = valid().history();
    let mut buf = vec![];
    h.write_jsonl(&mut buf).unwrap();
    assert_eq!(History::read_jsonl(buf.as_slice()).unwrap(), h);
    let first = String::from_utf8(buf).unwrap().lines().next().unwrap().to_owned();
    assert_eq!(first, r#"{"type":"invoke","process":1,"partition":0,"value":"a","time_us":1}"#);
}

#[test]
fn lost_ack_when_a_node_misses_an_acknowledged_record() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).produce_ok(1, 0, "b", 1).final_read("n1", 0, &["a", "b"]).final_read("n2", 0, &["a"]);
    let r = check(&h.history());
    assert_eq!(r.counts().into_iter().collect::<Vec<_>>(), vec![(Rule::LostAck, 1)]);
    let v = &r.violations[0];
    // The ack of "b" and n2's read end prove it.
    assert!(matches!(&v.evidence[0].event, Event::Ok { value, offset: 1, .. } if value == "b"));
    assert!(matches!(&v.evidence[1].event, Event::ReadEnd { node, .. } if node == "n2"));
    assert_eq!(v.evidence[0].line, 4);
}

#[test]
fn lost_ack_when_the_acked_offset_holds_another_value() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).invoke(2, 0, "b").info(2, 0, "b").final_read("n1", 0, &["b", "a"]);
    let r = check(&h.history());
    assert!(r.has(Rule::LostAck), "{:#?}", r.violations);
    assert!(r.has(Rule::Divergence));
}

#[test]
fn unverified_when_no_final_read_completed() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).read("n1", 0, 0, "a", true);
    let r = check(&h.history());
    assert_eq!(r.counts().into_iter().collect::<Vec<_>>(), vec![(Rule::Unverified, 1)]);
}

#[test]
fn phantom_read_of_a_value_never_produced() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).final_read("n1", 0, &["a", "ghost"]);
    let r = check(&h.history());
    assert_eq!(r.counts().into_iter().collect::<Vec<_>>(), vec![(Rule::PhantomRead, 1)]);
    assert!(matches!(&r.violations[0].evidence[0].event, Event::Read { value, .. } if value == "ghost"));
}

#[test]
fn phantom_read_from_the_wrong_partition_or_before_the_produce() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).final_read("n1", 1, &["a"]).final_read("n1", 0, &["a"]);
    assert!(check(&h.history()).has(Rule::PhantomRead));

    let mut h = H::default();
    h.read("n1", 0, 0, "early", false).produce_ok(1, 0, "early", 0).final_read("n1", 0, &["early"]);
    let r = check(&h.history());
    assert_eq!(r.counts().into_iter().collect::<Vec<_>>(), vec![(Rule::PhantomRead, 1)]);
}

#[test]
fn divergence_between_replicas() {
    let mut h = H::default();
    h.invoke(1, 0, "a").info(1, 0, "a").invoke(2, 0, "b").info(2, 0, "b").final_read("n1", 0, &["a"]).final_read("n2", 0, &["b"]);
    let r = check(&h.history());
    assert_eq!(r.counts().into_iter().collect::<Vec<_>>(), vec![(Rule::Divergence, 1)]);
    let ev = &r.violations[0].evidence;
    assert!(matches!((&ev[0].event, &ev[1].event), (Event::Read { node: n1, .. }, Event::Read { node: n2, .. }) if n1 == "n1" && n2 == "n2"));
}

#[test]
fn divergence_between_two_acks_at_one_offset() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).produce_ok(2, 0, "b", 0);
    let r = check(&h.history());
    assert!(r.has(Rule::Divergence), "{:#?}", r.violations);
}

#[test]
fn order_broken_within_one_producer() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 1).produce_ok(1, 0, "b", 0).final_read("n1", 0, &["b", "a"]);
    let r = check(&h.history());
    assert_eq!(r.counts().into_iter().collect::<Vec<_>>(), vec![(Rule::Order, 1)]);
    // Two producers interleaving is not a violation.
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 1).produce_ok(2, 0, "b", 0).final_read("n1", 0, &["b", "a"]);
    assert!(check(&h.history()).ok());
}

#[test]
fn duplicate_of_one_acknowledged_produce() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).produce_ok(1, 0, "b", 1).final_read("n1", 0, &["a", "b", "a"]);
    let r = check(&h.history());
    assert_eq!(r.counts().into_iter().collect::<Vec<_>>(), vec![(Rule::Duplicate, 1)]);
    let ev = &r.violations[0].evidence;
    assert!(matches!((&ev[0].event, &ev[1].event), (Event::Read { offset: 0, .. }, Event::Read { offset: 2, .. })));
}

#[test]
fn a_failed_produce_must_not_appear() {
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).invoke(1, 0, "b").fail(1, 0, "b").final_read("n1", 0, &["a", "b"]);
    let r = check(&h.history());
    assert_eq!(r.counts().into_iter().collect::<Vec<_>>(), vec![(Rule::FailedRead, 1)]);
    assert_eq!(r.violations[0].evidence.len(), 3, "invoke, fail and read");
}

#[test]
fn an_unknown_produce_may_or_may_not_appear() {
    let mut h = H::default();
    h.invoke(1, 0, "maybe").info(1, 0, "maybe").produce_ok(1, 0, "a", 0).final_read("n1", 0, &["a"]);
    assert!(check(&h.history()).ok());
}

#[test]
fn malformed_histories_are_reported() {
    let mut h = H::default();
    h.ok(1, 0, "never-invoked", 0);
    assert!(check(&h.history()).has(Rule::Malformed));
    let mut h = H::default();
    h.produce_ok(1, 0, "a", 0).ok(1, 0, "a", 0).final_read("n1", 0, &["a"]);
    assert!(check(&h.history()).has(Rule::Malformed));
    let mut h = H::default();
    h.invoke(1, 0, "a").invoke(2, 0, "a");
    assert!(check(&h.history()).has(Rule::Malformed));
}
