//! UDP side of the server: answer searches and send beacons.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, trace};

use super::Shared;
use crate::config::ServerConfig;
use crate::error::Result;
use crate::proto::header::split_datagram;
use crate::proto::msg::{Beacon, Message, SearchResponse, addr16, decode_message, encode_message, ip_from16};
use crate::proto::{Limits, SendCache, TypeCache};

/// Bind the search socket, shareable with other servers on the same port.
pub(crate) fn bind(config: &ServerConfig) -> Result<UdpSocket> {
    let addr = SocketAddr::new(config.bind, config.udp_port);
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    s.set_broadcast(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// Group that unicast searches are re-forwarded to on the loopback interface, so
/// every server sharing the UDP port on this host sees them (as pvxs does).
pub(crate) const FORWARD_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 128);

/// A socket receiving forwarded searches (bound to the group), if the OS allows.
pub(crate) fn bind_forward(port: u16) -> Option<UdpSocket> {
    let f = || -> std::io::Result<UdpSocket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_reuse_address(true)?;
        #[cfg(unix)]
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::new(IpAddr::V4(FORWARD_GROUP), port).into())?;
        s.join_multicast_v4(&FORWARD_GROUP, &Ipv4Addr::LOCALHOST)?;
        UdpSocket::from_std(s.into())
    };
    match f() {
        Ok(s) => Some(s),
        Err(e) => {
            debug!(error = %e, "no loopback multicast; unicast searches will not be forwarded");
            None
        }
    }
}

async fn recv_either(a: &UdpSocket, b: Option<&UdpSocket>, ba: &mut [u8], bb: &mut [u8]) -> std::io::Result<(usize, SocketAddr, bool)> {
    match b {
        Some(b) => tokio::select! {
            r = a.recv_from(ba) => r.map(|(n, s)| (n, s, false)),
            r = b.recv_from(bb) => r.map(|(n, s)| (n, s, true)),
        },
        None => a.recv_from(ba).await.map(|(n, s)| (n, s, false)),
    }
}

pub(crate) async fn search_loop(
    sock: Arc<UdpSocket>,
    forward: Option<UdpSocket>,
    shared: Arc<Shared>,
    bind: IpAddr,
    mut stop: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 0x10000];
    let mut fbuf = vec![0u8; 0x10000];
    if forward.is_some() {
        let _ = socket2::SockRef::from(sock.as_ref()).set_multicast_if_v4(&Ipv4Addr::LOCALHOST);
        let _ = socket2::SockRef::from(sock.as_ref()).set_multicast_loop_v4(true);
    }
    let udp_port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    loop {
        let (n, src, forwarded_sock) = tokio::select! {
            r = recv_either(&sock, forward.as_ref(), &mut buf, &mut fbuf) => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!(error = %e, "udp recv failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        // Forwarded searches come from a neighbour on loopback; they are
        // judged by the original sender's address further down.
        if !forwarded_sock && !shared.allow.allows_ip(src.ip()) {
            shared.stats.searches_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            trace!(%src, "search refused by the allow-list (pva.allow)");
            continue;
        }
        let data = if forwarded_sock { fbuf.get(..n) } else { buf.get(..n) };
        let Some(d) = data.map(|d| d.to_vec()) else { continue };
        let msgs = match split_datagram(&d) {
            Ok(m) => m,
            Err(e) => {
                trace!(%src, error = %e, "ignoring malformed datagram");
                continue;
            }
        };
        let mut origin: Option<[u8; 16]> = None;
        for (h, p) in msgs {
            if h.is_control() || h.from_server() {
                continue;
            }
            let s = match decode_message(&h, p, &mut TypeCache::new(), Limits::default()) {
                Ok(Message::OriginTag(a)) => {
                    origin = Some(a);
                    continue;
                }
                Ok(Message::Search(s)) => s,
                _ => continue,
            };
            // A unicast search reaches only one of the sockets sharing the port:
            // re-forward it (once: never a forwarded one) to the loopback group.
            if origin.is_none() && !forwarded_sock && s.flags & 0x80 != 0 && forward.is_some() {
                let mut fwd = s.clone();
                fwd.flags &= !0x80;
                if ip_from16(&fwd.reply_addr).is_none() {
                    fwd.reply_addr = addr16(src.ip());
                }
                let tag = encode_message(&Message::OriginTag(addr16(bind)), h.order(), false, &mut SendCache::disabled());
                let body = encode_message(&Message::Search(fwd), h.order(), false, &mut SendCache::disabled());
                if let (Ok(mut t), Ok(b)) = (tag, body) {
                    t.extend_from_slice(&b);
                    let dest = SocketAddr::new(IpAddr::V4(FORWARD_GROUP), udp_port);
                    if let Err(e) = sock.send_to(&t, dest).await {
                        trace!(error = %e, "search forward failed");
                    }
                }
            }
            let found: Vec<u32> =
                s.channels.iter().filter(|(_, n)| shared.provider.has(n)).map(|(id, _)| *id).collect();
            let reply_required = s.flags & 0x01 != 0;
            if found.is_empty() && !reply_required {
                continue;
            }
            if !s.protocols.is_empty() && !s.protocols.iter().any(|p| p == "tcp") {
                continue;
            }
            let our_ip = if bind.is_unspecified() { [0u8; 16] } else { addr16(bind) };
            let r = Message::SearchResponse(SearchResponse {
                guid: shared.guid,
                sequence: s.sequence,
                addr: our_ip,
                port: shared.tcp_addr.port(),
                protocol: "tcp".into(),
                found: !found.is_empty(),
                cids: found,
            });
            let Ok(bytes) = encode_message(&r, h.order(), true, &mut SendCache::disabled()) else { continue };
            let dest_ip = ip_from16(&s.reply_addr).unwrap_or(src.ip());
            // A forwarded search names its original sender: judge that one.
            if forwarded_sock && !shared.allow.allows_ip(dest_ip) {
                shared.stats.searches_refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let dest = SocketAddr::new(dest_ip, if s.reply_port != 0 { s.reply_port } else { src.port() });
            shared.stats.searches_answered.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = sock.send_to(&bytes, dest).await {
                debug!(%dest, error = %e, "search reply failed");
            }
        }
    }
}

pub(crate) async fn beacon_loop(sock: Arc<UdpSocket>, shared: Arc<Shared>, config: ServerConfig, mut stop: watch::Receiver<bool>) {
    let mut seq: u8 = 0;
    let our_ip = if config.bind.is_unspecified() { addr16(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) } else { addr16(config.bind) };
    loop {
        let b = Message::Beacon(Beacon {
            guid: shared.guid,
            flags: 0,
            sequence: seq,
            change_count: shared.provider.generation() as u16,
            addr: our_ip,
            port: shared.tcp_addr.port(),
            protocol: "tcp".into(),
            status: None,
        });
        seq = seq.wrapping_add(1);
        if let Ok(bytes) = encode_message(&b, crate::proto::ByteOrder::Big, true, &mut SendCache::disabled()) {
            for a in &config.beacon_addrs {
                if let Err(e) = sock.send_to(&bytes, a).await {
                    trace!(dest = %a, error = %e, "beacon send failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.beacon_period) => {}
            _ = stop.changed() => return,
        }
    }
}

