//! Served PVs: `SharedPv` mailboxes (read-only or writable), RPC handlers,
//! and the registry (`Provider`) the server looks names up in.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::proto::nt::{path_mut, time_value};
use crate::proto::value::expand_bits;
use crate::proto::{BitSet, FieldDesc, Value};

/// Maximum monitor queue depth a client may ask for (record._options.queueSize).
pub const QUEUE_SIZE_MAX: usize = 1024;

/// Handler deciding what a put does: gets the PV, the bits the client set
/// and the merged value; returns the value to post (or an error for the client).
pub type PutFuture = std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<Value, String>> + Send>>;
/// Put handler: sees the merged value before it is posted and may change
/// it or refuse the put. Async, so it may wait for storage (a PV backed by
/// a topic answers the put once the record is durable) without blocking
/// the connection's task.
pub type PutHandler = Arc<dyn Fn(&SharedPv, &BitSet, Value) -> PutFuture + Send + Sync>;

/// RPC handler: argument (type, value) to result (type, value).
pub type RpcHandler =
    Arc<dyn Fn(&FieldDesc, &Value) -> std::result::Result<(FieldDesc, Value), String> + Send + Sync>;

/// Process action (CMD_PROCESS, or a put with `record[process=true]`): what
/// "processing the record" means for this PV (a counter increments, a bridge
/// re-reads its source, a service runs). Async like puts; an error string is
/// sent to the client as the operation's status.
pub type ProcessFuture = std::pin::Pin<Box<dyn std::future::Future<Output = std::result::Result<(), String>> + Send>>;
pub type ProcessHandler = Arc<dyn Fn(&SharedPv) -> ProcessFuture + Send + Sync>;

/// Called after every local `post` (not after `post_quiet`): used by the
/// stateless mode to mirror values to Redis.
pub type PostObserver = Arc<dyn Fn(&BitSet, &Value) + Send + Sync>;

/// Called when a client opens (+1) or closes (-1) a channel to a name.
pub type ChannelHook = Arc<dyn Fn(&str, i64) + Send + Sync>;

/// One queued monitor update.
#[derive(Debug, Clone)]
pub struct Update {
    pub changed: BitSet,
    pub overrun: BitSet,
    /// Shared between all subscribers of one post (no per-subscriber copy).
    pub value: Arc<Value>,
}

/// A subscriber's bounded queue. When full, the newest update is squashed
/// into the last one (bits merged, overrun recorded), as pvxs does.
pub struct Subscription {
    q: Mutex<SubQueue>,
    pub notify: Notify,
}

struct SubQueue {
    items: VecDeque<Update>,
    cap: usize,
    closed: bool,
}

impl Subscription {
    fn new(cap: usize) -> Arc<Self> {
        Arc::new(Subscription {
            q: Mutex::new(SubQueue { items: VecDeque::new(), cap: cap.clamp(1, QUEUE_SIZE_MAX), closed: false }),
            notify: Notify::new(),
        })
    }

    fn push(&self, changed: &BitSet, value: &Arc<Value>) {
        {
            let Ok(mut q) = self.q.lock() else { return };
            if q.closed {
                return;
            }
            if q.items.len() >= q.cap {
                if let Some(last) = q.items.back_mut() {
                    for b in changed.iter() {
                        if last.changed.get(b) {
                            last.overrun.set(b);
                        }
                    }
                    last.changed.union_with(changed);
                    last.value = value.clone();
                }
            } else {
                q.items.push_back(Update { changed: changed.clone(), overrun: BitSet::new(), value: value.clone() });
            }
        }
        self.notify.notify_one();
    }

    /// Take the oldest queued update.
    pub fn pop(&self) -> Option<Update> {
        self.q.lock().ok()?.items.pop_front()
    }

    pub fn is_closed(&self) -> bool {
        self.q.lock().map(|q| q.closed).unwrap_or(true)
    }

    fn close(&self) {
        if let Ok(mut q) = self.q.lock() {
            q.closed = true;
        }
        self.notify.notify_one();
    }
}

struct PvState {
    desc: FieldDesc,
    value: Arc<Value>,
    subs: Vec<std::sync::Weak<Subscription>>,
}

struct Inner {
    state: RwLock<PvState>,
    on_put: Option<PutHandler>,
    writable: bool,
    observers: RwLock<Vec<PostObserver>>,
    on_process: RwLock<Option<ProcessHandler>>,
}

/// A PV whose value lives in memory: `post` updates it and notifies every
/// monitor; clients may put to it if it is writable.
#[derive(Clone)]
pub struct SharedPv {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedPv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPv").field("writable", &self.inner.writable).finish()
    }
}

/// Now as an NT time stamp value.
pub fn now_stamp() -> Value {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    time_value(d.as_secs() as i64, d.subsec_nanos() as i32)
}

impl SharedPv {
    fn make(desc: FieldDesc, value: Value, writable: bool, on_put: Option<PutHandler>) -> Self {
        SharedPv {
            inner: Arc::new(Inner {
                state: RwLock::new(PvState { desc, value: Arc::new(value), subs: vec![] }),
                on_put,
                writable,
                observers: RwLock::new(vec![]),
                on_process: RwLock::new(None),
            }),
        }
    }

    /// A PV clients can only read and monitor.
    pub fn read_only(desc: FieldDesc, value: Value) -> Self {
        Self::make(desc, value, false, None)
    }

    /// A PV that accepts puts: the merged value is posted (with a fresh timeStamp if it has one).
    pub fn writable(desc: FieldDesc, value: Value) -> Self {
        Self::make(desc, value, true, None)
    }

    /// A PV whose puts go through `handler`.
    pub fn with_put_handler(desc: FieldDesc, value: Value, handler: PutHandler) -> Self {
        Self::make(desc, value, true, Some(handler))
    }

    pub fn is_writable(&self) -> bool {
        self.inner.writable
    }

    pub fn desc(&self) -> FieldDesc {
        self.inner.state.read().map(|s| s.desc.clone()).unwrap_or(FieldDesc::Any)
    }

    /// Current type and value.
    pub fn current(&self) -> (FieldDesc, Value) {
        match self.inner.state.read() {
            Ok(s) => (s.desc.clone(), (*s.value).clone()),
            Err(_) => (FieldDesc::Any, Value::Any(None)),
        }
    }

    /// Replace the whole value and notify monitors (bit 0 changed).
    pub fn post_value(&self, value: Value) {
        self.post(BitSet::with(&[0]), value);
    }

    /// Set one field (dotted path) and notify monitors with that field's bit.
    pub fn post_field(&self, path: &str, v: Value) -> Result<()> {
        self.post_fields(&[(path, v)])
    }

    /// Set several fields at once (one monitor update).
    pub fn post_fields(&self, fields: &[(&str, Value)]) -> Result<()> {
        let (desc, mut value) = self.current();
        let mut bits = BitSet::new();
        for (path, v) in fields {
            let (_, bit) = desc.lookup(path).ok_or_else(|| Error::Usage(format!("no field {path}")))?;
            let slot = path_mut(&desc, &mut value, path).ok_or_else(|| Error::Usage(format!("no field {path}")))?;
            *slot = v.clone();
            bits.set(bit);
        }
        self.post(bits, value);
        Ok(())
    }

    /// Store a new value and queue an update with `changed` bits to every subscriber.
    pub fn post(&self, changed: BitSet, value: Value) {
        if let Some(v) = self.post_inner(&changed, value, true) {
            let obs = self.inner.observers.read().map(|o| o.clone()).unwrap_or_default();
            for o in obs {
                o(&changed, &v);
            }
        }
    }

    /// Like `post` but without telling observers (for values that came from
    /// the shared store, so they are not written back).
    pub fn post_quiet(&self, changed: BitSet, value: Value) {
        self.post_inner(&changed, value, false);
    }

    fn post_inner(&self, changed: &BitSet, value: Value, want_copy: bool) -> Option<Arc<Value>> {
        let Ok(mut s) = self.inner.state.write() else { return None };
        let expanded = expand_bits(&s.desc, changed);
        s.value = Arc::new(value);
        s.subs.retain(|w| w.strong_count() > 0);
        for sub in s.subs.iter().filter_map(|w| w.upgrade()) {
            sub.push(&expanded, &s.value);
        }
        want_copy.then(|| s.value.clone())
    }

    /// Run `f` on the current type and value without copying the value.
    pub fn with_current<R>(&self, f: impl FnOnce(&FieldDesc, &Value) -> R) -> Option<R> {
        let s = self.inner.state.read().ok()?;
        Some(f(&s.desc, &s.value))
    }

    /// Give the PV a process action (replaces any earlier one). Without one,
    /// PROCESS is answered OK and does nothing, as pvAccessCPP and pvxs do.
    pub fn set_process_handler(&self, h: ProcessHandler) {
        if let Ok(mut p) = self.inner.on_process.write() {
            *p = Some(h);
        }
    }

    pub fn has_process_handler(&self) -> bool {
        self.inner.on_process.read().map(|p| p.is_some()).unwrap_or(false)
    }

    /// Run the process action, if any.
    pub async fn process(&self) -> std::result::Result<(), String> {
        let h = self.inner.on_process.read().ok().and_then(|p| p.clone());
        match h {
            Some(h) => h(self).await,
            None => Ok(()),
        }
    }

    /// Register a post observer.
    pub fn observe(&self, f: PostObserver) {
        if let Ok(mut o) = self.inner.observers.write() {
            o.push(f);
        }
    }

    /// Subscribe: the first queued update is the whole current value.
    pub fn subscribe(&self, queue_size: usize) -> Arc<Subscription> {
        let sub = Subscription::new(queue_size);
        if let Ok(mut s) = self.inner.state.write() {
            let all = expand_bits(&s.desc, &BitSet::with(&[0]));
            sub.push(&all, &s.value);
            s.subs.push(Arc::downgrade(&sub));
        }
        sub
    }

    pub fn unsubscribe(&self, sub: &Arc<Subscription>) {
        sub.close();
        if let Ok(mut s) = self.inner.state.write() {
            s.subs.retain(|w| w.upgrade().is_some_and(|x| !Arc::ptr_eq(&x, sub)));
        }
    }

    /// Apply a client's put (already merged into a copy of the current value).
    pub async fn put(&self, bits: &BitSet, merged: Value) -> std::result::Result<(), String> {
        if !self.inner.writable {
            return Err("PV is read-only".into());
        }
        let (desc, _) = self.current();
        let mut bits = bits.clone();
        let mut v = match &self.inner.on_put {
            Some(h) => h(self, &bits, merged).await?,
            None => merged,
        };
        if let Some((_, bit)) = desc.lookup("timeStamp") {
            if let Some(slot) = path_mut(&desc, &mut v, "timeStamp") {
                *slot = now_stamp();
                bits.set(bit);
            }
        }
        self.post(bits, v);
        Ok(())
    }
}

/// What a name resolves to.
#[derive(Clone)]
pub enum Entry {
    Pv(SharedPv),
    Rpc(RpcHandler),
}

/// Registry of served names. Cheap to clone; changes are seen by running servers.
#[derive(Clone, Default)]
pub struct Provider {
    names: Arc<RwLock<HashMap<String, Entry>>>,
    channel_hook: Arc<RwLock<Option<ChannelHook>>>,
    /// Bumped when names are added or removed: the beacons' change count,
    /// so clients search again for channels that may now exist.
    generation: Arc<std::sync::atomic::AtomicU64>,
}

impl Provider {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_pv(&self, name: &str, pv: SharedPv) {
        if let Ok(mut m) = self.names.write() {
            m.insert(name.to_string(), Entry::Pv(pv));
        }
        self.bump();
    }

    pub fn add_rpc(&self, name: &str, h: RpcHandler) {
        if let Ok(mut m) = self.names.write() {
            m.insert(name.to_string(), Entry::Rpc(h));
        }
        self.bump();
    }

    pub fn remove(&self, name: &str) -> bool {
        let removed = self.names.write().map(|mut m| m.remove(name).is_some()).unwrap_or(false);
        if removed {
            self.bump();
        }
        removed
    }

    fn bump(&self) {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Changes to the served names so far (wraps; beacons carry the low 16 bits).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn get(&self, name: &str) -> Option<Entry> {
        self.names.read().ok()?.get(name).cloned()
    }

    pub fn has(&self, name: &str) -> bool {
        self.names.read().map(|m| m.contains_key(name)).unwrap_or(false)
    }

    /// Be told about channels opened/closed by clients (stateless mode).
    pub fn set_channel_hook(&self, h: ChannelHook) {
        if let Ok(mut x) = self.channel_hook.write() {
            *x = Some(h);
        }
    }

    pub(crate) fn channel_event(&self, name: &str, delta: i64) {
        let h = self.channel_hook.read().ok().and_then(|h| h.clone());
        if let Some(h) = h {
            h(name, delta);
        }
    }

    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.read().map(|m| m.keys().cloned().collect()).unwrap_or_default();
        v.sort();
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::proto::ScalarType;
    use crate::proto::nt::{Builder, Meta, nt_scalar};

    #[test]
    fn queue_squashes_when_full() {
        let (d, v) = Builder::new(nt_scalar(ScalarType::F64, Meta::default())).build();
        let pv = SharedPv::writable(d, v);
        let sub = pv.subscribe(2);
        for i in 0..5 {
            pv.post_field("value", Value::F64(i as f64)).unwrap();
        }
        let first = sub.pop().unwrap();
        assert!(first.changed.get(0));
        let second = sub.pop().unwrap();
        assert!(second.overrun.get(1));
        assert_eq!(second.value.field(0), Some(&Value::F64(4.0)));
        assert!(sub.pop().is_none());
    }
}
