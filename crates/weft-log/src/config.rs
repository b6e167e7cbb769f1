//! Log-wide configuration.

use serde::{Deserialize, Serialize};

use crate::model::TopicConfig;

/// When an append is acknowledged. See docs/storage.md for what each promises.
///
/// Written as a string in configuration files: `always`, `never`,
/// `interval` (100 ms) or `interval:<ms>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FsyncPolicy {
    /// Acknowledge after `fdatasync` covered the record. Concurrent appenders
    /// to one partition share an fsync (group commit). Consumers only see
    /// records that are durable.
    #[default]
    Always,
    /// Acknowledge after the write reached the OS; a background task fsyncs
    /// every partition with unsynced data every `ms` milliseconds.
    Interval { ms: u64 },
    /// Acknowledge after the write reached the OS; fsync only when a segment
    /// is closed and at shutdown.
    Never,
}


impl std::fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval { ms } => write!(f, "interval:{ms}"),
        }
    }
}

impl TryFrom<String> for FsyncPolicy {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<FsyncPolicy> for String {
    fn from(p: FsyncPolicy) -> String {
        p.to_string()
    }
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    /// `always`, `never`, `interval` (100 ms) or `interval:<ms>`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            "interval" => Ok(FsyncPolicy::Interval { ms: 100 }),
            _ => match s.strip_prefix("interval:").map(str::parse::<u64>) {
                Some(Ok(ms)) if ms > 0 => Ok(FsyncPolicy::Interval { ms }),
                _ => Err(format!("bad fsync policy {s:?}: expected always, never, interval or interval:<ms>")),
            },
        }
    }
}

/// Configuration of a [`crate::Log`]. Deserializable (every field has a
/// default), e.g. from the `[log]` table of a TOML file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub fsync: FsyncPolicy,
    /// Defaults for topics created without an explicit config.
    pub default_topic: TopicConfig,
    /// How often retention, compaction, segment roll by age and group
    /// session expiry run in the background. `None` = never (tests call
    /// [`crate::Log::run_maintenance`] themselves).
    pub maintenance_interval_ms: Option<u64>,
    /// Partitions of `__consumer_offsets`.
    pub offsets_partitions: u32,
    /// Largest fetch a caller may ask for.
    pub max_fetch_bytes: usize,
    /// Longest long-poll wait accepted (longer waits are cut to this).
    pub max_wait_ms: u64,
    /// Largest consumer-group session timeout accepted.
    pub max_session_timeout_ms: u64,
    /// Most consumer groups / members per group (limits on memory).
    pub max_groups: usize,
    pub max_group_members: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::Always,
            default_topic: TopicConfig::default(),
            maintenance_interval_ms: Some(10_000),
            offsets_partitions: 1,
            max_fetch_bytes: 64 * 1024 * 1024,
            max_wait_ms: 60_000,
            max_session_timeout_ms: 5 * 60 * 1000,
            max_groups: 10_000,
            max_group_members: 1000,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parse_policy() {
        assert_eq!("always".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Always);
        assert_eq!("interval:5".parse::<FsyncPolicy>().unwrap(), FsyncPolicy::Interval { ms: 5 });
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
        let c: LogConfig = serde_json::from_str(r#"{"fsync":"interval:50","default_topic":{"partitions":4}}"#).unwrap();
        assert_eq!(c.fsync, FsyncPolicy::Interval { ms: 50 });
        assert_eq!(c.default_topic.partitions, 4);
        assert_eq!(serde_json::to_string(&FsyncPolicy::Never).unwrap(), "\"never\"");
        assert!(serde_json::from_str::<LogConfig>(r#"{"fsync":"bogus"}"#).is_err());
    }
}
