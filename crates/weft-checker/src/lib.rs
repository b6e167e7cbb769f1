//! Histories of the replicated log and a checker for them (issue #12's
//! proof side).
//!
//! - [`history`]: the event format (JSON lines): produce invoke / ok / fail /
//!   info, reads, and the end of each final full read.
//! - [`check`]: the rules (no acknowledged record lost, no phantom, failed
//!   or duplicated record read, one value per offset, producer order kept)
//!   and a typed [`Report`] whose violations carry the events that prove them.
//! - [`recorder`]: a load driver that produces unique values through
//!   `log.produce`, follows `not_leader` redirects, then reads every
//!   partition fully from every node, recording it all as a history.
//!
//! - [`register`]: linearizability of key-value (table) histories: get,
//!   put, delete and compare-and-set per key, Wing-Gong-Lowe search with a
//!   step budget, and the table-wide revision rules.
//!
//! `weft-check history.jsonl` and `weft-history --node ...` are the bins.

pub mod check;
pub mod history;
pub mod recorder;
pub mod register;
pub mod kv_recorder;

pub use check::{check, Evidence, Report, Rule, Stats, Violation};
pub use history::{Event, History, Process};

#[derive(Debug, thiserror::Error)]
pub enum CheckerError {
    #[error("history i/o: {0}")]
    Io(#[source] std::io::Error),
    #[error("history line {line}: {source}")]
    Parse {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("bad node address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot reach any node to {what}: {reason}")]
    Unreachable { what: &'static str, reason: String },
    #[error("recorder task failed: {0}")]
    Task(String),
}

/// Calls `stop` on the first SIGTERM or SIGINT, after saying so on stderr:
/// the recorders' tools end their load early this way and still do their
/// final reads and write the history (scripts/chaos stops them so).
/// Install it before any slow step, so a stop then is not a plain kill.
pub fn stop_on_signal(message: &'static str, stop: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        eprintln!("{message}");
        stop();
    });
    Ok(())
}
