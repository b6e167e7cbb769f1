//! Log-wide configuration.

use std::time::Duration;

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
    /// [`crate::Log::run_maintenance`] themselves). In files:
    /// `maintenance_interval_ms` (null = never).
    #[serde(rename = "maintenance_interval_ms", with = "opt_ms")]
    pub maintenance_interval: Option<Duration>,
    /// Partitions of `__consumer_offsets`.
    pub offsets_partitions: u32,
    /// Kafka's `offsets.retention.minutes`: a group's committed offsets
    /// are removed once it has had no members and no commit for this long
    /// (checked at each maintenance round). `None` = kept for ever. In
    /// files: `offsets_retention_ms` (null = never; default 7 days).
    #[serde(rename = "offsets_retention_ms", with = "opt_ms")]
    pub offsets_retention: Option<Duration>,
    /// Largest fetch a caller may ask for.
    pub max_fetch_bytes: usize,
    /// Longest long-poll wait accepted (longer waits are cut to this). In
    /// files: `max_wait_ms`.
    #[serde(rename = "max_wait_ms", with = "ms")]
    pub max_wait: Duration,
    /// Largest consumer-group session timeout accepted.
    pub max_session_timeout_ms: u64,
    /// Most consumer groups / members per group (limits on memory).
    pub max_groups: usize,
    pub max_group_members: usize,
    /// Most segment files kept open at once (a least-recently-used cache;
    /// others are opened again when read or written). `weft serve` lowers
    /// it to half the process's open-file limit if that is smaller.
    pub max_open_files: usize,
    /// A partition poisoned by a failed write or fsync is reopened from its
    /// last durable state on the next write attempt, at most once per this
    /// many milliseconds (so a full disk is not rescanned on every write).
    pub poison_retry_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::Always,
            default_topic: TopicConfig::default(),
            maintenance_interval: Some(Duration::from_secs(10)),
            offsets_partitions: 1,
            offsets_retention: Some(Duration::from_secs(7 * 24 * 3600)),
            max_fetch_bytes: 64 * 1024 * 1024,
            max_wait: Duration::from_secs(60),
            max_session_timeout_ms: 5 * 60 * 1000,
            max_groups: 10_000,
            max_group_members: 1000,
            max_open_files: 1024,
            poison_retry_ms: 1000,
        }
    }
}

/// A `Duration` as whole milliseconds.
mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// An `Option<Duration>` as whole milliseconds or null.
mod opt_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis().min(u128::from(u64::MAX)) as u64)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
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
        let c: LogConfig = serde_json::from_str(r#"{"maintenance_interval_ms":null,"max_wait_ms":5}"#).unwrap();
        assert_eq!((c.maintenance_interval, c.max_wait), (None, Duration::from_millis(5)));
        let back: LogConfig = serde_json::from_str(&serde_json::to_string(&LogConfig::default()).unwrap()).unwrap();
        assert_eq!(back, LogConfig::default());
    }
}
