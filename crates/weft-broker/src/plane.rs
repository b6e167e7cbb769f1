//! The record plane: the one interface through which the native endpoints,
//! the HTTP gateway and (through them) the CLI reach records and topics.
//!
//! A single node uses [`LocalPlane`], its own weft-log: exactly what the
//! endpoints did before the trait existed. A cluster node plugs in its own
//! implementation (the binary's `cluster_cmd::ClusterPlane`), which sends
//! records through the replicated partitions; the code above the trait is
//! the same for both (docs/cluster.md).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use weft_log::{Log, OffsetSpec, PartitionId, ProduceRecord, TopicAlter, TopicConfig, TopicDescription};
use weft_wire::ErrorBody;

use crate::dto;
use crate::error::log_error_body;
use crate::native;

/// What every plane operation returns: the wire error already chosen, so
/// both surfaces answer the same code whichever plane served it.
pub type PlaneFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ErrorBody>> + Send + 'a>>;

/// Records and topics, wherever they live.
pub trait RecordPlane: Send + Sync {
    /// `replicas`: how many copies (cluster only; a single node ignores it).
    fn create_topic<'a>(&'a self, name: &'a str, config: Option<TopicConfig>, replicas: Option<u32>) -> PlaneFuture<'a, TopicDescription>;
    fn list_topics(&self) -> PlaneFuture<'_, Vec<String>>;
    fn describe_topic<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, TopicDescription>;
    fn delete_topic<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, ()>;
    fn alter_topic<'a>(&'a self, name: &'a str, alter: &'a TopicAlter) -> PlaneFuture<'a, TopicDescription>;
    /// Consumer-group membership (join, heartbeat, leave, describe, list,
    /// the fetch fence) lives on one node per group. A cluster plane sends
    /// the request (`route`, its JSON body) to the group's coordinator when
    /// that is another node and returns its answer; `None`: serve it here
    /// ([`native::group_local`]). A single node always serves it.
    fn group_forward<'a>(&'a self, _route: &'a str, _group: &'a str, _body: serde_json::Value) -> PlaneFuture<'a, Option<serde_json::Value>> {
        Box::pin(async { Ok(None) })
    }
    /// One produce call: per-record results, as `log.produce` answers.
    fn produce<'a>(&'a self, topic: &'a str, records: Vec<ProduceRecord>) -> PlaneFuture<'a, dto::ProduceResponse>;
    fn fetch<'a>(&'a self, req: &'a dto::Fetch) -> PlaneFuture<'a, dto::FetchResponse>;
    fn offset<'a>(&'a self, topic: &'a str, partition: u32, spec: OffsetSpec) -> PlaneFuture<'a, u64>;
    /// Consumer-group offset commit (fenced when a member is named).
    fn commit(&self, req: dto::Commit) -> PlaneFuture<'_, ()>;
    fn committed<'a>(&'a self, req: &'a dto::Committed) -> PlaneFuture<'a, dto::CommittedAnswer>;
    /// Move a group's committed offsets on a topic (refused while it has members).
    fn reset_offsets(&self, req: dto::ResetOffsets) -> PlaneFuture<'_, dto::ResetOffsetsAnswer>;
    /// Delete a group: its committed offsets and its empty membership
    /// (refused while it has members: `group_active`; `unknown_group`
    /// when there is neither).
    fn delete_group<'a>(&'a self, group: &'a str) -> PlaneFuture<'a, ()>;
    /// A produce with options. A plane that cannot honour idempotence
    /// refuses it (a single node: docs/log.md); `acks` means nothing there.
    fn produce_with<'a>(&'a self, topic: &'a str, records: Vec<ProduceRecord>, opts: ProduceOpts) -> PlaneFuture<'a, dto::ProduceResponse> {
        if opts.idempotent.is_some() {
            return Box::pin(async { Err(ErrorBody::new(weft_wire::ErrorCode::Validation, "idempotent producers (producer_id) need a cluster node and a replicated topic")) });
        }
        self.produce(topic, records)
    }
}

/// What a produce asks beyond its records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProduceOpts {
    /// (producer id, first record's sequence in the partition).
    pub idempotent: Option<(u64, u64)>,
    pub acks: dto::Acks,
}

/// A shared plane, as the endpoints hold it.
pub type Plane = Arc<dyn RecordPlane>;

/// The single-node plane: the node's own log.
pub struct LocalPlane(pub Log);

impl LocalPlane {
    pub fn shared(log: Log) -> Plane {
        Arc::new(LocalPlane(log))
    }
}

fn body(e: weft_log::LogError) -> ErrorBody {
    log_error_body(&e)
}

impl RecordPlane for LocalPlane {
    fn create_topic<'a>(&'a self, name: &'a str, config: Option<TopicConfig>, _replicas: Option<u32>) -> PlaneFuture<'a, TopicDescription> {
        Box::pin(async move { self.0.create_topic(name, config).await.map_err(body) })
    }
    fn list_topics(&self) -> PlaneFuture<'_, Vec<String>> {
        Box::pin(async move { Ok(self.0.list_topics().into_iter().map(|t| t.as_str().to_owned()).collect()) })
    }
    fn describe_topic<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, TopicDescription> {
        Box::pin(async move { self.0.describe_topic(name).map_err(body) })
    }
    fn delete_topic<'a>(&'a self, name: &'a str) -> PlaneFuture<'a, ()> {
        Box::pin(async move { self.0.delete_topic(name).await.map_err(body) })
    }
    fn alter_topic<'a>(&'a self, name: &'a str, alter: &'a TopicAlter) -> PlaneFuture<'a, TopicDescription> {
        Box::pin(async move { self.0.alter_topic(name, alter).await.map_err(body) })
    }
    fn produce<'a>(&'a self, topic: &'a str, records: Vec<ProduceRecord>) -> PlaneFuture<'a, dto::ProduceResponse> {
        Box::pin(async move { native::produce(&self.0, topic, records).await.map_err(body) })
    }
    fn fetch<'a>(&'a self, req: &'a dto::Fetch) -> PlaneFuture<'a, dto::FetchResponse> {
        Box::pin(async move { native::fetch(&self.0, req).await.map_err(body) })
    }
    fn offset<'a>(&'a self, topic: &'a str, partition: u32, spec: OffsetSpec) -> PlaneFuture<'a, u64> {
        Box::pin(async move { self.0.list_offset(topic, PartitionId(partition), spec).map(|o| o.0).map_err(body) })
    }
    fn commit(&self, req: dto::Commit) -> PlaneFuture<'_, ()> {
        Box::pin(async move { native::commit(&self.0, req).await.map_err(body) })
    }
    fn committed<'a>(&'a self, req: &'a dto::Committed) -> PlaneFuture<'a, dto::CommittedAnswer> {
        Box::pin(async move { native::committed(&self.0, req).map_err(body) })
    }
    fn reset_offsets(&self, req: dto::ResetOffsets) -> PlaneFuture<'_, dto::ResetOffsetsAnswer> {
        Box::pin(async move { native::reset_offsets(&self.0, req).await.map_err(body) })
    }
    fn delete_group<'a>(&'a self, group: &'a str) -> PlaneFuture<'a, ()> {
        Box::pin(async move { self.0.delete_group(group).await.map_err(body) })
    }
}
