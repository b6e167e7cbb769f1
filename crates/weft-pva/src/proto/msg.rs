//! Application messages: decode from a (reassembled) payload and encode back.
//!
//! Operation data whose layout depends on a type negotiated earlier (get,
//! put, put-get, monitor and array data) is kept as raw bytes here; the
//! party that knows the operation's type decodes it with
//! [`decode_data`]/[`encode_data`]. Everything self-describing (FieldDescs,
//! pvRequests, RPC arguments, variants) is decoded here, in order, so the
//! 0xFD/0xFE type cache stays consistent.

use bytes::Bytes;

use super::header::{FLAG_SEG_MASK, HEADER_LEN, Header, cmd, flags_for};
use super::types::{FieldDesc, SendCache, TypeCache, decode_desc, decode_desc_opt, encode_desc, encode_desc_opt};
use super::value::{BitSet, Value, decode_masked, decode_value, encode_any, encode_masked, encode_value};
use super::wire::{ByteOrder, Limits, Reader, Writer};
use crate::error::{Error, Result};

/// Sub-command bits of operation messages.
pub mod sub {
    pub const INIT: u8 = 0x08;
    pub const DESTROY: u8 = 0x10;
    /// GET for put (get-put), get-get for put-get, array get.
    pub const GET: u8 = 0x40;
    /// get-put for put-get, array set-length, monitor pipeline ack.
    pub const GET_PUT: u8 = 0x80;
    pub const MONITOR_START: u8 = 0x44;
    pub const MONITOR_STOP: u8 = 0x04;
    pub const PIPELINE: u8 = 0x80;
}

/// Completion status. `code` -1 is the one-byte "OK" form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: i8,
    pub message: String,
    pub call_tree: String,
}

impl Status {
    pub const OK_CODE: i8 = -1;
    pub fn ok() -> Self {
        Status { code: -1, message: String::new(), call_tree: String::new() }
    }
    pub fn error(msg: impl Into<String>) -> Self {
        Status { code: 2, message: msg.into(), call_tree: String::new() }
    }
    pub fn warning(msg: impl Into<String>) -> Self {
        Status { code: 1, message: msg.into(), call_tree: String::new() }
    }
    /// OK or WARNING: the optional payload follows.
    pub fn is_success(&self) -> bool {
        self.code == -1 || self.code == 0 || self.code == 1
    }
    pub fn decode(r: &mut Reader<'_>) -> Result<Status> {
        let code = r.i8()?;
        if code == -1 {
            return Ok(Status::ok());
        }
        Ok(Status { code, message: r.string()?, call_tree: r.string()? })
    }
    pub fn encode(&self, w: &mut Writer) {
        w.i8(self.code);
        if self.code != -1 {
            w.string(&self.message);
            w.string(&self.call_tree);
        }
    }
    pub fn into_result(self) -> Result<()> {
        if self.is_success() { Ok(()) } else { Err(Error::Remote(self.message)) }
    }
}

/// A self-describing value (FieldDesc + data), as used by pvRequest, RPC,
/// auth payloads and beacon status. `None` is the null type.
pub type Variant = Option<(FieldDesc, Value)>;

fn decode_variant(r: &mut Reader<'_>, cache: &mut TypeCache) -> Result<Variant> {
    match decode_desc_opt(r, cache)? {
        None => Ok(None),
        Some(d) => {
            let v = decode_value(r, &d, cache)?;
            Ok(Some((d, v)))
        }
    }
}

fn encode_variant(w: &mut Writer, v: &Variant, cache: &mut SendCache) -> Result<()> {
    encode_any(w, v.as_ref().map(|(d, v)| (d, v)), cache)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Beacon {
    pub guid: [u8; 12],
    pub flags: u8,
    pub sequence: u8,
    pub change_count: u16,
    pub addr: [u8; 16],
    pub port: u16,
    pub protocol: String,
    pub status: Variant,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub sequence: u32,
    /// bit 0: reply required, bit 7: sent as unicast.
    pub flags: u8,
    pub reserved: [u8; 3],
    pub reply_addr: [u8; 16],
    pub reply_port: u16,
    pub protocols: Vec<String>,
    /// (search instance id, channel name).
    pub channels: Vec<(u32, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchResponse {
    pub guid: [u8; 12],
    pub sequence: u32,
    pub addr: [u8; 16],
    pub port: u16,
    pub protocol: String,
    pub found: bool,
    pub cids: Vec<u32>,
}

/// Body of an operation request (client to server).
#[derive(Debug, Clone, PartialEq)]
pub enum ReqBody {
    /// INIT: the pvRequest, and for a pipelined monitor the initial window.
    Init { pv_request: Variant, nfree: Option<u32> },
    /// RPC execution argument.
    Rpc(Variant),
    /// Monitor control (start/stop/ack/destroy): the ack count if 0x80.
    Monitor { nack: Option<u32> },
    /// Typed data (put/put-get: bitset + value; array: offsets + data) or empty.
    Data(Bytes),
}

/// Body of an operation response (server to client).
#[derive(Debug, Clone, PartialEq)]
pub enum RespBody {
    /// INIT reply types: 1 for get/put/monitor/array, 2 for put-get (put, get), 0 for rpc/process.
    Init(Vec<FieldDesc>),
    Rpc(Variant),
    /// Typed data or empty.
    Data(Bytes),
}

/// Operation request (GET, PUT, PUT_GET, MONITOR, ARRAY, PROCESS, RPC).
#[derive(Debug, Clone, PartialEq)]
pub struct OpRequest {
    pub command: u8,
    pub sid: u32,
    pub ioid: u32,
    pub subcmd: u8,
    pub body: ReqBody,
}

/// Operation response. `status` is None only for plain monitor updates.
#[derive(Debug, Clone, PartialEq)]
pub struct OpResponse {
    pub command: u8,
    pub ioid: u32,
    pub subcmd: u8,
    pub status: Option<Status>,
    pub body: RespBody,
}

/// A pvAccess application message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Beacon(Beacon),
    /// Server's CONNECTION_VALIDATION: buffer size, registry size, auth methods.
    ValidationRequest { buffer_size: u32, registry_size: u16, methods: Vec<String> },
    /// Client's CONNECTION_VALIDATION: chosen auth method and its payload.
    ValidationResponse { buffer_size: u32, registry_size: u16, qos: u16, method: String, auth: Option<Variant> },
    Validated(Status),
    Echo(Bytes),
    Search(SearchRequest),
    SearchResponse(SearchResponse),
    AuthNZ(Variant),
    AclChange { cid: u32, permissions: u8 },
    CreateChannel { channels: Vec<(u32, String)> },
    CreateChannelResponse { cid: u32, sid: u32, status: Status },
    DestroyChannel { sid: u32, cid: u32 },
    Request(OpRequest),
    Response(OpResponse),
    GetField { sid: u32, ioid: u32, subfield: String },
    GetFieldResponse { ioid: u32, status: Status, desc: Option<FieldDesc> },
    Message { ioid: u32, mtype: u8, text: String },
    DestroyRequest { sid: u32, ioid: u32 },
    CancelRequest { sid: u32, ioid: u32 },
    OriginTag([u8; 16]),
    /// Commands we do not know (kept for forwarding/diagnostics).
    Unknown { command: u8, payload: Bytes },
}

fn is_op(command: u8) -> bool {
    matches!(command, cmd::GET | cmd::PUT | cmd::PUT_GET | cmd::MONITOR | cmd::ARRAY | cmd::PROCESS | cmd::RPC)
}

/// Decode one application message.
pub fn decode_message(h: &Header, payload: &[u8], cache: &mut TypeCache, limits: Limits) -> Result<Message> {
    let mut r = Reader::new(payload, h.order()).with_limits(limits);
    let server = h.from_server();
    let m = match h.command {
        cmd::BEACON => Message::Beacon(Beacon {
            guid: r.guid()?,
            flags: r.u8()?,
            sequence: r.u8()?,
            change_count: r.u16()?,
            addr: r.addr16()?,
            port: r.u16()?,
            protocol: r.string()?,
            status: if r.is_empty() { None } else { decode_variant(&mut r, cache)? },
        }),
        cmd::CONNECTION_VALIDATION if server => {
            let buffer_size = r.u32()?;
            let registry_size = r.u16()?;
            let n = r.count("auth methods", 1)?;
            let mut methods = Vec::with_capacity(n);
            for _ in 0..n {
                methods.push(r.string()?);
            }
            Message::ValidationRequest { buffer_size, registry_size, methods }
        }
        cmd::CONNECTION_VALIDATION => {
            let buffer_size = r.u32()?;
            let registry_size = r.u16()?;
            let qos = r.u16()?;
            let method = if r.is_empty() { String::new() } else { r.string()? };
            let auth = if r.is_empty() { None } else { Some(decode_variant(&mut r, cache)?) };
            Message::ValidationResponse { buffer_size, registry_size, qos, method, auth }
        }
        cmd::CONNECTION_VALIDATED => Message::Validated(Status::decode(&mut r)?),
        cmd::ECHO => Message::Echo(Bytes::copy_from_slice(r.take(r.remaining(), "echo")?)),
        cmd::SEARCH => {
            let sequence = r.u32()?;
            let flags = r.u8()?;
            let rs = r.take(3, "reserved")?;
            let reserved = [rs.first().copied().unwrap_or(0), rs.get(1).copied().unwrap_or(0), rs.get(2).copied().unwrap_or(0)];
            let reply_addr = r.addr16()?;
            let reply_port = r.u16()?;
            let np = r.count("protocols", 1)?;
            let mut protocols = Vec::with_capacity(np);
            for _ in 0..np {
                protocols.push(r.string()?);
            }
            let nc = r.u16()? as usize;
            if nc.saturating_mul(5) > r.remaining() {
                return Err(Error::Truncated { what: "search channels", needed: nc * 5 - r.remaining() });
            }
            let mut channels = Vec::with_capacity(nc);
            for _ in 0..nc {
                let id = r.u32()?;
                channels.push((id, r.string()?));
            }
            Message::Search(SearchRequest { sequence, flags, reserved, reply_addr, reply_port, protocols, channels })
        }
        cmd::SEARCH_RESPONSE => {
            let guid = r.guid()?;
            let sequence = r.u32()?;
            let addr = r.addr16()?;
            let port = r.u16()?;
            let protocol = r.string()?;
            let found = r.u8()? != 0;
            let n = r.u16()? as usize;
            if n.saturating_mul(4) > r.remaining() {
                return Err(Error::Truncated { what: "search response ids", needed: n * 4 - r.remaining() });
            }
            let mut cids = Vec::with_capacity(n);
            for _ in 0..n {
                cids.push(r.u32()?);
            }
            Message::SearchResponse(SearchResponse { guid, sequence, addr, port, protocol, found, cids })
        }
        cmd::AUTHNZ => Message::AuthNZ(decode_variant(&mut r, cache)?),
        cmd::ACL_CHANGE => Message::AclChange { cid: r.u32()?, permissions: r.u8()? },
        cmd::CREATE_CHANNEL if server => {
            Message::CreateChannelResponse { cid: r.u32()?, sid: r.u32()?, status: Status::decode(&mut r)? }
        }
        cmd::CREATE_CHANNEL => {
            let n = r.u16()? as usize;
            if n.saturating_mul(5) > r.remaining() {
                return Err(Error::Truncated { what: "create channel list", needed: n * 5 - r.remaining() });
            }
            let mut channels = Vec::with_capacity(n);
            for _ in 0..n {
                let cid = r.u32()?;
                channels.push((cid, r.string()?));
            }
            Message::CreateChannel { channels }
        }
        cmd::DESTROY_CHANNEL => Message::DestroyChannel { sid: r.u32()?, cid: r.u32()? },
        cmd::DESTROY_REQUEST => Message::DestroyRequest { sid: r.u32()?, ioid: r.u32()? },
        cmd::CANCEL_REQUEST => Message::CancelRequest { sid: r.u32()?, ioid: r.u32()? },
        cmd::GET_FIELD if server => {
            let ioid = r.u32()?;
            let status = Status::decode(&mut r)?;
            let desc = if status.is_success() && !r.is_empty() { decode_desc_opt(&mut r, cache)? } else { None };
            Message::GetFieldResponse { ioid, status, desc }
        }
        cmd::GET_FIELD => Message::GetField { sid: r.u32()?, ioid: r.u32()?, subfield: r.string()? },
        cmd::MESSAGE => Message::Message { ioid: r.u32()?, mtype: r.u8()?, text: r.string()? },
        cmd::ORIGIN_TAG => Message::OriginTag(r.addr16()?),
        c if is_op(c) && server => Message::Response(decode_op_response(c, &mut r, cache)?),
        c if is_op(c) => Message::Request(decode_op_request(c, &mut r, cache)?),
        c => Message::Unknown { command: c, payload: Bytes::copy_from_slice(r.rest()) },
    };
    let _ = r.take(r.remaining(), "trailing");
    Ok(m)
}

fn rest_bytes(r: &mut Reader<'_>) -> Result<Bytes> {
    Ok(Bytes::copy_from_slice(r.take(r.remaining(), "data")?))
}

fn decode_op_request(c: u8, r: &mut Reader<'_>, cache: &mut TypeCache) -> Result<OpRequest> {
    let sid = r.u32()?;
    let ioid = r.u32()?;
    let subcmd = r.u8()?;
    let body = if subcmd & sub::INIT != 0 {
        let pv_request = if r.is_empty() { None } else { decode_variant(r, cache)? };
        let nfree = if c == cmd::MONITOR && subcmd & sub::PIPELINE != 0 && r.remaining() >= 4 { Some(r.u32()?) } else { None };
        ReqBody::Init { pv_request, nfree }
    } else if c == cmd::RPC {
        ReqBody::Rpc(if r.is_empty() { None } else { decode_variant(r, cache)? })
    } else if c == cmd::MONITOR {
        let nack = if subcmd & sub::PIPELINE != 0 { Some(r.u32()?) } else { None };
        ReqBody::Monitor { nack }
    } else {
        ReqBody::Data(rest_bytes(r)?)
    };
    Ok(OpRequest { command: c, sid, ioid, subcmd, body })
}

fn decode_op_response(c: u8, r: &mut Reader<'_>, cache: &mut TypeCache) -> Result<OpResponse> {
    let ioid = r.u32()?;
    let subcmd = r.u8()?;
    if c == cmd::MONITOR && subcmd & sub::INIT == 0 {
        // Plain update: no status. Final update (0x10): status then optional data.
        let status = if subcmd & sub::DESTROY != 0 { Some(Status::decode(r)?) } else { None };
        return Ok(OpResponse { command: c, ioid, subcmd, status, body: RespBody::Data(rest_bytes(r)?) });
    }
    let status = Status::decode(r)?;
    let body = if subcmd & sub::INIT != 0 {
        let ntypes = match c {
            cmd::PUT_GET => 2,
            cmd::RPC | cmd::PROCESS => 0,
            _ => 1,
        };
        let mut types = Vec::new();
        if status.is_success() {
            for _ in 0..ntypes {
                types.push(decode_desc(r, cache)?);
            }
        }
        RespBody::Init(types)
    } else if c == cmd::RPC {
        RespBody::Rpc(if status.is_success() && !r.is_empty() { decode_variant(r, cache)? } else { None })
    } else {
        RespBody::Data(rest_bytes(r)?)
    };
    Ok(OpResponse { command: c, ioid, subcmd, status: Some(status), body })
}

/// The command byte of a message (for the header).
pub fn command_of(m: &Message) -> u8 {
    match m {
        Message::Beacon(_) => cmd::BEACON,
        Message::ValidationRequest { .. } | Message::ValidationResponse { .. } => cmd::CONNECTION_VALIDATION,
        Message::Validated(_) => cmd::CONNECTION_VALIDATED,
        Message::Echo(_) => cmd::ECHO,
        Message::Search(_) => cmd::SEARCH,
        Message::SearchResponse(_) => cmd::SEARCH_RESPONSE,
        Message::AuthNZ(_) => cmd::AUTHNZ,
        Message::AclChange { .. } => cmd::ACL_CHANGE,
        Message::CreateChannel { .. } | Message::CreateChannelResponse { .. } => cmd::CREATE_CHANNEL,
        Message::DestroyChannel { .. } => cmd::DESTROY_CHANNEL,
        Message::Request(r) => r.command,
        Message::Response(r) => r.command,
        Message::GetField { .. } | Message::GetFieldResponse { .. } => cmd::GET_FIELD,
        Message::Message { .. } => cmd::MESSAGE,
        Message::DestroyRequest { .. } => cmd::DESTROY_REQUEST,
        Message::CancelRequest { .. } => cmd::CANCEL_REQUEST,
        Message::OriginTag(_) => cmd::ORIGIN_TAG,
        Message::Unknown { command, .. } => *command,
    }
}

/// Encode the payload of a message (no header).
pub fn encode_payload(m: &Message, w: &mut Writer, cache: &mut SendCache) -> Result<()> {
    match m {
        Message::Beacon(b) => {
            w.bytes(&b.guid);
            w.u8(b.flags);
            w.u8(b.sequence);
            w.u16(b.change_count);
            w.bytes(&b.addr);
            w.u16(b.port);
            w.string(&b.protocol);
            encode_variant(w, &b.status, cache)?;
        }
        Message::ValidationRequest { buffer_size, registry_size, methods } => {
            w.u32(*buffer_size);
            w.u16(*registry_size);
            w.size(methods.len());
            for s in methods {
                w.string(s);
            }
        }
        Message::ValidationResponse { buffer_size, registry_size, qos, method, auth } => {
            w.u32(*buffer_size);
            w.u16(*registry_size);
            w.u16(*qos);
            w.string(method);
            if let Some(a) = auth {
                encode_variant(w, a, cache)?;
            }
        }
        Message::Validated(s) => s.encode(w),
        Message::Echo(b) => w.bytes(b),
        Message::Search(s) => {
            w.u32(s.sequence);
            w.u8(s.flags);
            w.bytes(&s.reserved);
            w.bytes(&s.reply_addr);
            w.u16(s.reply_port);
            w.size(s.protocols.len());
            for p in &s.protocols {
                w.string(p);
            }
            w.u16(s.channels.len() as u16);
            for (id, n) in &s.channels {
                w.u32(*id);
                w.string(n);
            }
        }
        Message::SearchResponse(s) => {
            w.bytes(&s.guid);
            w.u32(s.sequence);
            w.bytes(&s.addr);
            w.u16(s.port);
            w.string(&s.protocol);
            w.u8(s.found as u8);
            w.u16(s.cids.len() as u16);
            for c in &s.cids {
                w.u32(*c);
            }
        }
        Message::AuthNZ(v) => encode_variant(w, v, cache)?,
        Message::AclChange { cid, permissions } => {
            w.u32(*cid);
            w.u8(*permissions);
        }
        Message::CreateChannel { channels } => {
            w.u16(channels.len() as u16);
            for (cid, n) in channels {
                w.u32(*cid);
                w.string(n);
            }
        }
        Message::CreateChannelResponse { cid, sid, status } => {
            w.u32(*cid);
            w.u32(*sid);
            status.encode(w);
        }
        Message::DestroyChannel { sid, cid } => {
            w.u32(*sid);
            w.u32(*cid);
        }
        Message::DestroyRequest { sid, ioid } | Message::CancelRequest { sid, ioid } => {
            w.u32(*sid);
            w.u32(*ioid);
        }
        Message::GetField { sid, ioid, subfield } => {
            w.u32(*sid);
            w.u32(*ioid);
            w.string(subfield);
        }
        Message::GetFieldResponse { ioid, status, desc } => {
            w.u32(*ioid);
            status.encode(w);
            if status.is_success() {
                encode_desc_opt(w, desc.as_ref(), cache);
            }
        }
        Message::Message { ioid, mtype, text } => {
            w.u32(*ioid);
            w.u8(*mtype);
            w.string(text);
        }
        Message::OriginTag(a) => w.bytes(a),
        Message::Request(r) => {
            w.u32(r.sid);
            w.u32(r.ioid);
            w.u8(r.subcmd);
            match &r.body {
                ReqBody::Init { pv_request, nfree } => {
                    encode_variant(w, pv_request, cache)?;
                    if let Some(n) = nfree {
                        w.u32(*n);
                    }
                }
                ReqBody::Rpc(v) => encode_variant(w, v, cache)?,
                ReqBody::Monitor { nack } => {
                    if let Some(n) = nack {
                        w.u32(*n);
                    }
                }
                ReqBody::Data(b) => w.bytes(b),
            }
        }
        Message::Response(r) => {
            w.u32(r.ioid);
            w.u8(r.subcmd);
            if let Some(s) = &r.status {
                s.encode(w);
            }
            match &r.body {
                RespBody::Init(types) => {
                    for t in types {
                        encode_desc(w, t, cache);
                    }
                }
                RespBody::Rpc(v) => {
                    if r.status.as_ref().is_none_or(|s| s.is_success()) {
                        encode_variant(w, v, cache)?;
                    }
                }
                RespBody::Data(b) => w.bytes(b),
            }
        }
        Message::Unknown { payload, .. } => w.bytes(payload),
    }
    Ok(())
}

/// Encode a whole message (header + payload) in one frame.
pub fn encode_message(m: &Message, order: ByteOrder, from_server: bool, cache: &mut SendCache) -> Result<Vec<u8>> {
    let mut w = Writer::new(order);
    w.buf.extend_from_slice(&[0u8; HEADER_LEN]);
    encode_payload(m, &mut w, cache)?;
    let size = w.buf.len() - HEADER_LEN;
    let size = u32::try_from(size).map_err(|_| Error::Usage("message larger than 4 GiB".into()))?;
    let mut hdr = Vec::with_capacity(HEADER_LEN);
    Header::new(command_of(m), flags_for(order, from_server), size).write(&mut hdr);
    if let Some(s) = w.buf.get_mut(..HEADER_LEN) {
        s.copy_from_slice(&hdr);
    }
    Ok(w.buf)
}

/// Split an encoded single-frame message into segments of at most
/// `max_payload` bytes each (pvAccessCPP style flags 0x10/0x30/0x20).
pub fn segment(msg: &[u8], max_payload: usize) -> Vec<Vec<u8>> {
    let (Some(h), Some(payload)) = (msg.get(..HEADER_LEN), msg.get(HEADER_LEN..)) else { return vec![msg.to_vec()] };
    if payload.len() <= max_payload || max_payload == 0 {
        return vec![msg.to_vec()];
    }
    let mut h8 = [0u8; HEADER_LEN];
    h8.copy_from_slice(h);
    let Ok(base) = Header::parse(&h8) else { return vec![msg.to_vec()] };
    let chunks: Vec<&[u8]> = payload.chunks(max_payload).collect();
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let seg = if i == 0 { 0x10 } else if i + 1 == n { 0x20 } else { 0x30 };
            let mut out = Vec::with_capacity(HEADER_LEN + c.len());
            Header::new(base.command, (base.flags & !FLAG_SEG_MASK) | seg, c.len() as u32).write(&mut out);
            out.extend_from_slice(c);
            out
        })
        .collect()
}

/// Decode typed operation data: a changed BitSet and the masked value, into
/// `value` (which keeps fields not in the bitset).
pub fn decode_data(r: &mut Reader<'_>, desc: &FieldDesc, value: &mut Value, cache: &mut TypeCache) -> Result<BitSet> {
    let bits = BitSet::decode(r)?;
    decode_masked(r, desc, value, &bits, cache)?;
    Ok(bits)
}

/// Encode typed operation data: the BitSet then the masked value.
pub fn encode_data(w: &mut Writer, desc: &FieldDesc, value: &Value, bits: &BitSet, cache: &mut SendCache) -> Result<()> {
    bits.encode(w);
    encode_masked(w, desc, value, bits, cache)
}

/// Encode a full value (used by array data and tests).
pub fn encode_full(w: &mut Writer, desc: &FieldDesc, value: &Value, cache: &mut SendCache) -> Result<()> {
    encode_value(w, desc, value, cache)
}

/// IPv6 / v4-mapped form used in pvAccess address fields.
pub fn addr16(ip: std::net::IpAddr) -> [u8; 16] {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// Address field to IP; None when all zero or ::ffff:0.0.0.0 ("use the sender's address").
pub fn ip_from16(a: &[u8; 16]) -> Option<std::net::IpAddr> {
    let v6 = std::net::Ipv6Addr::from(*a);
    if v6.is_unspecified() {
        return None;
    }
    match v6.to_ipv4_mapped() {
        Some(v4) if v4.is_unspecified() => None,
        Some(v4) => Some(std::net::IpAddr::V4(v4)),
        None => Some(std::net::IpAddr::V6(v6)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::types::ScalarType;

    fn rt(m: Message, server: bool) {
        let bytes = encode_message(&m, ByteOrder::Big, server, &mut SendCache::disabled()).unwrap();
        let mut h8 = [0u8; 8];
        h8.copy_from_slice(&bytes[..8]);
        let h = Header::parse(&h8).unwrap();
        let back = decode_message(&h, &bytes[8..], &mut TypeCache::new(), Limits::default()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn roundtrips() {
        rt(Message::CreateChannel { channels: vec![(1, "a".into())] }, false);
        rt(Message::CreateChannelResponse { cid: 1, sid: 2, status: Status::error("no") }, true);
        rt(Message::GetField { sid: 1, ioid: 2, subfield: "value".into() }, false);
        rt(
            Message::GetFieldResponse { ioid: 2, status: Status::ok(), desc: Some(FieldDesc::Scalar(ScalarType::F64)) },
            true,
        );
        rt(
            Message::Request(OpRequest {
                command: cmd::MONITOR,
                sid: 1,
                ioid: 2,
                subcmd: 0x88,
                body: ReqBody::Init {
                    pv_request: Some((FieldDesc::structure("", vec![]), Value::Struct(vec![]))),
                    nfree: Some(4),
                },
            }),
            false,
        );
        rt(
            Message::Response(OpResponse {
                command: cmd::PUT_GET,
                ioid: 2,
                subcmd: 8,
                status: Some(Status::ok()),
                body: RespBody::Init(vec![FieldDesc::Scalar(ScalarType::I32), FieldDesc::Scalar(ScalarType::F64)]),
            }),
            true,
        );
        rt(Message::Message { ioid: 3, mtype: 1, text: "hi".into() }, true);
    }

    #[test]
    fn address_fields() {
        use std::net::{IpAddr, Ipv4Addr};
        let a = addr16(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(ip_from16(&a), Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(ip_from16(&[0; 16]), None);
        assert_eq!(ip_from16(&addr16(IpAddr::V4(Ipv4Addr::UNSPECIFIED))), None);
    }

    #[test]
    fn segment_and_reassemble() {
        use crate::proto::header::{Frame, FrameDecoder};
        let m = Message::Echo(Bytes::from(vec![7u8; 1000]));
        let b = encode_message(&m, ByteOrder::Little, false, &mut SendCache::disabled()).unwrap();
        let segs = segment(&b, 300);
        assert_eq!(segs.len(), 4);
        let mut buf = bytes::BytesMut::new();
        for s in &segs {
            buf.extend_from_slice(s);
        }
        match FrameDecoder::new().decode(&mut buf).unwrap() {
            Some(Frame::App(_, p)) => assert_eq!(p.len(), 1000),
            o => panic!("{o:?}"),
        }
    }
}
