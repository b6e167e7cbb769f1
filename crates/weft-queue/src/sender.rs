//! Queued senders (durable outgoing queues) and broadcasters.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use weft_net::{Client, ClientConfig, ClientError, Endpoint};
use weft_wire::ErrorCode;

use crate::error::QueueError;
use crate::queue::{BoxFuture, Outcome, QueueInfo, WorkQueue};

/// Where a sender delivers: one attempt at one message, with the failure
/// classified (transient failures are retried without counting against
/// `max_retries`). Weft's native client implements it here; the ekosis client
/// in weft-ekosis. Held in an `Arc` so the returned future can own a handle.
pub trait Outbound: Send + Sync + 'static {
    /// `body` is the message as JSON.
    fn deliver(self: Arc<Self>, route: &str, uid: &str, body: Bytes) -> BoxFuture<Outcome>;
    /// For logs and management: where this goes.
    fn describe(&self) -> String;
    /// A fresh uid for a message (the ekosis outbound uses span keys, so the
    /// peer sees the same span key on every retry).
    fn new_uid(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
}

/// Delivers over Weft's native protocol. Connects lazily and reconnects
/// after failures, so a server that is down is simply retried.
pub struct NativeOutbound {
    endpoint: Endpoint,
    config: ClientConfig,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl NativeOutbound {
    pub fn new(endpoint: Endpoint, config: ClientConfig) -> Arc<Self> {
        Arc::new(Self { endpoint, config, client: tokio::sync::Mutex::new(None) })
    }

    pub fn with_defaults(endpoint: Endpoint) -> Arc<Self> {
        let config = ClientConfig {
            client_name: "weft-sender".into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            ..ClientConfig::default()
        };
        Self::new(endpoint, config)
    }

    async fn client(&self) -> Result<Client, ClientError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Client::connect(self.endpoint.clone(), self.config.clone()).await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    async fn attempt(&self, route: String, body: Bytes) -> Outcome {
        let value: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return Outcome::Fatal(format!("stored message is not JSON: {e}")),
        };
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => return Outcome::Transient(e.to_string()),
        };
        match client.call_json(&route, &value).await {
            Ok(_) => Outcome::Done,
            Err(e) => {
                let outcome = classify(&e);
                if matches!(e, ClientError::Closed | ClientError::Connect { .. }) {
                    *self.client.lock().await = None;
                }
                outcome
            }
        }
    }
}

/// Transient: says nothing about the message (peer down, slow, busy).
pub fn classify(e: &ClientError) -> Outcome {
    match e {
        ClientError::Remote(b) => match b.code {
            ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::Timeout => Outcome::Transient(e.to_string()),
            ErrorCode::UnknownRoute | ErrorCode::BadBody | ErrorCode::Validation | ErrorCode::TooLarge => Outcome::Failed(e.to_string()),
            _ => Outcome::Failed(e.to_string()),
        },
        ClientError::Body(_) | ClientError::DatagramTooLarge(_) => Outcome::Fatal(e.to_string()),
        _ => Outcome::Transient(e.to_string()),
    }
}

impl Outbound for NativeOutbound {
    fn deliver(self: Arc<Self>, route: &str, _uid: &str, body: Bytes) -> BoxFuture<Outcome> {
        let route = route.to_owned();
        Box::pin(async move { self.attempt(route, body).await })
    }
    fn describe(&self) -> String {
        self.endpoint.to_string()
    }
}

/// A durable outgoing queue for one route on one peer.
pub struct QueuedSender {
    name: String,
    route: String,
    target: String,
    queue: Arc<WorkQueue>,
    outbound: Arc<dyn Outbound>,
}

impl QueuedSender {
    pub(crate) fn new(name: String, route: String, queue: Arc<WorkQueue>, outbound: Arc<dyn Outbound>) -> Self {
        Self { name, route, target: outbound.describe(), queue, outbound }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn route(&self) -> &str {
        &self.route
    }
    pub fn target(&self) -> &str {
        &self.target
    }
    pub fn queue(&self) -> &Arc<WorkQueue> {
        &self.queue
    }
    pub fn info(&self) -> QueueInfo {
        self.queue.info()
    }

    /// Queue a message durably; returns its uid once it is on disk.
    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<String, QueueError> {
        self.send_with(None, None, message).await
    }

    /// Queue a message in a group (sequenced senders keep a group in order).
    pub async fn send_grouped<T: Serialize + ?Sized>(&self, group: &str, message: &T) -> Result<String, QueueError> {
        self.send_with(None, Some(group.to_owned()), message).await
    }

    /// Queue with a chosen uid (de-duplicated while queued).
    pub async fn send_with<T: Serialize + ?Sized>(&self, uid: Option<String>, group: Option<String>, message: &T) -> Result<String, QueueError> {
        let body = serde_json::to_vec(message).map_err(|e| QueueError::BadRequest { route: self.route.clone(), reason: e.to_string() })?;
        let uid = uid.unwrap_or_else(|| self.outbound.new_uid());
        self.queue.enqueue(uid, group, Bytes::from(body)).await
    }
}

/// One client of a broadcast.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub route: String,
    pub outbound: Arc<dyn Outbound>,
}

/// The result of a broadcast for one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetResult {
    pub name: String,
    pub ok: bool,
    pub reason: String,
}

/// Send one message to many clients at once, each at its own route key, and
/// get a result per client. Not durable; see [`SequencedBroadcaster`].
pub struct Broadcaster {
    targets: Vec<Target>,
}

impl Broadcaster {
    pub fn new(targets: Vec<Target>) -> Self {
        Self { targets }
    }

    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<Vec<TargetResult>, QueueError> {
        let body = Bytes::from(serde_json::to_vec(message).map_err(|e| QueueError::Usage(e.to_string()))?);
        let uid = uuid::Uuid::now_v7().to_string();
        let calls = self.targets.iter().map(|t| {
            let fut = t.outbound.clone().deliver(&t.route, &uid, body.clone());
            let name = t.name.clone();
            async move {
                match fut.await {
                    Outcome::Done => TargetResult { name, ok: true, reason: String::new() },
                    Outcome::Failed(r) | Outcome::Transient(r) | Outcome::Fatal(r) => TargetResult { name, ok: false, reason: r },
                }
            }
        });
        Ok(futures::future::join_all(calls).await)
    }
}

/// A broadcaster with one durable, ordered queued sender per client: each
/// client gets every message, in order, at least once.
pub struct SequencedBroadcaster {
    senders: Vec<Arc<QueuedSender>>,
}

/// The group key the sequenced broadcaster puts its messages in.
pub const BROADCAST_GROUP: &str = "broadcast";

impl SequencedBroadcaster {
    /// Every sender must keep order: `sequenced: true` (its messages share
    /// one group) or `concurrency: 1`.
    pub fn new(senders: Vec<Arc<QueuedSender>>) -> Result<Self, QueueError> {
        for s in &senders {
            let o = s.queue().options();
            if !o.sequenced && o.concurrency > 1 {
                return Err(QueueError::Usage(format!("sender {:?} cannot keep order: make it sequenced or use concurrency 1", s.name())));
            }
        }
        Ok(Self { senders })
    }

    /// Queue the message for every client; returns (client, uid).
    pub async fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<Vec<(String, String)>, QueueError> {
        let mut out = vec![];
        for s in &self.senders {
            out.push((s.name().to_owned(), s.send_grouped(BROADCAST_GROUP, message).await?));
        }
        Ok(out)
    }

    pub fn senders(&self) -> &[Arc<QueuedSender>] {
        &self.senders
    }
}
