//! The `[store]` section of the node configuration.

use serde::{Deserialize, Serialize};

/// Store settings. Every memory-holding structure is bounded by one of these;
/// the defaults suit a small node (a few live channels, ~200 MiB RSS budget
/// for the store).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// RocksDB block cache (shared by all column families and blob files):
    /// hot blocks served to many peers come from here.
    pub block_cache_bytes: u64,
    /// Total memtable memory across column families. RocksDB flushes when it
    /// is reached, so this bounds write-side memory.
    pub write_buffer_bytes: u64,
    /// Most SST/blob files RocksDB keeps open (file descriptors and their
    /// index memory).
    pub max_open_files: u32,
    /// fsync the WAL on every write. Off: a killed process loses nothing that
    /// was acknowledged (the WAL is in the OS page cache), but a power cut or
    /// kernel panic can lose the last writes (never half of one). On: survives
    /// power loss too, at one fsync per segment.
    pub sync_writes: bool,
    /// Hash every block read against its CID and delete bad copies, so a
    /// flipped bit on disk is refetched rather than served.
    pub verify_reads: bool,
    /// Live window per channel: the newest segments totalling at least this
    /// many seconds are kept; older ones are evicted in seq order.
    pub live_window_secs: u64,
    /// Byte cap per channel on top of the window (segment plus manifest
    /// bytes); the oldest segments go first, the newest is always kept.
    pub channel_max_bytes: u64,
    /// Node-wide budget for stored bytes (blocks plus manifests). Over it,
    /// the oldest segments of non-archive channels are evicted first.
    pub disk_budget_bytes: u64,
    /// Most bytes of blocks stored ahead of their manifest's commit.
    pub max_pending_bytes: u64,
    /// Blocks stored ahead of a manifest that is not committed within this
    /// many seconds are deleted.
    pub pending_ttl_secs: u64,
    /// Most manifests one eviction pass removes, so a pass holds the write
    /// lock for a bounded time; the next pass continues.
    pub max_evictions_per_pass: u32,
    /// How often the background evictor runs, in milliseconds.
    pub eviction_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            block_cache_bytes: 64 * MIB,
            write_buffer_bytes: 32 * MIB,
            max_open_files: 256,
            sync_writes: false,
            verify_reads: true,
            // Five minutes: long enough for late joiners to start from a
            // keyframe and for slow peers to catch up.
            live_window_secs: 300,
            // Five minutes at ~25 Mbit/s.
            channel_max_bytes: GIB,
            disk_budget_bytes: 8 * GIB,
            // A few segments per channel for a handful of channels.
            max_pending_bytes: 256 * MIB,
            // Well past MAX_HOLD_MS: a segment not complete by then is dead.
            pending_ttl_secs: 60,
            max_evictions_per_pass: 256,
            eviction_interval_ms: 1_000,
        }
    }
}

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;

#[cfg(test)]
mod tests {
    use super::*;

    /// The `[store]` table of config/default.toml, which documents every key.
    fn default_toml_store_section() -> toml::Table {
        let text = include_str!("../../../config/default.toml");
        let mut doc: toml::Table = toml::from_str(text).expect("config/default.toml parses");
        match doc.remove("store") {
            Some(toml::Value::Table(t)) => t,
            other => panic!("config/default.toml has no [store] table: {other:?}"),
        }
    }

    #[test]
    fn default_toml_matches_the_defaults_and_lists_every_key() {
        let table = default_toml_store_section();
        let parsed: StoreConfig = table.clone().try_into().expect("[store] parses into StoreConfig");
        assert_eq!(parsed, StoreConfig::default());
        // Every field appears in the file (so it documents all of them).
        let all = toml::Table::try_from(StoreConfig::default()).expect("serialises");
        let mut missing: Vec<_> = all.keys().filter(|k| !table.contains_key(*k)).collect();
        missing.sort();
        assert!(missing.is_empty(), "config/default.toml [store] lacks {missing:?}");
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let err = toml::from_str::<StoreConfig>("block_cache_byte = 1").unwrap_err();
        assert!(err.to_string().contains("block_cache_byte"), "{err}");
        let partial: StoreConfig = toml::from_str("sync_writes = true").unwrap();
        assert!(partial.sync_writes);
        assert_eq!(partial.block_cache_bytes, StoreConfig::default().block_cache_bytes);
    }
}
