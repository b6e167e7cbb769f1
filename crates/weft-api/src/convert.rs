//! Protobuf statements (`weft.query.v1.Statement`) to the AQL tree, with
//! typed errors naming the offending field. Untrusted input: every list is
//! bounded by the decoded message (prost's own recursion limit bounds
//! nesting), and predicates get the parser's depth and size limits.

use crate::aql::{self, ast};
use crate::pb;

/// A structured query that does not make a valid statement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConvertError {
    /// Path of the offending field (`statement.batch.then[1].set.value`).
    pub field: String,
    pub message: String,
    /// For a predicate given as AQL text: the syntax error.
    pub parse: Option<aql::ParseError>,
}

fn err(field: &str, message: impl Into<String>) -> ConvertError {
    ConvertError { field: field.to_owned(), message: message.into(), parse: None }
}

/// Converts an ExecuteRequest's query (AQL text or a statement) into a query.
pub fn request_query(req: &pb::ExecuteRequest) -> Result<ast::Query, crate::Error> {
    let mut q = match &req.query {
        Some(pb::execute_request::Query::Aql(text)) => parse_aql(text)?,
        Some(pb::execute_request::Query::Statement(s)) => ast::Query { stmt: statement(s, "statement", false)?, timeout_ms: None },
        None => return Err(err("query", "set aql or statement").into()),
    };
    if req.timeout_ms > 0 {
        q.timeout_ms = Some(q.timeout_ms.map_or(req.timeout_ms, |t| t.min(req.timeout_ms)));
    }
    Ok(q)
}

/// Parses AQL text within the size limit.
pub fn parse_aql(text: &str) -> Result<ast::Query, crate::Error> {
    Ok(aql::parse(text)?)
}

/// Converts a pre-parsed statement.
pub fn statement(s: &pb::Statement, at: &str, in_batch: bool) -> Result<ast::Statement, ConvertError> {
    use pb::statement::Kind;
    let Some(kind) = &s.kind else { return Err(err(at, "no statement kind set")) };
    let st = match kind {
        Kind::Get(g) => ast::Statement::Get { table: name(&g.table, &format!("{at}.get.table"))?, key: g.key.clone(), revision: g.revision },
        Kind::Set(m) => {
            let at = format!("{at}.set");
            let cond = match m.cond {
                None => None,
                Some(pb::set::Cond::IfVersion(n)) => Some(ast::SetCond::Version(n)),
                Some(pb::set::Cond::IfAbsent(true)) => Some(ast::SetCond::Absent),
                Some(pb::set::Cond::IfAbsent(false)) => None,
            };
            if in_batch && cond.is_some() {
                return Err(err(&format!("{at}.cond"), "a statement inside a batch takes no condition: use the batch's compares"));
            }
            ast::Statement::Set {
                table: name(&m.table, &format!("{at}.table"))?,
                key: m.key.clone(),
                value: value(m.value.as_ref(), &format!("{at}.value"))?,
                cond,
            }
        }
        Kind::Delete(d) => {
            let at = format!("{at}.delete");
            let cond = match d.cond {
                None => None,
                Some(pb::delete::Cond::IfVersion(n)) => Some(ast::DeleteCond::Version(n)),
                Some(pb::delete::Cond::IfExists(true)) => Some(ast::DeleteCond::Exists),
                Some(pb::delete::Cond::IfExists(false)) => None,
            };
            if in_batch && cond.is_some() {
                return Err(err(&format!("{at}.cond"), "a statement inside a batch takes no condition: use the batch's compares"));
            }
            ast::Statement::Delete { table: name(&d.table, &format!("{at}.table"))?, key: d.key.clone(), cond }
        }
        Kind::Range(r) => {
            let at = format!("{at}.range");
            let range = match &r.range {
                Some(pb::range::Range::From(f)) => ast::KeyRange::From { start: f.start.clone(), end: f.end.clone() },
                Some(pb::range::Range::Prefix(p)) => ast::KeyRange::Prefix(p.clone()),
                None => return Err(err(&format!("{at}.range"), "set from or prefix")),
            };
            ast::Statement::Range { table: name(&r.table, &format!("{at}.table"))?, range, limit: r.limit, revision: r.revision }
        }
        _ if in_batch => return Err(err(at, "only get, set, delete and range may appear inside a batch")),
        Kind::Filter(f) => {
            let at = format!("{at}.filter");
            ast::Statement::Filter {
                table: name(&f.table, &format!("{at}.table"))?,
                pred: predicate_root(f.r#where.as_ref(), &format!("{at}.where"))?,
                limit: f.limit,
                offset: f.offset,
            }
        }
        Kind::Update(u) => {
            let at = format!("{at}.update");
            if u.assigns.is_empty() {
                return Err(err(&format!("{at}.assigns"), "at least one assignment"));
            }
            let assigns = u
                .assigns
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    Ok(ast::Assign {
                        field: field(a.field.as_ref(), &format!("{at}.assigns[{i}].field"))?,
                        value: value(a.value.as_ref(), &format!("{at}.assigns[{i}].value"))?,
                    })
                })
                .collect::<Result<Vec<_>, ConvertError>>()?;
            ast::Statement::Update {
                table: name(&u.table, &format!("{at}.table"))?,
                assigns,
                pred: predicate_root(u.r#where.as_ref(), &format!("{at}.where"))?,
            }
        }
        Kind::Batch(b) => ast::Statement::Batch(batch(b, &format!("{at}.batch"))?),
        Kind::History(h) => ast::Statement::History { table: name(&h.table, &format!("{at}.history.table"))?, key: h.key.clone(), limit: h.limit },
        Kind::CreateTable(c) => ast::Statement::CreateTable { table: name(&c.table, &format!("{at}.create_table.table"))?, replicas: c.replicas },
        Kind::DropTable(c) => ast::Statement::DropTable { table: name(&c.table, &format!("{at}.drop_table.table"))? },
        Kind::Compact(c) => ast::Statement::Compact { table: name(&c.table, &format!("{at}.compact.table"))?, revision: c.revision },
        Kind::ShowTables(_) => ast::Statement::ShowTables,
        Kind::TopicRead(t) => {
            let at = format!("{at}.topic_read");
            ast::Statement::TopicRead {
                topic: name(&t.topic, &format!("{at}.topic"))?,
                partition: t.partition,
                offset: t.offset,
                limit: t.limit,
                pred: match &t.r#where {
                    None => None,
                    Some(p) => Some(predicate_root(Some(p), &format!("{at}.where"))?),
                },
            }
        }
    };
    Ok(st)
}

/// Converts a batch message.
pub fn batch(b: &pb::BatchStatement, at: &str) -> Result<ast::Batch, ConvertError> {
    let ops = |list: &[pb::Statement], what: &str| -> Result<Vec<ast::Statement>, ConvertError> {
        list.iter().enumerate().map(|(i, s)| statement(s, &format!("{at}.{what}[{i}]"), true)).collect()
    };
    let then = ops(&b.then, "then")?;
    if b.compares.is_empty() {
        if b.otherwise.is_some() {
            return Err(err(&format!("{at}.otherwise"), "an else branch needs compares"));
        }
        return Ok(ast::Batch::Plain(then));
    }
    let compares = b.compares.iter().enumerate().map(|(i, c)| compare(c, &format!("{at}.compares[{i}]"))).collect::<Result<Vec<_>, _>>()?;
    let otherwise = match &b.otherwise {
        None => None,
        Some(o) => Some(ops(&o.ops, "otherwise.ops")?),
    };
    Ok(ast::Batch::Cond { compares, then, otherwise })
}

fn compare(c: &pb::Compare, at: &str) -> Result<ast::Compare, ConvertError> {
    let target = match pb::CompareTarget::try_from(c.target) {
        Ok(pb::CompareTarget::Version) => ast::CompareTarget::Version,
        Ok(pb::CompareTarget::CreateRevision) => ast::CompareTarget::CreateRevision,
        Ok(pb::CompareTarget::ModRevision) => ast::CompareTarget::ModRevision,
        Ok(pb::CompareTarget::Value) => ast::CompareTarget::Value,
        _ => return Err(err(&format!("{at}.target"), format!("unknown compare target {}", c.target))),
    };
    let op = cmp_op(c.op, &format!("{at}.op"))?;
    let value = match (&c.operand, target) {
        (Some(pb::compare::Operand::Value(v)), ast::CompareTarget::Value) => value(Some(v), &format!("{at}.value"))?,
        (Some(pb::compare::Operand::Number(n)), t) if t != ast::CompareTarget::Value => ast::Value::Json((*n).into()),
        (_, ast::CompareTarget::Value) => return Err(err(&format!("{at}.value"), "a VALUE compare takes value")),
        _ => return Err(err(&format!("{at}.number"), "a VERSION or revision compare takes number")),
    };
    Ok(ast::Compare { table: name(&c.table, &format!("{at}.table"))?, key: c.key.clone(), target, op, value })
}

fn cmp_op(op: i32, at: &str) -> Result<ast::CmpOp, ConvertError> {
    Ok(match pb::CmpOp::try_from(op) {
        Ok(pb::CmpOp::Eq) => ast::CmpOp::Eq,
        Ok(pb::CmpOp::Ne) => ast::CmpOp::Ne,
        Ok(pb::CmpOp::Lt) => ast::CmpOp::Lt,
        Ok(pb::CmpOp::Le) => ast::CmpOp::Le,
        Ok(pb::CmpOp::Gt) => ast::CmpOp::Gt,
        Ok(pb::CmpOp::Ge) => ast::CmpOp::Ge,
        _ => return Err(err(at, format!("unknown comparison operator {op}"))),
    })
}

fn name(n: &str, at: &str) -> Result<String, ConvertError> {
    if n.is_empty() {
        return Err(err(at, "empty name"));
    }
    Ok(n.to_owned())
}

fn value(v: Option<&pb::Value>, at: &str) -> Result<ast::Value, ConvertError> {
    match v.and_then(|v| v.kind.as_ref()) {
        Some(pb::value::Kind::Text(s)) => Ok(ast::Value::Text(s.clone())),
        Some(pb::value::Kind::Bytes(b)) => Ok(ast::Value::Bytes(b.clone())),
        Some(pb::value::Kind::Json(j)) => {
            serde_json::from_str(j).map(ast::Value::Json).map_err(|e| err(&format!("{at}.json"), format!("not JSON: {e}")))
        }
        None => Err(err(at, "no value set (text, bytes or json)")),
    }
}

fn field(f: Option<&pb::FieldPath>, at: &str) -> Result<ast::FieldPath, ConvertError> {
    let Some(f) = f else { return Err(err(at, "no field path")) };
    if f.segments.is_empty() || f.segments.iter().any(String::is_empty) {
        return Err(err(at, "a field path has at least one segment, none empty"));
    }
    Ok(ast::FieldPath(f.segments.clone()))
}

fn predicate_root(p: Option<&pb::Predicate>, at: &str) -> Result<ast::Predicate, ConvertError> {
    let Some(p) = p else { return Err(err(at, "no predicate")) };
    let mut budget = aql::MAX_PREDICATE_NODES;
    predicate(p, at, 0, &mut budget)
}

/// Same limits as the parser: depth MAX_DEPTH, MAX_PREDICATE_NODES terms.
fn predicate(p: &pb::Predicate, at: &str, depth: usize, budget: &mut usize) -> Result<ast::Predicate, ConvertError> {
    use pb::predicate::Kind;
    if depth > aql::MAX_DEPTH {
        return Err(err(at, format!("predicate nested deeper than {}", aql::MAX_DEPTH)));
    }
    if *budget == 0 {
        return Err(err(at, format!("predicate has more than {} terms", aql::MAX_PREDICATE_NODES)));
    }
    *budget -= 1;
    let Some(kind) = &p.kind else { return Err(err(at, "no predicate kind set")) };
    Ok(match kind {
        Kind::Cmp(c) => ast::Predicate::Cmp {
            field: field(c.field.as_ref(), &format!("{at}.cmp.field"))?,
            op: cmp_op(c.op, &format!("{at}.cmp.op"))?,
            value: value(c.value.as_ref(), &format!("{at}.cmp.value"))?,
        },
        Kind::Exists(f) => ast::Predicate::Exists(field(Some(f), &format!("{at}.exists"))?),
        Kind::In(i) => {
            if i.values.is_empty() {
                return Err(err(&format!("{at}.in.values"), "at least one value"));
            }
            ast::Predicate::In {
                field: field(i.field.as_ref(), &format!("{at}.in.field"))?,
                values: i.values.iter().enumerate().map(|(n, v)| value(Some(v), &format!("{at}.in.values[{n}]"))).collect::<Result<_, _>>()?,
            }
        }
        Kind::Not(inner) => ast::Predicate::Not(Box::new(predicate(inner, &format!("{at}.not"), depth + 1, budget)?)),
        Kind::And(b) | Kind::Or(b) => {
            let side = |s: Option<&pb::Predicate>, which: &str, budget: &mut usize| match s {
                Some(s) => predicate(s, &format!("{at}.{which}"), depth + 1, budget),
                None => Err(err(&format!("{at}.{which}"), "missing operand")),
            };
            let l = Box::new(side(b.left.as_deref(), "left", budget)?);
            let r = Box::new(side(b.right.as_deref(), "right", budget)?);
            if matches!(kind, Kind::And(_)) { ast::Predicate::And(l, r) } else { ast::Predicate::Or(l, r) }
        }
        Kind::Aql(text) => aql::parse_predicate(text).map_err(|e| ConvertError { field: format!("{at}.aql"), message: e.to_string(), parse: Some(e) })?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is the test failing
mod tests {
    use super::*;

    #[test]
    fn structured_statements_convert() {
        let s = pb::Statement {
            kind: Some(pb::statement::Kind::Set(pb::Set {
                table: "t".into(),
                key: b"k".to_vec(),
                value: Some(pb::Value { kind: Some(pb::value::Kind::Json("{\"a\":1}".into())) }),
                cond: Some(pb::set::Cond::IfVersion(2)),
            })),
        };
        let st = statement(&s, "statement", false).unwrap();
        assert_eq!(aql::print(&ast::Query { stmt: st, timeout_ms: None }), "SET t 'k' = {\"a\":1} IF VERSION = 2");
        let bad = pb::Statement { kind: Some(pb::statement::Kind::Get(pb::Get { table: String::new(), key: vec![], revision: None })) };
        assert_eq!(statement(&bad, "statement", false).unwrap_err().field, "statement.get.table");
        let c = pb::Statement { kind: Some(pb::statement::Kind::Compact(pb::Compact { table: "t".into(), revision: Some(9) })) };
        let st = statement(&c, "statement", false).unwrap();
        assert_eq!(aql::print(&ast::Query { stmt: st, timeout_ms: None }), "COMPACT t REVISION 9");
        let c = pb::Statement { kind: Some(pb::statement::Kind::Compact(pb::Compact { table: String::new(), revision: None })) };
        assert_eq!(statement(&c, "statement", false).unwrap_err().field, "statement.compact.table");
        let f = pb::Statement {
            kind: Some(pb::statement::Kind::Filter(pb::Filter {
                table: "t".into(),
                r#where: Some(pb::Predicate { kind: Some(pb::predicate::Kind::Aql("a >".into())) }),
                limit: None,
                offset: None,
            })),
        };
        let e = statement(&f, "statement", false).unwrap_err();
        assert_eq!(e.field, "statement.filter.where.aql");
        assert_eq!(e.parse.map(|p| p.column), Some(4));
    }
}
