//! Layered configuration: defaults < file (TOML, or JSON by extension) <
//! environment (`WEFT_*`) < command-line flags, with the source of every
//! value kept so `weft config show` can say where each one came from.
//!
//! Works for any serde struct: the defaults are flattened into dotted keys
//! (`tcp.addr`), which are the only keys a file may set, and each key's
//! environment variable is `WEFT_` + the key upper-cased with `.` and `-`
//! turned into `_` (`tcp.addr` -> `WEFT_TCP_ADDR`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(v) => write!(f, "env {v}"),
            Source::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid {format}: {message}")]
    Parse { path: PathBuf, format: &'static str, message: String },
    #[error("unknown config key {key:?} ({from}); known keys: {known}")]
    UnknownKey { key: String, from: Source, known: String },
    #[error("config key {key:?} from {from}: expected {expected}, got {got}")]
    Type { key: String, from: Source, expected: &'static str, got: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The effective configuration and where each value came from.
#[derive(Debug, Clone)]
pub struct Layered<T> {
    pub value: T,
    pub entries: BTreeMap<String, (Value, Source)>,
}

impl<T> Layered<T> {
    /// `key = value  # source` lines, for `weft config show`.
    pub fn render(&self) -> String {
        let width = self.entries.keys().map(|k| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, (v, src)) in &self.entries {
            out.push_str(&format!("{k:width$} = {v}  # {src}\n"));
        }
        out
    }

    pub fn source_of(&self, key: &str) -> Option<&Source> {
        self.entries.get(key).map(|(_, s)| s)
    }
}

/// The environment variable that sets `key`.
pub fn env_name(key: &str) -> String {
    let mut s = String::from("WEFT_");
    s.extend(key.chars().map(|c| if c == '.' || c == '-' { '_' } else { c.to_ascii_uppercase() }));
    s
}

/// Build the configuration. `env` is the process environment (passed in for
/// testability); `flags` are (key, value, flag name) set on the command line.
pub fn load<T>(defaults: &T, file: Option<&Path>, env: &[(String, String)], flags: &[(String, Value, String)]) -> Result<Layered<T>, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let base = serde_json::to_value(defaults).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let mut entries = BTreeMap::new();
    flatten("", &base, &mut |k, v| {
        entries.insert(k, (v.clone(), Source::Default));
    });
    let known = || entries_keys(&base);

    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let is_json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let parsed: Value = if is_json {
            serde_json::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), format: "JSON", message: e.to_string() })?
        } else {
            let t: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_owned(), format: "TOML", message: e.to_string() })?;
            serde_json::to_value(t).map_err(|e| ConfigError::Parse { path: path.to_owned(), format: "TOML", message: e.to_string() })?
        };
        let mut leaves = vec![];
        flatten("", &parsed, &mut |k, v| leaves.push((k, v.clone())));
        for (k, v) in leaves {
            let src = Source::File(path.to_owned());
            let Some((default, _)) = entries.get(&k) else {
                return Err(ConfigError::UnknownKey { key: k, from: src, known: known() });
            };
            check_kind(&k, default, &v, &src)?;
            entries.insert(k, (v, src));
        }
    }

    let keys: Vec<String> = entries.keys().cloned().collect();
    for k in keys {
        let name = env_name(&k);
        let Some((_, raw)) = env.iter().find(|(n, _)| *n == name) else { continue };
        let src = Source::Env(name.clone());
        let default = entries.get(&k).map(|(d, _)| d.clone()).unwrap_or(Value::Null);
        let v = parse_env(&k, raw, &default, &src)?;
        entries.insert(k, (v, src));
    }

    for (k, v, flag) in flags {
        let src = Source::Flag(flag.clone());
        let Some((default, _)) = entries.get(k) else {
            return Err(ConfigError::UnknownKey { key: k.clone(), from: src, known: known() });
        };
        check_kind(k, default, v, &src)?;
        entries.insert(k.clone(), (v.clone(), src));
    }

    let mut root = Value::Object(Map::new());
    for (k, (v, _)) in &entries {
        insert_path(&mut root, k, v.clone());
    }
    let value = serde_json::from_value(root).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Ok(Layered { value, entries })
}

fn entries_keys(base: &Value) -> String {
    let mut keys = vec![];
    flatten("", base, &mut |k, _| keys.push(k));
    keys.join(", ")
}

fn flatten(prefix: &str, v: &Value, out: &mut dyn FnMut(String, &Value)) {
    match v {
        Value::Object(m) if !m.is_empty() || prefix.is_empty() => {
            for (k, child) in m {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, child, out);
            }
        }
        _ => out(prefix.to_owned(), v),
    }
}

fn insert_path(root: &mut Value, key: &str, v: Value) {
    let mut cur = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, p) in parts.iter().enumerate() {
        let Value::Object(m) = cur else { return };
        if i + 1 == parts.len() {
            m.insert((*p).to_owned(), v);
            return;
        }
        cur = m.entry((*p).to_owned()).or_insert_with(|| Value::Object(Map::new()));
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a table",
    }
}

fn check_kind(key: &str, default: &Value, v: &Value, src: &Source) -> Result<(), ConfigError> {
    if default.is_null() || v.is_null() || kind(default) == kind(v) {
        return Ok(());
    }
    Err(ConfigError::Type { key: key.to_owned(), from: src.clone(), expected: kind(default), got: v.to_string() })
}

fn parse_env(key: &str, raw: &str, default: &Value, src: &Source) -> Result<Value, ConfigError> {
    let bad = |expected| ConfigError::Type { key: key.to_owned(), from: src.clone(), expected, got: format!("{raw:?}") };
    match default {
        Value::String(_) => Ok(Value::String(raw.to_owned())),
        Value::Bool(_) => match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Value::Bool(true)),
            "0" | "false" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err(bad("a boolean")),
        },
        Value::Number(_) => {
            let t = raw.trim();
            t.parse::<u64>()
                .map(Value::from)
                .or_else(|_| t.parse::<i64>().map(Value::from))
                .or_else(|_| t.parse::<f64>().map_err(|_| ()).and_then(|f| serde_json::Number::from_f64(f).map(Value::Number).ok_or(())))
                .map_err(|_| bad("a number"))
        }
        Value::Array(_) => {
            let t = raw.trim();
            if t.starts_with('[') {
                serde_json::from_str(t).map_err(|_| bad("a list"))
            } else {
                Ok(Value::Array(t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_owned())).collect()))
            }
        }
        _ => Ok(serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Tcp {
        enabled: bool,
        addr: String,
    }
    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Conf {
        data_dir: String,
        max_frame_bytes: u64,
        tcp: Tcp,
        peers: Vec<String>,
    }
    fn defaults() -> Conf {
        Conf { data_dir: "./weft-data".into(), max_frame_bytes: 100, tcp: Tcp { enabled: true, addr: "127.0.0.1:7400".into() }, peers: vec![] }
    }

    #[test]
    fn precedence_and_sources() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.toml");
        std::fs::write(&f, "data_dir = \"/file\"\nmax_frame_bytes = 5\n[tcp]\naddr = \"127.0.0.1:1\"\n").unwrap();
        let env = vec![("WEFT_TCP_ADDR".to_string(), "127.0.0.1:2".to_string()), ("WEFT_PEERS".into(), "a:1, b:2".into()), ("WEFT_TCP_ENABLED".into(), "no".into())];
        let flags = vec![("data_dir".to_string(), Value::from("/flag"), "--data-dir".to_string())];
        let c = load(&defaults(), Some(&f), &env, &flags).unwrap();
        assert_eq!(c.value, Conf { data_dir: "/flag".into(), max_frame_bytes: 5, tcp: Tcp { enabled: false, addr: "127.0.0.1:2".into() }, peers: vec!["a:1".into(), "b:2".into()] });
        assert_eq!(c.source_of("data_dir"), Some(&Source::Flag("--data-dir".into())));
        assert_eq!(c.source_of("max_frame_bytes"), Some(&Source::File(f.clone())));
        assert_eq!(c.source_of("tcp.addr"), Some(&Source::Env("WEFT_TCP_ADDR".into())));
        assert!(c.render().contains("tcp.addr"));
    }

    #[test]
    fn json_file_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.json");
        std::fs::write(&f, r#"{"tcp": {"enabled": false}}"#).unwrap();
        let c = load(&defaults(), Some(&f), &[], &[]).unwrap();
        assert!(!c.value.tcp.enabled);
        std::fs::write(&f, r#"{"tcp": {"port": 1}}"#).unwrap();
        assert!(matches!(load(&defaults(), Some(&f), &[], &[]), Err(ConfigError::UnknownKey { .. })));
        std::fs::write(&f, r#"{"max_frame_bytes": "big"}"#).unwrap();
        assert!(matches!(load(&defaults(), Some(&f), &[], &[]), Err(ConfigError::Type { .. })));
        let env = vec![("WEFT_MAX_FRAME_BYTES".to_string(), "x".to_string())];
        assert!(matches!(load(&defaults(), None, &env, &[]), Err(ConfigError::Type { .. })));
        std::fs::write(&f, "{").unwrap();
        assert!(matches!(load(&defaults(), Some(&f), &[], &[]), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("tcp.addr"), "WEFT_TCP_ADDR");
        assert_eq!(env_name("data_dir"), "WEFT_DATA_DIR");
    }
}
