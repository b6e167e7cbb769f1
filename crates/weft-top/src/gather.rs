//! One sample of a node, through its standard endpoints (`weft.info`,
//! `weft.stats`, `log.*`, `weft.queue.ls`, `weft.sender.ls`, and when the
//! node has them `cluster.status` and `pva.pvs`).

use std::time::Instant;

use serde::de::DeserializeOwned;
use weft_net::{Client, ClientError};
use weft_wire::ErrorCode;

use crate::model::{GroupSample, NodeInfo, QueueSample, Sample, TopicSample};
use crate::panels::{ClusterSample, PvList};
use crate::TopError;

async fn ask<T: DeserializeOwned>(client: &Client, what: &'static str, body: serde_json::Value) -> Result<T, TopError> {
    let v: serde_json::Value = client.call(what, &body).await.map_err(|source| TopError::Call { what, source })?;
    serde_json::from_value(v).map_err(|e| TopError::Answer { what, message: e.to_string() })
}

/// Whether a node lacks an optional part (no log, no queues): its routes
/// are then unknown and that part of the view stays empty.
fn missing(e: &TopError) -> bool {
    remote_code(e) == Some(ErrorCode::UnknownRoute)
}

/// The error code the node answered with, if the call reached it.
fn remote_code(e: &TopError) -> Option<ErrorCode> {
    match e {
        TopError::Call { source: ClientError::Remote(body), .. } => Some(body.code),
        _ => None,
    }
}

async fn optional<T: Default>(r: Result<T, TopError>) -> Result<T, TopError> {
    match r {
        Err(e) if missing(&e) => Ok(T::default()),
        other => other,
    }
}

/// A part only some nodes run (cluster mode, pvAccess): None when the node
/// does not list the route in `weft.info` (no call, so no refusal from an
/// identity that may not call it either).
async fn optional_route<T: DeserializeOwned>(client: &Client, node: &NodeInfo, route: &'static str) -> Result<Option<T>, TopError> {
    if !node.serves(route) {
        return Ok(None);
    }
    ask(client, route, serde_json::Value::Null).await.map(Some)
}

/// Asks the node for everything `weft top` shows.
pub async fn gather(client: &Client) -> Result<Sample, TopError> {
    let node: NodeInfo = ask(client, "weft.info", serde_json::json!({})).await?;
    let stats = ask(client, "weft.stats", serde_json::json!({})).await?;
    let names: Vec<String> = optional(ask(client, "log.topic.list", serde_json::json!({})).await).await?;
    let mut topics = Vec::with_capacity(names.len());
    for name in names {
        match ask::<TopicSample>(client, "log.topic.describe", serde_json::json!({ "name": name })).await {
            Ok(t) => topics.push(t),
            // deleted between the list and the describe
            Err(e) if remote_code(&e) == Some(ErrorCode::NotFound) => {}
            Err(e) => return Err(e),
        }
    }
    let groups: Vec<GroupSample> = optional(ask(client, "log.group.list", serde_json::json!({})).await).await?;
    let mut queues: Vec<QueueSample> = optional(ask(client, "weft.queue.ls", serde_json::json!({})).await).await?;
    let senders: Vec<QueueSample> = optional(ask(client, "weft.sender.ls", serde_json::json!({})).await).await?;
    queues.extend(senders);
    // Outside cluster mode `cluster.status` is an unknown route; a member
    // that refuses it (busy, or an identity without admin on `cluster`)
    // says why in the panel rather than failing the whole sample.
    let (cluster, cluster_error) = match optional_route::<ClusterSample>(client, &node, "cluster.status").await {
        Ok(c) => (c, None),
        Err(e) if missing(&e) => (None, None),
        Err(e) if remote_code(&e).is_some() => (None, Some(e.to_string())),
        Err(e) => return Err(e),
    };
    let pvs: Option<PvList> = match optional_route(client, &node, "pva.pvs").await {
        Ok(p) => p,
        Err(e) if missing(&e) => None,
        Err(e) => return Err(e),
    };
    Ok(Sample { at: Instant::now(), node, stats, topics, groups, queues, cluster, cluster_error, pvs })
}
