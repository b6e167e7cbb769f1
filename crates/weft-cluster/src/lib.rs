#![cfg_attr(test, allow(clippy::unwrap_used))]
//! Weft's cluster layer (docs/cluster.md): a multi-raft host on raft-rs with
//! durable raft storage of our own, a batched transport, and the metadata group.

pub mod codec;
pub mod error;
pub mod host;
pub mod meta;
pub mod node;
pub mod partition;
pub mod rebalancer;
pub mod storage;
pub mod table;
pub mod tls;
pub mod transport;

pub use error::{ClusterError, Result};
pub use host::{Applied, GroupId, GroupStatus, MultiRaft, NodeId, RaftTuning, ReadyOutput, StateMachine, META_GROUP};
pub use meta::{AuthObserver, MetaCommand, MetaResponse, MetaState, Move, NodeInfo, Role, TableMeta};
pub use node::{parse_peers, ClusterConfig, ClusterNode, ClusterStatus};
pub use raft;
