//! UDP liveness: every node sends a `heartbeat` control datagram to each
//! configured peer at a fixed interval, and keeps a table of the heartbeats
//! it receives. A peer is alive while its last heartbeat is younger than the
//! timeout (by default three intervals, so one lost datagram is forgiven).
//!
//! The table is plain data driven by `observe(.., now)` and read with
//! `snapshot(now, ..)`; the sending task is the only part that owns a clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use weft_wire::{encode, BodyFormat, Flags, Frame, FrameKind, Heartbeat, MessageId, CONTROL_HEARTBEAT};

/// One row of the liveness table as shown to users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerState {
    pub node_id: String,
    pub addr: String,
    pub alive: bool,
    /// Milliseconds since the last heartbeat arrived.
    pub last_seen_ms_ago: u64,
    /// The peer's own wall-clock stamp in its last heartbeat.
    pub last_sent_at_ms: u64,
    pub heartbeats: u64,
    /// Gaps in the peer's sequence numbers: heartbeats lost on the way.
    pub missed: u64,
}

#[derive(Debug)]
struct Entry {
    addr: SocketAddr,
    last_seen: Instant,
    last_sent_at_ms: u64,
    last_seq: u64,
    heartbeats: u64,
    missed: u64,
}

#[derive(Debug, Default)]
pub struct LivenessTable {
    peers: Mutex<HashMap<String, Entry>>,
}

impl LivenessTable {
    pub fn observe(&self, hb: &Heartbeat, from: SocketAddr, now: Instant) {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // map is still consistent (each update is a single insert).
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let e = peers.entry(hb.node_id.clone()).or_insert(Entry {
            addr: from,
            last_seen: now,
            last_sent_at_ms: hb.sent_at_ms,
            last_seq: hb.seq,
            heartbeats: 0,
            missed: 0,
        });
        if e.heartbeats > 0 && hb.seq > e.last_seq + 1 {
            e.missed += hb.seq - e.last_seq - 1;
        }
        e.addr = from;
        e.last_seen = now;
        e.last_sent_at_ms = hb.sent_at_ms;
        e.last_seq = e.last_seq.max(hb.seq);
        e.heartbeats += 1;
    }

    pub fn snapshot(&self, now: Instant, timeout: Duration) -> Vec<PeerState> {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut rows: Vec<PeerState> = peers
            .iter()
            .map(|(id, e)| {
                let age = now.saturating_duration_since(e.last_seen);
                PeerState {
                    node_id: id.clone(),
                    addr: e.addr.to_string(),
                    alive: age <= timeout,
                    last_seen_ms_ago: age.as_millis() as u64,
                    last_sent_at_ms: e.last_sent_at_ms,
                    heartbeats: e.heartbeats,
                    missed: e.missed,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        rows
    }
}

/// Send heartbeats from `socket` to every peer every `interval` until `stop`.
pub fn spawn_heartbeats(
    socket: Arc<UdpSocket>,
    node_id: String,
    peers: Vec<String>,
    interval: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seq = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            seq += 1;
            let hb = Heartbeat {
                node_id: node_id.clone(),
                sent_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                seq,
            };
            let Ok(mut frame) = Frame::with_body(FrameKind::Control, MessageId::nil(), CONTROL_HEARTBEAT, BodyFormat::MsgPack, &hb) else {
                continue;
            };
            frame.flags = Flags::default().with_one_way(true);
            let mut out = BytesMut::new();
            if encode(&frame, &mut out).is_err() {
                continue;
            }
            for peer in &peers {
                // Peers are host:port strings and may resolve late (DNS in
                // Kubernetes): resolve on every send, ignore failures.
                if let Err(e) = socket.send_to(&out, peer.as_str()).await {
                    tracing::debug!(peer = %peer, error = %e, "heartbeat send failed");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_then_dead_and_counts_gaps() {
        let t = LivenessTable::default();
        let t0 = Instant::now();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let hb = |seq| Heartbeat { node_id: "n1".into(), sent_at_ms: 1, seq };
        t.observe(&hb(1), addr, t0);
        t.observe(&hb(4), addr, t0 + Duration::from_millis(100));
        let s = t.snapshot(t0 + Duration::from_millis(200), Duration::from_millis(300));
        assert_eq!(s.len(), 1);
        assert!(s[0].alive);
        assert_eq!(s[0].missed, 2);
        assert_eq!(s[0].heartbeats, 2);
        let s = t.snapshot(t0 + Duration::from_millis(500), Duration::from_millis(300));
        assert!(!s[0].alive);
        assert_eq!(s[0].last_seen_ms_ago, 400);
    }
}
