//! Ceph messages carried in msgr2 MESSAGE frames: the 41-byte
//! ceph_msg_header2 and the payloads a RADOS client needs.

use super::enc::{encode_versioned, DResult, DecodeError, Put, Reader};
use super::osdmap::PgId;
use super::types::{Fsid, UTime};
use bytes::{BufMut, Bytes};

pub const HEADER2_LEN: usize = 41;

pub mod msg_type {
    pub const MON_MAP: u16 = 4;
    pub const MON_SUBSCRIBE: u16 = 15;
    pub const MON_SUBSCRIBE_ACK: u16 = 16;
    pub const AUTH: u16 = 17;
    pub const AUTH_REPLY: u16 = 18;
    pub const MON_GET_VERSION: u16 = 19;
    pub const MON_GET_VERSION_REPLY: u16 = 20;
    pub const CONFIG: u16 = 62;
    pub const OSD_MAP: u16 = 41;
    pub const OSD_OP: u16 = 42;
    pub const OSD_OPREPLY: u16 = 43;
    pub const WATCH_NOTIFY: u16 = 44;
    pub const OSD_BACKOFF: u16 = 61;
    pub const MON_COMMAND: u16 = 50;
    pub const POOLOP_REPLY: u16 = 48;
    pub const POOLOP: u16 = 49;
    pub const MON_COMMAND_ACK: u16 = 51;
    pub const LOG: u16 = 52;
}

/// A message as carried in a MESSAGE frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub ty: u16,
    pub version: u16,
    pub compat_version: u16,
    pub priority: u16,
    pub tid: u64,
    pub seq: u64,
    pub data_off: u16,
    pub front: Bytes,
    pub middle: Bytes,
    pub data: Bytes,
}

impl Message {
    pub fn new(ty: u16, version: u16, compat_version: u16, front: Vec<u8>) -> Self {
        Message { ty, version, compat_version, priority: 127, front: Bytes::from(front), ..Default::default() }
    }

    pub fn encode_header(&self, seq: u64, ack_seq: u64) -> [u8; HEADER2_LEN] {
        let mut h = [0u8; HEADER2_LEN];
        let mut b = &mut h[..];
        b.put_u64_le(seq);
        b.put_u64_le(self.tid);
        b.put_u16_le(self.ty);
        b.put_u16_le(self.priority);
        b.put_u16_le(self.version);
        b.put_u32_le(0); // data_pre_padding_len
        b.put_u16_le(self.data_off);
        b.put_u64_le(ack_seq);
        b.put_u8(0); // flags
        b.put_u16_le(self.compat_version);
        b.put_u16_le(0);
        h
    }

    /// Builds a message from the four segments of a MESSAGE frame.
    pub fn from_segments(hdr: &[u8], front: Bytes, middle: Bytes, data: Bytes) -> DResult<(Self, u64)> {
        let mut r = Reader::new(hdr);
        let seq = r.u64("header2.seq")?;
        let tid = r.u64("header2.tid")?;
        let ty = r.u16("header2.type")?;
        let priority = r.u16("header2.priority")?;
        let version = r.u16("header2.version")?;
        r.u32("header2.data_pre_padding_len")?;
        let data_off = r.u16("header2.data_off")?;
        let ack_seq = r.u64("header2.ack_seq")?;
        r.u8("header2.flags")?;
        let compat_version = r.u16("header2.compat_version")?;
        Ok((Message { ty, version, compat_version, priority, tid, seq, data_off, front, middle, data }, ack_seq))
    }
}

/// PaxosServiceMessage header: version, deprecated session mon and tid.
fn paxos_header(out: &mut Vec<u8>, version: u64) {
    out.put_u64_le(version);
    out.put_i16_le(-1);
    out.put_u64_le(0);
}

fn skip_paxos_header(r: &mut Reader<'_>) -> DResult<()> {
    r.skip(8 + 2 + 8, "paxos_header")
}

/// MMonSubscribe v3: what -> (start epoch, flags).
pub fn mon_subscribe(items: &[(&str, u64, u8)], hostname: &str) -> Message {
    let mut f = Vec::new();
    f.put_u32_le(items.len() as u32);
    for (what, start, flags) in items {
        f.put_str(what);
        f.put_u64_le(*start);
        f.put_u8(*flags);
    }
    f.put_str(hostname);
    Message::new(msg_type::MON_SUBSCRIBE, 3, 1, f)
}
pub const SUBSCRIBE_ONETIME: u8 = 1;

/// MMonCommand: a JSON command for the monitors, `input` in the data segment.
pub fn mon_command(tid: u64, fsid: &Fsid, cmd: &str, input: &[u8]) -> Message {
    let mut f = Vec::new();
    paxos_header(&mut f, 0);
    f.extend_from_slice(&fsid.0);
    f.put_u32_le(1);
    f.put_str(cmd);
    let mut m = Message::new(msg_type::MON_COMMAND, 1, 1, f);
    m.tid = tid;
    m.data = Bytes::copy_from_slice(input);
    m
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonCommandAck {
    pub tid: u64,
    pub r: i32,
    pub rs: String,
    pub data: Bytes,
    /// The osdmap epoch a pool op's effect is in (0 for commands).
    pub epoch: u32,
}

pub fn decode_mon_command_ack(m: &Message) -> DResult<MonCommandAck> {
    let mut r = Reader::new(&m.front);
    skip_paxos_header(&mut r)?;
    let rv = r.i32("mon_command_ack.r")?;
    let rs = r.string("mon_command_ack.rs")?;
    Ok(MonCommandAck { tid: m.tid, r: rv, rs, data: m.data.clone(), epoch: 0 })
}

/// MPoolOp operations (`POOL_OP_*`).
pub mod pool_op {
    pub const CREATE_UNMANAGED_SNAP: u32 = 0x21;
    pub const DELETE_UNMANAGED_SNAP: u32 = 0x22;
}

/// MPoolOp v4 (what librados sends for self-managed snapshots): paxos
/// header (version = our osdmap epoch), fsid, pool, op, auid 0, snapid,
/// name, the old u8 crush rule and the s16 one.
pub fn pool_op(tid: u64, fsid: &Fsid, epoch: u32, pool: u32, op: u32, snapid: u64, name: &str) -> Message {
    let mut f = Vec::new();
    paxos_header(&mut f, u64::from(epoch));
    f.extend_from_slice(&fsid.0);
    f.put_u32_le(pool);
    f.put_u32_le(op);
    f.put_u64_le(0); // auid
    f.put_u64_le(snapid);
    f.put_str(name);
    f.put_u8(0); // old crush rule
    f.put_i16_le(0); // crush rule
    let mut m = Message::new(msg_type::POOLOP, 4, 2, f);
    m.tid = tid;
    m
}

/// MPoolOpReply: paxos header, fsid, reply code (a negative errno as
/// u32), epoch, then optionally a response blob (for a new self-managed
/// snapshot: its le64 id). Returned as a `MonCommandAck`.
pub fn decode_pool_op_reply(m: &Message) -> DResult<MonCommandAck> {
    let mut r = Reader::new(&m.front);
    skip_paxos_header(&mut r)?;
    r.skip(16, "pool_op_reply.fsid")?;
    let code = r.u32("pool_op_reply.code")? as i32;
    let epoch = r.u32("pool_op_reply.epoch")?;
    let data = if !r.is_empty() && r.bool("pool_op_reply.has_data")? {
        Bytes::copy_from_slice(r.blob("pool_op_reply.data")?)
    } else {
        Bytes::new()
    };
    Ok(MonCommandAck { tid: m.tid, r: code, rs: String::new(), data, epoch })
}

/// MMonGetVersion: the newest version of a map ("osdmap", "monmap").
pub fn mon_get_version(tid: u64, what: &str) -> Message {
    let mut f = Vec::new();
    f.put_u64_le(tid);
    f.put_str(what);
    let mut m = Message::new(msg_type::MON_GET_VERSION, 1, 1, f);
    m.tid = tid;
    m
}

/// MMonGetVersionReply: (handle, newest, oldest).
pub fn decode_mon_get_version_reply(m: &Message) -> DResult<(u64, u64, u64)> {
    let mut r = Reader::new(&m.front);
    let h = r.u64("get_version_reply.handle")?;
    let v = r.u64("get_version_reply.version")?;
    let o = if m.version >= 2 { r.u64("get_version_reply.oldest")? } else { 0 };
    Ok((h, v, o))
}

pub fn decode_mon_map(m: &Message) -> DResult<Vec<u8>> {
    Ok(Reader::new(&m.front).blob("mon_map")?.to_vec())
}

/// MOSDMap: incremental and full maps by epoch.
#[derive(Debug, Clone, Default)]
pub struct OsdMapMsg {
    pub fsid: Fsid,
    pub incrementals: Vec<(u32, Bytes)>,
    pub maps: Vec<(u32, Bytes)>,
    pub oldest: u32,
    pub newest: u32,
}

pub fn decode_osd_map(m: &Message) -> DResult<OsdMapMsg> {
    let mut r = Reader::new(&m.front);
    let fsid = Fsid(r.array("osd_map.fsid")?);
    let mut out = OsdMapMsg { fsid, ..Default::default() };
    for which in 0..2 {
        let n = r.count(8, "osd_map.maps")?;
        for _ in 0..n {
            let e = r.u32("osd_map.epoch")?;
            let b = Bytes::copy_from_slice(r.blob("osd_map.map")?);
            if which == 0 {
                out.incrementals.push((e, b));
            } else {
                out.maps.push((e, b));
            }
        }
    }
    if m.version >= 2 {
        out.oldest = r.u32("osd_map.oldest")?;
        out.newest = r.u32("osd_map.newest")?;
    }
    Ok(out)
}

/// MAuth carrying a cephx request (ticket renewal / principal keys).
pub fn mon_auth(payload: &[u8], monmap_epoch: u32) -> Message {
    let mut f = Vec::new();
    paxos_header(&mut f, 0);
    f.put_u32_le(super::cephx::CEPH_AUTH_CEPHX);
    f.put_blob(payload);
    f.put_u32_le(monmap_epoch);
    Message::new(msg_type::AUTH, 1, 1, f)
}

/// MAuthReply: (protocol, result, global_id, payload, message).
pub fn decode_auth_reply(m: &Message) -> DResult<(u32, i32, u64, Vec<u8>, String)> {
    let mut r = Reader::new(&m.front);
    let proto = r.u32("auth_reply.protocol")?;
    let res = r.i32("auth_reply.result")?;
    let gid = r.u64("auth_reply.global_id")?;
    let bl = r.blob("auth_reply.payload")?.to_vec();
    let msg = r.string("auth_reply.msg").unwrap_or_default();
    Ok((proto, res, gid, bl, msg))
}

// ---------------------------------------------------------------- OSD ops

pub mod osd_op {
    pub const READ: u16 = 0x1201;
    pub const STAT: u16 = 0x1202;
    pub const NOTIFY: u16 = 0x1206;
    pub const NOTIFY_ACK: u16 = 0x1207;
    pub const LIST_WATCHERS: u16 = 0x1209;
    pub const OMAPGETKEYS: u16 = 0x1211;
    pub const OMAPGETVALS: u16 = 0x1212;
    pub const OMAPGETHEADER: u16 = 0x1213;
    pub const OMAPGETVALSBYKEYS: u16 = 0x1214;
    /// Asserts omap values (map<string, pair<bufferlist, i32 cmp op>>).
    pub const OMAP_CMP: u16 = 0x1219;
    pub const CMPEXT: u16 = 0x1220;
    pub const WRITE: u16 = 0x2201;
    pub const WRITEFULL: u16 = 0x2202;
    pub const TRUNCATE: u16 = 0x2203;
    pub const ZERO: u16 = 0x2204;
    pub const DELETE: u16 = 0x2205;
    pub const APPEND: u16 = 0x2206;
    pub const CREATE: u16 = 0x220d;
    /// Rolls the head back to a snapshot (args: snapid).
    pub const ROLLBACK: u16 = 0x220e;
    pub const WATCH: u16 = 0x220f;
    pub const OMAPSETVALS: u16 = 0x2215;
    pub const OMAPSETHEADER: u16 = 0x2216;
    pub const OMAPCLEAR: u16 = 0x2217;
    pub const OMAPRMKEYS: u16 = 0x2218;
    pub const GETXATTR: u16 = 0x1301;
    pub const GETXATTRS: u16 = 0x1302;
    pub const CMPXATTR: u16 = 0x1303;
    pub const SETXATTR: u16 = 0x2301;
    pub const RMXATTR: u16 = 0x2304;
    pub const CALL: u16 = 0x1401;
    pub const PGNLS: u16 = 0x1505;

    pub const MODE_WR: u16 = 0x2000;
    pub fn is_write(op: u16) -> bool {
        op & MODE_WR != 0
    }
}

pub mod osd_flag {
    pub const ACK: u32 = 0x1;
    pub const ONDISK: u32 = 0x4;
    pub const RETRY: u32 = 0x8;
    pub const READ: u32 = 0x10;
    pub const WRITE: u32 = 0x20;
    pub const PGOP: u32 = 0x400;
    pub const EXEC: u32 = 0x800;
    pub const KNOWN_REDIR: u32 = 0x40_0000;
}

pub const CEPH_NOSNAP: u64 = 0xffff_ffff_ffff_fffe;
pub const OP_FLAG_EXCL: u32 = 1;

/// One sub-operation: the 38-byte ceph_osd_op plus its input data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsdOp {
    pub op: u16,
    pub flags: u32,
    /// The 28-byte union, already laid out by the constructor.
    pub args: [u8; 28],
    pub indata: Bytes,
}

impl OsdOp {
    pub fn new(op: u16) -> Self {
        OsdOp { op, ..Default::default() }
    }
    pub fn extent(op: u16, off: u64, len: u64) -> Self {
        let mut o = Self::new(op);
        let mut a = &mut o.args[..];
        a.put_u64_le(off);
        a.put_u64_le(len);
        a.put_u64_le(0); // truncate_size
        a.put_u32_le(0); // truncate_seq
        o
    }
    pub fn xattr(op: u16, name: &str, value: &[u8], cmp_op: u8, cmp_mode: u8) -> Self {
        let mut o = Self::new(op);
        let mut a = &mut o.args[..];
        a.put_u32_le(name.len() as u32);
        a.put_u32_le(value.len() as u32);
        a.put_u8(cmp_op);
        a.put_u8(cmp_mode);
        let mut d = Vec::with_capacity(name.len() + value.len());
        d.extend_from_slice(name.as_bytes());
        d.extend_from_slice(value);
        o.indata = Bytes::from(d);
        o
    }
    pub fn call(class: &str, method: &str, input: &[u8]) -> Self {
        let mut o = Self::new(osd_op::CALL);
        let mut a = &mut o.args[..];
        a.put_u8(class.len() as u8);
        a.put_u8(method.len() as u8);
        a.put_u8(0);
        a.put_u32_le(input.len() as u32);
        let mut d = Vec::with_capacity(class.len() + method.len() + input.len());
        d.extend_from_slice(class.as_bytes());
        d.extend_from_slice(method.as_bytes());
        d.extend_from_slice(input);
        o.indata = Bytes::from(d);
        o
    }
    pub fn pgls(op: u16, count: u64, start_epoch: u32, cursor: &HObject) -> Self {
        let mut o = Self::new(op);
        let mut a = &mut o.args[..];
        a.put_u64_le(count);
        a.put_u32_le(start_epoch);
        let mut d = Vec::new();
        cursor.encode(&mut d);
        o.indata = Bytes::from(d);
        o
    }
    pub fn watch(cookie: u64, watch_op: u8, generation: u32) -> Self {
        let mut o = Self::new(osd_op::WATCH);
        let mut a = &mut o.args[..];
        a.put_u64_le(cookie);
        a.put_u64_le(0); // ver
        a.put_u8(watch_op);
        a.put_u32_le(generation);
        o
    }
    pub fn notify(cookie: u64) -> Self {
        let mut o = Self::new(osd_op::NOTIFY);
        let mut a = &mut o.args[..];
        a.put_u64_le(cookie);
        o
    }
    pub fn with_flags(mut self, f: u32) -> Self {
        self.flags = f;
        self
    }
    pub fn with_indata(mut self, d: impl Into<Bytes>) -> Self {
        self.indata = d.into();
        self
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16_le(self.op);
        out.put_u32_le(self.flags);
        out.extend_from_slice(&self.args);
        out.put_u32_le(self.indata.len() as u32);
    }
}

/// hobject_t (used as the PGNLS cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HObject {
    pub key: String,
    pub oid: String,
    pub snap: u64,
    pub hash: u32,
    pub max: bool,
    pub nspace: String,
    pub pool: i64,
}

impl HObject {
    pub fn min() -> Self {
        HObject { pool: i64::MIN, ..Default::default() }
    }
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_versioned(out, 4, 3, |b| {
            b.put_str(&self.key);
            b.put_str(&self.oid);
            b.put_u64_le(self.snap);
            b.put_u32_le(self.hash);
            b.put_bool(self.max);
            b.put_str(&self.nspace);
            b.put_i64_le(self.pool);
        });
    }
    pub fn decode(r: &mut Reader<'_>) -> DResult<Self> {
        let (v, mut b) = r.versioned(4, "hobject_t")?;
        let key = b.string("hobject.key")?;
        let oid = b.string("hobject.oid")?;
        let snap = b.u64("hobject.snap")?;
        let hash = b.u32("hobject.hash")?;
        let max = if v >= 2 { b.bool("hobject.max")? } else { false };
        let nspace = if v >= 4 { b.string("hobject.nspace")? } else { String::new() };
        let pool = if v >= 4 { b.i64("hobject.pool")? } else { -1 };
        Ok(HObject { key, oid, snap, hash, max, nspace, pool })
    }
}

/// What an MOSDOp targets.
#[derive(Debug, Clone)]
pub struct OsdOpTarget {
    pub pgid: PgId,
    pub hash: u32,
    pub pool: i64,
    pub oid: String,
    pub nspace: String,
    pub key: String,
}

/// Ceph feature bits the message encoders choose versions by. Masks include
/// the bit's incarnation marker, so `has` has HAVE_FEATURE semantics: a bit
/// reused by a later release only counts together with its marker.
pub mod feature {
    /// Marker of the second incarnation of reused bits (SERVER_JEWEL, bit 57).
    pub const INCARNATION_2: u64 = 1 << 57;
    /// Marker of the third incarnation (SERVER_JEWEL | SERVER_MIMIC).
    pub const INCARNATION_3: u64 = (1 << 57) | (1 << 28);
    pub const OBJECTLOCATOR: u64 = 1 << 8;
    pub const NEW_OSDOP_ENCODING: u64 = 1 << 56;
    pub const NEW_OSDOPREPLY_ENCODING: u64 = 1 << 58;
    /// Luminous; shares bit 21 with SERVER_LUMINOUS.
    pub const RESEND_ON_SPLIT: u64 = (1 << 21) | INCARNATION_2;
    pub const SERVER_REEF: u64 = (1 << 31) | INCARNATION_3;
    pub const SERVER_QUINCY: u64 = (1 << 33) | INCARNATION_3;
    pub const SERVER_SQUID: u64 = (1 << 49) | INCARNATION_2;

    /// HAVE_FEATURE(features, mask).
    pub fn has(features: u64, mask: u64) -> bool {
        features & mask == mask
    }
}

/// The MOSDOp header version Ceph's `MOSDOp::encode_payload` picks for a
/// connection with `features` (the peer's features masked by ours):
/// 1 without OBJECTLOCATOR, 6 without NEW_OSDOP_ENCODING, 7 without
/// RESEND_ON_SPLIT (pre-Luminous), 9 when both sides have SERVER_SQUID (it
/// adds an OpenTelemetry span context after the blkin trace), 8 otherwise.
pub fn osd_op_version(features: u64) -> u16 {
    if features & feature::OBJECTLOCATOR == 0 {
        1
    } else if features & feature::NEW_OSDOP_ENCODING == 0 {
        6
    } else if !feature::has(features, feature::RESEND_ON_SPLIT) {
        7
    } else if !feature::has(features, feature::SERVER_SQUID) {
        8
    } else {
        9
    }
}

/// An MOSDOp to encode. `features` are our own feature bits: they go into
/// the payload (the OSD uses them to encode what it returns) and, masked by
/// the peer's, choose the encoding version.
#[derive(Debug, Clone, Copy)]
pub struct OsdOpRequest<'a> {
    pub tid: u64,
    pub target: &'a OsdOpTarget,
    pub epoch: u32,
    pub flags: u32,
    pub mtime: UTime,
    pub ops: &'a [OsdOp],
    /// The snapshot a read reads (`CEPH_NOSNAP`: the head).
    pub snapid: u64,
    pub snap_seq: u64,
    pub snaps: &'a [u64],
    pub retry_attempt: i32,
    pub features: u64,
}

impl OsdOpRequest<'_> {
    /// Encodes for a peer that advertised `peer_features`, field for field
    /// in the order of the matching branch of Ceph's `encode_payload`.
    pub fn encode(&self, peer_features: u64) -> Message {
        let version = osd_op_version(peer_features & self.features);
        let t = self.target;
        // the raw pg: the object's full hash, not folded to pg_num
        let raw_pg = PgId { pool: t.pgid.pool, seed: t.hash };
        let mut f = Vec::with_capacity(200 + self.ops.len() * 38 + t.oid.len() + self.snaps.len() * 8);
        match version {
            1 => {
                // the packed ceph_osd_request_head of 2011; no namespace or key
                f.put_u32_le(0); // client_inc
                raw_pg.encode(&mut f);
                f.put_u32_le(0); // stripe unit
                f.put_u32_le(self.epoch);
                f.put_u32_le(self.flags);
                self.mtime.encode(&mut f);
                put_eversion_zero(&mut f); // reassert_version
                f.put_u32_le(t.oid.len() as u32);
                f.put_u64_le(self.snapid);
                f.put_u64_le(self.snap_seq);
                f.put_u32_le(self.snaps.len() as u32);
                self.put_ops(&mut f);
                f.extend_from_slice(t.oid.as_bytes());
                for s in self.snaps {
                    f.put_u64_le(*s);
                }
            }
            6 => {
                f.put_u32_le(0); // client_inc
                f.put_u32_le(self.epoch);
                f.put_u32_le(self.flags);
                self.mtime.encode(&mut f);
                put_eversion_zero(&mut f);
                put_object_locator(&mut f, t);
                raw_pg.encode(&mut f);
                f.put_str(&t.oid);
                self.put_ops(&mut f);
                self.put_snaps_tail(&mut f);
                put_empty_reqid(&mut f);
            }
            7 => {
                raw_pg.encode(&mut f);
                f.put_u32_le(self.epoch);
                f.put_u32_le(self.flags);
                put_eversion_zero(&mut f);
                put_empty_reqid(&mut f);
                f.put_u32_le(0); // client_inc
                self.mtime.encode(&mut f);
                put_object_locator(&mut f, t);
                f.put_str(&t.oid);
                self.put_ops(&mut f);
                self.put_snaps_tail(&mut f);
            }
            _ => {
                // v8, and v9 which only adds the span context
                encode_versioned(&mut f, 1, 1, |b| {
                    t.pgid.encode(b); // spg_t: the actual pg ...
                    b.put_i8(-1); // ... and NO_SHARD
                });
                f.put_u32_le(t.hash);
                f.put_u32_le(self.epoch);
                f.put_u32_le(self.flags);
                // empty: the OSD derives the reqid from source + tid, which is
                // what makes resends with the same tid deduplicate
                put_empty_reqid(&mut f);
                f.extend_from_slice(&[0u8; 24]); // blkin trace info
                if version >= 9 {
                    put_otel_span_none(&mut f);
                }
                f.put_u32_le(0); // client_inc
                self.mtime.encode(&mut f);
                put_object_locator(&mut f, t);
                f.put_str(&t.oid);
                self.put_ops(&mut f);
                self.put_snaps_tail(&mut f);
            }
        }
        let mut m = Message::new(msg_type::OSD_OP, version, 3, f);
        m.tid = self.tid;
        m.priority = 63; // CEPH_MSG_PRIO_DEFAULT
        m.data = self.data();
        m
    }

    fn put_ops(&self, f: &mut Vec<u8>) {
        f.put_u16_le(self.ops.len() as u16);
        for op in self.ops {
            op.encode(f);
        }
    }

    /// snapid (the read's snapshot), the writer's snap context, retry
    /// attempt, features.
    fn put_snaps_tail(&self, f: &mut Vec<u8>) {
        f.put_u64_le(self.snapid);
        f.put_u64_le(self.snap_seq);
        f.put_u32_le(self.snaps.len() as u32);
        for s in self.snaps {
            f.put_u64_le(*s);
        }
        f.put_i32_le(self.retry_attempt);
        f.put_u64_le(self.features);
    }

    /// Op input data goes in the data segment in op order; one op with
    /// input (the common write) shares its buffer, no copy.
    fn data(&self) -> Bytes {
        let with_data: Vec<&OsdOp> = self.ops.iter().filter(|o| !o.indata.is_empty()).collect();
        match with_data.as_slice() {
            [] => Bytes::new(),
            [one] => one.indata.clone(),
            many => {
                let mut v = Vec::with_capacity(many.iter().map(|o| o.indata.len()).sum());
                for o in many {
                    v.extend_from_slice(&o.indata);
                }
                Bytes::from(v)
            }
        }
    }
}

fn put_eversion_zero(f: &mut Vec<u8>) {
    f.put_u64_le(0); // version
    f.put_u32_le(0); // epoch
}

/// osd_reqid_t v2 with no name, tid or inc.
fn put_empty_reqid(f: &mut Vec<u8>) {
    encode_versioned(f, 2, 2, |b| {
        b.put_u8(0);
        b.put_i64_le(0);
        b.put_u64_le(0);
        b.put_i32_le(0);
    });
}

/// object_locator_t v6, as MOSDOp::get_object_locator builds it: for an
/// object the hash comes from its name (-1, compat 3); a PG op (no object
/// name) carries the PG's hash explicitly, which needs compat 6.
fn put_object_locator(f: &mut Vec<u8>, t: &OsdOpTarget) {
    let pg_op = t.oid.is_empty();
    encode_versioned(f, 6, if pg_op { 6 } else { 3 }, |b| {
        b.put_i64_le(t.pool);
        b.put_i32_le(-1); // preferred osd: none
        b.put_str(if pg_op { "" } else { &t.key });
        b.put_str(&t.nspace);
        b.put_i64_le(if pg_op { t.hash as i64 } else { -1 });
    });
}

/// An OpenTelemetry span context saying "no trace": what a Squid client
/// built without tracing sends (ENCODE_START(1, 1), is_valid = false).
fn put_otel_span_none(f: &mut Vec<u8>) {
    encode_versioned(f, 1, 1, |b| b.put_bool(false));
}

/// MOSDOp encoded as for a peer with our own features (the Pacific set
/// gives v8); `OsdOpRequest::encode` picks by the peer's features.
#[allow(clippy::too_many_arguments)]
pub fn osd_op(
    tid: u64,
    t: &OsdOpTarget,
    epoch: u32,
    flags: u32,
    mtime: UTime,
    ops: &[OsdOp],
    snap_seq: u64,
    snaps: &[u64],
    retry_attempt: i32,
    features: u64,
) -> Message {
    OsdOpRequest { tid, target: t, epoch, flags, mtime, ops, snapid: CEPH_NOSNAP, snap_seq, snaps, retry_attempt, features }
        .encode(features)
}

/// One sub-op's outcome in an MOSDOpReply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpResult {
    pub op: u16,
    pub rval: i32,
    pub outdata: Bytes,
}

#[derive(Debug, Clone)]
pub struct OsdOpReply {
    pub tid: u64,
    pub oid: String,
    pub pgid: PgId,
    pub flags: u64,
    pub result: i32,
    pub epoch: u32,
    pub retry_attempt: i32,
    pub ops: Vec<OpResult>,
    pub user_version: u64,
    pub redirect: bool,
}

/// The newest MOSDOpReply encoding we (and Ceph up to Squid) know.
pub const OSD_OP_REPLY_HEAD_VERSION: u16 = 8;

/// MOSDOpReply, by Ceph's rule: a compat_version above our head version is
/// refused (decode_message does the same); any version from 2 up decodes,
/// each field present from the version that added it, and fields of a
/// newer version than 8 are ignored as trailing data. Version 1 (the
/// packed reply head of 2011) is refused.
pub fn decode_osd_op_reply(m: &Message) -> DResult<OsdOpReply> {
    if m.compat_version > OSD_OP_REPLY_HEAD_VERSION {
        return Err(DecodeError::invalid(
            "osd_op_reply",
            format!("compat version {} is newer than the {OSD_OP_REPLY_HEAD_VERSION} we decode", m.compat_version),
        ));
    }
    let v = m.version;
    if v < 2 {
        return Err(DecodeError::invalid("osd_op_reply", format!("version {v} (pre-2011 layout) not supported")));
    }
    let mut r = Reader::new(&m.front);
    let oid = r.string("opreply.oid")?;
    let pgid = PgId::decode(&mut r)?;
    let flags = r.u64("opreply.flags")?;
    let result = r.i32("opreply.result")?;
    let bad_replay_version = r.u64("opreply.bad_replay_version.version")?;
    r.u32("opreply.bad_replay_version.epoch")?;
    let epoch = r.u32("opreply.epoch")?;
    let n = r.count(38, "opreply.ops")?;
    let mut heads = Vec::with_capacity(n);
    for _ in 0..n {
        let op = r.u16("opreply.op")?;
        r.skip(4 + 28, "opreply.op.body")?;
        let plen = r.u32("opreply.op.payload_len")? as usize;
        heads.push((op, plen));
    }
    let retry_attempt = if v >= 3 { r.i32("opreply.retry_attempt")? } else { -1 };
    let mut ops = Vec::with_capacity(n);
    if v >= 4 {
        // per-op return values, and the out data split by payload_len
        let mut at = 0usize;
        for (op, plen) in heads {
            let rval = r.i32("opreply.rval")?;
            let end = at.checked_add(plen).filter(|&e| e <= m.data.len()).ok_or_else(|| {
                DecodeError::invalid("osd_op_reply", "op payload lengths exceed the data segment")
            })?;
            ops.push(OpResult { op, rval, outdata: m.data.slice(at..end) });
            at = end;
        }
    } else {
        ops.extend(heads.into_iter().map(|(op, _)| OpResult { op, rval: 0, outdata: Bytes::new() }));
    }
    let user_version = if v >= 5 {
        r.skip(12, "opreply.replay_version")?;
        r.u64("opreply.user_version")?
    } else {
        bad_replay_version
    };
    let redirect = if v == 6 {
        !decode_redirect_is_empty(&mut r)?
    } else if v >= 7 {
        // the redirect target itself is not followed: the op is resent
        // against the current map, which already points at the new place
        let d = r.bool("opreply.do_redirect")?;
        if d {
            decode_redirect_is_empty(&mut r)?;
        }
        d
    } else {
        false
    };
    if v >= 8 {
        r.skip(24, "opreply.blkin_trace")?;
    }
    Ok(OsdOpReply { tid: m.tid, oid, pgid, flags, result, epoch, retry_attempt, ops, user_version, redirect })
}

/// request_redirect_t (MOSDOpReply v6, always present): true when it names
/// no locator and no object, i.e. there is no redirect.
fn decode_redirect_is_empty(r: &mut Reader<'_>) -> DResult<bool> {
    let (_v, mut b) = r.versioned(1, "request_redirect_t")?;
    let (lv, mut l) = b.versioned(6, "request_redirect_t.locator")?;
    let pool = if lv < 2 {
        let p = l.i32("object_locator.pool")? as i64;
        l.skip(2, "object_locator.preferred")?;
        p
    } else {
        let p = l.i64("object_locator.pool")?;
        l.skip(4, "object_locator.preferred")?;
        p
    };
    let key = l.blob("object_locator.key")?;
    let nspace = if lv >= 5 { l.blob("object_locator.nspace")? } else { &[] };
    let hash = if lv >= 6 { l.i64("object_locator.hash")? } else { -1 };
    let object = b.blob("request_redirect_t.object")?;
    Ok(pool == -1 && key.is_empty() && nspace.is_empty() && hash == -1 && object.is_empty())
}

/// MWatchNotify (OSD -> client).
#[derive(Debug, Clone)]
pub struct WatchNotify {
    pub cookie: u64,
    pub ver: u64,
    pub notify_id: u64,
    pub opcode: u8,
    pub payload: Vec<u8>,
    pub return_code: i32,
    pub notifier_gid: u64,
}

pub mod watch_event {
    pub const NOTIFY: u8 = 1;
    pub const NOTIFY_COMPLETE: u8 = 2;
    pub const DISCONNECT: u8 = 3;
}

pub fn decode_watch_notify(m: &Message) -> DResult<WatchNotify> {
    let mut r = Reader::new(&m.front);
    r.u8("watch_notify.v")?;
    let opcode = r.u8("watch_notify.opcode")?;
    let cookie = r.u64("watch_notify.cookie")?;
    let ver = r.u64("watch_notify.ver")?;
    let notify_id = r.u64("watch_notify.notify_id")?;
    let payload = if m.version >= 1 { r.blob("watch_notify.bl")?.to_vec() } else { Vec::new() };
    let return_code = if m.version >= 2 { r.i32("watch_notify.return_code")? } else { 0 };
    let notifier_gid = if m.version >= 3 { r.u64("watch_notify.notifier_gid")? } else { 0 };
    // NOTIFY_COMPLETE carries the replies (and missed watchers) in the data segment
    let payload = if opcode == watch_event::NOTIFY_COMPLETE && payload.is_empty() { m.data.to_vec() } else { payload };
    Ok(WatchNotify { cookie, ver, notify_id, opcode, payload, return_code, notifier_gid })
}

/// MOSDBackoff: the OSD asks us to stop sending ops for a range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    pub pgid: PgId,
    pub shard: i8,
    pub epoch: u32,
    pub op: u8,
    pub id: u64,
    pub begin: HObject,
    pub end: HObject,
}

pub mod backoff_op {
    pub const BLOCK: u8 = 1;
    pub const ACK_BLOCK: u8 = 2;
    pub const UNBLOCK: u8 = 3;
}

pub fn decode_backoff(m: &Message) -> DResult<Backoff> {
    let mut r = Reader::new(&m.front);
    let (_v, mut spg) = r.versioned(1, "spg_t")?;
    let pgid = PgId::decode(&mut spg)?;
    let shard = spg.u8("spg_t.shard")? as i8;
    let epoch = r.u32("backoff.epoch")?;
    let op = r.u8("backoff.op")?;
    let id = r.u64("backoff.id")?;
    let begin = HObject::decode(&mut r)?;
    let end = HObject::decode(&mut r)?;
    Ok(Backoff { pgid, shard, epoch, op, id, begin, end })
}

/// The client's ACK_BLOCK for a BLOCK.
pub fn backoff_ack(b: &Backoff) -> Message {
    let mut f = Vec::new();
    encode_versioned(&mut f, 1, 1, |x| {
        b.pgid.encode(x);
        x.put_i8(b.shard);
    });
    f.put_u32_le(b.epoch);
    f.put_u8(backoff_op::ACK_BLOCK);
    f.put_u64_le(b.id);
    b.begin.encode(&mut f);
    b.end.encode(&mut f);
    Message::new(msg_type::OSD_BACKOFF, 1, 1, f)
}

/// A listed object: (nspace, oid, locator).
pub type PgnlsEntry = (String, String, String);

/// PGNLS reply body: (next cursor, entries).
pub fn decode_pgnls_response(data: &[u8]) -> DResult<(HObject, Vec<PgnlsEntry>)> {
    let mut r = Reader::new(data);
    let (_v, mut b) = r.versioned(1, "pg_nls_response_t")?;
    let handle = HObject::decode(&mut b)?;
    let n = b.count(12, "pg_nls_response.entries")?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let ns = b.string("pgnls.nspace")?;
        let oid = b.string("pgnls.oid")?;
        let loc = b.string("pgnls.locator")?;
        v.push((ns, oid, loc));
    }
    Ok((handle, v))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip() {
        let mut m = Message::new(msg_type::OSD_OP, 8, 3, vec![1, 2, 3]);
        m.tid = 99;
        let h = m.encode_header(5, 4);
        let (d, ack) = Message::from_segments(&h, m.front.clone(), Bytes::new(), Bytes::new()).unwrap();
        assert_eq!((d.seq, d.tid, d.ty, d.version, d.compat_version, ack), (5, 99, 42, 8, 3, 4));
    }

    /// MPoolOp v4 field by field in the order of Ceph's
    /// MPoolOp::decode_payload, and MPoolOpReply with and without data.
    #[test]
    fn pool_op_layout_and_reply() {
        let fsid = Fsid([9; 16]);
        let m = pool_op(31, &fsid, 17, 4, pool_op::CREATE_UNMANAGED_SNAP, 0, "");
        assert_eq!((m.ty, m.version, m.compat_version, m.tid), (msg_type::POOLOP, 4, 2, 31));
        let mut r = Reader::new(&m.front);
        assert_eq!(r.u64("version").unwrap(), 17);
        assert_eq!(r.u16("session_mon").unwrap() as i16, -1);
        assert_eq!(r.u64("session_mon_tid").unwrap(), 0);
        assert_eq!(r.array::<16>("fsid").unwrap(), [9; 16]);
        assert_eq!(r.u32("pool").unwrap(), 4);
        assert_eq!(r.u32("op").unwrap(), 0x21);
        assert_eq!(r.u64("auid").unwrap(), 0);
        assert_eq!(r.u64("snapid").unwrap(), 0);
        assert_eq!(r.string("name").unwrap(), "");
        assert_eq!(r.u8("old crush rule").unwrap(), 0);
        assert_eq!(r.u16("crush rule").unwrap(), 0);
        assert!(r.is_empty());

        let reply = |code: i32, data: Option<&[u8]>| {
            let mut f = Vec::new();
            paxos_header(&mut f, 18);
            f.extend_from_slice(&[9; 16]);
            f.put_u32_le(code as u32);
            f.put_u32_le(18);
            if let Some(d) = data {
                f.put_u8(1);
                f.put_blob(d);
            } else {
                f.put_u8(0);
            }
            let mut m = Message::new(msg_type::POOLOP_REPLY, 1, 1, f);
            m.tid = 31;
            m
        };
        let a = decode_pool_op_reply(&reply(0, Some(&5u64.to_le_bytes()))).unwrap();
        assert_eq!((a.tid, a.r, a.epoch), (31, 0, 18));
        assert_eq!(Reader::new(&a.data).u64("snapid").unwrap(), 5);
        let a = decode_pool_op_reply(&reply(-22, None)).unwrap();
        assert_eq!((a.r, a.data.len()), (-22, 0));
        // truncated anywhere: an error, never a panic
        let full = reply(0, Some(&[1, 2, 3])).front;
        for n in 0..full.len() - 4 {
            let mut m = Message::new(msg_type::POOLOP_REPLY, 1, 1, full[..n].to_vec());
            m.tid = 1;
            let r = decode_pool_op_reply(&m);
            // up to the epoch the reply is cut; after it, the optional tail
            assert!(r.is_err() || n >= 8 + 2 + 8 + 16 + 4 + 4, "cut at {n}: {r:?}");
        }
    }

    use crate::proto::conn::FEATURES_PACIFIC;

    fn layout_target() -> OsdOpTarget {
        OsdOpTarget {
            pgid: PgId { pool: 1, seed: 7 },
            hash: 0x6cf8_deff,
            pool: 1,
            oid: "obj1".into(),
            nspace: "ns".into(),
            key: "k".into(),
        }
    }

    fn layout_ops() -> Vec<OsdOp> {
        vec![
            OsdOp::extent(osd_op::WRITE, 4096, 3).with_indata(b"abc".to_vec()),
            OsdOp::xattr(osd_op::SETXATTR, "n", b"v", 0, 0),
            OsdOp::new(osd_op::STAT),
        ]
    }

    fn layout_request<'a>(t: &'a OsdOpTarget, ops: &'a [OsdOp], snaps: &'a [u64]) -> OsdOpRequest<'a> {
        OsdOpRequest {
            tid: 77,
            target: t,
            epoch: 8,
            flags: osd_flag::WRITE | osd_flag::ONDISK | osd_flag::RETRY,
            mtime: UTime { sec: 1_700_000_000, nsec: 5 },
            ops,
            snapid: CEPH_NOSNAP,
            snap_seq: 9,
            snaps,
            retry_attempt: 2,
            features: FEATURES_PACIFIC,
        }
    }

    // The readers below follow Ceph's MOSDOp::decode_payload/finish_decode
    // for each version, field by field, and check every value.

    fn check_pg(r: &mut Reader<'_>, pool: u64, seed: u32) {
        assert_eq!(PgId::decode(r).unwrap(), PgId { pool, seed });
    }
    fn check_eversion_zero(r: &mut Reader<'_>) {
        assert_eq!((r.u64("v").unwrap(), r.u32("e").unwrap()), (0, 0));
    }
    fn check_reqid_empty(r: &mut Reader<'_>) {
        let (v, mut b) = r.versioned(2, "reqid").unwrap();
        assert_eq!(v, 2);
        assert_eq!(b.u8("name.type").unwrap(), 0);
        assert_eq!(b.i64("name.num").unwrap(), 0);
        assert_eq!(b.u64("tid").unwrap(), 0);
        assert_eq!(b.i32("inc").unwrap(), 0);
        assert!(b.is_empty());
    }
    fn check_oloc(r: &mut Reader<'_>, t: &OsdOpTarget) {
        let mut env = *r;
        assert_eq!((env.u8("v").unwrap(), env.u8("c").unwrap()), (6, 3));
        let (_, mut b) = r.versioned(6, "oloc").unwrap();
        assert_eq!(b.i64("pool").unwrap(), t.pool);
        assert_eq!(b.i32("preferred").unwrap(), -1);
        assert_eq!(b.string("key").unwrap(), t.key);
        assert_eq!(b.string("nspace").unwrap(), t.nspace);
        assert_eq!(b.i64("hash").unwrap(), -1);
        assert!(b.is_empty());
    }
    fn check_ops(r: &mut Reader<'_>, ops: &[OsdOp], count_u16: bool) {
        if count_u16 {
            assert_eq!(r.u16("num_ops").unwrap() as usize, ops.len());
        }
        for o in ops {
            assert_eq!(r.u16("op").unwrap(), o.op);
            assert_eq!(r.u32("flags").unwrap(), o.flags);
            assert_eq!(r.take(28, "args").unwrap(), &o.args[..]);
            assert_eq!(r.u32("payload_len").unwrap() as usize, o.indata.len());
        }
    }
    fn check_mtime(r: &mut Reader<'_>, q: &OsdOpRequest<'_>) {
        assert_eq!(UTime::decode(r).unwrap(), q.mtime);
    }
    /// snap, snap_seq, snaps, retry_attempt, features (v6..v9).
    fn check_snaps_tail(r: &mut Reader<'_>, q: &OsdOpRequest<'_>) {
        assert_eq!(r.u64("snap").unwrap(), CEPH_NOSNAP);
        assert_eq!(r.u64("snap_seq").unwrap(), q.snap_seq);
        assert_eq!(r.u32("num_snaps").unwrap() as usize, q.snaps.len());
        for s in q.snaps {
            assert_eq!(r.u64("snap").unwrap(), *s);
        }
        assert_eq!(r.i32("retry_attempt").unwrap(), q.retry_attempt);
        assert_eq!(r.u64("features").unwrap(), q.features);
    }

    fn check_v8_v9(m: &Message, q: &OsdOpRequest<'_>, v9: bool) {
        let t = q.target;
        let mut r = Reader::new(&m.front);
        let (sv, mut spg) = r.versioned(1, "spg_t").unwrap();
        assert_eq!(sv, 1);
        check_pg(&mut spg, 1, 7);
        assert_eq!(spg.u8("shard").unwrap() as i8, -1);
        assert!(spg.is_empty());
        assert_eq!(r.u32("hash").unwrap(), t.hash);
        assert_eq!(r.u32("epoch").unwrap(), q.epoch);
        assert_eq!(r.u32("flags").unwrap(), q.flags);
        check_reqid_empty(&mut r);
        assert_eq!(r.take(24, "blkin trace").unwrap(), &[0u8; 24][..]);
        if v9 {
            // jspan_context without a trace: ENCODE_START(1, 1) + is_valid = false
            assert_eq!(r.take(7, "otel span").unwrap(), &[1, 1, 1, 0, 0, 0, 0][..]);
        }
        // -- finish_decode() from here --
        assert_eq!(r.u32("client_inc").unwrap(), 0);
        check_mtime(&mut r, q);
        check_oloc(&mut r, t);
        assert_eq!(r.string("oid").unwrap(), t.oid);
        check_ops(&mut r, q.ops, true);
        check_snaps_tail(&mut r, q);
        assert!(r.is_empty(), "{} trailing bytes", r.remaining());
    }

    fn check_common(m: &Message, version: u16) {
        assert_eq!((m.ty, m.version, m.compat_version, m.tid, m.priority), (msg_type::OSD_OP, version, 3, 77, 63));
        // input data in op order: the write's bytes, then the xattr name + value
        assert_eq!(&m.data[..], b"abcnv");
    }

    #[test]
    fn osd_op_version_follows_ceph_rule() {
        use feature::*;
        assert_eq!(osd_op_version(FEATURES_PACIFIC), 8);
        // Quincy and Reef add their release bits; the encoding stays v8
        assert_eq!(osd_op_version(FEATURES_PACIFIC | SERVER_QUINCY | SERVER_REEF), 8);
        assert_eq!(osd_op_version(FEATURES_PACIFIC | SERVER_QUINCY | SERVER_REEF | SERVER_SQUID), 9);
        // bit 49 once meant OSD_MIN_SIZE_RECOVERY: without its incarnation marker it is not Squid
        assert_eq!(osd_op_version((FEATURES_PACIFIC | (1 << 49)) & !INCARNATION_2), 7);
        assert_eq!(osd_op_version(FEATURES_PACIFIC & !(1 << 21)), 7);
        assert_eq!(osd_op_version(FEATURES_PACIFIC & !NEW_OSDOP_ENCODING), 6);
        assert_eq!(osd_op_version(FEATURES_PACIFIC & !OBJECTLOCATOR), 1);
        assert_eq!(osd_op_version(0), 1);
        assert_eq!(osd_op_version(u64::MAX), 9);
        // the Pacific set we advertise has neither SERVER_SQUID nor a stray bit 49
        assert!(!has(FEATURES_PACIFIC, SERVER_SQUID) && FEATURES_PACIFIC & (1 << 49) == 0);
    }

    #[test]
    fn osd_op_uses_connection_features() {
        let (t, ops) = (layout_target(), layout_ops());
        let q = layout_request(&t, &ops, &[5, 3]);
        let squid_osd = FEATURES_PACIFIC | feature::SERVER_QUINCY | feature::SERVER_REEF | feature::SERVER_SQUID;
        // we do not claim SERVER_SQUID, so a Squid OSD gets v8 (which it decodes)
        assert_eq!(q.encode(squid_osd).version, 8);
        let both = OsdOpRequest { features: squid_osd, ..q };
        assert_eq!(both.encode(squid_osd).version, 9);
        // the wrapper encodes for a peer like us: v8 for the Pacific set
        let m = osd_op(77, &t, 8, q.flags, q.mtime, &ops, 9, &[5, 3], 2, FEATURES_PACIFIC);
        assert_eq!(m.version, 8);
        assert_eq!(m.front, q.encode(FEATURES_PACIFIC).front);
    }

    #[test]
    fn osd_op_v8_layout() {
        let (t, ops) = (layout_target(), layout_ops());
        let q = layout_request(&t, &ops, &[5, 3]);
        let m = q.encode(FEATURES_PACIFIC);
        check_common(&m, 8);
        check_v8_v9(&m, &q, false);
        // spg_t envelope: v1 c1 len 18 = pg_t(17) + shard(1)
        assert_eq!(&m.front[..6], &[1, 1, 18, 0, 0, 0]);
    }

    #[test]
    fn pg_op_locator_carries_the_hash() {
        let t = OsdOpTarget { oid: String::new(), key: String::new(), hash: 5, pgid: PgId { pool: 1, seed: 5 }, ..layout_target() };
        let ops = [OsdOp::pgls(osd_op::PGNLS, 1024, 8, &HObject { hash: 5, pool: 1, ..HObject::default() })];
        let q = OsdOpRequest { flags: osd_flag::READ | osd_flag::PGOP, ..layout_request(&t, &ops, &[]) };
        let m = q.encode(FEATURES_PACIFIC);
        let mut r = Reader::new(&m.front);
        r.skip_versioned("spg").unwrap();
        r.skip(4 + 4 + 4, "hash epoch flags").unwrap();
        r.skip_versioned("reqid").unwrap();
        r.skip(24 + 4 + 8, "trace client_inc mtime").unwrap();
        let mut env = r;
        assert_eq!((env.u8("v").unwrap(), env.u8("c").unwrap()), (6, 6));
        let (_, mut b) = r.versioned(6, "oloc").unwrap();
        assert_eq!((b.i64("pool").unwrap(), b.i32("pref").unwrap()), (1, -1));
        assert_eq!((b.string("key").unwrap(), b.string("ns").unwrap()), (String::new(), "ns".to_string()));
        assert_eq!(b.i64("hash").unwrap(), 5);
        assert_eq!(r.string("oid").unwrap(), "");
    }

    #[test]
    fn osd_op_v9_layout() {
        let (t, ops) = (layout_target(), layout_ops());
        let all = FEATURES_PACIFIC | feature::SERVER_SQUID;
        let q = OsdOpRequest { features: all, ..layout_request(&t, &ops, &[5, 3]) };
        let m = q.encode(all);
        check_common(&m, 9);
        check_v8_v9(&m, &q, true);
        // exactly the 7 span bytes more than v8
        let v8 = OsdOpRequest { features: FEATURES_PACIFIC, ..q }.encode(FEATURES_PACIFIC);
        assert_eq!(m.front.len(), v8.front.len() + 7);
    }

    #[test]
    fn osd_op_v7_layout() {
        let (t, ops) = (layout_target(), layout_ops());
        let q = layout_request(&t, &ops, &[5, 3]);
        let m = q.encode(FEATURES_PACIFIC & !(1 << 21));
        check_common(&m, 7);
        let mut r = Reader::new(&m.front);
        check_pg(&mut r, 1, t.hash); // the raw pg: full hash as the seed
        assert_eq!(r.u32("epoch").unwrap(), q.epoch);
        assert_eq!(r.u32("flags").unwrap(), q.flags);
        check_eversion_zero(&mut r); // reassert_version
        check_reqid_empty(&mut r);
        // -- finish_decode() --
        assert_eq!(r.u32("client_inc").unwrap(), 0);
        check_mtime(&mut r, &q);
        check_oloc(&mut r, &t);
        assert_eq!(r.string("oid").unwrap(), t.oid);
        check_ops(&mut r, &ops, true);
        check_snaps_tail(&mut r, &q);
        assert!(r.is_empty());
    }

    #[test]
    fn osd_op_v6_layout() {
        let (t, ops) = (layout_target(), layout_ops());
        let q = layout_request(&t, &ops, &[5, 3]);
        let m = q.encode(FEATURES_PACIFIC & !feature::NEW_OSDOP_ENCODING);
        check_common(&m, 6);
        let mut r = Reader::new(&m.front);
        assert_eq!(r.u32("client_inc").unwrap(), 0);
        assert_eq!(r.u32("epoch").unwrap(), q.epoch);
        assert_eq!(r.u32("flags").unwrap(), q.flags);
        check_mtime(&mut r, &q);
        check_eversion_zero(&mut r);
        check_oloc(&mut r, &t);
        check_pg(&mut r, 1, t.hash); // v >= 3: pg_t, not old_pg_t
        assert_eq!(r.string("oid").unwrap(), t.oid);
        check_ops(&mut r, &ops, true);
        check_snaps_tail(&mut r, &q); // v4 retry_attempt, v5 features
        check_reqid_empty(&mut r); // v6
        assert!(r.is_empty());
    }

    #[test]
    fn osd_op_v1_layout() {
        let (t, ops) = (layout_target(), layout_ops());
        let q = layout_request(&t, &ops, &[5, 3]);
        let m = q.encode(FEATURES_PACIFIC & !feature::OBJECTLOCATOR);
        check_common(&m, 1);
        let mut r = Reader::new(&m.front);
        assert_eq!(r.u32("client_inc").unwrap(), 0);
        check_pg(&mut r, 1, t.hash);
        assert_eq!(r.u32("su").unwrap(), 0);
        assert_eq!(r.u32("epoch").unwrap(), q.epoch);
        assert_eq!(r.u32("flags").unwrap(), q.flags);
        check_mtime(&mut r, &q);
        check_eversion_zero(&mut r);
        assert_eq!(r.u32("oid_len").unwrap() as usize, t.oid.len());
        assert_eq!(r.u64("snap").unwrap(), CEPH_NOSNAP);
        assert_eq!(r.u64("snap_seq").unwrap(), q.snap_seq);
        assert_eq!(r.u32("num_snaps").unwrap(), 2);
        check_ops(&mut r, &ops, true);
        assert_eq!(r.take(4, "oid").unwrap(), b"obj1");
        assert_eq!((r.u64("s").unwrap(), r.u64("s").unwrap()), (5, 3));
        assert!(r.is_empty());
    }

    /// An MOSDOpReply front as Ceph's encode_payload writes it for `v`
    /// (v8 and v6 are what OSDs send; the others exercise the rule).
    fn reply_front(v: u16, do_redirect: bool, tail: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.put_str("obj1");
        PgId { pool: 1, seed: 7 }.encode(&mut f);
        f.put_u64_le(0x24); // flags
        f.put_i32_le(0); // result
        f.put_u64_le(41); // bad_replay_version.version
        f.put_u32_le(8);
        f.put_u32_le(9); // osdmap epoch
        f.put_u32_le(2);
        for (op, plen) in [(osd_op::READ, 3u32), (osd_op::STAT, 16)] {
            f.put_u16_le(op);
            f.extend_from_slice(&[0u8; 32]);
            f.put_u32_le(plen);
        }
        if v >= 3 {
            f.put_i32_le(1); // retry_attempt
        }
        if v >= 4 {
            f.put_i32_le(0);
            f.put_i32_le(-2);
        }
        if v >= 5 {
            f.put_u64_le(42);
            f.put_u32_le(8); // replay_version
            f.put_u64_le(43); // user_version
        }
        // request_redirect_t: a locator (pool 2 when redirecting), no
        // object, the legacy u32
        let put_redirect = |f: &mut Vec<u8>| {
            encode_versioned(f, 1, 1, |b| {
                encode_versioned(b, 6, 3, |l| {
                    l.put_i64_le(if do_redirect { 2 } else { -1 });
                    l.put_i32_le(-1);
                    l.put_str("");
                    l.put_str("");
                    l.put_i64_le(-1);
                });
                b.put_str("");
                b.put_u32_le(0);
            });
        };
        if v == 6 {
            put_redirect(&mut f);
        }
        if v >= 7 {
            f.put_bool(do_redirect);
            if do_redirect {
                put_redirect(&mut f);
            }
        }
        if v >= 8 {
            f.extend_from_slice(&[0u8; 24]); // blkin trace
        }
        f.extend_from_slice(tail);
        f
    }

    fn reply_msg(v: u16, compat: u16, front: Vec<u8>) -> Message {
        let mut m = Message::new(msg_type::OSD_OPREPLY, v, compat, front);
        m.tid = 5;
        m.data = Bytes::from_static(b"xyz0123456789abcdef");
        m
    }

    #[test]
    fn osd_op_reply_versions() {
        for v in 2..=8u16 {
            let m = reply_msg(v, 2, reply_front(v, false, b""));
            let r = decode_osd_op_reply(&m).unwrap_or_else(|e| panic!("v{v}: {e}"));
            assert_eq!((r.tid, r.oid.as_str(), r.pgid, r.flags, r.epoch), (5, "obj1", PgId { pool: 1, seed: 7 }, 0x24, 9));
            assert_eq!(r.retry_attempt, if v >= 3 { 1 } else { -1 }, "v{v}");
            assert_eq!(r.user_version, if v >= 5 { 43 } else { 41 }, "v{v}");
            assert!(!r.redirect);
            let ops: Vec<u16> = r.ops.iter().map(|o| o.op).collect();
            assert_eq!(ops, [osd_op::READ, osd_op::STAT]);
            if v >= 4 {
                assert_eq!((r.ops[0].rval, &r.ops[0].outdata[..]), (0, &b"xyz"[..]));
                assert_eq!((r.ops[1].rval, r.ops[1].outdata.len()), (-2, 16));
            }
        }
        for v in [6u16, 7, 8] {
            let r = decode_osd_op_reply(&reply_msg(v, 2, reply_front(v, true, b""))).unwrap();
            assert!(r.redirect, "v{v}");
        }
    }

    #[test]
    fn osd_op_reply_newer_and_older() {
        // a future v9 that keeps compat 2 decodes as v8, its new fields ignored
        let r = decode_osd_op_reply(&reply_msg(9, 2, reply_front(8, false, b"future fields"))).unwrap();
        assert_eq!(r.user_version, 43);
        // a compat version above 8 means we cannot read it: refused, like Ceph
        assert!(decode_osd_op_reply(&reply_msg(10, 9, reply_front(8, false, b""))).is_err());
        // v1 is the packed 2011 head
        assert!(decode_osd_op_reply(&reply_msg(1, 1, reply_front(8, false, b""))).is_err());
        // every truncation fails cleanly
        for v in [2u16, 5, 6, 8] {
            let full = reply_front(v, true, b"");
            for cut in 0..full.len() {
                let m = reply_msg(v, 2, full[..cut].to_vec());
                assert!(decode_osd_op_reply(&m).is_err(), "v{v} cut {cut}");
            }
        }
        // payload lengths beyond the data segment
        let mut m = reply_msg(8, 2, reply_front(8, false, b""));
        m.data = Bytes::from_static(b"ab");
        assert!(decode_osd_op_reply(&m).is_err());
    }

    #[test]
    fn backoff_ack_roundtrip() {
        let b = Backoff {
            pgid: PgId { pool: 1, seed: 3 },
            shard: -1,
            epoch: 9,
            op: backoff_op::BLOCK,
            id: 77,
            begin: HObject::min(),
            end: HObject { max: true, ..HObject::min() },
        };
        let m = backoff_ack(&b);
        let d = decode_backoff(&m).unwrap();
        assert_eq!(d, Backoff { op: backoff_op::ACK_BLOCK, ..b });
    }

    #[test]
    fn hobject_roundtrip() {
        let h = HObject { oid: "x".into(), hash: 5, pool: 3, ..HObject::min() };
        let mut b = Vec::new();
        h.encode(&mut b);
        assert_eq!(HObject::decode(&mut Reader::new(&b)).unwrap(), h);
    }
}
