//! Automatic compaction of table history, as etcd's
//! `--auto-compaction-mode revision|periodic` (docs/query.md, "Automatic
//! compaction"): config keys `tables.auto_compact_revisions`,
//! `tables.auto_compact_age_ms` and `tables.auto_compact_interval_ms`.
//!
//! [`Compactor`] decides, without I/O (the caller passes the time): from a
//! table's current and compacted revisions, and the revisions it had at
//! earlier passes, the revision to compact it to now, if any.
//! [`Executor::auto_compact`] runs one pass over the tables with the same
//! compaction `COMPACT t REVISION r` does; on a cluster only the node that
//! leads a table's raft group proposes it, so every replica compacts once,
//! at the same revision.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;

use weft_table::{self as table, Revision};

use crate::error::Error;
use crate::exec::Executor;

/// What automatic compaction keeps (0: that rule off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// At least the newest this many revisions.
    pub revisions: u64,
    /// At least the history of the last this many milliseconds.
    pub age_ms: u64,
}

impl Retention {
    /// From the node's `tables.*` keys.
    pub fn from_config(c: &table::TablesConfig) -> Self {
        Retention { revisions: c.auto_compact_revisions, age_ms: c.auto_compact_age_ms }
    }

    pub fn enabled(&self) -> bool {
        self.revisions > 0 || self.age_ms > 0
    }
}

/// Most (time, revision) samples kept per table: at one a pass, enough for
/// an age of this many intervals; past it the oldest go (the age rule then
/// keeps more history than asked, never less).
const MAX_SAMPLES: usize = 4096;

/// The decisions of automatic compaction, per table.
#[derive(Debug)]
pub struct Compactor {
    retention: Retention,
    /// Per table: (time in ms, the table's revision then), oldest first.
    samples: BTreeMap<String, VecDeque<(u64, Revision)>>,
}

impl Compactor {
    pub fn new(retention: Retention) -> Self {
        Compactor { retention, samples: BTreeMap::new() }
    }

    /// The revision to compact `table` to at `now_ms`, given its current
    /// `revision` and the revision it is compacted to: None when neither
    /// rule allows one above `compacted`. Records this pass's sample.
    pub fn due(&mut self, table: &str, now_ms: u64, revision: Revision, compacted: Revision) -> Option<Revision> {
        let by_count = (self.retention.revisions > 0).then(|| revision.saturating_sub(self.retention.revisions));
        let by_age = if self.retention.age_ms > 0 {
            let s = self.samples.entry(table.to_owned()).or_default();
            if s.back().is_none_or(|&(t, _)| t < now_ms) {
                s.push_back((now_ms, revision));
            }
            if s.len() > MAX_SAMPLES {
                s.pop_front();
            }
            // The revision the table had `age_ms` ago: the newest sample
            // at least that old (None while the table is younger).
            let cutoff = now_ms.checked_sub(self.retention.age_ms);
            let at = cutoff.and_then(|c| s.iter().rev().find(|(t, _)| *t <= c).copied());
            if let Some((t, _)) = at {
                // Older samples are of no further use.
                while s.front().is_some_and(|(t0, _)| *t0 < t) {
                    s.pop_front();
                }
            }
            Some(at.map_or(0, |(_, r)| r))
        } else {
            None
        };
        // Both rules: keep what either keeps.
        let target = match (by_count, by_age) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => return None,
        };
        (target > compacted).then_some(target)
    }

    /// Forget the tables not in `live` (dropped since).
    pub fn retain(&mut self, live: &[String]) {
        self.samples.retain(|name, _| live.contains(name));
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pass {
    /// (table, revision compacted to, versions removed).
    pub compacted: Vec<(String, Revision, u64)>,
    /// (table, error) of compactions that failed (tried again next pass).
    pub failed: Vec<(String, String)>,
}

impl Executor {
    /// One pass of automatic compaction over every table at `now_ms`
    /// (cluster mode: the tables whose raft group this node leads).
    /// Counted in `query.auto_compactions`, `query.auto_compacted_versions`
    /// and `query.auto_compaction_errors`.
    pub async fn auto_compact(&self, c: &mut Compactor, now_ms: u64) -> Pass {
        let mut pass = Pass::default();
        let names: Vec<String> = match &self.replicated {
            Some(rep) => rep.list(),
            None => self.tables.list().into_iter().map(|t| t.name).collect(),
        };
        c.retain(&names);
        for name in names {
            match self.compact_due(c, &name, now_ms).await {
                Ok(Some((rev, removed))) => pass.compacted.push((name, rev, removed)),
                Ok(None) => {}
                Err(e) => pass.failed.push((name, e.to_string())),
            }
        }
        let stats = &self.stats;
        stats.auto_compactions.fetch_add(pass.compacted.len() as u64, Ordering::Relaxed);
        stats.auto_compacted_versions.fetch_add(pass.compacted.iter().map(|(_, _, n)| n).sum(), Ordering::Relaxed);
        stats.auto_compaction_errors.fetch_add(pass.failed.len() as u64, Ordering::Relaxed);
        for (table, rev, removed) in &pass.compacted {
            tracing::info!(table = %table, revision = rev, removed_versions = removed, "tables: compacted automatically");
        }
        for (table, error) in &pass.failed {
            tracing::warn!(table = %table, error = %error, "tables: automatic compaction failed");
        }
        pass
    }

    /// Compact one table if its retention allows: (revision, versions removed).
    async fn compact_due(&self, c: &mut Compactor, name: &str, now_ms: u64) -> Result<Option<(Revision, u64)>, Error> {
        match &self.replicated {
            Some(rep) => {
                if !rep.leads(name) {
                    return Ok(None);
                }
                let v = rep.read(name, false).await?;
                let Some((revision, compacted)) = crate::replicated::read_state(v.as_ref(), |st| (st.revision(), st.compact_revision())) else {
                    return Ok(None);
                };
                let Some(rev) = c.due(name, now_ms, revision, compacted) else { return Ok(None) };
                match self.rep_write(rep.as_ref(), name, table::WriteCommand::Compact { revision: rev }).await? {
                    table::WriteResult::Compact(r) => Ok(Some((r.compact_revision, r.removed_versions))),
                    other => Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
                }
            }
            None => {
                let t = self.tables.get(name)?;
                let Some(rev) = c.due(name, now_ms, t.revision(), t.compact_revision()) else { return Ok(None) };
                let r = t.compact(rev).await?;
                Ok(Some((r.compact_revision, r.removed_versions)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_count_keeps_the_newest_revisions_and_waits_for_new_ones() {
        let mut c = Compactor::new(Retention { revisions: 10, age_ms: 0 });
        assert_eq!(c.due("t", 0, 5, 0), None, "fewer revisions than kept");
        assert_eq!(c.due("t", 0, 10, 0), None);
        assert_eq!(c.due("t", 0, 25, 0), Some(15));
        assert_eq!(c.due("t", 0, 25, 15), None, "already there");
        assert_eq!(c.due("t", 0, 26, 15), Some(16));
    }

    #[test]
    fn by_age_compacts_to_the_revision_of_that_long_ago() {
        let mut c = Compactor::new(Retention { revisions: 0, age_ms: 1000 });
        assert_eq!(c.due("t", 0, 5, 0), None, "younger than the age");
        assert_eq!(c.due("t", 500, 9, 0), None);
        // At 1000 the revision of time 0 is 1000 ms old.
        assert_eq!(c.due("t", 1000, 12, 0), Some(5));
        assert_eq!(c.due("t", 1200, 15, 5), None, "the newest sample 1000 ms old is still time 0's");
        assert_eq!(c.due("t", 1600, 20, 5), Some(9), "time 500's revision");
        // A table of its own samples.
        assert_eq!(c.due("u", 1600, 3, 0), None);
    }

    #[test]
    fn both_rules_keep_what_either_keeps() {
        let mut c = Compactor::new(Retention { revisions: 4, age_ms: 1000 });
        assert_eq!(c.due("t", 0, 100, 0), None, "the age rule has nothing old enough");
        // By count 196, by age 100: the older wins.
        assert_eq!(c.due("t", 1000, 200, 0), Some(100));
        let mut c = Compactor::new(Retention { revisions: 50, age_ms: 1000 });
        c.due("t", 0, 100, 0);
        assert_eq!(c.due("t", 1000, 120, 0), Some(70), "by count 70, by age 100");
    }

    #[test]
    fn off_never_compacts_and_dropped_tables_are_forgotten() {
        let mut c = Compactor::new(Retention { revisions: 0, age_ms: 0 });
        assert!(!Retention { revisions: 0, age_ms: 0 }.enabled());
        assert_eq!(c.due("t", 10_000, 1_000_000, 0), None);
        let mut c = Compactor::new(Retention { revisions: 0, age_ms: 10 });
        c.due("gone", 0, 1, 0);
        c.due("kept", 0, 1, 0);
        c.retain(&["kept".to_owned()]);
        assert_eq!(c.samples.keys().collect::<Vec<_>>(), vec!["kept"]);
    }

    #[test]
    fn samples_stay_bounded() {
        let mut c = Compactor::new(Retention { revisions: 0, age_ms: u64::MAX });
        for t in 0..(MAX_SAMPLES as u64 + 100) {
            assert_eq!(c.due("t", t, t, 0), None);
        }
        assert_eq!(c.samples["t"].len(), MAX_SAMPLES);
    }
}
