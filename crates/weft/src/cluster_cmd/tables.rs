//! Cluster mode: the query API's tables on the cluster's raft groups
//! (docs/query.md, "Tables: replicated"). weft-api's executor calls this
//! backend; it proposes `WriteCommand`s to the table's group and reads the
//! local replica after a ReadIndex. A node without a replica of the table
//! answers UNAVAILABLE (forwarding is not built yet).

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft_api::Error;
use weft_api::replicated::{BoxFut, ReplicatedTables, StateView};
use weft_cluster::table::{TableAnswer, TableReplica};
use weft_cluster::{ClusterError, ClusterNode, MetaCommand, MetaResponse};
use weft_table::{Event, KeySet, Revision, TableState, WriteCommand, WriteResult};

/// Replicas of a table created through the query API: 3, or fewer data nodes.
const DEFAULT_REPLICAS: usize = 3;
/// How long a request waits for the table's group to have a leader.
const LEADER_WAIT: Duration = Duration::from_secs(10);

pub struct ClusterTables {
    node: ClusterNode,
}

impl ClusterTables {
    pub fn shared(node: ClusterNode) -> Arc<dyn ReplicatedTables> {
        Arc::new(ClusterTables { node })
    }
}

struct Replica(Arc<TableReplica>);

impl StateView for Replica {
    fn with_state(&self, f: &mut dyn FnMut(&TableState)) {
        self.0.read(|s| f(s));
    }
}

/// Errors after which nothing was proposed (safe to retry any write):
/// no leader known yet, the group not opened here yet.
fn before_proposal(e: &ClusterError) -> bool {
    matches!(e, ClusterError::NotLeader { leader: 0, .. } | ClusterError::UnknownGroup(_))
}

fn unavailable(e: ClusterError) -> Error {
    Error::Unavailable(format!("cluster: {e}"))
}

impl ReplicatedTables for ClusterTables {
    fn create<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), Error>> {
        Box::pin(async move {
            let data = self.node.local_meta().data_nodes().len();
            let replicas = DEFAULT_REPLICAS.min(data).max(1) as u32;
            let r = self.node.propose_meta(&MetaCommand::CreateTable { name: name.to_owned(), replicas }).await.map_err(unavailable)?;
            match r {
                MetaResponse::Table(_) => Ok(()),
                MetaResponse::Error { code, message } if code == "conflict" => Err(Error::Table(weft_table::Error::AlreadyExists(message))),
                MetaResponse::Error { message, .. } => Err(Error::Invalid(message)),
                other => Err(Error::Unavailable(format!("unexpected metadata answer {other:?}"))),
            }
        })
    }

    fn write<'a>(&'a self, name: &'a str, cmd: WriteCommand) -> BoxFut<'a, Result<WriteResult, Error>> {
        Box::pin(async move {
            if self.node.table_placement(name).is_none() {
                return Err(Error::Table(weft_table::Error::NotFound(format!("table {name:?}"))));
            }
            if !self.node.table_placement(name).is_some_and(|t| t.replicas.contains(&self.node.node_id())) {
                return Err(Error::Unavailable(format!("no replica of table {name:?} on this node (forwarding is not built yet)")));
            }
            let deadline = Instant::now() + LEADER_WAIT;
            let answer = loop {
                match self.node.table_write(name, &cmd).await {
                    Ok(a) => break a,
                    Err(e) if before_proposal(&e) && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                    Err(e) => return Err(unavailable(e)),
                }
            };
            match answer {
                TableAnswer::Ok(r) => Ok(r),
                TableAnswer::Err { kind, message } if kind == "invalid_argument" => Err(Error::Invalid(message)),
                TableAnswer::Err { kind, message } => Err(Error::Unavailable(format!("{kind}: {message}"))),
            }
        })
    }

    fn read<'a>(&'a self, name: &'a str, linearizable: bool) -> BoxFut<'a, Result<Arc<dyn StateView>, Error>> {
        Box::pin(async move {
            if self.node.table_placement(name).is_none() {
                return Err(Error::Table(weft_table::Error::NotFound(format!("table {name:?}"))));
            }
            let deadline = Instant::now() + LEADER_WAIT;
            loop {
                match self.node.table_read(name, linearizable).await {
                    Ok(r) => return Ok(Arc::new(Replica(r)) as Arc<dyn StateView>),
                    Err(ClusterError::UnknownGroup(_)) if !self.node.table_placement(name).is_some_and(|t| t.replicas.contains(&self.node.node_id())) => {
                        return Err(Error::Unavailable(format!("no replica of table {name:?} on this node (forwarding is not built yet)")));
                    }
                    // Reads are idempotent: retry whatever failed (no leader yet, a ReadIndex lost in an election).
                    Err(e) if Instant::now() < deadline => {
                        tracing::debug!(table = name, error = %e, "table read retried");
                        tokio::time::sleep(Duration::from_millis(50)).await
                    }
                    Err(e) => return Err(unavailable(e)),
                }
            }
        })
    }

    fn list(&self) -> Vec<String> {
        self.node.local_meta().tables.into_keys().collect()
    }

    fn watch<'a>(&'a self, name: &'a str, from: Revision, set: KeySet, prev_kv: bool, max_events: usize) -> BoxFut<'a, Result<(Vec<Event>, Revision), Error>> {
        Box::pin(async move {
            // The local replica (after a linearizable read confirms the table is here and current).
            self.read(name, true).await?;
            let r = self.node.table_replica(name).ok_or_else(|| Error::Unavailable(format!("no replica of table {name:?} on this node")))?;
            Ok(r.wait_events(from, &set, prev_kv, max_events).await?)
        })
    }
}
