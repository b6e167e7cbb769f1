//! Writing a replica's copy of a partition whose offsets another log
//! assigned (weft-cluster's catch-up, docs/cluster.md "Partition snapshots
//! and catch-up"): records at given offsets (gaps allowed, as compaction
//! leaves them), moving the end forward over a gap, and starting over empty
//! at an offset (a follower whose records every other replica removed
//! starts at their log start, as a Kafka follower truncates to the leader's).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{lock, Partition, BATCH_TARGET_BYTES};
use crate::batch::{self, BatchBuilder};
use crate::config::FsyncPolicy;
use crate::error::{LogError, Result};
use crate::model::{Offset, ProduceRecord};
use crate::segment::Segment;

impl Partition {
    /// Appends records at the offsets given: strictly increasing, the first
    /// at or after the end; offsets between them stay empty (a gap, as
    /// compaction leaves). Returns the new end once the fsync policy is met.
    /// Timestamps missing from a record are `now_ms`.
    pub async fn append_at(self: &Arc<Self>, records: &[(Offset, ProduceRecord)], now_ms: i64) -> Result<Offset> {
        if records.windows(2).any(|w| w[1].0 <= w[0].0) {
            return Err(LogError::InvalidRequest("append_at: offsets must increase".into()));
        }
        let hint = |r: &ProduceRecord| batch::record_size_hint(r.key.as_deref(), r.value.as_deref(), &r.headers);
        // Batches of about BATCH_TARGET_BYTES, each within 2^32 offsets of its base.
        let mut batches = Vec::new();
        let mut start = 0;
        while start < records.len() {
            let base = records[start].0;
            let mut end = start + 1;
            let mut bytes = hint(&records[start].1);
            while let Some((o, r)) = records.get(end) {
                let h = hint(r);
                if bytes + h > BATCH_TARGET_BYTES || o.0 - base.0 > u64::from(u32::MAX) {
                    break;
                }
                bytes += h;
                end += 1;
            }
            let mut b = BatchBuilder::with_capacity(base, bytes);
            for (o, r) in &records[start..end] {
                b.push(*o, r.timestamp_ms.unwrap_or(now_ms), r.key.as_deref(), r.value.as_deref(), &r.headers)?;
            }
            batches.extend(b.finish_mut());
            start = end;
        }
        let (end, epoch) = {
            let mut g = lock(&self.inner);
            self.check_writable(&mut g)?;
            if let Some((first, _)) = records.first()
                && *first < g.next_offset
            {
                return Err(LogError::InvalidRequest(format!("append_at: offset {} is below the end {}", first.0, g.next_offset.0)));
            }
            for (h, bytes) in batches {
                // What the roll check counts: offsets from the end to this batch's end.
                let span = h.next_offset().0 - g.next_offset.0;
                self.append_batch(&mut g, &h, &bytes, span, now_ms, false)?;
            }
            let end = g.next_offset;
            if self.fsync != FsyncPolicy::Always {
                g.hw = end;
                self.hw_tx.send_replace(end);
            }
            (end, self.epoch.load(Ordering::Acquire))
        };
        if self.fsync == FsyncPolicy::Always {
            self.sync_to(end, epoch).await?;
        }
        Ok(end)
    }

    /// Moves the end forward to `offset` without records: the next record
    /// appended gets `offset`, the offsets between are a gap. The active
    /// segment is closed (fsynced) and a new one starts at `offset`, so the
    /// gap survives a restart. An offset below the end is refused.
    pub fn skip_to(&self, offset: Offset) -> Result<()> {
        let mut g = lock(&self.inner);
        self.check_writable(&mut g)?;
        let end = g.next_offset;
        if offset < end {
            return Err(LogError::InvalidRequest(format!("skip_to: offset {} is below the end {}", offset.0, end.0)));
        }
        if offset == end {
            return Ok(());
        }
        // `roll` starts the new segment at `next_offset` and marks everything
        // below it durable (the old active is fsynced; the gap holds nothing).
        g.next_offset = offset;
        if let Err(e) = self.roll(&mut g) {
            g.next_offset = end;
            return Err(e);
        }
        tracing::info!(topic = %self.topic, partition = %self.id, from = end.0, to = offset.0, "partition end moved over a gap");
        Ok(())
    }

    /// Drops every record and starts the partition empty at `offset` (its
    /// log start and end). Old segments are removed oldest first, so a crash
    /// part way leaves a suffix of the old log (as retention would) next to
    /// the new empty segment, or only the new one.
    pub fn reset_to(&self, offset: Offset) -> Result<()> {
        let mut g = lock(&self.inner);
        self.check_writable(&mut g)?;
        let old = std::mem::take(&mut g.segments);
        let (old_start, old_end) = (old.first().map_or(g.next_offset, |s| s.base), g.next_offset);
        // A segment at `offset` itself is truncated in place by `create`.
        let mut first_err = None;
        for s in old.iter().filter(|s| s.base != offset) {
            self.files.forget(&s.log_path());
            for p in [s.log_path(), s.index_path()] {
                if self.storage.exists(&p)
                    && let Err(e) = self.storage.remove_file(&p)
                {
                    first_err.get_or_insert((p, e));
                }
            }
        }
        if let Some(s) = old.iter().find(|s| s.base == offset) {
            self.files.forget(&s.log_path());
            let idx = s.index_path();
            if self.storage.exists(&idx)
                && let Err(e) = self.storage.remove_file(&idx)
            {
                first_err.get_or_insert((idx, e));
            }
        }
        let seg = match Segment::create(&self.files, &self.dir, offset) {
            Ok(s) => s,
            Err(e) => {
                // Keep the invariant (never without an active segment): the
                // old list, some of whose files may be gone; writes are refused.
                g.segments = old;
                let io = std::io::Error::other(e.to_string());
                return Err(self.poison(&mut g, "reset: creating the new segment failed", &io, false));
            }
        };
        g.segments.push(seg);
        g.next_offset = offset;
        g.hw = offset;
        // An fsync in flight covered the old files: it must mark nothing.
        // Before `synced`, as in recovery (`sync_to` reads them without the lock).
        self.epoch.fetch_add(1, Ordering::Release);
        self.synced.store(offset.0, Ordering::Release);
        self.hw_tx.send_replace(offset);
        if let Ok(mut c) = self.compact_state.try_lock() {
            *c = Default::default();
        }
        if let Some((p, e)) = first_err {
            return Err(self.poison(&mut g, &format!("reset: removing {} failed", p.display()), &e, false));
        }
        if let Err(e) = self.storage.sync_dir(&self.dir) {
            return Err(self.poison(&mut g, "reset: sync dir failed", &e, false));
        }
        tracing::info!(topic = %self.topic, partition = %self.id, old_start = old_start.0, old_end = old_end.0, start = offset.0, "partition reset: every record dropped, starts empty");
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::files::OpenFiles;
    use crate::model::{PartitionId, TopicConfig, TopicName};
    use crate::storage::{MemStorage, Storage};

    fn part(s: &MemStorage, cfg: TopicConfig) -> Arc<Partition> {
        let st: Arc<dyn Storage> = Arc::new(s.clone());
        Arc::new(
            Partition::open(Arc::new(OpenFiles::new(st, 8)), PathBuf::from("/t/0"), TopicName::new("t").unwrap(), PartitionId(0), cfg, FsyncPolicy::Always, Duration::ZERO)
            .unwrap(),
        )
    }

    async fn read_all(p: &Partition) -> Vec<(u64, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut at = p.earliest();
        loop {
            let f = p.fetch(at, 1 << 20, 1000, None).await.unwrap();
            let recs = f.decode().unwrap();
            let Some(last) = recs.last() else { return out };
            at = last.offset.next();
            out.extend(recs.into_iter().map(|r| (r.offset.0, r.value.map(|v| v.to_vec()))));
        }
    }

    fn rec(v: &str) -> ProduceRecord {
        ProduceRecord { timestamp_ms: Some(7), ..ProduceRecord::value(v.to_owned()) }
    }

    #[tokio::test]
    async fn records_land_at_their_offsets_with_gaps_and_survive_a_reopen() {
        let s = MemStorage::new();
        let cfg = TopicConfig { segment_bytes: 200, ..Default::default() };
        let p = part(&s, cfg.clone());
        p.reset_to(Offset(5)).unwrap();
        assert_eq!((p.earliest(), p.latest()), (Offset(5), Offset(5)));
        let end = p.append_at(&[(Offset(5), rec("a")), (Offset(6), rec("b")), (Offset(9), rec("c"))], 1).await.unwrap();
        assert_eq!(end, Offset(10));
        // Many small records roll segments (200 bytes each); offsets stay as given.
        let many: Vec<(Offset, ProduceRecord)> = (0..40u64).map(|i| (Offset(20 + 2 * i), rec(&format!("m{i}")))).collect();
        assert_eq!(p.append_at(&many, 1).await.unwrap(), Offset(99));
        p.skip_to(Offset(120)).unwrap();
        assert_eq!(p.latest(), Offset(120));
        assert_eq!(p.stats().synced_offset, Offset(120), "the gap is durable");
        let next = p.append(&[&rec("after")], 1).await.unwrap();
        assert_eq!(next[0].0, Offset(120));
        let before = read_all(&p).await;
        assert_eq!(before.len(), 3 + 40 + 1);
        assert_eq!(&before[..3], &[(5, Some(b"a".to_vec())), (6, Some(b"b".to_vec())), (9, Some(b"c".to_vec()))]);
        assert_eq!(before[3].0, 20);
        assert_eq!(before.last().unwrap().0, 120);
        // A fetch inside a gap starts at the next record.
        let f = p.fetch(Offset(7), 1 << 20, 1, None).await.unwrap();
        assert_eq!(f.decode().unwrap()[0].offset, Offset(9));
        drop(p);
        let p = part(&s, cfg);
        assert_eq!((p.earliest(), p.latest()), (Offset(5), Offset(121)));
        assert_eq!(read_all(&p).await, before);
    }

    #[tokio::test]
    async fn bad_offsets_are_refused_and_write_nothing() {
        let s = MemStorage::new();
        let p = part(&s, TopicConfig::default());
        p.append(&[&rec("x"), &rec("y")], 1).await.unwrap();
        assert!(matches!(p.append_at(&[(Offset(1), rec("z"))], 1).await, Err(LogError::InvalidRequest(_))), "below the end");
        assert!(matches!(p.append_at(&[(Offset(4), rec("z")), (Offset(4), rec("w"))], 1).await, Err(LogError::InvalidRequest(_))), "not increasing");
        assert!(matches!(p.skip_to(Offset(1)), Err(LogError::InvalidRequest(_))));
        p.skip_to(Offset(2)).unwrap();
        assert_eq!(p.latest(), Offset(2));
        assert_eq!(read_all(&p).await.len(), 2);
    }

    #[tokio::test]
    async fn a_reset_drops_everything_and_starts_at_the_offset() {
        let s = MemStorage::new();
        let cfg = TopicConfig { segment_bytes: 200, ..Default::default() };
        let p = part(&s, cfg.clone());
        for i in 0..30 {
            p.append(&[&rec(&format!("r{i}"))], 1).await.unwrap();
        }
        assert!(p.stats().segments > 2);
        // Back to 0 (a moved-off replica drops its copy) ...
        p.reset_to(Offset(0)).unwrap();
        assert_eq!((p.earliest(), p.latest(), p.stats().segments), (Offset(0), Offset(0), 1));
        assert!(read_all(&p).await.is_empty());
        for i in 0..30 {
            p.append(&[&rec(&format!("r{i}"))], 1).await.unwrap();
        }
        // ... or forward past the end (a follower behind every replica's log start).
        p.reset_to(Offset(1000)).unwrap();
        assert_eq!(p.append(&[&rec("new")], 1).await.unwrap()[0].0, Offset(1000));
        drop(p);
        let p = part(&s, cfg);
        assert_eq!((p.earliest(), p.latest()), (Offset(1000), Offset(1001)));
        assert_eq!(read_all(&p).await, vec![(1000, Some(b"new".to_vec()))]);
    }
}
