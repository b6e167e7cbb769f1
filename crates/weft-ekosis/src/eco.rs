//! ekosis' standard `eco.*` endpoints, answered from weft-queue's manager and
//! keepers, with ekosis' field order and message texts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use weft_queue::{PauseWhat, QueueInfo, QueuedEndpoint, QueuedSender, Snapshot, WorkQueue};

use crate::proto::{status, write_json_string, Request, SpanKey};
use crate::server::{Answer, Shared};

/// Runtime settings ekosis lets clients change. Weft's log filter is owned by
/// the binary; these are kept and reported so the ekosis tools work.
pub(crate) struct EcoState {
    log_level: Mutex<String>,
    log_buffer: AtomicU64,
}

impl Default for EcoState {
    fn default() -> Self {
        Self { log_level: Mutex::new("info".into()), log_buffer: AtomicU64::new(0) }
    }
}

/// A JSON object that keeps insertion order (ekosis' dicts do).
#[derive(Debug, Clone, Default)]
pub struct Obj(Vec<(String, Node)>);

#[derive(Debug, Clone)]
pub enum Node {
    Val(Value),
    Obj(Obj),
    List(Vec<Node>),
}

impl Obj {
    pub fn new() -> Self {
        Self(vec![])
    }
    pub fn with(mut self, k: &str, v: impl Into<Node>) -> Self {
        self.set(k, v.into());
        self
    }
    pub fn set(&mut self, k: &str, v: Node) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_owned(), v)),
        }
    }
    /// Insert at a dotted path (`a.b.c`), creating objects on the way.
    pub fn set_path(&mut self, path: &str, v: Node) {
        let mut parts = path.split('.').peekable();
        let mut cur = self;
        while let Some(p) = parts.next() {
            if parts.peek().is_none() {
                cur.set(p, v);
                return;
            }
            let idx = match cur.0.iter().position(|(k, n)| k == p && matches!(n, Node::Obj(_))) {
                Some(i) => i,
                None => {
                    cur.set(p, Node::Obj(Obj::new()));
                    match cur.0.iter().position(|(k, _)| k == p) {
                        Some(i) => i,
                        None => return,
                    }
                }
            };
            cur = match cur.0.get_mut(idx) {
                Some((_, Node::Obj(o))) => o,
                _ => return,
            };
        }
    }
    pub fn write(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_json_string(k, out);
            out.push(b':');
            v.write(out);
        }
        out.push(b'}');
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![];
        self.write(&mut out);
        out
    }
}

impl Node {
    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            Node::Val(v) => {
                if serde_json::to_writer(&mut *out, v).is_err() {
                    out.extend_from_slice(b"null");
                }
            }
            Node::Obj(o) => o.write(out),
            Node::List(items) => {
                out.push(b'[');
                for (i, x) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    x.write(out);
                }
                out.push(b']');
            }
        }
    }
}

impl From<Obj> for Node {
    fn from(o: Obj) -> Self {
        Node::Obj(o)
    }
}
impl From<Value> for Node {
    fn from(v: Value) -> Self {
        Node::Val(v)
    }
}
impl From<&str> for Node {
    fn from(v: &str) -> Self {
        Node::Val(Value::from(v))
    }
}
impl From<String> for Node {
    fn from(v: String) -> Self {
        Node::Val(Value::from(v))
    }
}
impl From<bool> for Node {
    fn from(v: bool) -> Self {
        Node::Val(Value::from(v))
    }
}
impl From<u64> for Node {
    fn from(v: u64) -> Self {
        Node::Val(Value::from(v))
    }
}
impl From<f64> for Node {
    fn from(v: f64) -> Self {
        Node::Val(Value::from(v))
    }
}

fn field_missing(model: &str, field: &str, data: &Value) -> Answer {
    let text = serde_json::to_string(data).unwrap_or_default();
    Answer::error(
        status::PYDANTIC_VALIDATION_ERROR,
        &format!(
            "1 validation error for {model}\n{field}\n  Field required [type=missing, input_value={}, input_type={}]\n    For further information visit https://errors.pydantic.dev/2.14/v/missing",
            crate::proto::python_repr_text(&text),
            crate::proto::python_type(data)
        ),
    )
}

fn str_field<'a>(data: &'a Value, field: &str) -> Option<&'a str> {
    data.get(field).and_then(Value::as_str)
}

/// The statistics object of one snapshot, shaped as ekosis' `Statistics`.
pub fn statistics(snap: &Snapshot, app: &crate::server::AppInfo) -> Obj {
    let mut endpoint_data = Obj::new();
    for (route, e) in &snap.endpoints {
        let leaf = Obj::new().with("call_count", e.call_count).with("p95", e.p95).with("p99", e.p99);
        endpoint_data.set_path(route, leaf.into());
    }
    let mut ep_sizes = Obj::new();
    let mut sender_sizes = Obj::new();
    for (k, v) in &snap.values {
        for (prefix, target) in [("queue.", &mut ep_sizes), ("sender.", &mut sender_sizes)] {
            let Some(rest) = k.strip_prefix(prefix) else { continue };
            for (suffix, field) in [(".incoming", "pending"), (".errors", "error")] {
                if let Some(name) = rest.strip_suffix(suffix) {
                    let path = format!("{name}.{field}");
                    target.set_path(&path, Node::Val(v.clone()));
                }
            }
        }
    }
    Obj::new()
        .with("endpoint_data", endpoint_data)
        .with("timestamp", snap.timestamp)
        .with("uptime", snap.uptime)
        .with("gather_period", snap.gather_period)
        .with("application", Obj::new().with("name", app.name.as_str()).with("instance", app.instance.as_str()))
        .with("buffered_endpoint_sizes", ep_sizes)
        .with("buffered_sender_sizes", sender_sizes)
}

fn handler_info(ep: &QueuedEndpoint) -> Obj {
    let i = ep.queue().info();
    Obj::new()
        .with("route_key", ep.route())
        .with("receiving_paused", i.accepting_paused)
        .with("processing_paused", i.processing_paused)
        .with("database_sizes", sizes(&i))
}

fn sender_info(s: &QueuedSender) -> Obj {
    let i = s.info();
    Obj::new().with("route_key", s.route()).with("send_process_paused", i.processing_paused).with("database_sizes", sizes(&i))
}

fn sizes(i: &QueueInfo) -> Obj {
    Obj::new().with("pending", i.incoming as u64).with("error", i.errors as u64)
}

fn q_answer(queue_data: Node, request_data: Node, message: String) -> Answer {
    Answer::ok(Obj::new().with("queue_data", queue_data).with("request_data", request_data).with("message", message).to_bytes())
}

fn null() -> Node {
    Node::Val(Value::Null)
}

fn span_key_of(data: &Value) -> Result<SpanKey, Answer> {
    match data.get("span_key") {
        None => Err(field_missing("BufferedEndpointRequestDto", "span_key", data)),
        Some(v) => SpanKey::from_json(v).map_err(|e| Answer::error(status::PYDANTIC_VALIDATION_ERROR, &format!("1 validation error for SpanKey\n{e}"))),
    }
}

/// Answer an `eco.*` request, or None when the route is not one.
pub(crate) async fn handle(shared: &Arc<Shared>, req: &Request) -> Option<Answer> {
    let route = req.route_key.as_str();
    let data = &req.data;
    Some(match route {
        "eco.statistics.get" => {
            let Some(kind) = str_field(data, "type") else { return Some(field_missing("StatisticsRequestDto", "type", data)) };
            let stats = shared.manager.stats();
            let body = match kind {
                "current" => Node::Obj(statistics(&stats.current(), &shared.config.app)),
                "full" => Node::List(stats.full().iter().map(|s| Node::Obj(statistics(s, &shared.config.app))).collect()),
                _ => match stats.gathered() {
                    Some(s) => Node::Obj(statistics(&s, &shared.config.app)),
                    None => Node::Obj(Obj::new()),
                },
            };
            Answer::ok(Obj::new().with("statistics", body).to_bytes())
        }
        "eco.error_states.get" => error_states(shared),
        "eco.error_states.clear" => {
            let Some(id) = str_field(data, "error_id") else { return Some(field_missing("ClearErrorStateRequestDto", "error_id", data)) };
            let count = data.get("count").and_then(Value::as_u64).unwrap_or(0);
            shared.manager.errors().clear(id, count);
            error_states(shared)
        }
        "eco.log.level" => {
            let Some(level) = str_field(data, "level") else { return Some(field_missing("LogLevelDto", "level", data)) };
            if !["debug", "info", "warn", "error", "critical"].contains(&level) {
                return Some(Answer::error(status::PYDANTIC_VALIDATION_ERROR, &format!("1 validation error for LogLevelDto\nlevel\n  Input should be 'debug', 'info', 'warn', 'error' or 'critical' [type=enum, input_value='{level}', input_type=str]")));
            }
            *shared.eco.log_level.lock().unwrap_or_else(|p| p.into_inner()) = level.to_owned();
            Answer::ok(Obj::new().with("level", level).to_bytes())
        }
        "eco.log.buffer" => {
            let Some(size) = data.get("size").and_then(Value::as_u64) else { return Some(field_missing("LogBufferSizeDto", "size", data)) };
            shared.eco.log_buffer.store(size, Ordering::Relaxed);
            Answer::ok(Obj::new().with("size", size).to_bytes())
        }
        r if r.starts_with("eco.buffered_handler.") => buffered_handler(shared, r.trim_start_matches("eco.buffered_handler."), data).await?,
        r if r.starts_with("eco.buffered_sender.") => buffered_sender(shared, r.trim_start_matches("eco.buffered_sender."), data).await?,
        _ => return None,
    })
}

fn error_states(shared: &Shared) -> Answer {
    let list: Vec<Node> = shared
        .manager
        .errors()
        .list()
        .into_iter()
        .map(|e| Node::Obj(Obj::new().with("error_id", e.error_id).with("description", e.description).with("count", e.count)))
        .collect();
    Answer::ok(Obj::new().with("errors", Node::List(list)).to_bytes())
}

async fn buffered_handler(shared: &Shared, op: &str, data: &Value) -> Option<Answer> {
    const OPS: &[&str] = &[
        "data", "receiving.pause", "receiving.unpause", "processing.pause", "processing.unpause", "all.pause", "all.unpause",
        "errors.get_first_10", "errors.reprocess.all", "errors.clear", "errors.reprocess.one", "errors.pop_request", "errors.inspect_request",
    ];
    if !OPS.contains(&op) {
        return None;
    }
    let Some(rk) = str_field(data, "queue_route_key") else { return Some(field_missing("BufferedEndpointRequestDto", "queue_route_key", data)) };
    let Some(ep) = shared.manager.endpoint(rk) else {
        return Some(q_answer(null(), null(), format!("No queue for route key: [{rk}]")));
    };
    let q = ep.queue().clone();
    let tag = format!("Buffered Endpoint[{rk}]");
    let info = |ep: &QueuedEndpoint| Node::Obj(handler_info(ep));
    let simple = |what: &str| format!("{tag}: {what}");
    Some(match op {
        "data" => q_answer(info(&ep), null(), simple("Data retrieved.")),
        "receiving.pause" | "processing.pause" | "all.pause" | "receiving.unpause" | "processing.unpause" | "all.unpause" => {
            let (which, action) = op.split_once('.').unwrap_or((op, ""));
            let (what, label) = match which {
                "receiving" => (PauseWhat::Accepting, "RECEIVING"),
                "processing" => (PauseWhat::Processing, "PROCESSING"),
                _ => (PauseWhat::All, "ALL"),
            };
            if action == "pause" {
                q.pause(what);
                q_answer(info(&ep), null(), simple(&format!("Paused {label}.")))
            } else {
                q.resume(what);
                q_answer(info(&ep), null(), simple(&format!("UN-Paused {label}.")))
            }
        }
        _ => {
            let miss = format!("No request with span-key [{{}}] in error queue for route key: [{rk}]");
            error_queue_op(&q, op, data, || info(&ep), &tag, "incoming", &miss).await
        }
    })
}

fn find_sender(shared: &Shared, rk: &str) -> Option<Arc<QueuedSender>> {
    shared.manager.sender(rk).or_else(|| shared.manager.senders().into_iter().find(|s| s.route() == rk))
}

async fn buffered_sender(shared: &Shared, op: &str, data: &Value) -> Option<Answer> {
    const OPS: &[&str] = &[
        "data", "send_process.pause", "send_process.unpause", "errors.get_first_10", "errors.reprocess.all", "errors.clear",
        "errors.reprocess.one", "errors.pop_request", "errors.inspect_request",
    ];
    if !OPS.contains(&op) {
        return None;
    }
    let Some(rk) = str_field(data, "queue_route_key") else { return Some(field_missing("BufferedSenderRequestDto", "queue_route_key", data)) };
    let Some(s) = find_sender(shared, rk) else {
        return Some(q_answer(null(), null(), format!("No buffered sender with route key: [{rk}]")));
    };
    let q = s.queue().clone();
    let tag = format!("Buffered Sender[{rk}]");
    let info = |s: &QueuedSender| Node::Obj(sender_info(s));
    let simple = |what: &str| format!("{tag}: {what}");
    Some(match op {
        "data" => q_answer(info(&s), null(), simple("Data retrieved.")),
        "send_process.pause" => {
            q.pause(PauseWhat::Processing);
            q_answer(info(&s), null(), simple("Paused SEND PROCESS."))
        }
        "send_process.unpause" => {
            q.resume(PauseWhat::Processing);
            q_answer(info(&s), null(), simple("UN-Paused SEND PROCESS."))
        }
        _ => {
            let miss = format!("No request with span-key [{{}}] in buffered sender error database, for route key: [{rk}]");
            error_queue_op(&q, op, data, || info(&s), &tag, "Retry", &miss).await
        }
    })
}

/// The `errors.*` operations, alike for buffered endpoints and senders but
/// for where a reprocessed entry goes (`moved_to`) and how a miss is worded
/// (`miss`, with `{}` for the span key). `info` is taken after the
/// operation, so it shows the queue sizes it left.
async fn error_queue_op(q: &WorkQueue, op: &str, data: &Value, info: impl Fn() -> Node, tag: &str, moved_to: &str, miss: &str) -> Answer {
    let simple = |what: &str| format!("{tag}: {what}");
    match op {
        "errors.get_first_10" => {
            let uids = q.first_errors(10).into_iter().map(|u| Node::Val(Value::from(u))).collect();
            q_answer(Node::List(uids), null(), simple("Retrieved first 10 span-keys for error database."))
        }
        "errors.reprocess.all" => match q.reprocess_all().await {
            Ok(_) => q_answer(info(), null(), simple(&format!("Error database entries, moved to {moved_to} database."))),
            Err(e) => Answer::error(status::UNHANDLED, &e.to_string()),
        },
        "errors.clear" => match q.clear_errors().await {
            Ok(_) => q_answer(info(), null(), simple("Error database cleared.")),
            Err(e) => Answer::error(status::UNHANDLED, &e.to_string()),
        },
        _ => {
            let sk = match span_key_of(data) {
                Ok(sk) => sk,
                Err(a) => return a,
            };
            let uid = sk.to_string();
            let result = match op {
                "errors.reprocess.one" => q.reprocess(&uid).await.map(|v| (v, format!("Error database entry[{uid}] moved to {moved_to} database."))),
                "errors.pop_request" => q.pop_error(&uid).await.map(|v| (v, format!("POPPED Error database entry[{uid}]."))),
                _ => Ok((q.inspect(&uid).filter(|v| v.queue == weft_queue::store::Which::Error), format!("INSPECTING Error database entry[{uid}]."))),
            };
            match result {
                Ok((Some(view), msg)) => q_answer(info(), Node::Val(view.request), simple(&msg)),
                Ok((None, _)) => q_answer(info(), null(), miss.replacen("{}", &uid, 1)),
                Err(e) => Answer::error(status::UNHANDLED, &e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_paths() {
        let mut o = Obj::new();
        o.set_path("dice_roller.roll", Obj::new().with("call_count", 1u64).into());
        o.set_path("echo", Obj::new().with("call_count", 2u64).into());
        o.set_path("dice_roller.guess", Obj::new().with("p95", -1.0).into());
        assert_eq!(
            String::from_utf8(o.to_bytes()).unwrap(),
            r#"{"dice_roller":{"roll":{"call_count":1},"guess":{"p95":-1.0}},"echo":{"call_count":2}}"#
        );
    }
}
