//! msgr2 revision 1 framing: the 32-byte preamble with its own crc, up to
//! four segments, and either crc mode (per-segment crc32c, 13-byte
//! epilogue) or secure mode (AES-128-GCM: preamble + 48 inline bytes in one
//! sealed block, remainders and tail sealed separately).

use super::compress::{self, CompressError, CompressionStats, Negotiated};
use super::types::ceph_crc32c;
use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce, Tag as GcmTag};
use bytes::{Buf, Bytes, BytesMut};
use std::sync::Arc;

pub const BANNER_PREFIX: &[u8; 8] = b"ceph v2\n";
/// msgr2 protocol features: revision 1 framing.
pub const MSGR2_FEATURE_REVISION_1: u64 = 1;
/// msgr2 protocol features: on-wire compression (Quincy and later).
pub const MSGR2_FEATURE_COMPRESSION: u64 = 2;
/// Preamble flag: every segment of this frame is compressed.
pub const FRAME_EARLY_DATA_COMPRESSED: u8 = 1;
pub const PREAMBLE_LEN: usize = 32;
pub const INLINE_LEN: usize = 48;
pub const GCM_TAG_LEN: usize = 16;
pub const GCM_BLOCK: usize = 16;
pub const SECURE_PREAMBLE_LEN: usize = PREAMBLE_LEN + INLINE_LEN + GCM_TAG_LEN;
pub const CRC_EPILOGUE_LEN: usize = 13;
pub const SECURE_EPILOGUE_LEN: usize = 16;
pub const MAX_SEGMENTS: usize = 4;
/// Most the decoder reserves ahead of bytes that have arrived. A preamble
/// may announce up to the segment limits (16 MiB and more) before sending
/// any of it; reserving all of that on the peer's word would let a peer
/// that never sends the rest pin the memory. The buffer grows with the
/// data instead (amortized doubling, so a large frame still costs only a
/// few reallocations).
const RESERVE_AHEAD: usize = 256 * 1024;
const LATE_STATUS_COMPLETE: u8 = 0x0e;
const LATE_STATUS_ABORTED_MASK: u8 = 0x0f;
const SEGMENT_ALIGN: [u16; 4] = [8, 8, 8, 4096];

/// Frame tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    Hello = 1,
    AuthRequest = 2,
    AuthBadMethod = 3,
    AuthReplyMore = 4,
    AuthRequestMore = 5,
    AuthDone = 6,
    AuthSignature = 7,
    ClientIdent = 8,
    ServerIdent = 9,
    IdentMissingFeatures = 10,
    SessionReconnect = 11,
    SessionReset = 12,
    SessionRetry = 13,
    SessionRetryGlobal = 14,
    SessionReconnectOk = 15,
    Wait = 16,
    Message = 17,
    Keepalive2 = 18,
    Keepalive2Ack = 19,
    Ack = 20,
    CompressionRequest = 21,
    CompressionDone = 22,
}

impl Tag {
    pub fn from_u8(v: u8) -> Option<Tag> {
        use Tag::*;
        Some(match v {
            1 => Hello,
            2 => AuthRequest,
            3 => AuthBadMethod,
            4 => AuthReplyMore,
            5 => AuthRequestMore,
            6 => AuthDone,
            7 => AuthSignature,
            8 => ClientIdent,
            9 => ServerIdent,
            10 => IdentMissingFeatures,
            11 => SessionReconnect,
            12 => SessionReset,
            13 => SessionRetry,
            14 => SessionRetryGlobal,
            15 => SessionReconnectOk,
            16 => Wait,
            17 => Message,
            18 => Keepalive2,
            19 => Keepalive2Ack,
            20 => Ack,
            21 => CompressionRequest,
            22 => CompressionDone,
            _ => return None,
        })
    }
}

/// What the peer did wrong (or what we cannot handle) in the framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad banner from peer: {0}")]
    BadBanner(String),
    #[error("peer requires msgr2 features {0:#x} we do not support")]
    MissingFeatures(u64),
    #[error("preamble crc mismatch (got {got:#010x}, computed {computed:#010x})")]
    PreambleCrc { got: u32, computed: u32 },
    #[error("segment {index} crc mismatch")]
    SegmentCrc { index: usize },
    #[error("bad segment count {0}")]
    SegmentCount(u8),
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    #[error("segment {index} length {len} exceeds limit {max}")]
    TooLong { index: usize, len: usize, max: usize },
    #[error("frame authentication (AES-GCM) failed")]
    Decrypt,
    #[error("frame aborted by the peer (late status {0:#x})")]
    Aborted(u8),
    #[error("compressed frame on a connection that negotiated no compression")]
    UnexpectedCompression,
    #[error("segment {index}: {source}")]
    Decompress { index: usize, source: CompressError },
}

/// A decoded frame: its tag and segments (control frames have one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: Tag,
    pub segments: Vec<Bytes>,
}

impl Frame {
    pub fn control(tag: Tag, payload: Vec<u8>) -> Frame {
        Frame { tag, segments: vec![Bytes::from(payload)] }
    }
    pub fn payload(&self) -> &[u8] {
        self.segments.first().map(|b| &b[..]).unwrap_or(&[])
    }
    pub fn segment(&self, i: usize) -> Bytes {
        self.segments.get(i).cloned().unwrap_or_default()
    }
}

/// The AES-GCM state of one direction: key and the 12-byte nonce (le32
/// fixed part, le64 counter bumped after every seal/open).
#[derive(Clone)]
pub struct GcmStream {
    cipher: Aes128Gcm,
    fixed: [u8; 4],
    counter: u64,
}

impl GcmStream {
    pub fn new(key: &[u8; 16], nonce: &[u8; 12]) -> Self {
        let mut fixed = [0u8; 4];
        fixed.copy_from_slice(&nonce[..4]);
        let mut ctr = [0u8; 8];
        ctr.copy_from_slice(&nonce[4..]);
        GcmStream { cipher: Aes128Gcm::new(key.into()), fixed, counter: u64::from_le_bytes(ctr) }
    }
    fn nonce(&self) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&self.fixed);
        n[4..].copy_from_slice(&self.counter.to_le_bytes());
        n
    }
    /// Encrypts in place and appends the tag.
    fn seal(&mut self, buf: &mut Vec<u8>) {
        let n = self.nonce();
        // encryption of an in-memory buffer cannot fail for sizes < 64 GiB
        if let Ok(tag) = self.cipher.encrypt_in_place_detached(Nonce::from_slice(&n), b"", buf) {
            buf.extend_from_slice(&tag);
        }
        self.counter = self.counter.wrapping_add(1);
    }
    /// Decrypts `ct` (ciphertext followed by the 16-byte tag).
    fn open(&mut self, ct: &[u8]) -> Result<Vec<u8>, FrameError> {
        let n = self.nonce();
        self.counter = self.counter.wrapping_add(1);
        let split = ct.len().checked_sub(GCM_TAG_LEN).ok_or(FrameError::Decrypt)?;
        let (body, tag) = ct.split_at(split);
        let mut out = body.to_vec();
        self.cipher
            .decrypt_in_place_detached(Nonce::from_slice(&n), b"", &mut out, GcmTag::from_slice(tag))
            .map_err(|_| FrameError::Decrypt)?;
        Ok(out)
    }
}

/// Connection secret (from CephX) -> (rx, tx) streams, client side.
pub fn secure_streams(secret: &[u8]) -> Option<(GcmStream, GcmStream)> {
    if secret.len() < 16 + 12 + 12 {
        return None;
    }
    let mut key = [0u8; 16];
    key.copy_from_slice(&secret[..16]);
    let mut rx = [0u8; 12];
    rx.copy_from_slice(&secret[16..28]);
    let mut tx = [0u8; 12];
    tx.copy_from_slice(&secret[28..40]);
    Some((GcmStream::new(&key, &rx), GcmStream::new(&key, &tx)))
}

#[derive(Clone)]
pub enum Mode {
    Crc,
    Secure { rx: Box<GcmStream>, tx: Box<GcmStream> },
}

fn pad16(n: usize) -> usize {
    n.div_ceil(GCM_BLOCK) * GCM_BLOCK
}

#[derive(Clone, Copy, Debug)]
struct Preamble {
    tag: u8,
    lens: [usize; 4],
    count: usize,
    flags: u8,
}

fn encode_preamble(tag: Tag, lens: &[usize], flags: u8) -> [u8; PREAMBLE_LEN] {
    let mut count = lens.len().min(MAX_SEGMENTS);
    while count > 1 && lens[count - 1] == 0 {
        count -= 1;
    }
    let mut p = [0u8; PREAMBLE_LEN];
    p[0] = tag as u8;
    p[1] = count as u8;
    for i in 0..count {
        let o = 2 + i * 6;
        p[o..o + 4].copy_from_slice(&(lens[i] as u32).to_le_bytes());
        p[o + 4..o + 6].copy_from_slice(&SEGMENT_ALIGN[i].to_le_bytes());
    }
    p[26] = flags;
    let crc = ceph_crc32c(0, &p[..28]);
    p[28..].copy_from_slice(&crc.to_le_bytes());
    p
}

/// Segment size limits (control payload, front, middle, data).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max: [usize; 4],
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max: [16 << 20, 16 << 20, 16 << 20, 128 << 20] }
    }
}

/// A decoded frame with its raw wire bytes, Ok(None) = need more bytes.
pub type FrameResult = Result<Option<(Frame, Bytes)>, FrameError>;

/// Encoder/decoder for one connection. `decode` follows the tokio-util
/// contract: Ok(None) means "need more bytes".
pub struct FrameCodec {
    pub mode: Mode,
    pub limits: Limits,
    /// A preamble already decrypted in secure mode (its nonce is spent).
    pending: Option<(Preamble, Vec<u8>)>,
    /// Set after COMPRESSION_DONE agreed on a method (both directions).
    compression: Option<Negotiated>,
    cstats: Arc<CompressionStats>,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameCodec {
    pub fn new() -> Self {
        FrameCodec {
            mode: Mode::Crc,
            limits: Limits::default(),
            pending: None,
            compression: None,
            cstats: Arc::new(CompressionStats::default()),
        }
    }

    /// Compress frames from now on (and accept compressed ones); counts go
    /// to `stats`.
    pub fn set_compression(&mut self, n: Negotiated, stats: Arc<CompressionStats>) {
        self.compression = Some(n);
        self.cstats = stats;
    }

    pub fn compression(&self) -> Option<&Negotiated> {
        self.compression.as_ref()
    }

    /// The segments to put on the wire and the preamble flags: compressed
    /// when negotiated and the frame reaches the threshold (as Ceph's
    /// FrameAssembler: all segments or none; a failure sends them as they are).
    fn maybe_compress(&self, segs: &[&[u8]]) -> Option<Vec<Bytes>> {
        let n = self.compression.as_ref()?;
        let total: usize = segs.iter().map(|s| s.len()).sum();
        if total < n.min_size {
            return None;
        }
        let mut out = Vec::with_capacity(segs.len());
        for s in segs {
            if s.is_empty() {
                out.push(Bytes::new());
                continue;
            }
            match compress::compress(n.alg, s) {
                Ok(c) => out.push(Bytes::from(c)),
                Err(e) => {
                    tracing::debug!(error = %e, "compression failed; frame sent uncompressed");
                    CompressionStats::add(&self.cstats.tx_failed, 1);
                    return None;
                }
            }
        }
        CompressionStats::add(&self.cstats.tx_frames, 1);
        CompressionStats::add(&self.cstats.tx_raw_bytes, total);
        CompressionStats::add(&self.cstats.tx_wire_bytes, out.iter().map(|b| b.len()).sum());
        Some(out)
    }

    /// Undoes `maybe_compress` on a received frame's segments.
    fn maybe_decompress(&self, pre: &Preamble, segments: Vec<Bytes>) -> Result<Vec<Bytes>, FrameError> {
        if pre.flags & FRAME_EARLY_DATA_COMPRESSED == 0 {
            return Ok(segments);
        }
        let n = self.compression.as_ref().ok_or(FrameError::UnexpectedCompression)?;
        let mut out = Vec::with_capacity(segments.len());
        let (mut wire, mut raw) = (0usize, 0usize);
        for (index, s) in segments.into_iter().enumerate() {
            if s.is_empty() {
                out.push(s);
                continue;
            }
            // a decompressed segment obeys the same limit as a plain one
            let max = self.limits.max.get(index).copied().unwrap_or(0);
            let d = compress::decompress(n.alg, &s, max).map_err(|source| FrameError::Decompress { index, source })?;
            wire += s.len();
            raw += d.len();
            out.push(Bytes::from(d));
        }
        CompressionStats::add(&self.cstats.rx_frames, 1);
        CompressionStats::add(&self.cstats.rx_wire_bytes, wire);
        CompressionStats::add(&self.cstats.rx_raw_bytes, raw);
        Ok(out)
    }

    pub fn set_secure(&mut self, rx: GcmStream, tx: GcmStream) {
        self.mode = Mode::Secure { rx: Box::new(rx), tx: Box::new(tx) };
    }

    pub fn is_secure(&self) -> bool {
        matches!(self.mode, Mode::Secure { .. })
    }

    /// Serializes a frame as a list of buffers to write in order; in crc
    /// mode the big segments are shared, not copied.
    pub fn encode_parts(&mut self, tag: Tag, segs: &[Bytes]) -> Vec<Bytes> {
        let refs: Vec<&[u8]> = segs.iter().map(|s| &s[..]).collect();
        let (segs, flags) = match self.maybe_compress(&refs) {
            Some(c) => (c, FRAME_EARLY_DATA_COMPRESSED),
            None => (segs.to_vec(), 0),
        };
        let segs = &segs[..];
        if let Mode::Crc = self.mode {
            let lens: Vec<usize> = segs.iter().map(|s| s.len()).collect();
            let pre = encode_preamble(tag, &lens, flags);
            let count = pre[1] as usize;
            let first = segs.first().cloned().unwrap_or_default();
            let mut head = Vec::with_capacity(PREAMBLE_LEN + first.len() + 4);
            head.extend_from_slice(&pre);
            head.extend_from_slice(&first);
            head.extend_from_slice(&ceph_crc32c(u32::MAX, &first).to_le_bytes());
            let mut parts = vec![Bytes::from(head)];
            if count > 1 {
                let mut epi = Vec::with_capacity(CRC_EPILOGUE_LEN);
                epi.push(LATE_STATUS_COMPLETE);
                for i in 1..4 {
                    let c = match segs.get(i) {
                        Some(s) if i < count => {
                            if !s.is_empty() {
                                parts.push(s.clone());
                            }
                            ceph_crc32c(u32::MAX, s)
                        }
                        _ => 0,
                    };
                    epi.extend_from_slice(&c.to_le_bytes());
                }
                parts.push(Bytes::from(epi));
            }
            return parts;
        }
        let refs: Vec<&[u8]> = segs.iter().map(|s| &s[..]).collect();
        vec![Bytes::from(self.encode_raw(tag, &refs, flags))]
    }

    /// Serializes a frame with the given segments (compressed when
    /// negotiated and large enough).
    pub fn encode(&mut self, tag: Tag, segs: &[&[u8]]) -> Vec<u8> {
        match self.maybe_compress(segs) {
            Some(c) => {
                let refs: Vec<&[u8]> = c.iter().map(|s| &s[..]).collect();
                self.encode_raw(tag, &refs, FRAME_EARLY_DATA_COMPRESSED)
            }
            None => self.encode_raw(tag, segs, 0),
        }
    }

    /// Serializes segments exactly as given, with these preamble flags.
    pub fn encode_raw(&mut self, tag: Tag, segs: &[&[u8]], flags: u8) -> Vec<u8> {
        let lens: Vec<usize> = segs.iter().map(|s| s.len()).collect();
        let pre = encode_preamble(tag, &lens, flags);
        let count = pre[1] as usize;
        let first: &[u8] = segs.first().copied().unwrap_or(&[]);
        match &mut self.mode {
            Mode::Crc => {
                let total: usize = lens.iter().sum();
                let mut out = Vec::with_capacity(PREAMBLE_LEN + total + 4 + CRC_EPILOGUE_LEN);
                out.extend_from_slice(&pre);
                out.extend_from_slice(first);
                out.extend_from_slice(&ceph_crc32c(u32::MAX, first).to_le_bytes());
                if count > 1 {
                    let mut crcs = [0u32; 3];
                    for i in 1..count {
                        let s = segs.get(i).copied().unwrap_or(&[]);
                        out.extend_from_slice(s);
                        crcs[i - 1] = ceph_crc32c(u32::MAX, s);
                    }
                    out.push(LATE_STATUS_COMPLETE);
                    for c in crcs {
                        out.extend_from_slice(&c.to_le_bytes());
                    }
                }
                out
            }
            Mode::Secure { tx, .. } => {
                let mut out = Vec::new();
                let mut head = Vec::with_capacity(PREAMBLE_LEN + INLINE_LEN + GCM_TAG_LEN);
                head.extend_from_slice(&pre);
                let inline = first.len().min(INLINE_LEN);
                head.extend_from_slice(&first[..inline]);
                head.resize(PREAMBLE_LEN + INLINE_LEN, 0);
                tx.seal(&mut head);
                out.extend_from_slice(&head);
                if first.len() > INLINE_LEN {
                    let mut rem = first[INLINE_LEN..].to_vec();
                    rem.resize(pad16(rem.len()), 0);
                    tx.seal(&mut rem);
                    out.extend_from_slice(&rem);
                }
                if count > 1 {
                    let mut tail = Vec::new();
                    for i in 1..count {
                        let s = segs.get(i).copied().unwrap_or(&[]);
                        tail.extend_from_slice(s);
                        tail.resize(pad16(tail.len()), 0);
                    }
                    let mut epi = [0u8; SECURE_EPILOGUE_LEN];
                    epi[0] = LATE_STATUS_COMPLETE;
                    tail.extend_from_slice(&epi);
                    tx.seal(&mut tail);
                    out.extend_from_slice(&tail);
                }
                out
            }
        }
    }

    fn parse_preamble(&self, p: &[u8]) -> Result<Preamble, FrameError> {
        let got = u32::from_le_bytes([p[28], p[29], p[30], p[31]]);
        let computed = ceph_crc32c(0, &p[..28]);
        if got != computed {
            return Err(FrameError::PreambleCrc { got, computed });
        }
        let tag = p[0];
        let count = p[1] as usize;
        if count == 0 || count > MAX_SEGMENTS {
            return Err(FrameError::SegmentCount(p[1]));
        }
        Tag::from_u8(tag).ok_or(FrameError::UnknownTag(tag))?;
        let mut lens = [0usize; 4];
        for (i, l) in lens.iter_mut().enumerate().take(count) {
            let o = 2 + i * 6;
            let len = u32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]) as usize;
            if len > self.limits.max[i] {
                return Err(FrameError::TooLong { index: i, len, max: self.limits.max[i] });
            }
            *l = len;
        }
        Ok(Preamble { tag, lens, count, flags: p[26] })
    }

    /// Decodes one frame. Returns the frame and, for crc mode, the exact
    /// bytes it occupied on the wire (needed for AUTH_SIGNATURE).
    pub fn decode(&mut self, buf: &mut BytesMut) -> FrameResult {
        match &mut self.mode {
            Mode::Crc => {
                if buf.len() < PREAMBLE_LEN {
                    return Ok(None);
                }
                let pre = self.parse_preamble(&buf[..PREAMBLE_LEN])?;
                let seg0 = pre.lens[0];
                let mut total = PREAMBLE_LEN + seg0 + 4;
                if pre.count > 1 {
                    total += pre.lens[1..pre.count].iter().sum::<usize>() + CRC_EPILOGUE_LEN;
                }
                if buf.len() < total {
                    reserve_ahead(buf, total);
                    return Ok(None);
                }
                let raw = buf.split_to(total).freeze();
                let mut at = PREAMBLE_LEN;
                let s0 = raw.slice(at..at + seg0);
                at += seg0;
                let crc0 = u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
                at += 4;
                if crc0 != ceph_crc32c(u32::MAX, &s0) {
                    return Err(FrameError::SegmentCrc { index: 0 });
                }
                let mut segments = vec![s0];
                if pre.count > 1 {
                    let mut segs = Vec::new();
                    for i in 1..pre.count {
                        segs.push(raw.slice(at..at + pre.lens[i]));
                        at += pre.lens[i];
                    }
                    let epi = &raw[at..at + CRC_EPILOGUE_LEN];
                    if epi[0] & LATE_STATUS_ABORTED_MASK != LATE_STATUS_COMPLETE {
                        return Err(FrameError::Aborted(epi[0]));
                    }
                    for (i, s) in segs.iter().enumerate() {
                        let o = 1 + i * 4;
                        let c = u32::from_le_bytes([epi[o], epi[o + 1], epi[o + 2], epi[o + 3]]);
                        if c != ceph_crc32c(u32::MAX, s) {
                            return Err(FrameError::SegmentCrc { index: i + 1 });
                        }
                    }
                    segments.extend(segs);
                }
                let tag = Tag::from_u8(pre.tag).ok_or(FrameError::UnknownTag(pre.tag))?;
                let segments = self.maybe_decompress(&pre, segments)?;
                Ok(Some((Frame { tag, segments }, raw)))
            }
            Mode::Secure { .. } => self.decode_secure(buf),
        }
    }

    fn decode_secure(&mut self, buf: &mut BytesMut) -> FrameResult {
        if self.pending.is_none() {
            if buf.len() < SECURE_PREAMBLE_LEN {
                return Ok(None);
            }
            let ct = buf.split_to(SECURE_PREAMBLE_LEN);
            let plain = match &mut self.mode {
                Mode::Secure { rx, .. } => rx.open(&ct)?,
                Mode::Crc => return Err(FrameError::Decrypt),
            };
            let pre = self.parse_preamble(&plain[..PREAMBLE_LEN])?;
            let inline = plain[PREAMBLE_LEN..].to_vec();
            self.pending = Some((pre, inline));
        }
        let Some((pre, inline)) = self.pending.as_ref() else { return Ok(None) };
        let pre = *pre;
        let seg0 = pre.lens[0];
        let rem_len = if seg0 > INLINE_LEN { pad16(seg0 - INLINE_LEN) + GCM_TAG_LEN } else { 0 };
        let tail_len = if pre.count > 1 {
            pre.lens[1..pre.count].iter().map(|&l| pad16(l)).sum::<usize>() + SECURE_EPILOGUE_LEN + GCM_TAG_LEN
        } else {
            0
        };
        let need = rem_len + tail_len;
        if buf.len() < need {
            reserve_ahead(buf, need);
            return Ok(None);
        }
        let mut first = inline.clone();
        self.pending = None;
        let Mode::Secure { rx, .. } = &mut self.mode else { return Err(FrameError::Decrypt) };
        if rem_len > 0 {
            let ct = buf.split_to(rem_len);
            let rem = rx.open(&ct)?;
            first.truncate(INLINE_LEN);
            first.extend_from_slice(&rem[..seg0 - INLINE_LEN]);
        } else {
            first.truncate(seg0);
        }
        let mut segments = vec![Bytes::from(first)];
        if tail_len > 0 {
            let ct = buf.split_to(tail_len);
            let plain = Bytes::from(rx.open(&ct)?);
            let mut at = 0;
            for i in 1..pre.count {
                segments.push(plain.slice(at..at + pre.lens[i]));
                at += pad16(pre.lens[i]);
            }
            let late = plain.get(at).copied().unwrap_or(0);
            if late & LATE_STATUS_ABORTED_MASK != LATE_STATUS_COMPLETE {
                return Err(FrameError::Aborted(late));
            }
        }
        let tag = Tag::from_u8(pre.tag).ok_or(FrameError::UnknownTag(pre.tag))?;
        let segments = self.maybe_decompress(&pre, segments)?;
        Ok(Some((Frame { tag, segments }, Bytes::new())))
    }
}

/// Our banner: prefix, payload length, supported and required features.
pub fn encode_banner(supported: u64, required: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(26);
    b.extend_from_slice(BANNER_PREFIX);
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(&supported.to_le_bytes());
    b.extend_from_slice(&required.to_le_bytes());
    b
}

/// A decoded banner: the peer's (supported, required) msgr2 features and
/// the raw bytes (signed later).
pub type Banner = ((u64, u64), Bytes);

/// Parses the peer banner: Ok(None) until all of it arrived.
pub fn decode_banner(buf: &mut BytesMut) -> Result<Option<Banner>, FrameError> {
    if buf.len() < 10 {
        return Ok(None);
    }
    if &buf[..8] != BANNER_PREFIX {
        let shown = String::from_utf8_lossy(&buf[..8]).into_owned();
        return Err(FrameError::BadBanner(if shown.starts_with("ceph v0") {
            "peer speaks msgr1 only".into()
        } else {
            format!("{shown:?}")
        }));
    }
    let plen = u16::from_le_bytes([buf[8], buf[9]]) as usize;
    if !(16..=4096).contains(&plen) {
        return Err(FrameError::BadBanner(format!("payload length {plen}")));
    }
    if buf.len() < 10 + plen {
        return Ok(None);
    }
    let raw = buf.split_to(10 + plen).freeze();
    let mut p = &raw[10..];
    let sup = p.get_u64_le();
    let req = p.get_u64_le();
    Ok(Some(((sup, req), raw)))
}

/// Makes room for the next part of a frame of `want` bytes, bounded by
/// `RESERVE_AHEAD` (see there).
fn reserve_ahead(buf: &mut BytesMut, want: usize) {
    buf.reserve((want - buf.len()).min(RESERVE_AHEAD));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pair() -> (FrameCodec, FrameCodec) {
        let secret: Vec<u8> = (0u8..64).collect();
        let (rx, tx) = secure_streams(&secret).unwrap();
        let mut a = FrameCodec::new();
        a.set_secure(rx.clone(), tx.clone());
        // the peer's rx is our tx and vice versa
        let mut b = FrameCodec::new();
        b.set_secure(tx, rx);
        (a, b)
    }

    #[test]
    fn crc_roundtrip_split_everywhere() {
        let mut enc = FrameCodec::new();
        let hdr = [7u8; 41];
        let wire = enc.encode(Tag::Message, &[&hdr, b"front", b"", b"data!"]);
        for cut in 0..wire.len() {
            let mut dec = FrameCodec::new();
            let mut buf = BytesMut::from(&wire[..cut]);
            assert!(dec.decode(&mut buf).unwrap().is_none(), "cut {cut}");
            buf.extend_from_slice(&wire[cut..]);
            let (f, raw) = dec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(f.tag, Tag::Message);
            assert_eq!(f.segments.len(), 4);
            assert_eq!(&f.segments[1][..], b"front");
            assert_eq!(&f.segments[3][..], b"data!");
            assert_eq!(raw.len(), wire.len());
        }
    }

    #[test]
    fn parts_equal_flat_encoding() {
        let mut a = FrameCodec::new();
        let segs = [Bytes::from_static(&[7u8; 41]), Bytes::from_static(b"front"), Bytes::new(), Bytes::from_static(b"data!")];
        let flat = a.encode(Tag::Message, &[&segs[0], &segs[1], &segs[2], &segs[3]]);
        let parts: Vec<u8> = a.encode_parts(Tag::Message, &segs).concat();
        assert_eq!(parts, flat);
        let ctrl = a.encode(Tag::Ack, &[b"12345678"]);
        assert_eq!(a.encode_parts(Tag::Ack, &[Bytes::from_static(b"12345678")]).concat(), ctrl);
    }

    #[test]
    fn crc_detects_corruption() {
        let mut enc = FrameCodec::new();
        let wire = enc.encode(Tag::Hello, &[b"hello payload"]);
        for i in 0..wire.len() {
            let mut w = wire.clone();
            w[i] ^= 0x40;
            let mut dec = FrameCodec::new();
            let r = dec.decode(&mut BytesMut::from(&w[..]));
            assert!(!matches!(r, Ok(Some(_))), "flip at {i} accepted");
        }
    }

    #[test]
    fn secure_roundtrip_small_big_and_message() {
        let (mut a, mut b) = pair();
        let big = [0x5au8; 200];
        for segs in [vec![&b"tiny"[..]], vec![&big[..]], vec![&[1u8; 41][..], &b"front"[..], &b""[..], &big[..]]] {
            let wire = a.encode(Tag::Message, &segs);
            // byte-at-a-time feeding must work because the preamble is held once decrypted
            let mut buf = BytesMut::new();
            let mut got = None;
            for &byte in &wire {
                buf.extend_from_slice(&[byte]);
                if let Some(f) = b.decode(&mut buf).unwrap() {
                    got = Some(f.0);
                }
            }
            let f = got.unwrap();
            assert_eq!(f.segments.len(), segs.len().max(1));
            for (x, y) in f.segments.iter().zip(segs.iter()) {
                assert_eq!(&x[..], *y);
            }
        }
    }

    #[test]
    fn secure_rejects_tampering() {
        let (mut a, mut b) = pair();
        let mut wire = a.encode(Tag::Ack, &[&8u64.to_le_bytes()]);
        wire[40] ^= 1;
        assert_eq!(b.decode(&mut BytesMut::from(&wire[..])), Err(FrameError::Decrypt));
    }

    #[test]
    fn oversized_segment_rejected_before_buffering() {
        let mut enc = FrameCodec::new();
        let mut wire = enc.encode(Tag::Hello, &[b"x"]);
        // forge a 1 GiB control length with a valid preamble crc
        wire[2..6].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let crc = ceph_crc32c(0, &wire[..28]);
        wire[28..32].copy_from_slice(&crc.to_le_bytes());
        let mut dec = FrameCodec::new();
        assert!(matches!(dec.decode(&mut BytesMut::from(&wire[..])), Err(FrameError::TooLong { .. })));
    }

    fn with_comp(mut c: FrameCodec, alg: compress::Algorithm) -> (FrameCodec, Arc<CompressionStats>) {
        let st = Arc::new(CompressionStats::default());
        c.set_compression(Negotiated { alg, min_size: 1024 }, st.clone());
        (c, st)
    }

    fn big(n: usize) -> Vec<u8> {
        (0..n).map(|i| b"ceph object payload "[i % 20]).collect()
    }

    #[test]
    fn compressed_frames_crc_and_secure_split_everywhere() {
        use compress::Algorithm::*;
        for alg in [Snappy, Lz4] {
            for secure in [false, true] {
                let (a, b) = if secure { pair() } else { (FrameCodec::new(), FrameCodec::new()) };
                let (mut a, st) = with_comp(a, alg);
                let (mut b, rst) = with_comp(b, alg);
                let data = big(5000);
                let wire = a.encode(Tag::Message, &[&[9u8; 41], b"front", b"", &data]);
                assert!(wire.len() < 2000, "{alg:?}: not compressed ({} bytes)", wire.len());
                let s = st.snapshot();
                assert_eq!((s.tx_frames, s.tx_raw_bytes), (1, 41 + 5 + 5000));
                // byte at a time, then the frame whole
                let mut buf = BytesMut::new();
                let mut got = None;
                for &byte in &wire {
                    buf.extend_from_slice(&[byte]);
                    if let Some((f, _)) = b.decode(&mut buf).unwrap() {
                        got = Some(f);
                    }
                }
                let f = got.unwrap();
                assert_eq!(&f.segments[0][..], &[9u8; 41]);
                assert_eq!(&f.segments[1][..], b"front");
                assert!(f.segments[2].is_empty());
                assert_eq!(&f.segments[3][..], &data[..]);
                assert_eq!(rst.snapshot().rx_frames, 1);
                assert_eq!(rst.snapshot().rx_raw_bytes, 5046);
                // below the threshold: sent as is, flag clear
                let small = a.encode(Tag::Keepalive2, &[&[1u8; 12]]);
                let (f, _) = b.decode(&mut BytesMut::from(&small[..])).unwrap().unwrap();
                assert_eq!(&f.segments[0][..], &[1u8; 12]);
                assert_eq!(st.snapshot().tx_frames, 1);
            }
        }
    }

    #[test]
    fn compressed_flag_sits_in_the_preamble() {
        let (mut a, _) = with_comp(FrameCodec::new(), compress::Algorithm::Snappy);
        let wire = a.encode(Tag::Message, &[&[0u8; 41], &big(3000)]);
        assert_eq!(wire[26], FRAME_EARLY_DATA_COMPRESSED);
        // the lengths in the preamble are the compressed ones
        let len1 = u32::from_le_bytes([wire[8], wire[9], wire[10], wire[11]]) as usize;
        assert!(len1 < 3000);
        // a codec that negotiated nothing refuses it, typed
        let mut plain = FrameCodec::new();
        assert_eq!(plain.decode(&mut BytesMut::from(&wire[..])), Err(FrameError::UnexpectedCompression));
        // and so does corrupt compressed data with valid crcs
        let junk = [0xffu8; 64];
        let raw = FrameCodec::new().encode_raw(Tag::Message, &[&[0u8; 41], &junk], FRAME_EARLY_DATA_COMPRESSED);
        let (mut b, _) = with_comp(FrameCodec::new(), compress::Algorithm::Snappy);
        assert!(matches!(b.decode(&mut BytesMut::from(&raw[..])), Err(FrameError::Decompress { .. })));
    }

    #[test]
    fn an_announced_length_is_not_reserved_before_it_arrives() {
        // a valid preamble announcing a 4 MiB data segment, then nothing:
        // the buffer must not grow to 4 MiB on the peer's word
        let raw = FrameCodec::new().encode_raw(Tag::Message, &[&[0u8; 41], b"", b"", &vec![7u8; 4 << 20]], 0);
        let mut c = FrameCodec::new();
        let mut buf = BytesMut::from(&raw[..PREAMBLE_LEN + 100]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= PREAMBLE_LEN + 100 + RESERVE_AHEAD, "reserved {}", buf.capacity());
        // fed the rest in pieces, it still decodes
        for chunk in raw[PREAMBLE_LEN + 100..].chunks(300_000) {
            assert!(c.decode(&mut buf).unwrap().is_none());
            buf.extend_from_slice(chunk);
        }
        let (f, _) = c.decode(&mut buf).unwrap().unwrap();
        assert_eq!(f.segment(3).len(), 4 << 20);
    }

    #[test]
    fn decompression_bomb_is_refused_before_allocating() {
        // 16 MiB of zeros compress to well under 1 MiB; the data segment
        // limit is lowered to 1 MiB: the declared size alone refuses it
        let zeros = vec![0u8; 16 << 20];
        for alg in [compress::Algorithm::Snappy, compress::Algorithm::Lz4] {
            let c = compress::compress(alg, &zeros).unwrap();
            assert!(c.len() < 1 << 20, "{alg:?}: {}", c.len());
            let hdr = compress::compress(alg, &[0u8; 41]).unwrap();
            let raw = FrameCodec::new().encode_raw(Tag::Message, &[&hdr, b"", b"", &c], FRAME_EARLY_DATA_COMPRESSED);
            let (mut b, _) = with_comp(FrameCodec::new(), alg);
            b.limits.max[3] = 1 << 20;
            let r = b.decode(&mut BytesMut::from(&raw[..]));
            assert!(
                matches!(r, Err(FrameError::Decompress { index: 3, source: CompressError::TooLarge { .. } })),
                "{alg:?}: {r:?}"
            );
        }
    }

    #[test]
    fn banner_roundtrip() {
        let b = encode_banner(1, 0);
        let mut buf = BytesMut::from(&b[..5]);
        assert!(decode_banner(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&b[5..]);
        assert_eq!(decode_banner(&mut buf).unwrap().unwrap().0, (1, 0));
        let mut bad = BytesMut::from(&b"ceph v027 stuff"[..]);
        assert!(decode_banner(&mut bad).is_err());
    }
}
