//! Server-to-client events (docs/protocol.md, "Events"): a handler reaches
//! the connection a request came on through [`PeerInfo::events`]
//! (`crate::PeerInfo`), an [`EventSink`], and pushes event frames on it
//! later, e.g. to every client that asked to watch something.
//!
//! The sink holds the connection's writer queue weakly: it never keeps a
//! closed connection alive, and a send to a closed connection says so
//! ([`EventSendError::Closed`]) so the holder can forget the sink. Sends
//! never wait: when the connection's bounded writer queue is full (a client
//! that does not read), the event is dropped ([`EventSendError::Full`]) and
//! the caller counts it.

use tokio::sync::mpsc;
use weft_wire::{BodyFormat, Frame, FrameKind, MessageId};

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EventSendError {
    #[error("the connection is closed")]
    Closed,
    #[error("the connection's writer queue is full; event dropped")]
    Full,
    #[error("the event body does not encode")]
    Encode,
}

/// Where a handler sends events to one client connection (stream
/// transports: TCP, Unix, TLS; `None` on UDP and QUIC).
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: mpsc::WeakSender<Frame>,
    format: BodyFormat,
}

impl EventSink {
    pub(crate) fn new(tx: &mpsc::Sender<Frame>) -> Self {
        Self { tx: tx.downgrade(), format: BodyFormat::MsgPack }
    }

    /// Queue one event frame (`route`, `body`) for the client; never waits.
    pub fn send<T: serde::Serialize + ?Sized>(&self, route: &str, body: &T) -> Result<(), EventSendError> {
        let mut frame = Frame::with_body(FrameKind::Event, MessageId::new_v4(), route, self.format, body).map_err(|_| EventSendError::Encode)?;
        frame.flags = frame.flags.with_one_way(true);
        self.send_frame(frame)
    }

    /// Queue a ready event frame; never waits.
    pub fn send_frame(&self, frame: Frame) -> Result<(), EventSendError> {
        let tx = self.tx.upgrade().ok_or(EventSendError::Closed)?;
        tx.try_send(frame).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => EventSendError::Full,
            mpsc::error::TrySendError::Closed(_) => EventSendError::Closed,
        })
    }

    /// True when both sinks lead to the same open connection.
    pub fn same_connection(&self, other: &EventSink) -> bool {
        match (self.tx.upgrade(), other.tx.upgrade()) {
            (Some(a), Some(b)) => a.same_channel(&b),
            _ => false,
        }
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.upgrade().is_none_or(|t| t.is_closed())
    }
}
