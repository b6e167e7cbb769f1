//! AQL: Weft's small query language (grammar and examples: docs/aql.md).
//!
//! `parse(text) -> Result<Query, ParseError>`; `print(&Query) -> String`
//! prints the canonical form, and `parse(&print(&q)) == Ok(q)` for every
//! query (a property test checks it on random trees).

pub mod ast;
pub mod lexer;
pub mod parser;
pub mod print;

pub use ast::*;
pub use parser::{parse, parse_predicate};
pub use print::{print, print_predicate};

/// Deepest nesting of predicates (parentheses and NOT): recursion is
/// bounded so hostile input cannot overflow the stack.
pub const MAX_DEPTH: usize = 64;

/// Most terms (comparisons, AND, OR, NOT) in one predicate, for the same
/// reason: a flat `a OR b OR ...` chain is a deep tree.
pub const MAX_PREDICATE_NODES: usize = 1024;

/// A syntax error at a position in the query text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ParseError {
    /// Byte offset into the text.
    pub offset: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    pub message: String,
    /// What the parser expected there, when it knows (`a table name`, `'='`).
    pub expected: Option<String>,
}

impl ParseError {
    pub fn at(src: &str, offset: usize, message: impl Into<String>) -> Self {
        let offset = offset.min(src.len());
        // Offsets handed in are token starts, always char boundaries; floor anyway.
        let mut o = offset;
        while !src.is_char_boundary(o) {
            o -= 1;
        }
        let before = &src[..o];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        ParseError { offset, line, column, message: message.into(), expected: None }
    }

    pub fn with_expected(mut self, what: &str) -> Self {
        self.expected = Some(what.to_owned());
        self
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is the test failing
mod tests;
