//! `log.produce_queued` (`queues.produce_endpoint`): a produce made durable
//! in a queued endpoint first, then appended to the log by the queue's
//! loop, with the queue's retries and error queue. Useful to a caller that
//! must not lose a record while a topic is being created or a partition is
//! refusing writes; and it gives `weft serve` a queued endpoint of its own,
//! which the dashboard's Queues page shows (docs/dashboard.md).
//!
//! The append goes through the record plane, as `log.produce` does: on a
//! cluster node a replicated topic's record is committed through its raft
//! group (never written into the node's own copy behind raft's back). The
//! queue retries a failed attempt, so a produce whose answer was lost (a
//! leader killed mid-request) can be appended twice: at least once.

use std::sync::Arc;

use serde::Deserialize;
use weft_broker::plane::Plane;
use weft_log::{PartitionId, ProduceRecord};
use weft_queue::{Manager, QueueOptions};
use weft_service::{Service, ServiceError};

pub const ROUTE: &str = "log.produce_queued";

/// One record, values as UTF-8 text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueuedRecord {
    topic: String,
    #[serde(default)]
    partition: Option<u32>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// Register the queued endpoint; a failed append (unknown topic, storage
/// fault) is a failed attempt, retried `max_retries` times, then the item
/// waits in the error queue for `weft queue reprocess` (or the dashboard).
pub fn register(queues: &Arc<Manager>, service: &mut Service, plane: Plane, max_retries: u32) -> anyhow::Result<()> {
    let opts = QueueOptions { max_retries, ..QueueOptions::default() };
    queues.queued_endpoint(service, ROUTE, opts, move |r: QueuedRecord| {
        let plane = plane.clone();
        async move {
            let rec = ProduceRecord {
                partition: r.partition.map(PartitionId),
                timestamp_ms: None,
                key: r.key.map(|k| bytes::Bytes::from(k.into_bytes())),
                value: r.value.map(|v| bytes::Bytes::from(v.into_bytes())),
                headers: vec![],
            };
            let fail = |code: weft_wire::ErrorCode, message: &str| ServiceError::handler(format!("producing to {:?}: {code:?}: {message}", r.topic));
            let answer = plane.produce(&r.topic, vec![rec]).await.map_err(|e| fail(e.code, &e.message))?;
            for a in answer.results {
                if let Some(e) = a.error {
                    return Err(fail(e.code, &e.message));
                }
            }
            Ok(())
        }
    })?;
    Ok(())
}
