//! `Tables`: the node's named tables under `<data_dir>/tables/`.
//!
//! Layout: `tables/<name>/table.json` (name, format, `TableConfig`),
//! `tables/<name>/wal`, `tables/<name>/snapshot` (after a checkpoint).
//! Create writes `tables/.creating-<name>/` whole, then renames it into
//! place; drop renames the directory to `tables/.dropped-<name>` before
//! removing it. Names cannot start with `.`, so leftovers of a crash in
//! either step are recognisable and are cleaned on open.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::config::{TableConfig, TablesConfig};
use crate::error::{Error, Result};
use crate::table::{Table, sync_dir, write_atomic};
use crate::types::TableStats;

/// Longest table name.
pub const MAX_NAME_BYTES: usize = 128;

const META_FILE: &str = "table.json";
const META_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    name: String,
    config: TableConfig,
}

/// A table as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableInfo {
    pub name: String,
    pub config: TableConfig,
    pub revision: u64,
    pub compact_revision: u64,
    pub keys: u64,
    pub bytes: u64,
}

/// Check a table name: 1 to 128 bytes of `A-Z a-z 0-9 _ . -`, starting with
/// a letter, digit or `_` (names become directory names).
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!("table name must be 1 to {MAX_NAME_BYTES} bytes")));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')) {
        return Err(Error::invalid(format!("table name {name:?}: only A-Z a-z 0-9 _ . - allowed")));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() && name.as_bytes()[0] != b'_' {
        return Err(Error::invalid(format!("table name {name:?} must start with a letter, digit or _")));
    }
    Ok(())
}

/// The registry of tables; cheap to clone.
#[derive(Clone)]
pub struct Tables {
    inner: Arc<RegInner>,
}

struct RegInner {
    root: PathBuf,
    config: Arc<TablesConfig>,
    tables: Mutex<BTreeMap<String, Table>>,
    /// Serialises create and drop (directory renames), not reads.
    ddl: tokio::sync::Mutex<()>,
}

impl Tables {
    /// Open every table under `<data_dir>/tables/` (created if missing).
    pub async fn open(data_dir: impl AsRef<Path>, config: TablesConfig) -> Result<Tables> {
        let root = data_dir.as_ref().join("tables");
        let config = Arc::new(config);
        let cfg = config.clone();
        let (root, tables) = tokio::task::spawn_blocking(move || open_all(root, cfg))
            .await
            .map_err(|e| Error::io("open tables", PathBuf::new(), std::io::Error::other(e.to_string())))??;
        Ok(Tables {
            inner: Arc::new(RegInner { root, config, tables: Mutex::new(tables), ddl: tokio::sync::Mutex::new(()) }),
        })
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Table>> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.inner.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &TablesConfig {
        &self.inner.config
    }

    /// Create a table; `AlreadyExists` if the name is taken.
    pub async fn create(&self, name: &str, config: TableConfig) -> Result<Table> {
        validate_name(name)?;
        if config.replicas == 0 {
            return Err(Error::invalid("replicas must be at least 1"));
        }
        let _ddl = self.inner.ddl.lock().await;
        {
            let m = self.map();
            if m.contains_key(name) {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            if m.len() as u64 >= self.inner.config.max_tables {
                return Err(Error::TooMany { what: "tables".into(), limit: self.inner.config.max_tables });
            }
        }
        let root = self.inner.root.clone();
        let limits = self.inner.config.clone();
        let n = name.to_string();
        let table = tokio::task::spawn_blocking(move || create_dir(&root, &n, config, limits))
            .await
            .map_err(|e| Error::io("create table", PathBuf::new(), std::io::Error::other(e.to_string())))??;
        self.map().insert(name.to_string(), table.clone());
        tracing::info!(table = name, "table created");
        Ok(table)
    }

    /// Drop a table and its data; open handles fail with `Dropped` after this.
    pub async fn drop(&self, name: &str) -> Result<()> {
        let _ddl = self.inner.ddl.lock().await;
        let table = self.map().remove(name).ok_or_else(|| Error::NotFound(name.to_string()))?;
        table.mark_dropped();
        let root = self.inner.root.clone();
        let n = name.to_string();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let dir = root.join(&n);
            let gone = root.join(format!(".dropped-{n}"));
            std::fs::rename(&dir, &gone).map_err(|e| Error::io("rename", &dir, e))?;
            sync_dir(&root)?;
            std::fs::remove_dir_all(&gone).map_err(|e| Error::io("remove", &gone, e))
        })
        .await
        .map_err(|e| Error::io("drop table", PathBuf::new(), std::io::Error::other(e.to_string())))??;
        tracing::info!(table = name, "table dropped");
        Ok(())
    }

    /// The tables, by name.
    pub fn list(&self) -> Vec<TableInfo> {
        self.map()
            .values()
            .map(|t| {
                let s = t.stats();
                TableInfo {
                    name: t.name().to_string(),
                    config: t.config().clone(),
                    revision: s.revision,
                    compact_revision: s.compact_revision,
                    keys: s.keys,
                    bytes: s.bytes,
                }
            })
            .collect()
    }

    /// An open table by name; `NotFound` if there is none.
    pub fn get(&self, name: &str) -> Result<Table> {
        self.map().get(name).cloned().ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// Stats of every table.
    pub fn stats(&self) -> Vec<(String, TableStats)> {
        self.map().iter().map(|(n, t)| (n.clone(), t.stats())).collect()
    }

    /// Flat gauges for `StatsRegistry::add_gauges`: `tables.count` and
    /// `table.<name>.<stat>` for every field of `TableStats`.
    pub fn gauges(&self) -> Vec<(String, serde_json::Value)> {
        let stats = self.stats();
        let mut out = vec![("tables.count".to_string(), serde_json::Value::from(stats.len()))];
        for (name, s) in stats {
            if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(&s) {
                for (k, v) in m {
                    out.push((format!("table.{name}.{k}"), v));
                }
            }
        }
        out
    }
}

fn open_all(root: PathBuf, cfg: Arc<TablesConfig>) -> Result<(PathBuf, BTreeMap<String, Table>)> {
    std::fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
    let mut tables = BTreeMap::new();
    let rd = std::fs::read_dir(&root).map_err(|e| Error::io("read dir", &root, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io("read dir", &root, e))?;
        let path = entry.path();
        let fname = entry.file_name().to_string_lossy().into_owned();
        if fname.starts_with(".creating-") || fname.starts_with(".dropped-") {
            // A create or drop interrupted by a crash: never acknowledged as done.
            tracing::info!(path = %path.display(), "removing a table directory left by an interrupted create/drop");
            std::fs::remove_dir_all(&path).map_err(|e| Error::io("remove", &path, e))?;
            continue;
        }
        if !path.is_dir() || validate_name(&fname).is_err() {
            continue;
        }
        let meta_path = path.join(META_FILE);
        let bytes = std::fs::read(&meta_path).map_err(|e| Error::io("read", &meta_path, e))?;
        let meta: Meta = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Corrupt { path: meta_path.clone(), offset: 0, detail: e.to_string() })?;
        if meta.format != META_FORMAT || meta.name != fname {
            return Err(Error::Corrupt { path: meta_path, offset: 0, detail: "format or name mismatch".into() });
        }
        let t = Table::open(&fname, &path, meta.config, cfg.clone())?;
        tables.insert(fname, t);
    }
    Ok((root, tables))
}

fn create_dir(root: &Path, name: &str, config: TableConfig, limits: Arc<TablesConfig>) -> Result<Table> {
    let tmp = root.join(format!(".creating-{name}"));
    let dir = root.join(name);
    if dir.exists() {
        return Err(Error::AlreadyExists(name.to_string()));
    }
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let meta = Meta { format: META_FORMAT, name: name.to_string(), config: config.clone() };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::invalid(e.to_string()))?;
    write_atomic(&tmp, META_FILE, &bytes)?;
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io("rename", &dir, e))?;
    sync_dir(root)?;
    Table::open(name, &dir, config, limits)
}
