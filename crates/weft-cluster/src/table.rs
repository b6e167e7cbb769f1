//! A replicated table's raft group: a `StateMachine` adapter over
//! weft-table's deterministic `TableState` (docs/query.md, "Tables:
//! replicated"). Every replica applies the same encoded `WriteCommand`s in
//! the same order, so revisions, per-key versions and watch events are
//! identical on every replica; the proposer gets the encoded answer.
//!
//! Status: the adapter, its answer codec and the replica's read/watch view
//! are here and unit-tested; the metadata group does not yet allocate table
//! groups and the binary does not yet route table operations to them (see
//! docs/query.md for what is missing).

use std::sync::{Arc, RwLock};

use weft_table::{Event, KeySet, Revision, TableState, WriteCommand, WriteResult};

use crate::error::{ClusterError, Result};
use crate::host::StateMachine;

/// Answer tag: the command applied and this is its `WriteResult`.
const ANSWER_OK: u8 = 0;
/// Answer tag: the command was refused (a failed compare is not a refusal:
/// it is an Ok `Txn` result with `succeeded: false`); `kind\0message` follows.
const ANSWER_ERR: u8 = 1;

/// What a proposer gets back from the table's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableAnswer {
    Ok(WriteResult),
    /// The command was refused by the state (`weft_table::Error::kind()` and its message).
    Err { kind: String, message: String },
}

impl TableAnswer {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            TableAnswer::Ok(r) => {
                let mut out = vec![ANSWER_OK];
                out.extend_from_slice(&r.encode());
                out
            }
            TableAnswer::Err { kind, message } => {
                let mut out = vec![ANSWER_ERR];
                out.extend_from_slice(kind.as_bytes());
                out.push(0);
                out.extend_from_slice(message.as_bytes());
                out
            }
        }
    }

    pub fn decode(b: &[u8]) -> Result<TableAnswer> {
        let bad = |what: &str| ClusterError::StateMachine(format!("table answer: {what}"));
        match b.split_first() {
            Some((&ANSWER_OK, rest)) => WriteResult::decode(rest).map(TableAnswer::Ok).map_err(|e| bad(&e.to_string())),
            Some((&ANSWER_ERR, rest)) => {
                let at = rest.iter().position(|&c| c == 0).ok_or_else(|| bad("error without kind"))?;
                let kind = String::from_utf8_lossy(&rest[..at]).into_owned();
                let message = String::from_utf8_lossy(&rest[at + 1..]).into_owned();
                Ok(TableAnswer::Err { kind, message })
            }
            _ => Err(bad("unknown tag")),
        }
    }
}

/// A replica's view of its table: local (serializable) reads and watch.
/// Linearizable reads first confirm the group's commit index (ReadIndex)
/// and wait until `applied_index()` reaches it, then read here.
#[derive(Debug)]
pub struct TableReplica {
    pub name: String,
    state: RwLock<TableState>,
    /// Woken after every applied entry and restore.
    pub moved: tokio::sync::Notify,
}

impl TableReplica {
    /// Read the applied state (a poisoned lock still holds a consistent state:
    /// apply never panics midway on a decoded command).
    pub fn read<T>(&self, f: impl FnOnce(&TableState) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn revision(&self) -> Revision {
        self.read(|s| s.revision())
    }

    pub fn applied_index(&self) -> u64 {
        self.read(|s| s.applied_index())
    }

    /// Events of `set` from revision `from` on, up to `max_events` (rounded
    /// up to whole revisions), and the next revision to ask for; waits until
    /// at least one matching event exists. Events come from the applied
    /// state, so a watcher resumed on another replica at `next` sees every
    /// later event exactly once.
    pub async fn wait_events(&self, from: Revision, set: &KeySet, prev_kv: bool, max_events: usize) -> weft_table::Result<(Vec<Event>, Revision)> {
        let mut from = from;
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let (events, next) = self.read(|s| {
                s.watch_check(from)?;
                Ok::<_, weft_table::Error>(s.events_between(from, s.revision(), set, prev_kv, max_events))
            })?;
            if !events.is_empty() {
                return Ok((events, next));
            }
            from = next.max(from);
            moved.await;
        }
    }
}

/// The table group's state machine.
pub struct TableSm {
    replica: Arc<TableReplica>,
}

/// Build a table group's state machine and the replica view it updates.
pub fn start(name: impl Into<String>) -> (TableSm, Arc<TableReplica>) {
    let replica = Arc::new(TableReplica { name: name.into(), state: RwLock::new(TableState::new()), moved: tokio::sync::Notify::new() });
    (TableSm { replica: replica.clone() }, replica)
}

impl StateMachine for TableSm {
    fn apply(&mut self, index: u64, data: &bytes::Bytes) -> Vec<u8> {
        if data.is_empty() {
            // Raft's empty entries (a new leader's) are not commands.
            return Vec::new();
        }
        let answer = match WriteCommand::decode(data) {
            // A command that does not decode is refused the same way on every replica.
            Err(e) => TableAnswer::Err { kind: e.kind().to_string(), message: e.to_string() },
            Ok(cmd) => {
                let applied = self.replica.state.write().unwrap_or_else(|p| p.into_inner()).apply(index, &cmd);
                match applied.result {
                    Ok(r) => TableAnswer::Ok(r),
                    Err(e) => TableAnswer::Err { kind: e.kind().to_string(), message: e.to_string() },
                }
            }
        };
        self.replica.moved.notify_waiters();
        answer.encode()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.replica.read(|s| s.snapshot())
    }

    fn restore(&mut self, data: &[u8]) -> Result<()> {
        let s = TableState::restore(data).map_err(|e| ClusterError::StateMachine(format!("table {} snapshot: {e}", self.replica.name)))?;
        *self.replica.state.write().unwrap_or_else(|p| p.into_inner()) = s;
        self.replica.moved.notify_waiters();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_table::{Compare, Op, Txn, WatchTarget};

    fn cmds() -> Vec<WriteCommand> {
        vec![
            WriteCommand::Put { key: "a".into(), value: "1".into() },
            WriteCommand::Put { key: "b".into(), value: "2".into() },
            // CAS with the right version: succeeds.
            WriteCommand::Txn(Txn { compares: vec![Compare::version_eq("a", 1)], success: vec![Op::Put { key: "a".into(), value: "3".into() }], failure: vec![] }),
            // CAS with a stale version: fails (no revision used).
            WriteCommand::Txn(Txn { compares: vec![Compare::version_eq("a", 1)], success: vec![Op::Put { key: "a".into(), value: "4".into() }], failure: vec![] }),
            WriteCommand::Delete { key: "b".into() },
        ]
    }

    #[test]
    fn replicas_applying_the_same_log_agree_and_snapshots_restore() {
        let (mut a, ra) = start("t");
        let (mut b, rb) = start("t");
        let mut answers = Vec::new();
        for (i, c) in cmds().iter().enumerate() {
            let x = a.apply(i as u64 + 1, &bytes::Bytes::from(c.encode()));
            let y = b.apply(i as u64 + 1, &bytes::Bytes::from(c.encode()));
            assert_eq!(x, y);
            answers.push(TableAnswer::decode(&x).unwrap());
        }
        assert_eq!(ra.revision(), 4);
        assert_eq!(a.snapshot(), b.snapshot());
        match &answers[3] {
            TableAnswer::Ok(WriteResult::Txn(t)) => assert!(!t.succeeded, "stale CAS must fail"),
            other => panic!("{other:?}"),
        }
        // A third replica restored from a snapshot continues identically.
        let (mut c, rc) = start("t");
        c.restore(&a.snapshot()).unwrap();
        let more = WriteCommand::Put { key: "c".into(), value: "5".into() }.encode();
        assert_eq!(a.apply(6, &bytes::Bytes::from(more.clone())), c.apply(6, &bytes::Bytes::from(more.clone())));
        assert_eq!(rc.revision(), 5);
        assert_eq!(rb.applied_index(), 5);
        assert!(c.restore(b"garbage").is_err());
    }

    #[test]
    fn garbage_and_empty_entries() {
        let (mut a, r) = start("t");
        assert!(a.apply(1, &bytes::Bytes::new()).is_empty());
        match TableAnswer::decode(&a.apply(2, &bytes::Bytes::from_static(b"\xffnot msgpack"))).unwrap() {
            TableAnswer::Err { kind, .. } => assert_eq!(kind, "invalid_argument"),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.revision(), 0);
        assert!(TableAnswer::decode(&[9]).is_err());
        assert!(TableAnswer::decode(&[]).is_err());
    }

    #[tokio::test]
    async fn a_watch_resumed_on_another_replica_sees_each_event_once() {
        let (mut a, ra) = start("t");
        let (mut b, rb) = start("t");
        let set = KeySet::from_target(&WatchTarget::Prefix("".into()));
        for (i, c) in cmds().iter().enumerate() {
            a.apply(i as u64 + 1, &bytes::Bytes::from(c.encode()));
            b.apply(i as u64 + 1, &bytes::Bytes::from(c.encode()));
        }
        // Watch on replica a from revision 1, stop after the first event's revision.
        let (first, next) = ra.wait_events(1, &set, false, 1).await.unwrap();
        assert_eq!(first.len(), 1);
        // Resume on replica b from the last revision + 1.
        let (rest, _) = rb.wait_events(next, &set, false, 100).await.unwrap();
        let revs: Vec<Revision> = first.iter().chain(rest.iter()).map(|e| e.revision).collect();
        assert_eq!(revs, vec![1, 2, 3, 4]);
        // A later write wakes a waiting watcher.
        let w = tokio::spawn({
            let rb = rb.clone();
            let set = set.clone();
            async move { rb.wait_events(5, &set, false, 10).await }
        });
        tokio::task::yield_now().await;
        b.apply(6, &bytes::Bytes::from(WriteCommand::Put { key: "z".into(), value: "9".into() }.encode()));
        let (ev, _) = w.await.unwrap().unwrap();
        assert_eq!(ev[0].revision, 5);
    }
}
