//! shoal's store: verified blocks, signed manifests and channel heads in
//! RocksDB, with a live window per channel, archive channels, a node-wide
//! disk budget, and nothing acknowledged lost on a crash.
//!
//! - Only verified data goes in: [`Store::store_segment`],
//!   [`Store::put_block`] and [`Store::commit_segment`] take
//!   [`shoal_core::VerifiedManifest`] and [`shoal_core::VerifiedBlock`].
//! - A segment's blocks, manifest, block reference counts and channel head
//!   are written in one `WriteBatch` with the WAL on, so readers and crash
//!   recovery see a manifest only together with all its blocks.
//! - Blocks are shared by CID: a block listed by several stored manifests is
//!   kept until the last of them is evicted.
//! - Reads are lock-free and pinned ([`Store::block`]), and every block read
//!   is checked against its CID: a corrupt copy is deleted and reported as
//!   [`StoreError::CorruptBlock`], never served.
//! - Retention runs in passes ([`Store::evict_once`]) from a background
//!   thread ([`Store::spawn_evictor`]) or the node's own task.
//!
//! The store knows nothing about video: segments are opaque blocks.
#![deny(missing_docs)]

mod config;
mod error;
mod metrics;
pub mod schema;
mod store;

pub use crate::{
    config::StoreConfig,
    error::StoreError,
    metrics::{StoreMetrics, StoreMetricsSnapshot},
    store::{
        BlockPut, BlockSlice, ChannelHead, ChannelStats, Commit, EvictionReport, Evictor, IntegrityReport,
        MAX_MANIFESTS_PER_READ, Store, StoredEquivocation, StoredManifest,
    },
};
