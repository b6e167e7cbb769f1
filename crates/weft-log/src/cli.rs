//! Offline tooling on a log data directory (read-only: safe while a server
//! runs). Wired into the `weft` binary as `weft log <cmd>`.

use std::path::{Path, PathBuf};

use crate::error::{LogError, Result};
use crate::segment::{for_each_batch, parse_log_file_name};
use crate::storage::{FsStorage, Storage};

/// `weft log ...`: inspect a data directory without a server.
#[derive(Debug, clap::Subcommand)]
pub enum LogCmd {
    /// Check the CRC and offset order of every batch of every segment.
    Verify {
        /// The node's data directory (`weft serve --data-dir`) or the log
        /// directory inside it (`DIR/log`, the one given to `Log::open`).
        dir: PathBuf,
    },
    /// Print the records of one segment file, one JSON object per line.
    Dump {
        /// A `<base>.log` segment file.
        file: PathBuf,
        /// Stop after this many records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

/// Runs a [`LogCmd`], printing to stdout (`json`: verify prints one JSON
/// object per segment; dump always prints JSON lines).
pub async fn run(cmd: LogCmd, json: bool) -> Result<()> {
    tokio::task::spawn_blocking(move || match cmd {
        LogCmd::Verify { dir } => verify(&dir, json),
        LogCmd::Dump { file, limit } => dump(&file, limit),
    })
    .await
    .map_err(|e| LogError::InvalidRequest(format!("task failed: {e}")))?
}

/// The log directory for DIR: DIR itself when it has `topics/`, else
/// `DIR/log` when that has (users pass the node's data directory).
fn log_dir(st: &FsStorage, dir: &Path) -> Result<PathBuf> {
    if st.is_dir(&dir.join("topics")) {
        return Ok(dir.to_path_buf());
    }
    let inner = dir.join("log");
    if st.is_dir(&inner.join("topics")) {
        return Ok(inner);
    }
    Err(LogError::InvalidRequest(format!(
        "{} is neither a log directory nor a data directory with one (no topics/ or log/topics/ in it)",
        dir.display()
    )))
}

fn verify(dir: &Path, json: bool) -> Result<()> {
    let st = FsStorage;
    let dir = &log_dir(&st, dir)?;
    let topics = dir.join("topics");
    let mut bad = 0usize;
    for t in st.list_dir(&topics).map_err(|e| LogError::io("list topics", &topics, e))? {
        let tdir = topics.join(&t);
        if !st.is_dir(&tdir) {
            continue;
        }
        for p in st.list_dir(&tdir).map_err(|e| LogError::io("list topic", &tdir, e))? {
            let pdir = tdir.join(&p);
            if !st.is_dir(&pdir) {
                continue;
            }
            let mut names = st.list_dir(&pdir).map_err(|e| LogError::io("list partition", &pdir, e))?;
            names.sort();
            for n in names.iter().filter(|n| parse_log_file_name(n).is_some()) {
                let path = pdir.join(n);
                let (batches, records, res) = check_segment(&st, &path);
                if res.is_err() {
                    bad += 1;
                }
                if json {
                    let line = serde_json::json!({
                        "topic": t, "partition": p, "segment": n, "ok": res.is_ok(),
                        "batches": batches, "records": records,
                        "error": res.as_ref().err().map(|e| e.to_string()),
                    });
                    println!("{line}");
                    continue;
                }
                match res {
                    Ok(()) => println!("ok      {t}/{p}/{n}: {batches} batches, {records} records"),
                    Err(e) => println!("CORRUPT {t}/{p}/{n}: after {batches} batches: {e}"),
                }
            }
        }
    }
    if bad > 0 {
        return Err(LogError::Corrupt { path: dir.to_path_buf(), pos: 0, reason: format!("{bad} segment(s) with errors (a torn tail of an active segment is repaired on open)") });
    }
    Ok(())
}

fn check_segment(st: &FsStorage, path: &Path) -> (u64, u64, Result<()>) {
    let (mut batches, mut records) = (0u64, 0u64);
    let res = (|| {
        let f = st.open(path, false).map_err(|e| LogError::io("open segment", path, e))?;
        let len = f.len().map_err(|e| LogError::io("stat segment", path, e))?;
        let mut next = None;
        for_each_batch(&*f, path, len, |b| {
            if next.is_some_and(|n| b.header.base_offset < n) {
                return Err(LogError::CorruptBatch("batch offsets go backwards"));
            }
            next = Some(b.header.next_offset());
            for r in b.records() {
                r?;
                records += 1;
            }
            batches += 1;
            Ok(())
        })
    })();
    (batches, records, res)
}

fn dump(file: &Path, limit: usize) -> Result<()> {
    let st = FsStorage;
    let f = st.open(file, false).map_err(|e| LogError::io("open segment", file, e))?;
    let len = f.len().map_err(|e| LogError::io("stat segment", file, e))?;
    let mut left = limit;
    for_each_batch(&*f, file, len, |b| {
        for r in b.records() {
            if left == 0 {
                return Ok(());
            }
            left -= 1;
            let r = r?;
            let text = |v: &Option<bytes::Bytes>| v.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
            let line = serde_json::json!({
                "offset": r.offset.0,
                "timestamp_ms": r.timestamp_ms,
                "key": text(&r.key),
                "value": text(&r.value),
                "headers": r.headers.iter().map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned())).collect::<Vec<_>>(),
            });
            println!("{line}");
        }
        Ok(())
    })
}
