//! Consumer groups through the Log: rebalance, commits in __consumer_offsets, lag.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use weft_log::*;

#[tokio::test]
async fn rebalance_commit_lag_and_restart() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let log = mem_log(&s, &clock, cfg()).await;
    log.create_topic("t", Some(TopicConfig::default().with_partitions(4))).await.unwrap();
    for p in 0..4 {
        let recs = (0..10).map(|i| ProduceRecord::value(format!("{i}")).with_partition(p)).collect();
        log.produce("t", recs).await.unwrap();
    }
    let a = log.join_group("g", None, "a", &["t"], AssignmentStrategy::Range, 10_000).unwrap();
    assert_eq!(a.assignment.len(), 4);
    assert!(matches!(log.join_group("g", None, "x", &["nope"], AssignmentStrategy::Range, 10_000), Err(LogError::UnknownTopic(_))));
    clock.advance(100);
    let b = log.join_group("g", None, "b", &["t"], AssignmentStrategy::Range, 10_000).unwrap();
    assert_eq!(b.generation, a.generation + 1);
    let a2 = log.heartbeat("g", &a.member_id).unwrap();
    assert_eq!(a2.generation, b.generation);
    // b's share is handed off by a's heartbeat (acknowledging the generation).
    assert!(b.assignment.is_empty());
    let b = log.heartbeat_ack("g", &b.member_id, Some(b.generation)).unwrap();
    assert_eq!(a2.assignment.len() + b.assignment.len(), 4);
    assert_eq!(a2.assignment.len(), 2);

    // a commits what it consumed from its partitions; a stale generation is fenced.
    let commits: Vec<OffsetCommit> = a2
        .assignment
        .iter()
        .map(|(t, p)| OffsetCommit { topic: t.to_string(), partition: *p, offset: Offset(7), metadata: "m".into() })
        .collect();
    let e = log.commit_offsets("g", Some((&a.member_id, a.generation)), commits.clone()).await.unwrap_err();
    assert!(matches!(e, LogError::IllegalGeneration { .. }), "{e}");
    log.commit_offsets("g", Some((&a.member_id, a2.generation)), commits).await.unwrap();
    let d = log.describe_group("g").unwrap();
    assert_eq!(d.state, "stable");
    assert_eq!(d.members.len(), 2);
    // a's two partitions lag 3, b's (nothing committed) lag 10.
    assert_eq!(d.total_lag, 3 + 3 + 10 + 10);
    let (tp, pp) = &a2.assignment[0];
    assert_eq!(log.committed_offset("g", tp.as_str(), *pp).unwrap().offset, Offset(7));

    // b stops heartbeating and expires; a gets everything.
    clock.advance(5_000);
    log.heartbeat("g", &a.member_id).unwrap();
    clock.advance(6_000);
    let rep = log.run_maintenance(clock.now_ms()).unwrap();
    assert_eq!(rep.members_expired, 1);
    let a3 = log.heartbeat("g", &a.member_id).unwrap();
    assert_eq!(a3.assignment.len(), 4);
    assert!(a3.generation > a2.generation);
    assert!(matches!(log.heartbeat("g", &b.member_id), Err(LogError::UnknownMember { .. })));
    log.leave_group("g", &a.member_id).unwrap();
    let groups = log.list_groups();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].state, "empty");

    // Committed offsets survive a restart (replayed from __consumer_offsets).
    drop(log);
    let log = mem_log(&s, &clock, cfg()).await;
    assert_eq!(log.committed_offset("g", tp.as_str(), *pp).unwrap().offset, Offset(7));
    let d = log.describe_group("g").unwrap();
    assert_eq!(d.state, "empty");
    assert_eq!(d.offsets.len(), 2);
    // Standalone commit (no members), then deletion of the group's offsets.
    log.commit_offsets("g", None, vec![OffsetCommit { topic: "t".into(), partition: PartitionId(0), offset: Offset(9), metadata: String::new() }])
        .await
        .unwrap();
    log.delete_group("g").await.unwrap();
    assert!(matches!(log.describe_group("g"), Err(LogError::UnknownGroup(_))));
    drop(log);
    let log = mem_log(&s, &clock, cfg()).await;
    assert!(log.list_groups().is_empty());
}

/// Kafka's offsets.retention.minutes (`offsets_retention_ms`): a group's
/// offsets go once it has had no members and no commit for the retention;
/// a member keeps them, the wait starts when it is last seen, a restart
/// does not shorten it, and an empty membership record without offsets
/// goes too. `None` keeps them for ever.
#[tokio::test]
async fn offsets_expire_after_the_retention_without_members_or_commits() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let day: i64 = 86_400_000;
    let c = LogConfig { offsets_retention: Some(std::time::Duration::from_millis(day as u64)), ..cfg() };
    let log = mem_log(&s, &clock, c.clone()).await;
    log.create_topic("t", None).await.unwrap();
    log.produce("t", (0..5).map(|i| ProduceRecord::value(format!("{i}")).with_partition(0)).collect()).await.unwrap();
    let commit = |o| vec![OffsetCommit { topic: "t".into(), partition: PartitionId(0), offset: Offset(o), metadata: String::new() }];
    // a: a standalone consumer's commit; b: a member that stays; c: a
    // member that leaves without committing.
    log.commit_offsets("a", None, commit(1)).await.unwrap();
    let b = log.join_group("b", None, "m", &["t"], AssignmentStrategy::Range, 10_000).unwrap();
    log.commit_offsets("b", Some((&b.member_id, b.generation)), commit(2)).await.unwrap();
    let cm = log.join_group("c", None, "m", &["t"], AssignmentStrategy::Range, 10_000).unwrap();
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 0);
    log.leave_group("c", &cm.member_id).unwrap();
    clock.advance(day - 1);
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 0, "a day less a millisecond");
    assert_eq!(log.committed_offset("a", "t", PartitionId(0)).unwrap().offset, Offset(1));
    clock.advance(1);
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 1, "a's offsets (and c's bare record, not counted)");
    assert!(log.committed_offset("a", "t", PartitionId(0)).is_none());
    assert!(matches!(log.describe_group("a"), Err(LogError::UnknownGroup(_))));
    assert!(matches!(log.describe_group("c"), Err(LogError::UnknownGroup(_))));
    assert_eq!(log.committed_offset("b", "t", PartitionId(0)).unwrap().offset, Offset(2), "b has a member");
    // b's member leaves now: its wait starts at this round's sighting.
    log.leave_group("b", &b.member_id).unwrap();
    clock.advance(day - 1);
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 0);
    // A restart forgets the sightings; the wait counts from the opening.
    drop(log);
    let log = mem_log(&s, &clock, c.clone()).await;
    clock.advance(1);
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 0, "counted from the restart");
    // A commit restarts the wait too.
    clock.advance(day / 2);
    log.commit_offsets("b", None, commit(3)).await.unwrap();
    clock.advance(day / 2 + 1);
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 0, "committed half a day ago");
    clock.advance(day / 2);
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 1);
    assert!(log.list_groups().is_empty(), "{:?}", log.list_groups());
    drop(log);
    let log = mem_log(&s, &clock, c).await;
    assert!(log.list_groups().is_empty(), "the tombstones were written");
    // Never, when the retention is off.
    drop(log);
    let log = mem_log(&s, &clock, LogConfig { offsets_retention: None, ..cfg() }).await;
    log.commit_offsets("d", None, commit(4)).await.unwrap();
    clock.advance(100 * day);
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 0);
    assert_eq!(log.committed_offset("d", "t", PartitionId(0)).unwrap().offset, Offset(4));
}

/// A commit in flight when its group's offsets expire (its fsync slow) is
/// not undone: the expiry waits for it, sees the new commit, and keeps the
/// group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_in_flight_keeps_its_group_from_expiring() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let day: i64 = 86_400_000;
    let c = LogConfig { offsets_retention: Some(std::time::Duration::from_millis(day as u64)), ..cfg() };
    let log = mem_log(&s, &clock, c).await;
    log.create_topic("t", None).await.unwrap();
    log.produce("t", (0..5).map(|i| ProduceRecord::value(format!("{i}")).with_partition(0)).collect()).await.unwrap();
    let commit = |o| vec![OffsetCommit { topic: "t".into(), partition: PartitionId(0), offset: Offset(o), metadata: String::new() }];
    log.commit_offsets("a", None, commit(1)).await.unwrap();
    clock.advance(day);
    s.set_sync_delay(std::time::Duration::from_millis(300));
    let l = log.clone();
    let late = tokio::spawn(async move { l.commit_offsets("a", None, commit(4)).await });
    // The commit is waiting on its fsync when the expiry looks.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!late.is_finished());
    assert_eq!(log.expire_offsets(clock.now_ms()).await.unwrap(), 0);
    late.await.unwrap().unwrap();
    s.set_sync_delay(std::time::Duration::ZERO);
    assert_eq!(log.committed_offset("a", "t", PartitionId(0)).unwrap().offset, Offset(4));
    // And it stays after a restart (no tombstone after it).
    drop(log);
    let log = mem_log(&s, &clock, cfg()).await;
    assert_eq!(log.committed_offset("a", "t", PartitionId(0)).unwrap().offset, Offset(4));
}

/// kafka-consumer-groups --delete: refused while the group has members;
/// once they left, the offsets and the empty membership go at once (not
/// only after a restart); a group with neither is unknown.
#[tokio::test]
async fn deleting_a_group_waits_for_its_members_and_takes_its_offsets() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let log = mem_log(&s, &clock, cfg()).await;
    log.create_topic("t", None).await.unwrap();
    log.produce("t", (0..5).map(|i| ProduceRecord::value(format!("{i}")).with_partition(0)).collect()).await.unwrap();
    let m = log.join_group("g", None, "a", &["t"], AssignmentStrategy::Range, 10_000).unwrap();
    let c = OffsetCommit { topic: "t".into(), partition: PartitionId(0), offset: Offset(3), metadata: String::new() };
    log.commit_offsets("g", Some((&m.member_id, m.generation)), vec![c.clone()]).await.unwrap();
    assert!(matches!(log.delete_group("g").await, Err(LogError::GroupActive { members: 1, .. })));
    assert_eq!(log.committed_offset("g", "t", PartitionId(0)).unwrap().offset, Offset(3), "a refused delete changes nothing");
    log.leave_group("g", &m.member_id).unwrap();
    log.delete_group("g").await.unwrap();
    assert!(log.list_groups().is_empty(), "{:?}", log.list_groups());
    assert!(matches!(log.describe_group("g"), Err(LogError::UnknownGroup(_))));
    assert!(log.committed_offset("g", "t", PartitionId(0)).is_none());
    assert!(matches!(log.delete_group("g").await, Err(LogError::UnknownGroup(_))));
    // An empty group with no offsets (its members left before committing):
    // its membership record is what goes.
    let m = log.join_group("h", None, "a", &["t"], AssignmentStrategy::Range, 10_000).unwrap();
    log.leave_group("h", &m.member_id).unwrap();
    log.delete_group("h").await.unwrap();
    assert!(matches!(log.delete_group("h").await, Err(LogError::UnknownGroup(_))));
    assert!(matches!(log.delete_group("").await, Err(LogError::InvalidRequest(_))));
    // Gone after a restart too (the tombstones were written).
    drop(log);
    let log = mem_log(&s, &clock, cfg()).await;
    assert!(log.list_groups().is_empty());
}

#[tokio::test]
async fn offsets_topic_is_compacted() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(0));
    let log = mem_log(&s, &clock, cfg()).await;
    log.create_topic("t", None).await.unwrap();
    // commits past the end are refused: give the offsets something to point at
    log.produce("t", (0..2000).map(|i| ProduceRecord::value(format!("{i}")).with_partition(0)).collect()).await.unwrap();
    for i in 0..2000 {
        log.commit_offsets("g", None, vec![OffsetCommit { topic: "t".into(), partition: PartitionId(0), offset: Offset(i), metadata: String::new() }])
            .await
            .unwrap();
    }
    let d = log.describe_topic(OFFSETS_TOPIC).unwrap();
    assert_eq!(d.config.cleanup, CleanupPolicy::Compact);
    assert_eq!(log.committed_offset("g", "t", PartitionId(0)).unwrap().offset, Offset(1999));
}

/// A commit past the end is refused (it would wedge the group); one below
/// the log start is kept but lag is clamped to what exists; the reset
/// policy decides where a consumer starts; reset-offsets moves an inactive
/// group and is refused while it has members.
#[tokio::test]
async fn commit_bounds_lag_clamp_reset_policy_and_reset_offsets() {
    let s = MemStorage::new();
    let clock = Arc::new(ManualClock::new(1_000));
    let log = mem_log(&s, &clock, cfg()).await;
    log.create_topic("t", Some(TopicConfig::default().with_partitions(2))).await.unwrap();
    for i in 0..10 {
        clock.advance(10);
        log.produce("t", vec![ProduceRecord::value(format!("{i}")).with_partition(0)]).await.unwrap();
    }
    let c = |o: u64| vec![OffsetCommit { topic: "t".into(), partition: PartitionId(0), offset: Offset(o), metadata: String::new() }];
    let e = log.commit_offsets("g", None, c(999_999_999)).await.unwrap_err();
    assert!(matches!(e, LogError::OffsetOutOfRange { latest: Offset(10), .. }), "{e}");
    assert!(log.committed_offset("g", "t", PartitionId(0)).is_none());
    log.commit_offsets("g", None, c(10)).await.unwrap();

    // Policies: inside the log the wanted offset stands; outside, the policy.
    let st = log.start_offset("t", PartitionId(0), Some(Offset(4)), ResetPolicy::None).unwrap();
    assert_eq!((st.offset, st.reset), (Offset(4), false));
    let st = log.start_offset("t", PartitionId(0), Some(Offset(50)), ResetPolicy::Earliest).unwrap();
    assert_eq!((st.offset, st.reset), (Offset(0), true));
    let st = log.start_offset("t", PartitionId(0), None, ResetPolicy::Latest).unwrap();
    assert_eq!((st.offset, st.reset), (Offset(10), true));
    let e = log.start_offset("t", PartitionId(0), Some(Offset(50)), ResetPolicy::None).unwrap_err();
    assert!(matches!(e, LogError::NoResetPolicy { .. }) && e.to_string().contains("--reset earliest|latest"), "{e}");

    // reset-offsets: by time (the time index), to an offset (clamped), dry run.
    let r = log.reset_group_offsets("g", "t", Some(PartitionId(0)), ResetTarget::Timestamp(1_000 + 35), false).await.unwrap();
    assert_eq!((r[0].previous, r[0].offset), (Some(Offset(10)), Offset(3)));
    let r = log.reset_group_offsets("g", "t", None, ResetTarget::Offset(1_000_000), true).await.unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].offset, r[1].offset), (Offset(10), Offset(0)));
    assert_eq!(log.committed_offset("g", "t", PartitionId(0)).unwrap().offset, Offset(3), "dry run wrote nothing");
    let d = log.describe_group("g").unwrap();
    assert_eq!(d.total_lag, 7);
    let a = log.join_group("g", None, "a", &["t"], AssignmentStrategy::Range, 10_000).unwrap();
    let e = log.reset_group_offsets("g", "t", None, ResetTarget::Earliest, false).await.unwrap_err();
    assert!(matches!(e, LogError::GroupActive { members: 1, .. }), "{e}");
    log.leave_group("g", &a.member_id).unwrap();
    log.reset_group_offsets("g", "t", None, ResetTarget::Earliest, false).await.unwrap();
    assert_eq!(log.describe_group("g").unwrap().total_lag, 10);
}
