//! The executor: AQL trees to weft-table calls (and weft-log reads for
//! FROM TOPIC). Every clause is honoured: table, key, revision, limits,
//! offsets, conditions and the timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use bytes::Bytes;
use weft_table::{self as table, Tables};

use crate::aql::{self, Batch, CmpOp, Compare, CompareTarget, DeleteCond, KeyRange, Predicate, Query, SetCond, Statement};
use crate::config::QueryConfig;
use crate::error::Error;
use crate::eval;
use crate::pb;

/// What a caller wants to do, for the [`Authorizer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Admin,
}

/// The access hook: called before every statement touches a table or a
/// topic. The default allows everything; weft-auth's authorizer plugs in
/// here (docs/query.md, "Access").
pub trait Authorizer: Send + Sync + 'static {
    /// `resource` is `table:<name>`, `topic:<name>` or `tables` (SHOW TABLES).
    fn authorize(&self, identity: Option<&str>, access: Access, resource: &str) -> Result<(), Error>;
}

/// Allows every call.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn authorize(&self, _identity: Option<&str>, _access: Access, _resource: &str) -> Result<(), Error> {
        Ok(())
    }
}

/// Counters of the query API (stats keys `query.*`).
#[derive(Debug, Default)]
pub struct QueryStats {
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
    pub deadlines: AtomicU64,
    pub watches_started: AtomicU64,
    pub watches_open: AtomicU64,
    pub watch_events: AtomicU64,
    pub streams: AtomicU64,
    pub compare_failures: AtomicU64,
    /// Automatic compactions done here, the versions they removed, and the
    /// ones that failed (crate::autocompact).
    pub auto_compactions: AtomicU64,
    pub auto_compacted_versions: AtomicU64,
    pub auto_compaction_errors: AtomicU64,
}

impl QueryStats {
    pub fn gauges(&self) -> Vec<(String, u64)> {
        let g = |k: &str, v: &AtomicU64| (format!("query.{k}"), v.load(AtomicOrdering::Relaxed));
        vec![
            g("queries", &self.queries),
            g("query_errors", &self.query_errors),
            g("deadlines_exceeded", &self.deadlines),
            g("watches_started", &self.watches_started),
            g("watches_open", &self.watches_open),
            g("watch_events", &self.watch_events),
            g("streams", &self.streams),
            g("compare_failures", &self.compare_failures),
            g("auto_compactions", &self.auto_compactions),
            g("auto_compacted_versions", &self.auto_compacted_versions),
            g("auto_compaction_errors", &self.auto_compaction_errors),
        ]
    }
}

/// Runs queries. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    pub(crate) tables: Tables,
    pub(crate) log: Option<weft_log::Log>,
    /// FROM TOPIC through the node's record plane (cluster mode: any node
    /// answers for any replicated partition); None: `log` directly.
    pub(crate) plane: Option<weft_broker::plane::Plane>,
    pub(crate) config: Arc<QueryConfig>,
    pub(crate) auth: Arc<dyn Authorizer>,
    pub(crate) stats: Arc<QueryStats>,
    /// Cluster mode: tables live on raft groups (None: the local `tables`).
    pub(crate) replicated: Option<Arc<dyn crate::replicated::ReplicatedTables>>,
    /// Runs a statement another node forwarded: never forwards it again.
    pub(crate) forwarded: bool,
}

impl Executor {
    /// `log`: the node's log for FROM TOPIC (None: those queries answer UNAVAILABLE).
    pub fn new(tables: Tables, log: Option<weft_log::Log>, config: QueryConfig) -> Self {
        Executor {
            tables,
            log,
            plane: None,
            config: Arc::new(config),
            auth: Arc::new(AllowAll),
            stats: Arc::new(QueryStats::default()),
            replicated: None,
            forwarded: false,
        }
    }

    /// FROM TOPIC reads through `plane` (the node's record plane: in
    /// cluster mode replicated partitions are read on a replica, wherever
    /// they are) instead of the local log.
    pub fn with_plane(mut self, plane: weft_broker::plane::Plane) -> Self {
        self.plane = Some(plane);
        self
    }

    /// Cluster mode: run table statements on replicated tables.
    pub fn with_replicated(mut self, r: Arc<dyn crate::replicated::ReplicatedTables>) -> Self {
        self.replicated = Some(r);
        self
    }

    /// Cluster mode: run a statement another node forwarded here (the
    /// binary's `cluster.local.query`). The caller was authorized where it
    /// called; this node never forwards the statement again (one hop).
    pub async fn execute_forwarded(&self, req: &crate::replicated::Forward) -> Result<pb::Result, Error> {
        // The entry node checked query.max_text_bytes on the caller's text; this is its canonical print.
        let mut q = aql::parse(&req.aql)?;
        if req.timeout_ms > 0 {
            q.timeout_ms = Some(q.timeout_ms.map_or(req.timeout_ms, |t| t.min(req.timeout_ms)));
        }
        let mut here = self.clone();
        here.forwarded = true;
        here.execute_with(&q, None, None, req.serializable).await
    }

    pub fn with_authorizer(mut self, auth: Arc<dyn Authorizer>) -> Self {
        self.auth = auth;
        self
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<QueryStats> {
        &self.stats
    }

    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// Parses AQL text within `query.max_text_bytes`.
    pub fn parse(&self, text: &str) -> Result<Query, Error> {
        if text.len() as u64 > self.config.max_text_bytes {
            return Err(Error::Limit { what: "AQL text bytes".into(), limit: self.config.max_text_bytes, key: "query.max_text_bytes" });
        }
        Ok(aql::parse(text)?)
    }

    /// The deadline of a query: the shortest of its TIMEOUT, the caller's
    /// (grpc-timeout) and, when neither is given, the default.
    pub fn timeout(&self, q: &Query, caller: Option<Duration>) -> Option<Duration> {
        let own = q.timeout_ms.map(Duration::from_millis);
        let t = match (own, caller) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        t.or((self.config.default_timeout_ms > 0).then(|| Duration::from_millis(self.config.default_timeout_ms)))
    }

    /// Runs one query under its deadline.
    pub async fn execute(&self, q: &Query, caller_timeout: Option<Duration>, identity: Option<&str>) -> Result<pb::Result, Error> {
        self.execute_with(q, caller_timeout, identity, false).await
    }

    /// As `execute`; `serializable`: in cluster mode, GET and RANGE read the
    /// local replica as applied now instead of confirming it is current
    /// (ReadIndex) first. A single node ignores it (every read is current).
    pub async fn execute_with(&self, q: &Query, caller_timeout: Option<Duration>, identity: Option<&str>, serializable: bool) -> Result<pb::Result, Error> {
        self.stats.queries.fetch_add(1, AtomicOrdering::Relaxed);
        let timeout = self.timeout(q, caller_timeout);
        let run = self.statement(&q.stmt, identity, serializable, timeout);
        let r = match timeout {
            // TIMEOUT 0 is already over: answer without touching anything.
            Some(t) if t.is_zero() => Err(Error::Deadline { timeout_ms: 0 }),
            Some(t) => match tokio::time::timeout(t, run).await {
                Ok(r) => r,
                Err(_) => Err(Error::Deadline { timeout_ms: t.as_millis() as u64 }),
            },
            None => run.await,
        };
        let code = match &r {
            Ok(_) => "ok",
            Err(e) => crate::error::code_name(e.code()),
        };
        weft_metrics::get().queries.get_or_create(&weft_metrics::l2("kind", q.stmt.kind(), "code", code)).inc();
        if let Err(e) = &r {
            self.stats.query_errors.fetch_add(1, AtomicOrdering::Relaxed);
            match e {
                Error::Deadline { .. } => self.stats.deadlines.fetch_add(1, AtomicOrdering::Relaxed),
                Error::CompareFailed { .. } => self.stats.compare_failures.fetch_add(1, AtomicOrdering::Relaxed),
                _ => 0,
            };
            tracing::debug!(kind = q.stmt.kind(), error = %e, "query failed");
        }
        r
    }

    fn table(&self, name: &str, access: Access, identity: Option<&str>) -> Result<table::Table, Error> {
        self.auth.authorize(identity, access, &format!("table:{name}"))?;
        Ok(self.tables.get(name)?)
    }

    /// A LIMIT within `query.max_results` (None: the maximum).
    fn limit(&self, limit: Option<u64>) -> Result<u64, Error> {
        match limit {
            Some(l) if l > self.config.max_results => {
                Err(Error::Limit { what: format!("LIMIT {l}"), limit: self.config.max_results, key: "query.max_results" })
            }
            Some(l) => Ok(l),
            None => Ok(self.config.max_results),
        }
    }

    fn page(&self) -> u64 {
        self.tables.config().max_range_limit.clamp(1, 1000)
    }

    async fn statement(&self, s: &Statement, id: Option<&str>, serializable: bool, timeout: Option<Duration>) -> Result<pb::Result, Error> {
        if let Some(rep) = &self.replicated
            && !matches!(s, Statement::TopicRead { .. })
        {
            return self.replicated_statement(rep.as_ref(), s, id, !serializable, timeout).await;
        }
        let kind = s.kind().to_owned();
        let mut r = pb::Result { kind, ..Default::default() };
        match s {
            Statement::Get { table, key, revision } => {
                let t = self.table(table, Access::Read, id)?;
                let g = t.get(key, *revision).await?;
                r.revision = g.revision;
                r.kvs = g.kv.into_iter().map(kv).collect();
                r.count = r.kvs.len() as u64;
            }
            Statement::Set { table, key, value, cond } => {
                let t = self.table(table, Access::Write, id)?;
                let key = Bytes::copy_from_slice(key);
                let value = Bytes::from(value.to_bytes());
                match cond {
                    None => {
                        let p = t.put(key, value).await?;
                        r.revision = p.revision;
                        r.kvs = p.prev_kv.into_iter().map(kv).collect();
                    }
                    Some(c) => {
                        let (txn, text) = put_if(&key, value, c);
                        let res = t.txn(txn).await?;
                        answer_put_if(res, table, &key, &text, &mut r)?;
                    }
                }
                r.count = 1;
            }
            Statement::Delete { table, key, cond } => {
                let t = self.table(table, Access::Write, id)?;
                let key = Bytes::copy_from_slice(key);
                let d = match cond {
                    None => t.delete(key).await?,
                    Some(c) => {
                        let (cmp, text) = match c {
                            DeleteCond::Version(n) => (table::Compare::version_eq(key.clone(), *n), format!("VERSION = {n}")),
                            DeleteCond::Exists => (
                                table::Compare { key: key.clone(), op: table::CompareOp::Equal, target: table::CompareTarget::Exists(true) },
                                "EXISTS".to_owned(),
                            ),
                        };
                        let txn = table::Txn { compares: vec![cmp], success: vec![table::Op::Delete { key: key.clone() }], failure: vec![] };
                        let res = t.txn(txn).await?;
                        if !res.succeeded {
                            return Err(Error::CompareFailed { failed: vec![format!("{table} {}: {text}", key_text(&key))] });
                        }
                        match res.results.into_iter().next() {
                            Some(table::OpResult::Delete(d)) => d,
                            _ => table::DeleteResult { revision: res.revision, deleted: 0, prev_kvs: vec![] },
                        }
                    }
                };
                r.revision = d.revision;
                r.count = d.deleted;
                r.kvs = d.prev_kvs.into_iter().map(kv).collect();
            }
            Statement::Range { table, range, limit, revision } => {
                let t = self.table(table, Access::Read, id)?;
                let mut spec = range_spec(range);
                spec.limit = Some(self.limit(*limit)?);
                spec.at = *revision;
                let res = t.range(spec).await?;
                r.revision = res.revision;
                r.more = res.more;
                r.count = res.count;
                r.kvs = res.kvs.into_iter().map(kv).collect();
            }
            Statement::Filter { table, pred, limit, offset } => {
                let t = self.table(table, Access::Read, id)?;
                let limit = self.limit(*limit)?;
                let (rev, kvs, more) = self.scan(&mut local_pages(&t), pred, offset.unwrap_or(0), limit).await?;
                r.revision = rev;
                r.count = kvs.len() as u64;
                r.kvs = kvs.into_iter().map(kv).collect();
                r.more = more;
            }
            Statement::Update { table, assigns, pred } => {
                let t = self.table(table, Access::Write, id)?;
                let mut txn = |txn: table::Txn| {
                    let t = t.clone();
                    Box::pin(async move { Ok(t.txn(txn).await?) }) as crate::replicated::BoxFut<'static, Result<table::TxnResult, Error>>
                };
                let (updated, rev) = self.update(&mut local_pages(&t), &mut txn, assigns, pred).await?;
                r.count = updated;
                r.revision = rev;
            }
            Statement::Batch(b) => return self.batch(b, id).await,
            Statement::History { table, key, limit } => {
                let t = self.table(table, Access::Read, id)?;
                let events = t.history(key, *limit).await?;
                r.revision = t.revision();
                r.kvs = events
                    .into_iter()
                    .map(|e| {
                        let deleted = e.kind == table::EventKind::Delete;
                        pb::KeyValue { deleted, ..kv(e.kv) }
                    })
                    .collect();
                r.count = r.kvs.len() as u64;
            }
            Statement::CreateTable { table, replicas } => {
                self.auth.authorize(id, Access::Admin, &format!("table:{table}"))?;
                // A single node keeps one copy; the number is recorded with the table.
                let replicas = replica_count(*replicas)?.unwrap_or(1);
                let t = self.tables.create(table, table::TableConfig { replicas }).await?;
                r.revision = t.revision();
                r.tables = vec![table.clone()];
                r.count = 1;
            }
            Statement::DropTable { table } => {
                self.auth.authorize(id, Access::Admin, &format!("table:{table}"))?;
                self.tables.drop(table).await?;
                r.tables = vec![table.clone()];
                r.count = 1;
            }
            Statement::Compact { table, revision } => {
                let t = self.table(table, Access::Admin, id)?;
                let c = t.compact(revision.unwrap_or_else(|| t.revision())).await?;
                r.revision = c.compact_revision;
                r.count = c.removed_versions;
            }
            Statement::ShowTables => {
                self.auth.authorize(id, Access::Read, "tables")?;
                r.tables = self.tables.list().into_iter().map(|t| t.name).collect();
                r.tables.sort();
                r.count = r.tables.len() as u64;
            }
            Statement::TopicRead { topic, partition, offset, limit, pred } => {
                self.auth.authorize(id, Access::Read, &format!("topic:{topic}"))?;
                let limit = self.limit(*limit)?;
                let (records, next) = self.read_topic(topic, partition.unwrap_or(0), *offset, limit, pred.as_ref()).await?;
                r.count = records.len() as u64;
                r.records = records;
                r.next_offset = next;
            }
        }
        Ok(r)
    }

    /// Cluster mode: check a write against the node's table limits (as the
    /// local driver does), then propose it to the table's group. The byte
    /// quota (`tables.max_table_bytes`) is checked against this replica's
    /// state as applied now, as the local driver checks its state (and etcd
    /// its backend size) before a write: writes already in flight may pass
    /// it together. Deletes and compactions are always let through.
    pub(crate) async fn rep_write(&self, rep: &dyn crate::replicated::ReplicatedTables, name: &str, mut cmd: table::WriteCommand) -> Result<table::WriteResult, Error> {
        table::check_limits(self.tables.config(), &mut cmd)?;
        if matches!(cmd, table::WriteCommand::Put { .. } | table::WriteCommand::Txn(_)) {
            let max = self.tables.config().max_table_bytes;
            let v = rep.read(name, false).await?;
            if crate::replicated::read_state(v.as_ref(), |st| st.bytes()).is_some_and(|b| b >= max) {
                return Err(table::Error::TooLarge { what: "table bytes".into(), limit: max }.into());
            }
        }
        rep.write(name, cmd).await
    }

    /// Cluster mode: table statements on the table's raft group. Writes are
    /// proposed as `WriteCommand`s; reads are linearizable (ReadIndex) unless
    /// `linearizable` is false. A node without a replica of the table
    /// forwards the statement to one that has it.
    async fn replicated_statement(
        &self,
        rep: &dyn crate::replicated::ReplicatedTables,
        s: &Statement,
        id: Option<&str>,
        linearizable: bool,
        timeout: Option<Duration>,
    ) -> Result<pb::Result, Error> {
        use crate::replicated::read_state;
        if let Some((name, access)) = statement_table(s)
            && !rep.hosted(name).await?
        {
            if self.forwarded {
                return Err(Error::Unavailable(format!("no replica of table {name:?} on this node (a forwarded query is not forwarded again)")));
            }
            // Checked here, where the caller's identity is known; the replica runs it as forwarded.
            self.auth.authorize(id, access, &format!("table:{name}"))?;
            let aql = aql::print(&Query { stmt: s.clone(), timeout_ms: None });
            let timeout_ms = timeout.map_or(0, |t| (t.as_millis() as u64).max(1));
            let req = crate::replicated::Forward { table: name.to_owned(), aql, serializable: !linearizable, timeout_ms, read_only: access == Access::Read };
            return rep.forward(name, req).await;
        }
        let kind = s.kind().to_owned();
        let mut r = pb::Result { kind, ..Default::default() };
        let gone = || Error::Unavailable("replica state unavailable".into());
        match s {
            Statement::Get { table, key, revision } => {
                self.auth.authorize(id, Access::Read, &format!("table:{table}"))?;
                let v = rep.read(table, linearizable).await?;
                let g = read_state(v.as_ref(), |st| st.get(key, *revision)).ok_or_else(gone)??;
                r.revision = g.revision;
                r.kvs = g.kv.into_iter().map(kv).collect();
                r.count = r.kvs.len() as u64;
            }
            Statement::Range { table, range, limit, revision } => {
                self.auth.authorize(id, Access::Read, &format!("table:{table}"))?;
                let mut spec = range_spec(range);
                spec.limit = Some(self.limit(*limit)?);
                spec.at = *revision;
                let v = rep.read(table, linearizable).await?;
                let res = read_state(v.as_ref(), |st| st.range(&spec)).ok_or_else(gone)??;
                r.revision = res.revision;
                r.more = res.more;
                r.count = res.count;
                r.kvs = res.kvs.into_iter().map(kv).collect();
            }
            Statement::Filter { table, pred, limit, offset } => {
                self.auth.authorize(id, Access::Read, &format!("table:{table}"))?;
                let limit = self.limit(*limit)?;
                // One ReadIndex, then pages of the local replica at the first page's revision.
                let v = rep.read(table, linearizable).await?;
                let (rev, kvs, more) = self.scan(&mut replica_pages(v), pred, offset.unwrap_or(0), limit).await?;
                r.revision = rev;
                r.count = kvs.len() as u64;
                r.kvs = kvs.into_iter().map(kv).collect();
                r.more = more;
            }
            Statement::Update { table, assigns, pred } => {
                self.auth.authorize(id, Access::Write, &format!("table:{table}"))?;
                // Read, then one compare-and-set per matching key (its mod
                // revision guards the computed value): the new value is in the
                // proposed command, so apply stays deterministic on every replica.
                let v = rep.read(table, true).await?;
                let mut txn = |txn: table::Txn| {
                    Box::pin(async move {
                        match self.rep_write(rep, table, table::WriteCommand::Txn(txn)).await? {
                            table::WriteResult::Txn(t) => Ok(t),
                            other => Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
                        }
                    }) as crate::replicated::BoxFut<'_, Result<table::TxnResult, Error>>
                };
                let (updated, rev) = self.update(&mut replica_pages(v), &mut txn, assigns, pred).await?;
                r.count = updated;
                r.revision = rev;
            }
            Statement::Set { table, key, value, cond } => {
                self.auth.authorize(id, Access::Write, &format!("table:{table}"))?;
                let key = Bytes::copy_from_slice(key);
                let value = Bytes::from(value.to_bytes());
                match cond {
                    None => match self.rep_write(rep, table, table::WriteCommand::Put { key, value }).await? {
                        table::WriteResult::Put(p) => {
                            r.revision = p.revision;
                            r.kvs = p.prev_kv.into_iter().map(kv).collect();
                        }
                        other => return Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
                    },
                    Some(c) => {
                        let (txn, text) = put_if(&key, value, c);
                        let table::WriteResult::Txn(res) = self.rep_write(rep, table, table::WriteCommand::Txn(txn)).await? else {
                            return Err(Error::Unavailable("unexpected answer to a transaction".into()));
                        };
                        answer_put_if(res, table, &key, &text, &mut r)?;
                    }
                }
                r.count = 1;
            }
            Statement::Delete { table, key, cond } => {
                self.auth.authorize(id, Access::Write, &format!("table:{table}"))?;
                let key = Bytes::copy_from_slice(key);
                let d = match cond {
                    None => match self.rep_write(rep, table, table::WriteCommand::Delete { key }).await? {
                        table::WriteResult::Delete(d) => d,
                        other => return Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
                    },
                    Some(c) => {
                        let (cmp, text) = match c {
                            DeleteCond::Version(n) => (table::Compare::version_eq(key.clone(), *n), format!("VERSION = {n}")),
                            DeleteCond::Exists => (
                                table::Compare { key: key.clone(), op: table::CompareOp::Equal, target: table::CompareTarget::Exists(true) },
                                "EXISTS".to_owned(),
                            ),
                        };
                        let txn = table::Txn { compares: vec![cmp], success: vec![table::Op::Delete { key: key.clone() }], failure: vec![] };
                        let table::WriteResult::Txn(res) = self.rep_write(rep, table, table::WriteCommand::Txn(txn)).await? else {
                            return Err(Error::Unavailable("unexpected answer to a transaction".into()));
                        };
                        if !res.succeeded {
                            return Err(Error::CompareFailed { failed: vec![format!("{table} {}: {text}", key_text(&key))] });
                        }
                        match res.results.into_iter().next() {
                            Some(table::OpResult::Delete(d)) => d,
                            _ => table::DeleteResult { revision: res.revision, deleted: 0, prev_kvs: vec![] },
                        }
                    }
                };
                r.revision = d.revision;
                r.count = d.deleted;
                r.kvs = d.prev_kvs.into_iter().map(kv).collect();
            }
            Statement::CreateTable { table, replicas } => {
                self.auth.authorize(id, Access::Admin, &format!("table:{table}"))?;
                table::validate_name(table)?;
                rep.create(table, replica_count(*replicas)?, self.tables.config().max_tables).await?;
                r.tables = vec![table.clone()];
                r.count = 1;
            }
            Statement::DropTable { table } => {
                self.auth.authorize(id, Access::Admin, &format!("table:{table}"))?;
                rep.drop_table(table).await?;
                r.tables = vec![table.clone()];
                r.count = 1;
            }
            Statement::Compact { table, revision } => {
                self.auth.authorize(id, Access::Admin, &format!("table:{table}"))?;
                // The revision is fixed here and travels in the command, so
                // every replica compacts at the same one when it applies it.
                let rev = match revision {
                    Some(r) => *r,
                    None => read_state(rep.read(table, true).await?.as_ref(), |st| st.revision()).ok_or_else(gone)?,
                };
                match self.rep_write(rep, table, table::WriteCommand::Compact { revision: rev }).await? {
                    table::WriteResult::Compact(c) => {
                        r.revision = c.compact_revision;
                        r.count = c.removed_versions;
                    }
                    other => return Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
                }
            }
            Statement::History { table, key, limit } => {
                self.auth.authorize(id, Access::Read, &format!("table:{table}"))?;
                let max = self.tables.config().max_history_limit;
                let limit = match *limit {
                    None | Some(0) => max,
                    Some(n) if n > max => return Err(table::Error::TooLarge { what: "history limit".into(), limit: max }.into()),
                    Some(n) => n,
                };
                let v = rep.read(table, linearizable).await?;
                // Every applied version is committed: no durable-revision filter here.
                let (events, rev) = read_state(v.as_ref(), |st| (st.history(key, limit as usize), st.revision())).ok_or_else(gone)?;
                r.revision = rev;
                r.kvs = events
                    .into_iter()
                    .map(|e| {
                        let deleted = e.kind == table::EventKind::Delete;
                        pb::KeyValue { deleted, ..kv(e.kv) }
                    })
                    .collect();
                r.count = r.kvs.len() as u64;
            }
            Statement::Batch(b) => return self.batch(b, id).await,
            Statement::ShowTables => {
                self.auth.authorize(id, Access::Read, "tables")?;
                r.tables = rep.list();
                r.tables.sort();
                r.count = r.tables.len() as u64;
            }
            Statement::TopicRead { .. } => {
                // Routed to the log before this function; kept total.
                return Err(Error::Unavailable("FROM TOPIC does not run on replicated tables".into()));
            }
        }
        Ok(r)
    }

    /// FILTER: pages through the table at one revision (`pages` answers a
    /// range), skipping `offset` matches and collecting up to `limit`.
    /// Bounded by `query.max_scan`.
    pub(crate) async fn scan(&self, pages: &mut PageFn, pred: &Predicate, offset: u64, limit: u64) -> Result<(u64, Vec<table::KeyValue>, bool), Error> {
        let mut out = Vec::new();
        let mut skipped = 0;
        let mut scanned = 0u64;
        let mut from = Bytes::new();
        let mut at = None;
        loop {
            let spec = table::RangeSpec { from: from.clone(), limit: Some(self.page()), at, ..Default::default() };
            let res = pages(spec).await?;
            let rev = *at.get_or_insert(res.revision);
            for item in res.kvs {
                scanned += 1;
                if scanned > self.config.max_scan {
                    return Err(Error::Limit { what: "keys scanned".into(), limit: self.config.max_scan, key: "query.max_scan" });
                }
                from = next_key(&item.key);
                if !eval::eval_bytes(pred, &item.value) {
                    continue;
                }
                if skipped < offset {
                    skipped += 1;
                    continue;
                }
                if out.len() as u64 == limit {
                    return Ok((rev, out, true));
                }
                out.push(item);
            }
            if !res.more {
                return Ok((rev, out, false));
            }
        }
    }

    /// UPDATE: for each matching key, a compare on its mod revision guards
    /// the write (`txn` runs it); a lost race re-reads the key and re-checks
    /// the predicate. Not atomic across keys (each key is its own write).
    async fn update(&self, pages: &mut PageFn, txn_fn: &mut TxnFn<'_>, assigns: &[aql::Assign], pred: &Predicate) -> Result<(u64, u64), Error> {
        let (mut rev, matches, _) = self.scan(pages, pred, 0, self.config.max_scan).await?;
        let mut updated = 0;
        for item in matches {
            let mut cur = Some(item);
            let mut tries = 0;
            while let Some(kv0) = cur.take() {
                let Ok(mut doc) = kv0.value_json() else { break };
                if !eval::eval(pred, &doc) {
                    break;
                }
                for a in assigns {
                    eval::assign(&mut doc, &a.field, &a.value).map_err(|e| Error::Invalid(format!("UPDATE of key {}: {e}", key_text(&kv0.key))))?;
                }
                let txn = table::Txn {
                    compares: vec![table::Compare::mod_revision_eq(kv0.key.clone(), kv0.mod_revision)],
                    success: vec![table::Op::Put { key: kv0.key.clone(), value: Bytes::from(doc.to_string()) }],
                    failure: vec![table::Op::Get { key: kv0.key.clone() }],
                };
                let res = txn_fn(txn).await?;
                if res.succeeded {
                    updated += 1;
                    rev = res.revision;
                    break;
                }
                tries += 1;
                if tries > self.config.update_retries {
                    return Err(Error::Aborted(format!(
                        "UPDATE: key {} changed under {} attempts (query.update_retries)",
                        key_text(&kv0.key),
                        tries
                    )));
                }
                if let Some(table::OpResult::Get(now)) = res.results.into_iter().next() {
                    cur = now;
                }
            }
        }
        Ok((updated, rev))
    }

    async fn batch(&self, b: &Batch, id: Option<&str>) -> Result<pb::Result, Error> {
        let mut r = pb::Result { kind: "batch".into(), ..Default::default() };
        let (compares, then, otherwise): (&[Compare], &[Statement], Option<&[Statement]>) = match b {
            Batch::Plain(ops) => (&[], ops, None),
            Batch::Cond { compares, then, otherwise } => (compares, then, otherwise.as_deref()),
        };
        let writes = then.iter().chain(otherwise.unwrap_or(&[])).any(|s| matches!(s, Statement::Set { .. } | Statement::Delete { .. }));
        let access = if writes { Access::Write } else { Access::Read };
        let mut names: Vec<&str> = compares.iter().map(|c| c.table.as_str()).chain(then.iter().chain(otherwise.unwrap_or(&[])).map(op_table)).collect();
        names.sort_unstable();
        names.dedup();
        // Every table named is checked before anything else: a BATCH naming
        // one the caller may not use is refused whole as PERMISSION_DENIED.
        for n in &names {
            self.auth.authorize(id, access, &format!("table:{n}"))?;
        }
        // A table is the unit of atomicity: every compare and op names the same one.
        let Some(&name) = names.first() else {
            r.succeeded = true;
            return Ok(r);
        };
        if let Some(other) = names.get(1) {
            return Err(Error::Invalid(format!("a BATCH works on one table: it names {name:?} and {other:?}")));
        }
        let mut txn = table::Txn::default();
        for c in compares {
            txn.compares.extend(compare(c)?);
        }
        txn.success = then.iter().map(|s| self.op(s)).collect::<Result<_, _>>()?;
        txn.failure = otherwise.unwrap_or(&[]).iter().map(|s| self.op(s)).collect::<Result<_, _>>()?;
        let res = match &self.replicated {
            // Cluster mode: the whole BATCH is one WriteCommand::Txn on the table's group
            // (read-only ones too: they are then linearizable).
            Some(rep) => {
                self.auth.authorize(id, access, &format!("table:{name}"))?;
                match self.rep_write(rep.as_ref(), name, table::WriteCommand::Txn(txn)).await? {
                    table::WriteResult::Txn(t) => t,
                    other => return Err(Error::Unavailable(format!("unexpected answer {other:?}"))),
                }
            }
            None => self.table(name, access, id)?.txn(txn).await?,
        };
        if !res.succeeded && otherwise.is_none() {
            let failed = compares.iter().map(compare_text).collect();
            return Err(Error::CompareFailed { failed });
        }
        let ran = if res.succeeded { then } else { otherwise.unwrap_or(&[]) };
        r.succeeded = res.succeeded;
        r.revision = res.revision;
        r.ops = res.results.into_iter().zip(ran).map(|(o, s)| op_result(o, s.kind(), res.revision)).collect();
        Ok(r)
    }

    fn op(&self, s: &Statement) -> Result<table::Op, Error> {
        Ok(match s {
            Statement::Get { revision: Some(_), .. } | Statement::Range { revision: Some(_), .. } => {
                return Err(Error::Invalid("reads inside a BATCH see the batch's own revision: AT REVISION is not allowed there".into()));
            }
            Statement::Get { key, .. } => table::Op::Get { key: Bytes::copy_from_slice(key) },
            Statement::Set { key, value, .. } => table::Op::Put { key: Bytes::copy_from_slice(key), value: Bytes::from(value.to_bytes()) },
            Statement::Delete { key, .. } => table::Op::Delete { key: Bytes::copy_from_slice(key) },
            Statement::Range { range, limit, .. } => {
                let mut spec = range_spec(range);
                spec.limit = Some(self.limit(*limit)?);
                table::Op::Range(spec)
            }
            other => return Err(Error::Invalid(format!("{} is not allowed inside a BATCH", other.kind()))),
        })
    }

    /// One fetch of FROM TOPIC: the records from `offset` (at most `want`)
    /// and the partition's high watermark.
    async fn topic_page(&self, topic: &str, partition: u32, offset: u64, want: usize) -> Result<(Vec<pb::Record>, u64), Error> {
        let max_bytes = self.config.topic_fetch_bytes as usize;
        if let Some(plane) = &self.plane {
            let req = weft_broker::dto::Fetch {
                topic: topic.to_owned(),
                partition,
                offset,
                max_bytes: Some(max_bytes),
                max_records: Some(want),
                wait_ms: None,
                raw: false,
                reset: None,
            };
            let f = plane.fetch(&req).await.map_err(plane_error)?;
            let records = f
                .records
                .into_iter()
                .map(|r| pb::Record {
                    partition,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key.map(|k| k.into_vec()),
                    value: r.value.map(|v| v.into_vec()).unwrap_or_default(),
                })
                .collect();
            return Ok((records, f.high_watermark));
        }
        let Some(log) = &self.log else { return Err(Error::Unavailable("this node serves no log".into())) };
        let f = log.fetch(topic, weft_log::PartitionId(partition), weft_log::Offset(offset), max_bytes, want, None).await?;
        let mut records = Vec::new();
        for rec in f.records() {
            let rec = rec?;
            records.push(pb::Record {
                partition,
                offset: rec.offset.0,
                timestamp_ms: rec.timestamp_ms,
                key: rec.key.map(|k| k.to_vec()),
                value: rec.value.map(|v| v.to_vec()).unwrap_or_default(),
            });
        }
        Ok((records, f.high_watermark.0))
    }

    /// FROM TOPIC: fetches from `offset` until `limit` records match (all
    /// match without WHERE), the end of the partition, or `query.max_scan`.
    pub(crate) async fn read_topic(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        limit: u64,
        pred: Option<&Predicate>,
    ) -> Result<(Vec<pb::Record>, u64), Error> {
        if self.plane.is_none() && self.log.is_none() {
            return Err(Error::Unavailable("this node serves no log".into()));
        }
        let mut out = Vec::new();
        let mut next = offset;
        let mut scanned = 0u64;
        while (out.len() as u64) < limit {
            let want = (limit - out.len() as u64).min(self.page()) as usize;
            let (page, high_watermark) = self.topic_page(topic, partition, next, want).await?;
            let mut got = 0;
            for rec in page {
                got += 1;
                scanned += 1;
                next = rec.offset + 1;
                if pred.is_none_or(|p| eval::eval_bytes(p, &rec.value)) {
                    out.push(rec);
                    if out.len() as u64 == limit {
                        break;
                    }
                }
            }
            if got == 0 || next >= high_watermark {
                break;
            }
            if scanned > self.config.max_scan {
                return Err(Error::Limit { what: "records scanned".into(), limit: self.config.max_scan, key: "query.max_scan" });
            }
        }
        Ok((out, next))
    }
}

/// A record plane's wire error as the query API's: the code it maps back
/// to, its `details.kind` as the reason, its scalar details as metadata.
fn plane_error(b: weft_wire::ErrorBody) -> Error {
    use weft_wire::ErrorCode as W;
    let code = match b.code {
        W::Validation | W::BadBody | W::TooLarge => tonic::Code::InvalidArgument,
        W::NotFound => tonic::Code::NotFound,
        W::Conflict => tonic::Code::FailedPrecondition,
        W::OutOfRange => tonic::Code::OutOfRange,
        W::Busy => tonic::Code::ResourceExhausted,
        W::Unavailable | W::NotLeader | W::ShuttingDown => tonic::Code::Unavailable,
        W::Timeout => tonic::Code::DeadlineExceeded,
        W::Forbidden | W::Unauthorized => tonic::Code::PermissionDenied,
        W::Unauthenticated => tonic::Code::Unauthenticated,
        _ => tonic::Code::Internal,
    };
    let details = b.details.as_ref().and_then(|d| d.as_object());
    let reason = details.and_then(|d| d.get("kind")).and_then(|k| k.as_str()).map_or_else(|| b.code.to_string(), str::to_owned);
    let metadata = details
        .map(|d| {
            d.iter()
                .filter(|(k, _)| *k != "kind")
                .filter_map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                    serde_json::Value::Number(n) => Some((k.clone(), n.to_string())),
                    serde_json::Value::Bool(x) => Some((k.clone(), x.to_string())),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Error::Remote { code, reason, message: b.message, metadata }
}

/// Reads one page of a table for a scan (FILTER, UPDATE).
pub(crate) type PageFn = dyn FnMut(table::RangeSpec) -> crate::replicated::BoxFut<'static, Result<table::RangeResult, Error>> + Send;
/// Runs one transaction for UPDATE.
pub(crate) type TxnFn<'a> = dyn FnMut(table::Txn) -> crate::replicated::BoxFut<'a, Result<table::TxnResult, Error>> + Send + 'a;

/// Pages of a local table.
pub(crate) fn local_pages(t: &table::Table) -> impl FnMut(table::RangeSpec) -> crate::replicated::BoxFut<'static, Result<table::RangeResult, Error>> + Send + use<> {
    let t = t.clone();
    move |spec| {
        let t = t.clone();
        Box::pin(async move { Ok(t.range(spec).await?) })
    }
}

/// Pages of a replica's applied state (each page under the replica's lock
/// for that page only, so a long scan does not hold up apply).
fn replica_pages(v: Arc<dyn crate::replicated::StateView>) -> impl FnMut(table::RangeSpec) -> crate::replicated::BoxFut<'static, Result<table::RangeResult, Error>> + Send {
    move |spec| {
        let v = v.clone();
        Box::pin(async move {
            crate::replicated::read_state(v.as_ref(), |st| st.range(&spec)).ok_or_else(|| Error::Unavailable("replica state unavailable".into()))?.map_err(Error::from)
        })
    }
}

/// The table a statement works on and the access it needs (None: none, or
/// a metadata statement: CREATE/DROP TABLE, SHOW TABLES, FROM TOPIC).
fn statement_table(s: &Statement) -> Option<(&str, Access)> {
    match s {
        Statement::Get { table, .. } | Statement::Range { table, .. } | Statement::Filter { table, .. } | Statement::History { table, .. } => Some((table, Access::Read)),
        Statement::Set { table, .. } | Statement::Delete { table, .. } | Statement::Update { table, .. } => Some((table, Access::Write)),
        Statement::Compact { table, .. } => Some((table, Access::Admin)),
        Statement::Batch(b) => {
            let (compares, then, otherwise): (&[Compare], &[Statement], &[Statement]) = match b {
                Batch::Plain(ops) => (&[], ops, &[]),
                Batch::Cond { compares, then, otherwise } => (compares, then, otherwise.as_deref().unwrap_or(&[])),
            };
            let name = compares.iter().map(|c| c.table.as_str()).chain(then.iter().chain(otherwise).map(op_table)).find(|n| !n.is_empty())?;
            let writes = then.iter().chain(otherwise).any(|s| matches!(s, Statement::Set { .. } | Statement::Delete { .. }));
            Some((name, if writes { Access::Write } else { Access::Read }))
        }
        Statement::CreateTable { .. } | Statement::DropTable { .. } | Statement::ShowTables | Statement::TopicRead { .. } => None,
    }
}

/// `REPLICAS n` as the count the metadata takes.
fn replica_count(r: Option<u64>) -> Result<Option<u32>, Error> {
    match r {
        None => Ok(None),
        Some(n) => match u32::try_from(n) {
            Ok(n) if n >= 1 => Ok(Some(n)),
            _ => Err(Error::Invalid(format!("REPLICAS {n}: must be at least 1 (and at most the data nodes)"))),
        },
    }
}

fn op_table(s: &Statement) -> &str {
    match s {
        Statement::Get { table, .. } | Statement::Set { table, .. } | Statement::Delete { table, .. } | Statement::Range { table, .. } => table,
        _ => "",
    }
}

fn op_result(o: table::OpResult, kind: &str, revision: u64) -> pb::Result {
    let mut r = pb::Result { kind: kind.to_owned(), revision, ..Default::default() };
    match o {
        table::OpResult::Put(p) => {
            r.kvs = p.prev_kv.into_iter().map(kv).collect();
            r.count = 1;
        }
        table::OpResult::Delete(d) => {
            r.count = d.deleted;
            r.kvs = d.prev_kvs.into_iter().map(kv).collect();
        }
        table::OpResult::Get(g) => {
            r.kvs = g.into_iter().map(kv).collect();
            r.count = r.kvs.len() as u64;
        }
        table::OpResult::Range(x) => {
            r.more = x.more;
            r.count = x.count;
            r.kvs = x.kvs.into_iter().map(kv).collect();
        }
    }
    r
}

/// AQL compares to table compares. The table knows = != < >; `<=`/`>=` on
/// numbers become `< n+1` / `> n-1`, on values they are refused.
fn compare(c: &Compare) -> Result<Vec<table::Compare>, Error> {
    let key = Bytes::copy_from_slice(&c.key);
    let num = || match &c.value {
        aql::Value::Json(serde_json::Value::Number(n)) => n.as_u64().ok_or_else(|| Error::Invalid(format!("{}: not an unsigned integer", compare_text(c)))),
        _ => Err(Error::Invalid(format!("{}: takes an unsigned integer", compare_text(c)))),
    };
    let (op, operand) = match (c.op, c.target) {
        (_, CompareTarget::Value) => {
            let op = match c.op {
                CmpOp::Eq => table::CompareOp::Equal,
                CmpOp::Ne => table::CompareOp::NotEqual,
                CmpOp::Lt => table::CompareOp::Less,
                CmpOp::Gt => table::CompareOp::Greater,
                CmpOp::Le | CmpOp::Ge => return Err(Error::Invalid("VALUE compares take = != < >".into())),
            };
            return Ok(vec![table::Compare { key, op, target: table::CompareTarget::Value(Bytes::from(c.value.to_bytes())) }]);
        }
        (CmpOp::Eq, _) => (table::CompareOp::Equal, num()?),
        (CmpOp::Ne, _) => (table::CompareOp::NotEqual, num()?),
        (CmpOp::Lt, _) => (table::CompareOp::Less, num()?),
        (CmpOp::Gt, _) => (table::CompareOp::Greater, num()?),
        (CmpOp::Le, _) => match num()?.checked_add(1) {
            Some(n) => (table::CompareOp::Less, n),
            None => return Ok(vec![]), // <= u64::MAX always holds
        },
        (CmpOp::Ge, _) => match num()?.checked_sub(1) {
            Some(n) => (table::CompareOp::Greater, n),
            None => return Ok(vec![]), // >= 0 always holds
        },
    };
    let target = match c.target {
        CompareTarget::Version => table::CompareTarget::Version(operand),
        CompareTarget::CreateRevision => table::CompareTarget::CreateRevision(operand),
        CompareTarget::ModRevision => table::CompareTarget::ModRevision(operand),
        // Returned above; kept total rather than panicking.
        CompareTarget::Value => return Err(Error::Invalid("VALUE compare".into())),
    };
    Ok(vec![table::Compare { key, op, target }])
}

fn compare_text(c: &Compare) -> String {
    let mut s = String::new();
    let _ = aql::print::value(&mut s, &c.value);
    format!("{}({}, {}) {} {s}", c.target.as_str(), c.table, key_text(&c.key), c.op.as_str())
}

pub(crate) fn range_spec(range: &KeyRange) -> table::RangeSpec {
    match range {
        KeyRange::From { start, end } => table::RangeSpec::between(Bytes::copy_from_slice(start), end.as_ref().map(|e| Bytes::copy_from_slice(e))),
        KeyRange::Prefix(p) => table::RangeSpec::prefix(Bytes::copy_from_slice(p)),
    }
}

/// The smallest key after `k`.
pub(crate) fn next_key(k: &[u8]) -> Bytes {
    let mut v = k.to_vec();
    v.push(0);
    Bytes::from(v)
}

/// `SET t 'k' = v IF ...` as a transaction, and the condition as text for
/// the FAILED_PRECONDITION details (local and replicated tables).
fn put_if(key: &Bytes, value: Bytes, cond: &SetCond) -> (table::Txn, String) {
    let (cmp, text) = match cond {
        SetCond::Version(n) => (table::Compare::version_eq(key.clone(), *n), format!("VERSION = {n}")),
        SetCond::Absent => (table::Compare::absent(key.clone()), "ABSENT".to_owned()),
    };
    (table::Txn { compares: vec![cmp], success: vec![table::Op::Put { key: key.clone(), value }], failure: vec![] }, text)
}

/// The answer to a conditional SET: its revision and previous value, or
/// the failed compare.
fn answer_put_if(res: table::TxnResult, table: &str, key: &[u8], cond: &str, r: &mut pb::Result) -> Result<(), Error> {
    if !res.succeeded {
        return Err(Error::CompareFailed { failed: vec![format!("{table} {}: {cond}", key_text(key))] });
    }
    r.revision = res.revision;
    if let Some(table::OpResult::Put(p)) = res.results.into_iter().next() {
        r.kvs = p.prev_kv.into_iter().map(kv).collect();
    }
    Ok(())
}

fn key_text(k: &[u8]) -> String {
    let mut s = String::new();
    let _ = aql::print::key(&mut s, k);
    s
}

pub(crate) fn kv(k: table::KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: k.key.to_vec(),
        value: k.value.to_vec(),
        create_revision: k.create_revision,
        mod_revision: k.mod_revision,
        version: k.version,
        deleted: false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is the test failing
mod tests {
    use super::*;
    use crate::aql::parse;

    async fn exec() -> (Executor, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let tables = Tables::open(dir.path(), table::TablesConfig::default()).await.unwrap();
        (Executor::new(tables, None, QueryConfig::default()), dir)
    }

    async fn run(e: &Executor, q: &str) -> Result<pb::Result, Error> {
        e.execute(&parse(q).unwrap(), None, None).await
    }

    #[tokio::test]
    async fn statements_run_against_a_table() {
        let (e, _dir) = exec().await;
        run(&e, "CREATE TABLE t").await.unwrap();
        assert_eq!(run(&e, "SHOW TABLES").await.unwrap().tables, vec!["t"]);
        let r = run(&e, r#"SET t 'a' = {"n": 1, "s": "x"}"#).await.unwrap();
        assert_eq!(r.revision, 1);
        run(&e, r#"SET t 'b' = {"n": 2}"#).await.unwrap();
        run(&e, "SET t 'c' = 'text'").await.unwrap();
        let g = run(&e, "GET t 'a'").await.unwrap();
        assert_eq!((g.kvs[0].version, g.kvs[0].mod_revision), (1, 1));
        let g = run(&e, "GET t 'b' AT REVISION 1").await.unwrap();
        assert!(g.kvs.is_empty(), "b did not exist at revision 1");
        assert!(matches!(run(&e, "SET t 'a' = 1 IF ABSENT").await, Err(Error::CompareFailed { .. })));
        assert!(matches!(run(&e, "SET t 'a' = 1 IF VERSION = 7").await, Err(Error::CompareFailed { .. })));
        run(&e, r#"SET t 'a' = {"n": 1, "s": "x"} IF VERSION = 1"#).await.unwrap();
        let f = run(&e, "FILTER t WHERE n >= 1").await.unwrap();
        assert_eq!(f.kvs.iter().map(|k| k.key.clone()).collect::<Vec<_>>(), vec![b"a".to_vec(), b"b".to_vec()]);
        let f = run(&e, "FILTER t WHERE n >= 1 LIMIT 1 OFFSET 1").await.unwrap();
        assert_eq!(f.kvs[0].key, b"b");
        let u = run(&e, "UPDATE t SET m.k = true WHERE n = 2").await.unwrap();
        assert_eq!(u.count, 1);
        let g = run(&e, "GET t 'b'").await.unwrap();
        assert_eq!(g.kvs[0].value, br#"{"m":{"k":true},"n":2}"#);
        let r = run(&e, "RANGE t FROM 'a' TO 'c' LIMIT 1").await.unwrap();
        assert_eq!((r.kvs.len(), r.more, r.count), (1, true, 2));
        let r = run(&e, "RANGE t PREFIX 'c'").await.unwrap();
        assert_eq!(r.kvs[0].value, b"text");
        // A batch whose compare fails runs ELSE; without ELSE it is FAILED_PRECONDITION.
        let b = run(&e, "BATCH { IF VERSION(t, 'a') = 9 THEN { SET t 'z' = 1 } ELSE { GET t 'a' } }").await.unwrap();
        assert!(!b.succeeded);
        assert_eq!(b.ops[0].kind, "get");
        let b = run(&e, "BATCH { IF VERSION(t, 'a') = 9 THEN { SET t 'z' = 1 } }").await;
        assert_eq!(b.unwrap_err().code(), tonic::Code::FailedPrecondition);
        let b = run(&e, "BATCH { IF VERSION(t, 'a') >= 2 AND MOD_REVISION(t, 'a') > 0 THEN { SET t 'z' = 1; DELETE t 'c' } }").await.unwrap();
        assert!(b.succeeded);
        assert_eq!(b.ops.len(), 2);
        let h = run(&e, "HISTORY t 'c'").await.unwrap();
        assert_eq!(h.kvs.iter().map(|k| k.deleted).collect::<Vec<_>>(), vec![true, false]);
        assert_eq!(run(&e, "DELETE t 'nope' IF EXISTS").await.unwrap_err().code(), tonic::Code::FailedPrecondition);
        assert_eq!(run(&e, "DELETE t 'z'").await.unwrap().count, 1);
        assert_eq!(run(&e, "GET nope 'k'").await.unwrap_err().code(), tonic::Code::NotFound);
        assert_eq!(run(&e, "RANGE t PREFIX '' LIMIT 99999999").await.unwrap_err().code(), tonic::Code::ResourceExhausted);
        assert_eq!(run(&e, "GET t 'a' TIMEOUT 0").await.unwrap_err().code(), tonic::Code::DeadlineExceeded);
        assert_eq!(run(&e, "FROM TOPIC x OFFSET 0").await.unwrap_err().code(), tonic::Code::Unavailable);
        let m = weft_metrics::get();
        assert!(m.queries.get_or_create(&weft_metrics::l2("kind", "get", "code", "ok")).get() >= 3);
        assert!(m.queries.get_or_create(&weft_metrics::l2("kind", "set", "code", "FAILED_PRECONDITION")).get() >= 2);
        assert_eq!(e.stats().gauges().iter().find(|(k, _)| k == "query.deadlines_exceeded").map(|(_, v)| *v), Some(1));
        run(&e, "DROP TABLE t").await.unwrap();
        assert!(run(&e, "SHOW TABLES").await.unwrap().tables.is_empty());
    }

    /// A cluster backend that hosts no table: every table statement is
    /// forwarded (recorded), except on an executor running a forwarded one.
    struct Elsewhere(std::sync::Mutex<Vec<crate::replicated::Forward>>);

    impl crate::replicated::ReplicatedTables for Elsewhere {
        fn create<'a>(&'a self, _: &'a str, _: Option<u32>, _: u64) -> crate::replicated::BoxFut<'a, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn drop_table<'a>(&'a self, _: &'a str) -> crate::replicated::BoxFut<'a, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn hosted<'a>(&'a self, name: &'a str) -> crate::replicated::BoxFut<'a, Result<bool, Error>> {
            Box::pin(async move { if name == "nope" { Err(table::Error::NotFound(name.into()).into()) } else { Ok(false) } })
        }
        fn forward<'a>(&'a self, _: &'a str, req: crate::replicated::Forward) -> crate::replicated::BoxFut<'a, Result<pb::Result, Error>> {
            Box::pin(async move {
                let leader = req.aql.starts_with("SET");
                self.0.lock().unwrap().push(req);
                if leader {
                    return Err(Error::NotLeader { group: 7, leader: 2, addr: Some("tcp://127.0.0.1:2".into()), grpc_addr: Some("127.0.0.1:3".into()) });
                }
                Ok(pb::Result { kind: "get".into(), count: 1, ..Default::default() })
            })
        }
        fn write<'a>(&'a self, _: &'a str, _: table::WriteCommand) -> crate::replicated::BoxFut<'a, Result<table::WriteResult, Error>> {
            Box::pin(async { Err(Error::Unavailable("not here".into())) })
        }
        fn read<'a>(&'a self, _: &'a str, _: bool) -> crate::replicated::BoxFut<'a, Result<Arc<dyn crate::replicated::StateView>, Error>> {
            Box::pin(async { Err(Error::Unavailable("not here".into())) })
        }
        fn list(&self) -> Vec<String> {
            vec![]
        }
        fn leads(&self, _: &str) -> bool {
            false
        }
        fn watch<'a>(&'a self, _: &'a str, _: u64, _: table::KeySet, _: bool, _: usize) -> crate::replicated::BoxFut<'a, Result<(Vec<table::Event>, u64), Error>> {
            Box::pin(async { Err(Error::Unavailable("not here".into())) })
        }
    }

    #[tokio::test]
    async fn a_node_without_the_replica_forwards_once_with_the_callers_settings() {
        let (e, _dir) = exec().await;
        let rep = Arc::new(Elsewhere(Default::default()));
        let e = e.with_replicated(rep.clone());
        let r = e.execute_with(&parse("GET t 'k' TIMEOUT 5000").unwrap(), None, None, true).await.unwrap();
        assert_eq!(r.count, 1);
        let err = run(&e, "SET t 'k' = 1").await.unwrap_err();
        // not_leader: UNAVAILABLE with the group, the leader and its address in the details.
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.reason(), "not_leader");
        let md = err.metadata();
        assert_eq!((md["group"].as_str(), md["leader"].as_str(), md["native_addr"].as_str()), ("7", "2", "tcp://127.0.0.1:2"));
        // What the query client follows (weft-query-client reads grpc_addr first).
        assert_eq!(md["grpc_addr"], "127.0.0.1:3");
        let st = err.to_status();
        assert_eq!(st.code(), tonic::Code::Unavailable);
        let body = crate::json::error_body(&err);
        assert_eq!(body.code, weft_wire::ErrorCode::NotLeader);
        let d = body.details.clone().unwrap();
        assert_eq!((d["group"].as_u64(), d["leader"].as_u64(), d["addr"].as_str()), (Some(7), Some(2), Some("tcp://127.0.0.1:2")));
        assert_eq!(d["not_leader"]["leader"], 2);
        assert!(matches!(crate::json::error_from_body(&body), Error::NotLeader { group: 7, leader: 2, .. }));
        assert_eq!(run(&e, "GET nope 'k'").await.unwrap_err().code(), tonic::Code::NotFound);
        let sent = rep.0.lock().unwrap().clone();
        assert_eq!(sent.len(), 2);
        assert_eq!((sent[0].aql.as_str(), sent[0].serializable, sent[0].read_only, sent[0].timeout_ms), ("GET t 'k'", true, true, 5000));
        assert_eq!((sent[1].aql.as_str(), sent[1].serializable, sent[1].read_only), ("SET t 'k' = 1", false, false));
        // The replica that runs a forwarded statement never forwards it again.
        let fwd = crate::replicated::Forward { table: "t".into(), aql: "GET t 'k'".into(), serializable: false, timeout_ms: 0, read_only: true };
        assert_eq!(e.execute_forwarded(&fwd).await.unwrap_err().code(), tonic::Code::Unavailable);
        assert_eq!(rep.0.lock().unwrap().len(), 2);
        // Errors from the replica keep their code, reason and details across the hop.
        let failed = Error::CompareFailed { failed: vec!["t 'k': VERSION = 3".into()] };
        let back = crate::json::error_from_body(&crate::json::error_body(&failed));
        assert!(matches!(&back, Error::CompareFailed { failed } if failed.len() == 1));
        let limit = Error::Limit { what: "LIMIT 9".into(), limit: 5, key: "query.max_results" };
        let back = crate::json::error_from_body(&crate::json::error_body(&limit));
        assert_eq!((back.code(), back.reason()), (tonic::Code::ResourceExhausted, "limit"));
        assert_eq!(back.metadata()["config_key"], "query.max_results");
    }
}
