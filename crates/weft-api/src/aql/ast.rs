//! The AQL syntax tree. `parse(print(q)) == q` for every tree the printer
//! accepts (see `print.rs` and the round-trip property test).

use serde_json::Value as Json;

/// One query: a statement and an optional per-query timeout (`TIMEOUT ms`).
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub stmt: Statement,
    pub timeout_ms: Option<u64>,
}

/// A key: bytes. Written `'text'` (UTF-8) or `x'hex'`.
pub type Key = Vec<u8>;

#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    Get { table: String, key: Key, revision: Option<u64> },
    Set { table: String, key: Key, value: Value, cond: Option<SetCond> },
    Delete { table: String, key: Key, cond: Option<DeleteCond> },
    Range { table: String, range: KeyRange, limit: Option<u64>, revision: Option<u64> },
    Filter { table: String, pred: Predicate, limit: Option<u64>, offset: Option<u64> },
    Update { table: String, assigns: Vec<Assign>, pred: Predicate },
    Batch(Batch),
    History { table: String, key: Key, limit: Option<u64> },
    /// `replicas`: cluster mode's raft replicas (None: the default).
    CreateTable { table: String, replicas: Option<u64> },
    DropTable { table: String },
    /// `COMPACT t [REVISION r]`: drop the history below `r` (None: the
    /// table's current revision when the statement runs).
    Compact { table: String, revision: Option<u64> },
    ShowTables,
    TopicRead { topic: String, partition: Option<u32>, offset: u64, limit: Option<u64>, pred: Option<Predicate> },
}

impl Statement {
    /// The statement's kind, for metrics and logs (`get`, `set`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Statement::Get { .. } => "get",
            Statement::Set { .. } => "set",
            Statement::Delete { .. } => "delete",
            Statement::Range { .. } => "range",
            Statement::Filter { .. } => "filter",
            Statement::Update { .. } => "update",
            Statement::Batch(_) => "batch",
            Statement::History { .. } => "history",
            Statement::CreateTable { .. } => "create_table",
            Statement::DropTable { .. } => "drop_table",
            Statement::Compact { .. } => "compact",
            Statement::ShowTables => "show_tables",
            Statement::TopicRead { .. } => "topic_read",
        }
    }
}

/// A value to store or compare with.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `'text'`: stored as its UTF-8 bytes; compares as a JSON string.
    Text(String),
    /// `x'00ff'`: raw bytes.
    Bytes(Vec<u8>),
    /// A JSON literal: `1`, `-2.5`, `true`, `null`, `"s"`, `[..]`, `{..}`.
    Json(Json),
}

impl Value {
    /// The value as JSON, for comparisons with JSON fields: text is a JSON
    /// string; bytes are a JSON string when they are UTF-8, else `None`.
    pub fn as_json(&self) -> Option<Json> {
        match self {
            Value::Text(s) => Some(Json::String(s.clone())),
            Value::Bytes(b) => std::str::from_utf8(b).ok().map(|s| Json::String(s.to_owned())),
            Value::Json(j) => Some(j.clone()),
        }
    }

    /// The bytes stored for this value: text and bytes as they are, JSON
    /// serialized compactly.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Value::Text(s) => s.as_bytes().to_vec(),
            Value::Bytes(b) => b.clone(),
            Value::Json(j) => j.to_string().into_bytes(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetCond {
    /// `IF VERSION = n`: the key's version must be n (0 = absent).
    Version(u64),
    /// `IF ABSENT`: the key must not exist.
    Absent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteCond {
    Version(u64),
    /// `IF EXISTS`: the key must exist (else FAILED_PRECONDITION rather than a no-op).
    Exists,
}

#[derive(Debug, Clone, PartialEq)]
pub enum KeyRange {
    /// `FROM 'a' [TO 'm']`: start inclusive, end exclusive; no end = to the last key.
    From { start: Key, end: Option<Key> },
    /// `PREFIX 'user/'`.
    Prefix(Key),
}

/// A dotted path into a JSON document: `a.b.0.c` (a numeric segment also
/// indexes arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath(pub Vec<String>);

#[derive(Debug, Clone, PartialEq)]
pub struct Assign {
    pub field: FieldPath,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Applies the operator to an ordering.
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    Cmp { field: FieldPath, op: CmpOp, value: Value },
    Exists(FieldPath),
    In { field: FieldPath, values: Vec<Value> },
    Not(Box<Predicate>),
    And(Box<Predicate>, Box<Predicate>),
    Or(Box<Predicate>, Box<Predicate>),
}

/// `BATCH { ... }`: atomic, as etcd's Txn.
#[derive(Debug, Clone, PartialEq)]
pub enum Batch {
    /// `BATCH { op; op }`: all or nothing, no compares.
    Plain(Vec<Statement>),
    /// `BATCH { IF c AND c THEN { ops } [ELSE { ops }] }`.
    Cond { compares: Vec<Compare>, then: Vec<Statement>, otherwise: Option<Vec<Statement>> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareTarget {
    Version,
    CreateRevision,
    ModRevision,
    Value,
}

impl CompareTarget {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareTarget::Version => "VERSION",
            CompareTarget::CreateRevision => "CREATE_REVISION",
            CompareTarget::ModRevision => "MOD_REVISION",
            CompareTarget::Value => "VALUE",
        }
    }
}

/// `VERSION(t, 'k') = 3`, `VALUE(t, 'k') = 'on'`.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare {
    pub table: String,
    pub key: Key,
    pub target: CompareTarget,
    pub op: CmpOp,
    /// For VERSION / CREATE_REVISION / MOD_REVISION a JSON unsigned integer.
    pub value: Value,
}
