//! Recursive-descent parser for AQL (grammar: docs/aql.md).

use super::ast::*;
use super::lexer::{Tok, lex, skip_ws};
use super::{MAX_DEPTH, MAX_PREDICATE_NODES, ParseError};

/// Parses one query (a statement, an optional `TIMEOUT ms`, an optional `;`).
pub fn parse(src: &str) -> Result<Query, ParseError> {
    let mut p = Parser { src, pos: 0, depth: 0, nodes: 0 };
    let stmt = p.statement(false)?;
    let timeout_ms = if p.eat_kw("TIMEOUT")? { Some(p.int("a timeout in milliseconds")?) } else { None };
    p.eat_punct(";")?;
    let (t, start, _) = p.peek()?;
    if t != Tok::Eof {
        return Err(p.expected_at(start, "end of input", &t));
    }
    Ok(Query { stmt, timeout_ms })
}

/// Parses a predicate alone (`a.b > 3 AND NOT EXISTS c`), as the structured
/// protobuf messages carry WHERE clauses as text too.
pub fn parse_predicate(src: &str) -> Result<Predicate, ParseError> {
    let mut p = Parser { src, pos: 0, depth: 0, nodes: 0 };
    let pred = p.predicate()?;
    let (t, start, _) = p.peek()?;
    if t != Tok::Eof {
        return Err(p.expected_at(start, "end of predicate", &t));
    }
    Ok(pred)
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    depth: usize,
    /// Predicate nodes so far: AND/OR chains grow the tree without nesting,
    /// and every walk over it (printer, evaluator, drop) recurses.
    nodes: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Result<(Tok, usize, usize), ParseError> {
        lex(self.src, self.pos)
    }

    fn next(&mut self) -> Result<(Tok, usize), ParseError> {
        let (t, start, end) = self.peek()?;
        self.pos = end;
        Ok((t, start))
    }

    fn expected_at(&self, at: usize, what: &str, found: &Tok) -> ParseError {
        ParseError::at(self.src, at, format!("expected {what}, found {}", found.describe())).with_expected(what)
    }

    fn is_kw(t: &Tok, kw: &str) -> bool {
        matches!(t, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> Result<bool, ParseError> {
        let (t, _, end) = self.peek()?;
        if Self::is_kw(&t, kw) {
            self.pos = end;
            return Ok(true);
        }
        Ok(false)
    }

    fn kw(&mut self, kw: &str) -> Result<(), ParseError> {
        let (t, start, end) = self.peek()?;
        if Self::is_kw(&t, kw) {
            self.pos = end;
            return Ok(());
        }
        Err(self.expected_at(start, kw, &t))
    }

    fn eat_punct(&mut self, p: &str) -> Result<bool, ParseError> {
        let (t, _, end) = self.peek()?;
        if t == Tok::Punct(match_punct(p)) {
            self.pos = end;
            return Ok(true);
        }
        Ok(false)
    }

    fn punct(&mut self, p: &str) -> Result<(), ParseError> {
        let (t, start, end) = self.peek()?;
        if t == Tok::Punct(match_punct(p)) {
            self.pos = end;
            return Ok(());
        }
        Err(self.expected_at(start, &format!("'{p}'"), &t))
    }

    fn int(&mut self, what: &str) -> Result<u64, ParseError> {
        let (t, start) = self.next()?;
        match t {
            Tok::Int(n) => Ok(n),
            other => Err(self.expected_at(start, what, &other)),
        }
    }

    fn name(&mut self, what: &str) -> Result<String, ParseError> {
        let (t, start) = self.next()?;
        match t {
            Tok::Ident(s) | Tok::QName(s) => Ok(s),
            other => Err(self.expected_at(start, what, &other)),
        }
    }

    fn key(&mut self) -> Result<Key, ParseError> {
        let (t, start) = self.next()?;
        match t {
            Tok::Str(s) => Ok(s.into_bytes()),
            Tok::Bytes(b) => Ok(b),
            other => Err(self.expected_at(start, "a key ('text' or x'hex')", &other)),
        }
    }

    fn field(&mut self) -> Result<FieldPath, ParseError> {
        let mut segs = vec![self.segment()?];
        while self.eat_punct(".")? {
            segs.push(self.segment()?);
        }
        Ok(FieldPath(segs))
    }

    fn segment(&mut self) -> Result<String, ParseError> {
        let (t, start) = self.next()?;
        match t {
            Tok::Ident(s) | Tok::QName(s) => Ok(s),
            Tok::Int(n) => Ok(n.to_string()),
            other => Err(self.expected_at(start, "a field name", &other)),
        }
    }

    /// A value: `'text'`, `x'hex'`, or one JSON literal read by serde_json
    /// from this byte on (its own nesting limit applies).
    fn value(&mut self) -> Result<Value, ParseError> {
        const WHAT: &str = "a value (JSON, 'text' or x'hex')";
        let start = skip_ws(self.src, self.pos);
        let rest = &self.src[start..];
        let rb = rest.as_bytes();
        let first = rb.first().copied();
        let quoted = first == Some(b'\'') || (matches!(first, Some(b'x' | b'X')) && rb.get(1) == Some(&b'\''));
        if quoted {
            let (t, _, end) = self.peek()?;
            self.pos = end;
            return match t {
                Tok::Str(s) => Ok(Value::Text(s)),
                Tok::Bytes(b) => Ok(Value::Bytes(b)),
                other => Err(self.expected_at(start, WHAT, &other)),
            };
        }
        let json_start = matches!(first, Some(b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'));
        if !json_start {
            let (t, _, _) = self.peek()?;
            return Err(self.expected_at(start, WHAT, &t));
        }
        // serde_json's stream reader wants whitespace after a scalar (`1)`
        // is "trailing characters"), so scalars are cut here and read whole;
        // objects, arrays and strings delimit themselves.
        if !matches!(first, Some(b'{' | b'[' | b'"')) {
            let used = rb.iter().position(|&c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.' | b'_'))).unwrap_or(rb.len());
            return match serde_json::from_str::<serde_json::Value>(&rest[..used]) {
                Ok(v) => {
                    self.pos = start + used;
                    Ok(Value::Json(v))
                }
                Err(e) => Err(ParseError::at(self.src, start, format!("bad JSON value: {e}")).with_expected(WHAT)),
            };
        }
        let mut it = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
        match it.next() {
            Some(Ok(v)) => {
                let used = it.byte_offset();
                // `truex` or `12abc`: the literal must end at a token boundary.
                if rb.get(used).is_some_and(|&c| super::lexer::is_ident_char(c)) {
                    return Err(ParseError::at(self.src, start + used, "a value must be followed by a space or punctuation").with_expected(WHAT));
                }
                self.pos = start + used;
                Ok(Value::Json(v))
            }
            Some(Err(e)) => Err(ParseError::at(self.src, start, format!("bad JSON value: {e}")).with_expected(WHAT)),
            None => Err(ParseError::at(self.src, start, "expected a value, found end of input").with_expected(WHAT)),
        }
    }

    fn opt_uint_clause(&mut self, kw: &str, what: &str) -> Result<Option<u64>, ParseError> {
        if self.eat_kw(kw)? { Ok(Some(self.int(what)?)) } else { Ok(None) }
    }

    fn at_revision(&mut self) -> Result<Option<u64>, ParseError> {
        if self.eat_kw("AT")? {
            self.kw("REVISION")?;
            return Ok(Some(self.int("a revision")?));
        }
        Ok(None)
    }

    fn statement(&mut self, in_batch: bool) -> Result<Statement, ParseError> {
        let (t, start, _) = self.peek()?;
        let word = match &t {
            Tok::Ident(s) => s.to_ascii_uppercase(),
            _ => String::new(),
        };
        let allowed_in_batch = matches!(word.as_str(), "GET" | "SET" | "DELETE" | "RANGE");
        if in_batch && !allowed_in_batch {
            return Err(self.expected_at(start, "GET, SET, DELETE or RANGE (inside BATCH)", &t));
        }
        match word.as_str() {
            "GET" => {
                self.next()?;
                let table = self.name("a table name")?;
                let key = self.key()?;
                let revision = self.at_revision()?;
                Ok(Statement::Get { table, key, revision })
            }
            "SET" => {
                self.next()?;
                let table = self.name("a table name")?;
                let key = self.key()?;
                self.punct("=")?;
                let value = self.value()?;
                let cond_at = skip_ws(self.src, self.pos);
                let cond = if self.eat_kw("IF")? {
                    if self.eat_kw("ABSENT")? {
                        Some(SetCond::Absent)
                    } else if self.eat_kw("VERSION")? {
                        self.punct("=")?;
                        Some(SetCond::Version(self.int("a version")?))
                    } else {
                        let (t, s, _) = self.peek()?;
                        return Err(self.expected_at(s, "VERSION or ABSENT", &t));
                    }
                } else {
                    None
                };
                if in_batch && cond.is_some() {
                    return Err(ParseError::at(self.src, cond_at, "a statement inside BATCH takes no IF: use BATCH { IF ... THEN { ... } }"));
                }
                Ok(Statement::Set { table, key, value, cond })
            }
            "DELETE" => {
                self.next()?;
                let table = self.name("a table name")?;
                let key = self.key()?;
                let cond_at = skip_ws(self.src, self.pos);
                let cond = if self.eat_kw("IF")? {
                    if self.eat_kw("EXISTS")? {
                        Some(DeleteCond::Exists)
                    } else if self.eat_kw("VERSION")? {
                        self.punct("=")?;
                        Some(DeleteCond::Version(self.int("a version")?))
                    } else {
                        let (t, s, _) = self.peek()?;
                        return Err(self.expected_at(s, "VERSION or EXISTS", &t));
                    }
                } else {
                    None
                };
                if in_batch && cond.is_some() {
                    return Err(ParseError::at(self.src, cond_at, "a statement inside BATCH takes no IF: use BATCH { IF ... THEN { ... } }"));
                }
                Ok(Statement::Delete { table, key, cond })
            }
            "RANGE" => {
                self.next()?;
                let table = self.name("a table name")?;
                let range = if self.eat_kw("FROM")? {
                    let start = self.key()?;
                    let end = if self.eat_kw("TO")? { Some(self.key()?) } else { None };
                    KeyRange::From { start, end }
                } else if self.eat_kw("PREFIX")? {
                    KeyRange::Prefix(self.key()?)
                } else {
                    let (t, s, _) = self.peek()?;
                    return Err(self.expected_at(s, "FROM or PREFIX", &t));
                };
                let limit = self.opt_uint_clause("LIMIT", "a limit")?;
                let revision = self.at_revision()?;
                Ok(Statement::Range { table, range, limit, revision })
            }
            "FILTER" => {
                self.next()?;
                let table = self.name("a table name")?;
                self.kw("WHERE")?;
                let pred = self.predicate()?;
                let limit = self.opt_uint_clause("LIMIT", "a limit")?;
                let offset = self.opt_uint_clause("OFFSET", "an offset")?;
                Ok(Statement::Filter { table, pred, limit, offset })
            }
            "UPDATE" => {
                self.next()?;
                let table = self.name("a table name")?;
                self.kw("SET")?;
                let mut assigns = Vec::new();
                loop {
                    let field = self.field()?;
                    self.punct("=")?;
                    let value = self.value()?;
                    assigns.push(Assign { field, value });
                    if !self.eat_punct(",")? {
                        break;
                    }
                }
                self.kw("WHERE")?;
                let pred = self.predicate()?;
                Ok(Statement::Update { table, assigns, pred })
            }
            "BATCH" => {
                self.next()?;
                self.punct("{")?;
                let batch = if self.eat_kw("IF")? {
                    let mut compares = vec![self.compare()?];
                    while self.eat_kw("AND")? {
                        compares.push(self.compare()?);
                    }
                    self.kw("THEN")?;
                    let then = self.block()?;
                    let otherwise = if self.eat_kw("ELSE")? { Some(self.block()?) } else { None };
                    Batch::Cond { compares, then, otherwise }
                } else {
                    Batch::Plain(self.ops("}")?)
                };
                self.punct("}")?;
                Ok(Statement::Batch(batch))
            }
            "HISTORY" => {
                self.next()?;
                let table = self.name("a table name")?;
                let key = self.key()?;
                let limit = self.opt_uint_clause("LIMIT", "a limit")?;
                Ok(Statement::History { table, key, limit })
            }
            "CREATE" | "DROP" => {
                self.next()?;
                self.kw("TABLE")?;
                let table = self.name("a table name")?;
                if word == "CREATE" {
                    let replicas = self.opt_uint_clause("REPLICAS", "a replica count")?;
                    Ok(Statement::CreateTable { table, replicas })
                } else {
                    Ok(Statement::DropTable { table })
                }
            }
            "COMPACT" => {
                self.next()?;
                let table = self.name("a table name")?;
                let revision = self.opt_uint_clause("REVISION", "a revision")?;
                Ok(Statement::Compact { table, revision })
            }
            "SHOW" => {
                self.next()?;
                self.kw("TABLES")?;
                Ok(Statement::ShowTables)
            }
            "FROM" => {
                self.next()?;
                self.kw("TOPIC")?;
                let topic = self.name("a topic name")?;
                let partition = if self.eat_kw("PARTITION")? {
                    let (t, s, _) = self.peek()?;
                    let n = self.int("a partition")?;
                    Some(u32::try_from(n).map_err(|_| self.expected_at(s, "a partition (32 bits)", &t))?)
                } else {
                    None
                };
                self.kw("OFFSET")?;
                let offset = self.int("an offset")?;
                let limit = self.opt_uint_clause("LIMIT", "a limit")?;
                let pred = if self.eat_kw("WHERE")? { Some(self.predicate()?) } else { None };
                Ok(Statement::TopicRead { topic, partition, offset, limit, pred })
            }
            _ => Err(self.expected_at(
                start,
                "a statement (GET, SET, DELETE, RANGE, FILTER, UPDATE, BATCH, HISTORY, CREATE, DROP, COMPACT, SHOW, FROM)",
                &t,
            )),
        }
    }

    fn block(&mut self) -> Result<Vec<Statement>, ParseError> {
        self.punct("{")?;
        let ops = self.ops("}")?;
        self.punct("}")?;
        Ok(ops)
    }

    /// `op { ';' op } [';']`, possibly empty, up to the closing `}`.
    fn ops(&mut self, close: &str) -> Result<Vec<Statement>, ParseError> {
        let mut ops = Vec::new();
        loop {
            let (t, _, _) = self.peek()?;
            if t == Tok::Punct(match_punct(close)) {
                return Ok(ops);
            }
            ops.push(self.statement(true)?);
            if !self.eat_punct(";")? {
                return Ok(ops);
            }
        }
    }

    fn compare(&mut self) -> Result<Compare, ParseError> {
        let (t, start, _) = self.peek()?;
        let target = if Self::is_kw(&t, "VERSION") {
            CompareTarget::Version
        } else if Self::is_kw(&t, "CREATE_REVISION") {
            CompareTarget::CreateRevision
        } else if Self::is_kw(&t, "MOD_REVISION") {
            CompareTarget::ModRevision
        } else if Self::is_kw(&t, "VALUE") {
            CompareTarget::Value
        } else {
            return Err(self.expected_at(start, "VERSION, CREATE_REVISION, MOD_REVISION or VALUE", &t));
        };
        self.next()?;
        self.punct("(")?;
        let table = self.name("a table name")?;
        self.punct(",")?;
        let key = self.key()?;
        self.punct(")")?;
        let op = self.cmp_op()?;
        let value = if target == CompareTarget::Value {
            self.value()?
        } else {
            Value::Json(serde_json::Value::from(self.int("an unsigned integer")?))
        };
        Ok(Compare { table, key, target, op, value })
    }

    fn cmp_op(&mut self) -> Result<CmpOp, ParseError> {
        let (t, start) = self.next()?;
        Ok(match t {
            Tok::Punct("=") => CmpOp::Eq,
            Tok::Punct("!=") => CmpOp::Ne,
            Tok::Punct("<") => CmpOp::Lt,
            Tok::Punct("<=") => CmpOp::Le,
            Tok::Punct(">") => CmpOp::Gt,
            Tok::Punct(">=") => CmpOp::Ge,
            other => return Err(self.expected_at(start, "a comparison (= != < <= > >=)", &other)),
        })
    }

    fn node(&mut self) -> Result<(), ParseError> {
        self.nodes += 1;
        if self.nodes > MAX_PREDICATE_NODES {
            return Err(ParseError::at(self.src, self.pos, format!("predicate has more than {MAX_PREDICATE_NODES} terms")));
        }
        Ok(())
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ParseError::at(self.src, self.pos, format!("predicate nested deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    /// `or := and { OR and }`
    fn predicate(&mut self) -> Result<Predicate, ParseError> {
        self.enter()?;
        let mut left = self.conj()?;
        while self.eat_kw("OR")? {
            self.node()?;
            let right = self.conj()?;
            left = Predicate::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    /// `and := unary { AND unary }`
    fn conj(&mut self) -> Result<Predicate, ParseError> {
        let mut left = self.unary()?;
        while self.eat_kw("AND")? {
            self.node()?;
            let right = self.unary()?;
            left = Predicate::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// `unary := NOT unary | '(' or ')' | EXISTS field | field IN (v,..) | field op value`
    fn unary(&mut self) -> Result<Predicate, ParseError> {
        self.node()?;
        if self.eat_kw("NOT")? {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Predicate::Not(Box::new(inner)));
        }
        if self.eat_punct("(")? {
            let inner = self.predicate()?;
            self.punct(")")?;
            return Ok(inner);
        }
        if self.eat_kw("EXISTS")? {
            return Ok(Predicate::Exists(self.field()?));
        }
        let (t, start, _) = self.peek()?;
        if !matches!(t, Tok::Ident(_) | Tok::QName(_)) {
            return Err(self.expected_at(start, "a field, NOT, EXISTS or '('", &t));
        }
        let field = self.field()?;
        if self.eat_kw("IN")? {
            self.punct("(")?;
            let mut values = vec![self.value()?];
            while self.eat_punct(",")? {
                values.push(self.value()?);
            }
            self.punct(")")?;
            return Ok(Predicate::In { field, values });
        }
        let op = self.cmp_op()?;
        let value = self.value()?;
        Ok(Predicate::Cmp { field, op, value })
    }
}

/// Maps a punctuation string to the lexer's static one.
fn match_punct(p: &str) -> &'static str {
    match p {
        "!=" => "!=",
        "<=" => "<=",
        ">=" => ">=",
        "=" => "=",
        "<" => "<",
        ">" => ">",
        "(" => "(",
        ")" => ")",
        "{" => "{",
        "}" => "}",
        "," => ",",
        "." => ".",
        ";" => ";",
        _ => "*",
    }
}
