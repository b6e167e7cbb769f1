//! # weft-api: Weft's query API (issue 13)
//!
//! - [`aql`]: the AQL language (lexer, parser with error positions,
//!   canonical printer; grammar in docs/aql.md).
pub mod aql;
