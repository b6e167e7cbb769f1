//! Node settings and limits of the query API (config section `query`,
//! docs/operations.md).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryConfig {
    /// Longest AQL text accepted (INVALID_ARGUMENT past it).
    pub max_text_bytes: u64,
    /// Most key-values or records one answer holds (RANGE without LIMIT is
    /// cut here with `more: true`; a LIMIT above it is RESOURCE_EXHAUSTED).
    pub max_results: u64,
    /// Most keys or records FILTER, UPDATE and FROM TOPIC ... WHERE may
    /// examine for one query (RESOURCE_EXHAUSTED past it).
    pub max_scan: u64,
    /// Deadline of a query that names none (0: none).
    pub default_timeout_ms: u64,
    /// Key-values or records per Stream chunk when the client names none.
    pub stream_chunk_default: u32,
    /// Largest Stream chunk.
    pub stream_chunk_max: u32,
    /// Times UPDATE re-reads a key whose compare-and-set lost a race before
    /// answering ABORTED.
    pub update_retries: u32,
    /// Bytes one log fetch of FROM TOPIC reads at once.
    pub topic_fetch_bytes: u64,
    /// Concurrent Watch streams per node (RESOURCE_EXHAUSTED past it).
    pub max_watches: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_text_bytes: 64 * 1024,
            max_results: 10_000,
            max_scan: 1_000_000,
            default_timeout_ms: 30_000,
            stream_chunk_default: 256,
            stream_chunk_max: 4096,
            update_retries: 16,
            topic_fetch_bytes: 1024 * 1024,
            max_watches: 1024,
        }
    }
}
