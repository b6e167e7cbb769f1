//! The canonical AQL printer: `parse(&print(q)) == Ok(q)`.

use std::fmt::{self, Write};

use super::ast::*;
use super::lexer::{is_ident_char, is_ident_start};

/// Prints a query in canonical form (upper-case keywords, one space).
pub fn print(q: &Query) -> String {
    let mut s = String::new();
    // Writing to a String cannot fail.
    let _ = write_query(&mut s, q);
    s
}

/// Prints a predicate alone.
pub fn print_predicate(p: &Predicate) -> String {
    let mut s = String::new();
    let _ = pred(&mut s, p, 0);
    s
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}

fn write_query(w: &mut String, q: &Query) -> fmt::Result {
    stmt(w, &q.stmt)?;
    if let Some(t) = q.timeout_ms {
        write!(w, " TIMEOUT {t}")?;
    }
    Ok(())
}

const KEYWORDS: &[&str] = &[
    "GET", "SET", "DELETE", "RANGE", "FILTER", "UPDATE", "BATCH", "HISTORY", "CREATE", "DROP", "COMPACT", "SHOW", "TABLE", "TABLES", "FROM", "TOPIC",
    "PARTITION", "OFFSET", "LIMIT", "WHERE", "AND", "OR", "NOT", "EXISTS", "IN", "AT", "REVISION", "IF", "VERSION", "ABSENT", "TO", "PREFIX",
    "THEN", "ELSE", "TIMEOUT", "MOD_REVISION", "CREATE_REVISION", "VALUE", "TRUE", "FALSE", "NULL",
];

/// A name: bare when it lexes as one identifier that is no keyword, else `"quoted"`.
pub fn name(w: &mut String, n: &str) -> fmt::Result {
    let b = n.as_bytes();
    let bare = b.first().is_some_and(|&c| is_ident_start(c))
        && b.iter().all(|&c| is_ident_char(c))
        && !n.contains("--")
        && !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(n))
        // `x'..'` is a byte string only without a space; still, keep `x` plain-safe.
        ;
    if bare { w.write_str(n) } else { quoted(w, n, '"') }
}

fn quoted(w: &mut String, s: &str, q: char) -> fmt::Result {
    w.write_char(q)?;
    for ch in s.chars() {
        match ch {
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            '\0' => w.write_str("\\0")?,
            c if c == q => {
                w.write_char('\\')?;
                w.write_char(c)?;
            }
            c if c.is_control() => write!(w, "\\u{{{:x}}}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    w.write_char(q)
}

/// A key: `'text'` when UTF-8, else `x'hex'`.
pub fn key(w: &mut String, k: &[u8]) -> fmt::Result {
    match std::str::from_utf8(k) {
        Ok(s) => quoted(w, s, '\''),
        Err(_) => bytes(w, k),
    }
}

fn bytes(w: &mut String, b: &[u8]) -> fmt::Result {
    w.write_str("x'")?;
    for x in b {
        write!(w, "{x:02x}")?;
    }
    w.write_char('\'')
}

pub fn value(w: &mut String, v: &Value) -> fmt::Result {
    match v {
        Value::Text(s) => quoted(w, s, '\''),
        Value::Bytes(b) => bytes(w, b),
        Value::Json(j) => w.write_str(&j.to_string()),
    }
}

fn field(w: &mut String, f: &FieldPath) -> fmt::Result {
    for (i, seg) in f.0.iter().enumerate() {
        if i > 0 {
            w.write_char('.')?;
        }
        // A numeric segment prints bare (it lexes as an integer and parses
        // back to the same digits) only when canonical: `007` would not.
        let canonical_int = seg.parse::<u64>().is_ok_and(|n| n.to_string() == *seg);
        if i > 0 && canonical_int {
            w.write_str(seg)?;
        } else {
            name(w, seg)?;
        }
    }
    Ok(())
}

fn opt(w: &mut String, kw: &str, v: Option<u64>) -> fmt::Result {
    if let Some(v) = v {
        write!(w, " {kw} {v}")?;
    }
    Ok(())
}

fn stmt(w: &mut String, s: &Statement) -> fmt::Result {
    match s {
        Statement::Get { table, key: k, revision } => {
            w.write_str("GET ")?;
            name(w, table)?;
            w.write_char(' ')?;
            key(w, k)?;
            opt(w, "AT REVISION", *revision)
        }
        Statement::Set { table, key: k, value: v, cond } => {
            w.write_str("SET ")?;
            name(w, table)?;
            w.write_char(' ')?;
            key(w, k)?;
            w.write_str(" = ")?;
            value(w, v)?;
            match cond {
                None => Ok(()),
                Some(SetCond::Absent) => w.write_str(" IF ABSENT"),
                Some(SetCond::Version(n)) => write!(w, " IF VERSION = {n}"),
            }
        }
        Statement::Delete { table, key: k, cond } => {
            w.write_str("DELETE ")?;
            name(w, table)?;
            w.write_char(' ')?;
            key(w, k)?;
            match cond {
                None => Ok(()),
                Some(DeleteCond::Exists) => w.write_str(" IF EXISTS"),
                Some(DeleteCond::Version(n)) => write!(w, " IF VERSION = {n}"),
            }
        }
        Statement::Range { table, range, limit, revision } => {
            w.write_str("RANGE ")?;
            name(w, table)?;
            match range {
                KeyRange::From { start, end } => {
                    w.write_str(" FROM ")?;
                    key(w, start)?;
                    if let Some(end) = end {
                        w.write_str(" TO ")?;
                        key(w, end)?;
                    }
                }
                KeyRange::Prefix(p) => {
                    w.write_str(" PREFIX ")?;
                    key(w, p)?;
                }
            }
            opt(w, "LIMIT", *limit)?;
            opt(w, "AT REVISION", *revision)
        }
        Statement::Filter { table, pred: p, limit, offset } => {
            w.write_str("FILTER ")?;
            name(w, table)?;
            w.write_str(" WHERE ")?;
            pred(w, p, 0)?;
            opt(w, "LIMIT", *limit)?;
            opt(w, "OFFSET", *offset)
        }
        Statement::Update { table, assigns, pred: p } => {
            w.write_str("UPDATE ")?;
            name(w, table)?;
            w.write_str(" SET ")?;
            for (i, a) in assigns.iter().enumerate() {
                if i > 0 {
                    w.write_str(", ")?;
                }
                field(w, &a.field)?;
                w.write_str(" = ")?;
                value(w, &a.value)?;
            }
            w.write_str(" WHERE ")?;
            pred(w, p, 0)
        }
        Statement::Batch(b) => {
            w.write_str("BATCH { ")?;
            match b {
                Batch::Plain(ops) => block_body(w, ops)?,
                Batch::Cond { compares, then, otherwise } => {
                    w.write_str("IF ")?;
                    for (i, c) in compares.iter().enumerate() {
                        if i > 0 {
                            w.write_str(" AND ")?;
                        }
                        compare(w, c)?;
                    }
                    w.write_str(" THEN { ")?;
                    block_body(w, then)?;
                    w.write_str(" }")?;
                    if let Some(o) = otherwise {
                        w.write_str(" ELSE { ")?;
                        block_body(w, o)?;
                        w.write_str(" }")?;
                    }
                }
            }
            w.write_str(" }")
        }
        Statement::History { table, key: k, limit } => {
            w.write_str("HISTORY ")?;
            name(w, table)?;
            w.write_char(' ')?;
            key(w, k)?;
            opt(w, "LIMIT", *limit)
        }
        Statement::CreateTable { table, replicas } => {
            w.write_str("CREATE TABLE ")?;
            name(w, table)?;
            opt(w, "REPLICAS", *replicas)
        }
        Statement::DropTable { table } => {
            w.write_str("DROP TABLE ")?;
            name(w, table)
        }
        Statement::Compact { table, revision } => {
            w.write_str("COMPACT ")?;
            name(w, table)?;
            opt(w, "REVISION", *revision)
        }
        Statement::ShowTables => w.write_str("SHOW TABLES"),
        Statement::TopicRead { topic, partition, offset, limit, pred: p } => {
            w.write_str("FROM TOPIC ")?;
            name(w, topic)?;
            if let Some(pt) = partition {
                write!(w, " PARTITION {pt}")?;
            }
            write!(w, " OFFSET {offset}")?;
            opt(w, "LIMIT", *limit)?;
            if let Some(p) = p {
                w.write_str(" WHERE ")?;
                pred(w, p, 0)?;
            }
            Ok(())
        }
    }
}

fn block_body(w: &mut String, ops: &[Statement]) -> fmt::Result {
    for (i, s) in ops.iter().enumerate() {
        if i > 0 {
            w.write_str("; ")?;
        }
        stmt(w, s)?;
    }
    Ok(())
}

fn compare(w: &mut String, c: &Compare) -> fmt::Result {
    w.write_str(c.target.as_str())?;
    w.write_char('(')?;
    name(w, &c.table)?;
    w.write_str(", ")?;
    key(w, &c.key)?;
    write!(w, ") {} ", c.op.as_str())?;
    value(w, &c.value)
}

/// Precedence: OR 1, AND 2, NOT 3, atoms 4. A child is parenthesised when
/// it binds looser than its context requires (`min`).
fn pred(w: &mut String, p: &Predicate, min: u8) -> fmt::Result {
    let prec = match p {
        Predicate::Or(..) => 1,
        Predicate::And(..) => 2,
        Predicate::Not(_) => 3,
        _ => 4,
    };
    let paren = prec < min;
    if paren {
        w.write_char('(')?;
    }
    match p {
        Predicate::Or(a, b) => {
            pred(w, a, 1)?;
            w.write_str(" OR ")?;
            // Parsing is left-associative: a right child of the same
            // operator needs parentheses to stay where it is.
            pred(w, b, 2)?;
        }
        Predicate::And(a, b) => {
            pred(w, a, 2)?;
            w.write_str(" AND ")?;
            pred(w, b, 3)?;
        }
        Predicate::Not(a) => {
            w.write_str("NOT ")?;
            pred(w, a, 3)?;
        }
        Predicate::Exists(f) => {
            w.write_str("EXISTS ")?;
            field(w, f)?;
        }
        Predicate::In { field: f, values } => {
            field(w, f)?;
            w.write_str(" IN (")?;
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    w.write_str(", ")?;
                }
                value(w, v)?;
            }
            w.write_char(')')?;
        }
        Predicate::Cmp { field: f, op, value: v } => {
            field(w, f)?;
            write!(w, " {} ", op.as_str())?;
            value(w, v)?;
        }
    }
    if paren {
        w.write_char(')')?;
    }
    Ok(())
}
