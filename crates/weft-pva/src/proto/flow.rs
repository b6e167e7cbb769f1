//! Byte-count flow control with the control messages the spec defines
//! for it: the sender marks its running total of bytes sent
//! (MARK_TOTAL_BYTES_SENT, the value in the header's size field) and the
//! receiver, on reaching the mark in the stream (so everything before it has
//! arrived), acknowledges that value (ACK_TOTAL_BYTES_RECEIVED). Marks
//! themselves are not counted.
//! Sans-IO: the connection's writer reports what it wrote and asks whether
//! it may write more.
//!
//! Totals travel as u32 (they wrap after 4 GiB); we keep u64 and rebuild
//! the acknowledged total from the low 32 bits, which is exact as long as
//! less than 4 GiB is ever unacknowledged (the window is far smaller).
//!
//! Decision: the window only applies once the peer has acknowledged at
//! least one mark. pvxs and pvAccessCPP ignore marks (they never answer),
//! so for them this is inert and the bounded send queue is what protects
//! the server; a peer that does answer (the Weft client) is kept within
//! `window` unacknowledged bytes.

/// Sender-side accounting.
#[derive(Debug, Clone)]
pub struct SendFlow {
    sent: u64,
    last_mark: u64,
    acked: u64,
    peer_acks: bool,
    /// Bytes between marks.
    pub mark_every: u64,
    /// Most unacknowledged bytes allowed (once the peer acks).
    pub window: u64,
}

impl SendFlow {
    pub fn new(mark_every: u64, window: u64) -> Self {
        SendFlow { sent: 0, last_mark: 0, acked: 0, peer_acks: false, mark_every: mark_every.max(1), window: window.max(1) }
    }

    /// `n` bytes were written; returns the value of a mark to send now, if one is due.
    pub fn on_sent(&mut self, n: usize) -> Option<u32> {
        self.sent = self.sent.saturating_add(n as u64);
        if self.sent - self.last_mark >= self.mark_every {
            self.last_mark = self.sent;
            return Some(self.sent as u32);
        }
        None
    }

    /// The peer acknowledged `value` (low 32 bits of its received total).
    /// An ack for more than we sent is ignored (a confused or hostile peer).
    pub fn on_ack(&mut self, value: u32) {
        let behind = (self.sent as u32).wrapping_sub(value) as u64;
        if behind > self.sent {
            return;
        }
        let acked = self.sent - behind;
        if acked >= self.acked {
            self.acked = acked;
            self.peer_acks = true;
        }
    }

    /// Bytes written that the peer has not acknowledged.
    pub fn unacked(&self) -> u64 {
        self.sent - self.acked
    }

    /// May the writer send more now?
    pub fn may_send(&self) -> bool {
        !self.peer_acks || self.unacked() < self.window
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    pub fn peer_acks(&self) -> bool {
        self.peer_acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_and_window() {
        let mut f = SendFlow::new(100, 250);
        assert_eq!(f.on_sent(60), None);
        assert_eq!(f.on_sent(60), Some(120));
        assert!(f.may_send(), "no ack yet: the window is inert");
        f.on_ack(120);
        assert!(f.peer_acks());
        assert_eq!(f.on_sent(200), Some(320));
        assert_eq!(f.unacked(), 200);
        assert!(f.may_send());
        f.on_sent(60);
        assert!(!f.may_send());
        f.on_ack(320);
        assert!(f.may_send());
        // An ack beyond what was sent is ignored.
        f.on_ack(1_000_000);
        assert_eq!(f.unacked(), 60);
    }

    #[test]
    fn totals_wrap() {
        let mut f = SendFlow::new(1 << 20, 1 << 30);
        for _ in 0..5 {
            f.on_sent(1 << 30);
        }
        let v = (f.sent() - 100) as u32;
        f.on_ack(v);
        assert_eq!(f.unacked(), 100);
    }
}
