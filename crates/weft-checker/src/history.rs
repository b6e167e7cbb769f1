//! The history format: one JSON object per line, one event per object.
//!
//! Values are unique per produce (the recorder makes them so), which is what
//! lets the checker tie a record read back to the one produce that wrote it.

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::CheckerError;

/// A client process: one sequential producer or reader (its operations do
/// not overlap in time, so its acknowledged records must keep their order).
pub type Process = u64;

/// One event of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A produce of `value` to `partition` was sent.
    Invoke { process: Process, partition: u32, value: String, time_us: u64 },
    /// The produce was acknowledged at `offset`.
    Ok { process: Process, partition: u32, value: String, offset: u64, time_us: u64 },
    /// The produce was definitely not written (refused before any write:
    /// not the leader, validation, not found...).
    Fail { process: Process, partition: u32, value: String, time_us: u64, error: String },
    /// The produce's fate is unknown (timeout, connection lost, an error
    /// that may come after a write): the record may or may not appear.
    Info { process: Process, partition: u32, value: String, time_us: u64, error: String },
    /// `node` returned `value` at `offset` of `partition`. `final_read`
    /// marks the reads of the final full pass, after every producer stopped.
    Read {
        process: Process,
        node: String,
        partition: u32,
        offset: u64,
        value: String,
        time_us: u64,
        #[serde(default)]
        final_read: bool,
    },
    /// The final full read of `partition` from `node` finished: it saw
    /// every offset below `end_offset` that the node holds. Without this
    /// event a node's final reads are not complete, so they cannot prove a
    /// record lost.
    ReadEnd { process: Process, node: String, partition: u32, end_offset: u64, time_us: u64 },
}

impl Event {
    pub fn time_us(&self) -> u64 {
        match self {
            Event::Invoke { time_us, .. }
            | Event::Ok { time_us, .. }
            | Event::Fail { time_us, .. }
            | Event::Info { time_us, .. }
            | Event::Read { time_us, .. }
            | Event::ReadEnd { time_us, .. } => *time_us,
        }
    }
}

/// A history: events in the order they happened (file order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub events: Vec<Event>,
}

impl History {
    pub fn read_jsonl(r: impl BufRead) -> Result<History, CheckerError> {
        let mut events = vec![];
        for (i, line) in r.lines().enumerate() {
            let line = line.map_err(CheckerError::Io)?;
            if line.trim().is_empty() {
                continue;
            }
            let e = serde_json::from_str(&line).map_err(|source| CheckerError::Parse { line: i + 1, source })?;
            events.push(e);
        }
        Ok(History { events })
    }

    pub fn write_jsonl(&self, mut w: impl Write) -> Result<(), CheckerError> {
        for e in &self.events {
            serde_json::to_writer(&mut w, e).map_err(|source| CheckerError::Parse { line: 0, source })?;
            w.write_all(b"\n").map_err(CheckerError::Io)?;
        }
        w.flush().map_err(CheckerError::Io)
    }

    pub fn load(path: &std::path::Path) -> Result<History, CheckerError> {
        let f = std::fs::File::open(path).map_err(CheckerError::Io)?;
        History::read_jsonl(std::io::BufReader::new(f))
    }

    pub fn save(&self, path: &std::path::Path) -> Result<(), CheckerError> {
        let f = std::fs::File::create(path).map_err(CheckerError::Io)?;
        self.write_jsonl(std::io::BufWriter::new(f))
    }
}
