//! The TCP transport: one connection per peer pair, carrying frames of
//! batched raft messages (see `codec`). The lower node id dials the higher
//! (with back-off); the higher accepts; both directions then share that
//! connection. The first frame on a connection is a hello (a frame with no
//! messages) naming the sender.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::codec::{encode, Frame, FrameDecoder};
use crate::host::NodeId;

/// Frames queued per connection before `send` reports the peer as unreachable
/// (raft retransmits; a slow peer must not grow our memory).
pub const PEER_QUEUE_FRAMES: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Peer {
    addr: Option<String>,
    tx: Option<mpsc::Sender<Bytes>>,
    last_contact: Option<Instant>,
    dialing: bool,
}

/// Per-peer view for status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PeerStatus {
    pub id: NodeId,
    pub addr: Option<String>,
    pub connected: bool,
    /// Milliseconds since a frame last arrived from this peer.
    pub last_contact_ms: Option<u64>,
}

/// Counters, read by the node's stats.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub frames_sent: std::sync::atomic::AtomicU64,
    pub frames_received: std::sync::atomic::AtomicU64,
    pub frames_dropped_full: std::sync::atomic::AtomicU64,
    pub bad_frames: std::sync::atomic::AtomicU64,
}

pub struct Transport {
    id: NodeId,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    incoming: mpsc::Sender<Frame>,
    max_frame_bytes: u32,
    stop: watch::Receiver<bool>,
    pub stats: TransportStats,
}

fn count(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Transport {
    /// Start listening on `listener`; received frames go to `incoming`.
    pub fn start(id: NodeId, listener: TcpListener, incoming: mpsc::Sender<Frame>, max_frame_bytes: u32, stop: watch::Receiver<bool>) -> Arc<Self> {
        let t = Arc::new(Transport { id, peers: Mutex::default(), incoming, max_frame_bytes, stop, stats: TransportStats::default() });
        let t2 = t.clone();
        tokio::spawn(async move { t2.accept_loop(listener).await });
        t
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Peer>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Learn (or update) a peer's address; dial it if it is ours to dial.
    pub fn set_peer(self: &Arc<Self>, id: NodeId, addr: String) {
        if id == self.id {
            return;
        }
        let dial = {
            let mut peers = self.peers();
            let p = peers.entry(id).or_default();
            p.addr = Some(addr);
            let dial = id > self.id && !p.dialing;
            if dial {
                p.dialing = true;
            }
            dial
        };
        if dial {
            let t = self.clone();
            tokio::spawn(async move { t.dial_loop(id).await });
        }
    }

    /// Forget a peer (removed from the cluster): its dialer stops, its connection closes.
    pub fn remove_peer(&self, id: NodeId) {
        self.peers().remove(&id);
    }

    /// Queue one frame for `to`. False when there is no connection or its
    /// queue is full: the caller reports the peer unreachable to raft.
    pub fn send(&self, to: NodeId, frame: &Frame) -> bool {
        let mut buf = BytesMut::new();
        if let Err(e) = encode(frame, &mut buf) {
            tracing::warn!(to, error = %e, "cluster: cannot encode frame");
            return false;
        }
        let tx = self.peers().get(&to).and_then(|p| p.tx.clone());
        match tx {
            Some(tx) => match tx.try_send(buf.freeze()) {
                Ok(()) => {
                    count(&self.stats.frames_sent);
                    true
                }
                Err(_) => {
                    count(&self.stats.frames_dropped_full);
                    false
                }
            },
            None => false,
        }
    }

    /// An empty frame to every connected peer, so liveness and last contact
    /// are known between nodes that exchange no raft messages (two followers).
    pub fn keepalive(&self) {
        let ids: Vec<NodeId> = self.peers().iter().filter(|(_, p)| p.tx.is_some()).map(|(id, _)| *id).collect();
        for id in ids {
            self.send(id, &Frame { from: self.id, msgs: Vec::new() });
        }
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.peers()
            .iter()
            .map(|(id, p)| PeerStatus {
                id: *id,
                addr: p.addr.clone(),
                connected: p.tx.as_ref().is_some_and(|t| !t.is_closed()),
                last_contact_ms: p.last_contact.map(|t| now.duration_since(t).as_millis() as u64),
            })
            .collect()
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = listener.accept() => match r {
                    Ok((stream, remote)) => {
                        // Cluster traffic is loopback or a private network; the peer
                        // proves nothing beyond its hello in stage 1 (docs/cluster.md).
                        let _ = stream.set_nodelay(true);
                        let t = self.clone();
                        tokio::spawn(async move {
                            if let Err(e) = t.serve_conn(stream, None).await {
                                tracing::debug!(%remote, error = %e, "cluster: inbound connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cluster: accept failed");
                        tokio::time::sleep(BACKOFF_MIN).await;
                    }
                },
            }
        }
    }

    async fn dial_loop(self: Arc<Self>, id: NodeId) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let addr = match self.peers().get(&id) {
                Some(p) => p.addr.clone(),
                None => return, // removed
            };
            let Some(addr) = addr else { return };
            match TcpStream::connect(&addr).await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    backoff = BACKOFF_MIN;
                    if let Err(e) = self.clone().serve_conn(stream, Some(id)).await {
                        tracing::debug!(peer = id, error = %e, "cluster: connection ended");
                    }
                }
                Err(e) => tracing::trace!(peer = id, %addr, error = %e, "cluster: dial failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Run one connection until it fails. `dialed`: the peer we dialed (we
    /// send the hello); otherwise the peer names itself in its hello.
    async fn serve_conn(self: Arc<Self>, stream: TcpStream, dialed: Option<NodeId>) -> std::io::Result<()> {
        let (mut rd, mut wr) = stream.into_split();
        let mut decoder = FrameDecoder::new(self.max_frame_bytes);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let hello = Frame { from: self.id, msgs: Vec::new() };
        let mut hb = BytesMut::new();
        if encode(&hello, &mut hb).is_ok() {
            wr.write_all(&hb).await?;
        }
        let peer = match dialed {
            Some(p) => p,
            None => loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(f)) => break f.from,
                    Ok(None) => {
                        if rd.read_buf(&mut buf).await? == 0 {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        count(&self.stats.bad_frames);
                        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()));
                    }
                }
            },
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(PEER_QUEUE_FRAMES);
        {
            let mut peers = self.peers();
            if dialed.is_some() && !peers.contains_key(&peer) {
                return Ok(()); // removed while we were connecting
            }
            let p = peers.entry(peer).or_default();
            p.tx = Some(tx.clone());
            p.last_contact = Some(Instant::now());
        }
        tracing::info!(peer, "cluster: connected");
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
            }
        });
        let mut stop = self.stop.clone();
        let result = loop {
            // Drain whole frames before reading more.
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => {
                    count(&self.stats.frames_received);
                    if let Some(p) = self.peers().get_mut(&peer) {
                        p.last_contact = Some(Instant::now());
                    }
                    if f.from != peer {
                        count(&self.stats.bad_frames);
                        break Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame from another node id"));
                    }
                    if !f.msgs.is_empty() && self.incoming.send(f).await.is_err() {
                        break Ok(());
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    count(&self.stats.bad_frames);
                    break Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()));
                }
            }
            tokio::select! {
                _ = stop.changed() => break Ok(()),
                r = rd.read_buf(&mut buf) => match r {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(e) => break Err(e),
                },
            }
        };
        writer.abort();
        let mut peers = self.peers();
        if let Some(p) = peers.get_mut(&peer) {
            if p.tx.as_ref().is_some_and(|t| t.same_channel(&tx)) {
                p.tx = None;
            }
        }
        result
    }
}
