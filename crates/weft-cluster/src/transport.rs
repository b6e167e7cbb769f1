//! The TCP transport: one connection per peer pair, carrying frames of
//! batched raft messages (see `codec`). The lower node id dials the higher
//! (with back-off); the higher accepts; both directions then share that
//! connection. The first frame on a connection is a hello (a frame with no
//! messages) naming the sender: the dialer sends its hello first, the
//! acceptor answers with its own once it has checked the dialer's.
//!
//! With `cluster.tls.*` (see `tls`) every connection is TLS 1.3 with
//! certificates both ways; the acceptor refuses a dialer whose certificate
//! does not name the node id of its hello. Without it, plain TCP: peers
//! prove nothing beyond their hello.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::codec::{encode, Frame, FrameDecoder};
use crate::error::{ClusterError, Result};
use crate::host::NodeId;
use crate::tls::ClusterTls;

/// Frames queued per connection before `send` reports the peer as unreachable
/// (raft retransmits; a slow peer must not grow our memory): the default of
/// `cluster.peer_queue_frames`.
pub const PEER_QUEUE_FRAMES: usize = 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Default bound on a connection's TLS handshake and hello together
/// (`limits.handshake_timeout_ms` in the binary).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `cluster.max_pending_handshakes`: inbound connections in
/// their TLS handshake or hello at once; one more is closed at accept.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 64;

/// Where the cluster port sends other nodes' native-protocol connections
/// (TLS with ALPN `weft/1`: forwarded requests) once their certificate
/// named exactly one node: the binary's native server.
pub type NativeHandoff = Arc<dyn Fn(tokio_rustls::server::TlsStream<TcpStream>, NodeId, std::net::SocketAddr) + Send + Sync>;

/// How connections are secured and bounded before their hello.
#[derive(Debug, Clone)]
pub struct TransportSecurity {
    /// mTLS with the cluster CA; None: plain TCP.
    pub tls: Option<Arc<ClusterTls>>,
    /// A connection must complete its TLS handshake and hello within this.
    pub handshake_timeout: Duration,
    /// Inbound connections before their hello, at most
    /// (`cluster.max_pending_handshakes`): a flood of connects costs this
    /// many tasks and descriptors, not one per connect until its timeout.
    pub max_pending_handshakes: usize,
}

impl TransportSecurity {
    /// Refuses bounds outside their documented ranges (beside
    /// [`crate::RaftTuning::validate`], which checks the rest of `cluster.*`).
    pub fn validate(&self) -> Result<()> {
        if self.max_pending_handshakes == 0 || self.max_pending_handshakes > crate::host::MAX_COUNT_BOUND {
            return Err(ClusterError::Config(format!(
                "cluster.max_pending_handshakes must be 1 to {}, got {}",
                crate::host::MAX_COUNT_BOUND,
                self.max_pending_handshakes
            )));
        }
        Ok(())
    }
}

impl Default for TransportSecurity {
    fn default() -> Self {
        TransportSecurity { tls: None, handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT, max_pending_handshakes: DEFAULT_MAX_PENDING_HANDSHAKES }
    }
}

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
    /// Connections refused: a failed or timed-out TLS handshake (another
    /// CA, no certificate, a dialed peer whose certificate names another
    /// node), a hello not in time, or a certificate not naming the node id
    /// its hello claims.
    pub peers_refused: std::sync::atomic::AtomicU64,
    /// Inbound connections closed at accept because
    /// `cluster.max_pending_handshakes` were already in their handshake.
    pub handshakes_shed: std::sync::atomic::AtomicU64,
}

pub struct Transport {
    id: NodeId,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    incoming: mpsc::Sender<Frame>,
    max_frame_bytes: u32,
    /// Frames queued per peer connection (`cluster.peer_queue_frames`).
    peer_queue_frames: usize,
    stop: watch::Receiver<bool>,
    security: TransportSecurity,
    handoff: Mutex<Option<NativeHandoff>>,
    /// One permit per inbound connection before its hello
    /// (`security.max_pending_handshakes`).
    handshakes: Arc<tokio::sync::Semaphore>,
    pub stats: TransportStats,
}

fn count(c: &std::sync::atomic::AtomicU64) {
    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

impl Transport {
    /// Start listening on `listener`; received frames go to `incoming`.
    pub fn start(id: NodeId, listener: TcpListener, incoming: mpsc::Sender<Frame>, max_frame_bytes: u32, stop: watch::Receiver<bool>) -> Arc<Self> {
        Self::start_with(id, listener, incoming, max_frame_bytes, PEER_QUEUE_FRAMES, stop, TransportSecurity::default())
    }

    /// [`Self::start`] with TLS, the handshake bound and the frames queued per peer.
    pub fn start_with(
        id: NodeId,
        listener: TcpListener,
        incoming: mpsc::Sender<Frame>,
        max_frame_bytes: u32,
        peer_queue_frames: usize,
        stop: watch::Receiver<bool>,
        security: TransportSecurity,
    ) -> Arc<Self> {
        let peer_queue_frames = peer_queue_frames.max(1);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(security.max_pending_handshakes.max(1)));
        let t = Arc::new(Transport { id, peers: Mutex::default(), incoming, max_frame_bytes, peer_queue_frames, stop, security, handoff: Mutex::default(), handshakes, stats: TransportStats::default() });
        let t2 = t.clone();
        tokio::spawn(async move { t2.accept_loop(listener).await });
        t
    }

    /// Where native-protocol connections of other nodes go (cluster TLS only).
    pub fn set_native_handoff(&self, h: NativeHandoff) {
        *self.handoff.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }

    /// The TLS files in use, when the transport runs mTLS.
    pub fn tls_files(&self) -> Option<crate::tls::TlsFiles> {
        self.security.tls.as_ref().map(|t| t.files.clone())
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

    /// Frames received and queued to the driver, not yet taken (at most
    /// `cluster.incoming_queue_frames`; past it connections stop reading).
    pub fn incoming_queued(&self) -> usize {
        self.incoming.max_capacity() - self.incoming.capacity()
    }

    /// Frames queued to every peer's connection, not yet written (each at
    /// most `cluster.peer_queue_frames`; past it frames are dropped,
    /// `frames_dropped_full`).
    pub fn peer_queued(&self) -> usize {
        self.peers().values().filter_map(|p| p.tx.as_ref()).map(|t| t.max_capacity() - t.capacity()).sum()
    }

    /// Inbound connections in their handshake or hello now (at most
    /// `cluster.max_pending_handshakes`).
    pub fn handshakes_pending(&self) -> u64 {
        (self.security.max_pending_handshakes.max(1) - self.handshakes.available_permits()) as u64
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        let mut stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                r = listener.accept() => match r {
                    Ok((stream, remote)) => {
                        let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
                            // Closed at once: a peer of ours retries with
                            // back-off; a flood costs nothing more.
                            count(&self.stats.handshakes_shed);
                            tracing::debug!(%remote, "cluster: connection closed at accept: cluster.max_pending_handshakes reached");
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let t = self.clone();
                        // The handshake runs in its own task: a slow peer never blocks accepting.
                        tokio::spawn(async move { t.accept_conn(stream, remote, permit).await });
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
                    let served = match &self.security.tls {
                        None => self.clone().serve_conn(stream, Some(id), None, None, &addr).await,
                        Some(tls) => match self.tls_connect(tls, id, &addr, stream).await {
                            Some(s) => self.clone().serve_conn(s, Some(id), None, None, &addr).await,
                            None => Ok(false),
                        },
                    };
                    match served {
                        // Back-off starts over only after a connection that was up.
                        Ok(true) => backoff = BACKOFF_MIN,
                        Ok(false) => {}
                        Err(e) => {
                            backoff = BACKOFF_MIN;
                            tracing::debug!(peer = id, error = %e, "cluster: connection ended");
                        }
                    }
                }
                Err(e) => tracing::trace!(peer = id, %addr, error = %e, "cluster: dial failed"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// A refused connection: counted, and logged with what we know of it.
    fn refuse(&self, remote: &str, claimed: Option<NodeId>, reason: &str) {
        count(&self.stats.peers_refused);
        tracing::warn!(node = self.id, %remote, claimed, tls = self.security.tls.is_some(), reason, "cluster: peer connection refused");
    }

    /// The TLS handshake of a dial to `peer`: its certificate must chain to
    /// the cluster CA and name `node-<peer>`. None: refused (counted, logged).
    async fn tls_connect(&self, tls: &ClusterTls, peer: NodeId, addr: &str, stream: TcpStream) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = match ClusterTls::server_name(peer) {
            Ok(n) => n,
            Err(e) => {
                self.refuse(addr, Some(peer), &e.to_string());
                return None;
            }
        };
        match tokio::time::timeout(self.security.handshake_timeout, tls.connector().connect(name, stream)).await {
            Ok(Ok(s)) => Some(s),
            Ok(Err(e)) => {
                self.refuse(addr, Some(peer), &format!("TLS handshake: {e}"));
                None
            }
            Err(_) => {
                self.refuse(addr, Some(peer), "TLS handshake timed out");
                None
            }
        }
    }

    /// An inbound connection: its TLS handshake when configured, then the
    /// connection itself (the hello checked against the certificate).
    /// `permit`: its place among the connections before their hello,
    /// given back once the hello is in (or the connection handed over).
    async fn accept_conn(self: Arc<Self>, stream: TcpStream, remote: std::net::SocketAddr, permit: tokio::sync::OwnedSemaphorePermit) {
        let result = match &self.security.tls {
            None => self.clone().serve_conn(stream, None, None, Some(permit), &remote.to_string()).await,
            Some(tls) => match tokio::time::timeout(self.security.handshake_timeout, tls.acceptor().accept(stream)).await {
                Ok(Ok(s)) => {
                    // rustls verified the chain; the first certificate is the peer's own.
                    let leaf = s.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec());
                    let native = s.get_ref().1.alpn_protocol() == Some(weft_net::tls::ALPN);
                    match leaf {
                        Some(leaf) if native => {
                            // The native server bounds its own connections.
                            drop(permit);
                            self.hand_over(s, &leaf, remote);
                            return;
                        }
                        Some(leaf) => self.clone().serve_conn(s, None, Some(leaf), Some(permit), &remote.to_string()).await,
                        None => {
                            self.refuse(&remote.to_string(), None, "no client certificate");
                            return;
                        }
                    }
                }
                Ok(Err(e)) => {
                    self.refuse(&remote.to_string(), None, &format!("TLS handshake: {e}"));
                    return;
                }
                Err(_) => {
                    self.refuse(&remote.to_string(), None, "TLS handshake timed out");
                    return;
                }
            },
        };
        if let Err(e) = result {
            tracing::debug!(%remote, error = %e, "cluster: inbound connection ended");
        }
    }

    /// A native-protocol connection of another node: served by the native
    /// server as that node, which its certificate must name (one node only).
    fn hand_over(&self, s: tokio_rustls::server::TlsStream<TcpStream>, leaf: &[u8], remote: std::net::SocketAddr) {
        let id = match crate::tls::named_nodes(leaf).as_deref() {
            Ok([id]) => *id,
            Ok(ids) => {
                self.refuse(&remote.to_string(), None, &format!("native connection: the certificate names {} nodes, not one", ids.len()));
                return;
            }
            Err(e) => {
                self.refuse(&remote.to_string(), None, &e.to_string());
                return;
            }
        };
        let h = self.handoff.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match h {
            Some(h) => h(s, id, remote),
            None => self.refuse(&remote.to_string(), Some(id), "native connection, but no native server on this node"),
        }
    }

    /// The peer's hello, read within the handshake timeout. `expect`: the
    /// node we dialed (with TLS its certificate was checked in the
    /// handshake); else the dialer's claim, checked against its certificate
    /// `leaf` with TLS. None: refused or closed.
    async fn read_hello<R: AsyncRead + Unpin>(
        &self,
        rd: &mut R,
        decoder: &mut FrameDecoder,
        buf: &mut BytesMut,
        expect: Option<NodeId>,
        leaf: Option<&[u8]>,
        remote: &str,
    ) -> std::io::Result<Option<NodeId>> {
        let deadline = tokio::time::Instant::now() + self.security.handshake_timeout;
        let from = loop {
            match decoder.decode(buf) {
                Ok(Some(f)) => break f.from,
                Ok(None) => match tokio::time::timeout_at(deadline, rd.read_buf(buf)).await {
                    Ok(Ok(0)) => return Ok(None),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        self.refuse(remote, None, "no hello in time");
                        return Ok(None);
                    }
                },
                Err(e) => {
                    count(&self.stats.bad_frames);
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()));
                }
            }
        };
        if let Some(p) = expect {
            if from != p {
                self.refuse(remote, Some(from), &format!("dialed node {p}, it answers as node {from}"));
                return Ok(None);
            }
            return Ok(Some(from));
        }
        if from == self.id || from == 0 {
            self.refuse(remote, Some(from), "hello claims this node's own id (or 0)");
            return Ok(None);
        }
        if self.security.tls.is_some() {
            let checked = match leaf {
                Some(leaf) => crate::tls::check_claim(leaf, from),
                None => Err(crate::error::ClusterError::PeerIdentity("no client certificate".into())),
            };
            if let Err(e) = checked {
                self.refuse(remote, Some(from), &e.to_string());
                return Ok(None);
            }
        }
        Ok(Some(from))
    }

    /// Run one connection until it fails. `dialed`: the peer we dialed (we
    /// send the hello first); otherwise the peer names itself in its hello,
    /// which `leaf` (its verified certificate, with TLS) must back; an
    /// inbound one holds `permit` until its hello is in. Ok(true) once the
    /// connection was up; Ok(false): refused or closed before.
    async fn serve_conn<S>(self: Arc<Self>, stream: S, dialed: Option<NodeId>, leaf: Option<Vec<u8>>, permit: Option<tokio::sync::OwnedSemaphorePermit>, remote: &str) -> std::io::Result<bool>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let mut decoder = FrameDecoder::new(self.max_frame_bytes);
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let hello = Frame { from: self.id, msgs: Vec::new() };
        let mut hb = BytesMut::new();
        encode(&hello, &mut hb).map_err(|e| std::io::Error::other(e.to_string()))?;
        let peer = match dialed {
            Some(p) => {
                wr.write_all(&hb).await?;
                wr.flush().await?;
                // Connected once the peer answered as the node we dialed.
                let Some(p) = self.read_hello(&mut rd, &mut decoder, &mut buf, Some(p), None, remote).await? else { return Ok(false) };
                p
            }
            None => {
                // A refused dialer learns nothing from us, not even our id.
                let Some(p) = self.read_hello(&mut rd, &mut decoder, &mut buf, None, leaf.as_deref(), remote).await? else { return Ok(false) };
                drop(permit);
                wr.write_all(&hb).await?;
                wr.flush().await?;
                p
            }
        };
        let (tx, mut rx) = mpsc::channel::<Bytes>(self.peer_queue_frames);
        {
            let mut peers = self.peers();
            if dialed.is_some() && !peers.contains_key(&peer) {
                return Ok(false); // removed while we were connecting
            }
            let p = peers.entry(peer).or_default();
            p.tx = Some(tx.clone());
            p.last_contact = Some(Instant::now());
        }
        tracing::info!(peer, tls = self.security.tls.is_some(), "cluster: connected");
        let writer = tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if wr.write_all(&b).await.is_err() {
                    break;
                }
                // Whatever else is queued goes before the flush (TLS holds
                // written bytes until flushed; plain TCP flushes nothing).
                let mut ok = true;
                while let Ok(b) = rx.try_recv() {
                    ok = wr.write_all(&b).await.is_ok();
                    if !ok {
                        break;
                    }
                }
                if !ok || wr.flush().await.is_err() {
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
        result.map(|()| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::Ca;

    #[test]
    fn pending_handshake_bounds_out_of_range_are_refused() {
        assert!(TransportSecurity::default().validate().is_ok());
        for bad in [0, crate::host::MAX_COUNT_BOUND + 1] {
            let s = TransportSecurity { max_pending_handshakes: bad, ..TransportSecurity::default() };
            let err = s.validate().expect_err("out of range").to_string();
            assert!(err.contains("cluster.max_pending_handshakes") && err.contains(&bad.to_string()), "{err}");
        }
        let top = TransportSecurity { max_pending_handshakes: crate::host::MAX_COUNT_BOUND, ..TransportSecurity::default() };
        assert!(top.validate().is_ok());
    }

    struct Node {
        t: Arc<Transport>,
        addr: String,
        rx: mpsc::Receiver<Frame>,
        stop: watch::Sender<bool>,
    }

    async fn node(id: NodeId, tls: Option<Arc<ClusterTls>>) -> Node {
        node_with(id, TransportSecurity { tls, handshake_timeout: Duration::from_secs(5), ..TransportSecurity::default() }).await
    }

    async fn node_with(id: NodeId, security: TransportSecurity) -> Node {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel(16);
        let (stop, stop_rx) = watch::channel(false);
        let t = Transport::start_with(id, l, tx, 1 << 20, PEER_QUEUE_FRAMES, stop_rx, security);
        Node { t, addr, rx, stop }
    }

    fn connected(t: &Transport, peer: NodeId) -> bool {
        t.status().iter().any(|p| p.id == peer && p.connected)
    }

    fn refused(t: &Transport) -> u64 {
        t.stats.peers_refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Polls `f`; the bound is against hangs, not a timing assertion.
    async fn until(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn one_message(from: NodeId, to: NodeId) -> Frame {
        let m = raft::prelude::Message { from, to, ..Default::default() };
        Frame { from, msgs: vec![(0, m)] }
    }

    #[tokio::test]
    async fn mtls_peers_connect_and_impostors_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ca = Ca::new("cluster CA");
        let other = Ca::new("another CA");
        let a = node(1, Some(ClusterTls::load(1, ca.node_files(d, "n1", &["node-1"])).unwrap())).await;
        let mut b = node(2, Some(ClusterTls::load(2, ca.node_files(d, "n2", &["node-2"])).unwrap())).await;
        a.t.set_peer(2, b.addr.clone());
        until("nodes 1 and 2 connected over mTLS", || connected(&a.t, 2) && connected(&b.t, 1)).await;
        assert!(a.t.send(2, &one_message(1, 2)));
        assert_eq!(b.rx.recv().await.unwrap().from, 1);
        assert_eq!(refused(&b.t), 0);

        // The cluster CA's certificate of node 4, claiming node 1 in its hello.
        let impostor = node(1, Some(ClusterTls::load_unchecked(ca.node_files(d, "n4", &["node-4"])).unwrap())).await;
        impostor.t.set_peer(2, b.addr.clone());
        until("node 2 refusing the impostor", || refused(&b.t) >= 1).await;
        assert!(!connected(&impostor.t, 2));
        let _ = impostor.stop.send(true);

        // Another CA's certificate naming node 1: neither side trusts the other.
        let foreign = node(1, Some(ClusterTls::load(1, other.node_files(d, "f1", &["node-1"])).unwrap())).await;
        foreign.t.set_peer(2, b.addr.clone());
        until("the foreign node refusing node 2's certificate", || refused(&foreign.t) >= 1).await;
        assert!(!connected(&foreign.t, 2));
        let _ = foreign.stop.send(true);

        // The real node 1 kept its connection: frames still flow.
        assert!(connected(&b.t, 1));
        assert!(a.t.send(2, &one_message(1, 2)));
        assert_eq!(b.rx.recv().await.unwrap().from, 1);

        // A certificate that does not name its own node does not load.
        let e = ClusterTls::load(3, ca.node_files(d, "n3", &["node-4"])).unwrap_err();
        assert!(matches!(&e, ClusterError::Config(m) if m.contains("node-3")), "{e}");
        let _ = (a.stop.send(true), b.stop.send(true));
    }

    /// At most `max_pending_handshakes` inbound connections wait for their
    /// hello: one more is closed at accept and counted; once a silent one
    /// goes, its place is free again, and a real peer still connects.
    #[tokio::test]
    async fn connections_before_their_hello_are_bounded() {
        use tokio::io::AsyncReadExt;
        let security = TransportSecurity { tls: None, handshake_timeout: Duration::from_secs(30), max_pending_handshakes: 2 };
        let mut b = node_with(2, security).await;
        let shed = |t: &Transport| t.stats.handshakes_shed.load(std::sync::atomic::Ordering::Relaxed);
        // Two connections that never send a hello hold both places.
        let first = TcpStream::connect(&b.addr).await.unwrap();
        let _second = TcpStream::connect(&b.addr).await.unwrap();
        until("both silent connections taken in", || b.t.handshakes.available_permits() == 0).await;
        // A third is closed at once (EOF, not a wait for the 30 s timeout).
        let mut third = TcpStream::connect(&b.addr).await.unwrap();
        let mut byte = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(20), third.read(&mut byte)).await.expect("closed at accept, not left waiting");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
        assert_eq!(shed(&b.t), 1);
        // The first goes away: its place is free again.
        drop(first);
        until("the closed connection's place given back", || b.t.handshakes.available_permits() == 1).await;
        // A real peer takes it, finishes its hello and gives it back.
        let a = node(1, None).await;
        a.t.set_peer(2, b.addr.clone());
        until("node 1 connected", || connected(&a.t, 2) && connected(&b.t, 1)).await;
        assert!(a.t.send(2, &one_message(1, 2)));
        assert_eq!(b.rx.recv().await.unwrap().from, 1);
        assert_eq!(b.t.handshakes.available_permits(), 1, "a connection past its hello holds no place");
        assert_eq!(shed(&b.t), 1);
        let _ = (a.stop.send(true), b.stop.send(true));
    }

    #[tokio::test]
    async fn plain_tcp_still_connects() {
        let a = node(1, None).await;
        let mut b = node(2, None).await;
        a.t.set_peer(2, b.addr.clone());
        until("plain nodes connected", || connected(&a.t, 2) && connected(&b.t, 1)).await;
        assert!(a.t.send(2, &one_message(1, 2)));
        assert_eq!(b.rx.recv().await.unwrap().from, 1);
        // B answers over the same connection.
        assert!(b.t.send(1, &one_message(2, 1)));
        let _ = (a.stop.send(true), b.stop.send(true));
    }
}
