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
}

pub fn decode_mon_command_ack(m: &Message) -> DResult<MonCommandAck> {
    let mut r = Reader::new(&m.front);
    skip_paxos_header(&mut r)?;
    let rv = r.i32("mon_command_ack.r")?;
    let rs = r.string("mon_command_ack.rs")?;
    Ok(MonCommandAck { tid: m.tid, r: rv, rs, data: m.data.clone() })
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
    pub const CMPEXT: u16 = 0x1220;
    pub const WRITE: u16 = 0x2201;
    pub const WRITEFULL: u16 = 0x2202;
    pub const TRUNCATE: u16 = 0x2203;
    pub const ZERO: u16 = 0x2204;
    pub const DELETE: u16 = 0x2205;
    pub const APPEND: u16 = 0x2206;
    pub const CREATE: u16 = 0x220d;
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

/// MOSDOp, the v8 encoding (Pacific and later decode it; v9 adds nothing
/// a Pacific OSD can read).
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
    let mut f = Vec::with_capacity(160 + ops.len() * 38 + t.oid.len());
    // spg_t
    encode_versioned(&mut f, 1, 1, |b| {
        t.pgid.encode(b);
        b.put_i8(-1); // NO_SHARD
    });
    f.put_u32_le(t.hash);
    f.put_u32_le(epoch);
    f.put_u32_le(flags);
    // osd_reqid_t (empty: the OSD derives it from source + tid)
    encode_versioned(&mut f, 2, 2, |b| {
        b.put_u8(0);
        b.put_i64_le(0);
        b.put_u64_le(0);
        b.put_i32_le(0);
    });
    f.extend_from_slice(&[0u8; 24]); // blkin trace info
    f.put_u32_le(0); // client_inc
    mtime.encode(&mut f);
    // object_locator_t
    encode_versioned(&mut f, 6, 3, |b| {
        b.put_i64_le(t.pool);
        b.put_i32_le(-1);
        b.put_str(&t.key);
        b.put_str(&t.nspace);
        b.put_i64_le(-1);
    });
    f.put_str(&t.oid);
    f.put_u16_le(ops.len() as u16);
    for op in ops {
        op.encode(&mut f);
    }
    // one op with input (the common write): share its buffer, no copy
    let with_data: Vec<&OsdOp> = ops.iter().filter(|o| !o.indata.is_empty()).collect();
    let data = match with_data.as_slice() {
        [] => Bytes::new(),
        [one] => one.indata.clone(),
        many => {
            let mut v = Vec::with_capacity(many.iter().map(|o| o.indata.len()).sum());
            for o in many {
                v.extend_from_slice(&o.indata);
            }
            Bytes::from(v)
        }
    };
    f.put_u64_le(CEPH_NOSNAP);
    f.put_u64_le(snap_seq);
    f.put_u32_le(snaps.len() as u32);
    for s in snaps {
        f.put_u64_le(*s);
    }
    f.put_i32_le(retry_attempt);
    f.put_u64_le(features);
    let mut m = Message::new(msg_type::OSD_OP, 8, 3, f);
    m.tid = tid;
    m.priority = 63; // CEPH_MSG_PRIO_DEFAULT
    m.data = data;
    m
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

pub fn decode_osd_op_reply(m: &Message) -> DResult<OsdOpReply> {
    if m.version < 7 {
        return Err(DecodeError::invalid("osd_op_reply", format!("version {} too old", m.version)));
    }
    let mut r = Reader::new(&m.front);
    let oid = r.string("opreply.oid")?;
    let pgid = PgId::decode(&mut r)?;
    let flags = r.u64("opreply.flags")?;
    let result = r.i32("opreply.result")?;
    r.skip(12, "opreply.bad_replay_version")?;
    let epoch = r.u32("opreply.epoch")?;
    let n = r.count(38, "opreply.ops")?;
    let mut heads = Vec::with_capacity(n);
    for _ in 0..n {
        let op = r.u16("opreply.op")?;
        r.skip(4 + 28, "opreply.op.body")?;
        let plen = r.u32("opreply.op.payload_len")? as usize;
        heads.push((op, plen));
    }
    let retry_attempt = r.i32("opreply.retry_attempt")?;
    let mut ops = Vec::with_capacity(n);
    let mut at = 0usize;
    for (op, plen) in heads {
        let rval = r.i32("opreply.rval")?;
        let end = at.checked_add(plen).filter(|&e| e <= m.data.len()).ok_or_else(|| {
            DecodeError::invalid("osd_op_reply", "op payload lengths exceed the data segment")
        })?;
        ops.push(OpResult { op, rval, outdata: m.data.slice(at..end) });
        at = end;
    }
    r.skip(12, "opreply.replay_version")?;
    let user_version = r.u64("opreply.user_version")?;
    let redirect = r.bool("opreply.do_redirect")?;
    Ok(OsdOpReply { tid: m.tid, oid, pgid, flags, result, epoch, retry_attempt, ops, user_version, redirect })
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

/// PGNLS reply body: (next cursor, entries as (nspace, oid, locator)).
pub fn decode_pgnls_response(data: &[u8]) -> DResult<(HObject, Vec<(String, String, String)>)> {
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

    #[test]
    fn osd_op_layout() {
        let t = OsdOpTarget {
            pgid: PgId { pool: 1, seed: 7 },
            hash: 0x6cf8_deff,
            pool: 1,
            oid: "obj1".into(),
            nspace: String::new(),
            key: String::new(),
        };
        let ops = [OsdOp::extent(osd_op::WRITEFULL, 0, 3).with_indata(b"abc".to_vec())];
        let m = osd_op(1, &t, 8, osd_flag::WRITE | osd_flag::ONDISK, UTime::default(), &ops, 0, &[], 0, 1);
        assert_eq!(&m.data[..], b"abc");
        // spg_t envelope: v1 c1 len 18 = pg_t(17) + shard(1)
        assert_eq!(&m.front[..6], &[1, 1, 18, 0, 0, 0]);
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
