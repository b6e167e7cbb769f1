//! One call of the query API as it travels through the client's tower
//! stack: the request, whether it may be repeated, and its deadline.

use std::time::Instant;

use weft_api::aql::ast::{self, Batch, CmpOp, CompareTarget, DeleteCond, Statement};
use weft_api::pb;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Execute(pb::ExecuteRequest),
    Batch(pb::BatchRequest),
}

#[derive(Debug, Clone)]
pub struct Call {
    pub op: Op,
    /// May be sent again after a failure ([`is_idempotent`]).
    pub idempotent: bool,
    /// The whole call's deadline, all attempts included; each attempt sends
    /// what is left of it as grpc-timeout.
    pub deadline: Instant,
    /// The budget the deadline was made from (for error messages).
    pub timeout_ms: u64,
}

impl Call {
    pub fn new(op: Op, deadline: Instant, timeout_ms: u64) -> Self {
        let idempotent = is_idempotent(&op);
        Call { op, idempotent, deadline, timeout_ms }
    }
}

/// Whether a call may be sent again without risking a second effect. The
/// rule (docs/query.md, "Retries"):
///
/// - reads are: GET, RANGE, FILTER, HISTORY, SHOW TABLES, FROM TOPIC, and a
///   BATCH of reads only;
/// - `SET ... IF VERSION = n`, `SET ... IF ABSENT` and `DELETE ... IF
///   VERSION = n` are: if the first attempt was applied, the version moved
///   and the repeat fails its compare instead of writing again;
/// - a `BATCH IF ... THEN ... [ELSE ...]` is when one compare is `VERSION =
///   n` or `MOD_REVISION = n` on a key its THEN branch SETs (or DELETEs,
///   with n > 0: deleting an absent key changes nothing) and the ELSE branch
///   writes nothing: a repeat after success takes the ELSE branch;
/// - nothing else is: plain SET, DELETE, `DELETE IF EXISTS` (the key may
///   have been written again in between), UPDATE, CREATE/DROP TABLE, a
///   BATCH without such a compare. A query that does not parse is not
///   (the server refuses it anyway).
pub fn is_idempotent(op: &Op) -> bool {
    let stmt = match op {
        Op::Execute(r) => match weft_api::convert::request_query(r) {
            Ok(q) => q.stmt,
            Err(_) => return false,
        },
        Op::Batch(r) => match &r.batch {
            Some(pb::batch_request::Batch::Aql(text)) => match weft_api::convert::parse_aql(text) {
                Ok(q) => q.stmt,
                Err(_) => return false,
            },
            Some(pb::batch_request::Batch::Statement(b)) => match weft_api::convert::batch(b, "statement") {
                Ok(b) => Statement::Batch(b),
                Err(_) => return false,
            },
            None => return false,
        },
    };
    statement_is_idempotent(&stmt)
}

fn is_read(s: &Statement) -> bool {
    match s {
        Statement::Get { .. } | Statement::Range { .. } | Statement::Filter { .. } | Statement::History { .. } | Statement::ShowTables | Statement::TopicRead { .. } => true,
        Statement::Batch(Batch::Plain(ops)) => ops.iter().all(is_read),
        Statement::Batch(Batch::Cond { then, otherwise, .. }) => then.iter().chain(otherwise.iter().flatten()).all(is_read),
        _ => false,
    }
}

/// The statement half of [`is_idempotent`].
pub fn statement_is_idempotent(s: &Statement) -> bool {
    if is_read(s) {
        return true;
    }
    match s {
        Statement::Set { cond: Some(_), .. } => true,
        Statement::Delete { cond: Some(DeleteCond::Version(_)), .. } => true,
        Statement::Batch(Batch::Cond { compares, then, otherwise }) => {
            if !otherwise.iter().flatten().all(is_read) {
                return false;
            }
            compares.iter().any(|c| {
                let pinned = matches!(c.target, CompareTarget::Version | CompareTarget::ModRevision) && c.op == CmpOp::Eq;
                let n = match &c.value {
                    ast::Value::Json(j) => j.as_u64(),
                    _ => None,
                };
                pinned
                    && then.iter().any(|w| match w {
                        Statement::Set { table, key, .. } => *table == c.table && *key == c.key,
                        Statement::Delete { table, key, .. } => *table == c.table && *key == c.key && n.is_some_and(|n| n > 0),
                        _ => false,
                    })
            })
        }
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn aql(text: &str) -> bool {
        is_idempotent(&Op::Execute(pb::ExecuteRequest { query: Some(pb::execute_request::Query::Aql(text.into())), timeout_ms: 0, serializable: false }))
    }

    #[test]
    fn the_rule_on_aql() {
        for yes in [
            "GET t 'k'",
            "GET t 'k' AT REVISION 4",
            "RANGE t FROM 'a' TO 'm' LIMIT 10",
            "RANGE t PREFIX 'u/'",
            "FILTER t WHERE a > 1",
            "HISTORY t 'k'",
            "SET t 'k' = 'v' IF VERSION = 3",
            "SET t 'k' = 'v' IF ABSENT",
            "DELETE t 'k' IF VERSION = 2",
            "BATCH { GET t 'a'; RANGE t PREFIX 'b' }",
            "BATCH { IF VERSION(t, 'k') = 2 THEN { SET t 'k' = 'v'; SET t 'j' = 'w' } }",
            "BATCH { IF MOD_REVISION(t, 'k') = 9 THEN { DELETE t 'k' } ELSE { GET t 'k' } }",
        ] {
            assert!(aql(yes), "{yes} should be idempotent");
        }
        for no in [
            "SET t 'k' = 'v'",
            "DELETE t 'k'",
            "DELETE t 'k' IF EXISTS",
            "UPDATE t SET a = 1 WHERE b = 2",
            "CREATE TABLE t",
            "DROP TABLE t",
            "BATCH { SET t 'a' = 1; GET t 'a' }",
            "BATCH { IF VERSION(t, 'k') = 2 THEN { SET t 'j' = 'w' } }",
            "BATCH { IF VERSION(t, 'k') > 2 THEN { SET t 'k' = 'w' } }",
            "BATCH { IF VERSION(t, 'k') = 2 THEN { SET t 'k' = 'w' } ELSE { SET t 'x' = 1 } }",
            "BATCH { IF VERSION(t, 'k') = 0 THEN { DELETE t 'k'; SET t 'j' = 1 } }",
            "GET t",
        ] {
            assert!(!aql(no), "{no} should not be idempotent");
        }
    }
}
