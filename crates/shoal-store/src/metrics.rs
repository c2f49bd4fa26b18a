//! Store metrics as values: clone the struct, register it once, read it in
//! tests.

use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

/// Counters and gauges of one store. Clones share the same values, so the
/// node can keep one clone for its registry and hand another to the store.
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// Blocks written (new or repaired).
    pub blocks_written: Counter,
    /// Bytes of blocks written.
    pub block_bytes_written: Counter,
    /// Blocks read and served.
    pub blocks_read: Counter,
    /// Bytes of blocks read and served.
    pub block_bytes_read: Counter,
    /// Blocks deleted by retention (window, byte cap, budget, pending expiry).
    pub blocks_evicted: Counter,
    /// Bytes of blocks deleted by retention.
    pub block_bytes_evicted: Counter,
    /// Manifests committed.
    pub manifests_written: Counter,
    /// Manifests evicted.
    pub manifests_evicted: Counter,
    /// Blocks found corrupt on read (deleted, never served).
    pub corrupt_blocks: Counter,
    /// Blocks put ahead of a manifest that never came, deleted on expiry.
    pub pending_expired: Counter,
    /// Bytes stored now (unique blocks plus manifests), what the disk budget
    /// is measured against.
    pub stored_bytes: Gauge,
}

impl StoreMetrics {
    /// Registers every metric under the `shoal_store` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("shoal_store");
        r.register("blocks_written", "Blocks written", self.blocks_written.clone());
        r.register("block_bytes_written", "Bytes of blocks written", self.block_bytes_written.clone());
        r.register("blocks_read", "Blocks read and served", self.blocks_read.clone());
        r.register("block_bytes_read", "Bytes of blocks read and served", self.block_bytes_read.clone());
        r.register("blocks_evicted", "Blocks deleted by retention", self.blocks_evicted.clone());
        r.register("block_bytes_evicted", "Bytes of blocks deleted by retention", self.block_bytes_evicted.clone());
        r.register("manifests_written", "Manifests committed", self.manifests_written.clone());
        r.register("manifests_evicted", "Manifests evicted", self.manifests_evicted.clone());
        r.register("corrupt_blocks", "Blocks found corrupt on read and deleted", self.corrupt_blocks.clone());
        r.register("pending_expired", "Blocks whose manifest never came, deleted", self.pending_expired.clone());
        r.register("stored_bytes", "Bytes stored (unique blocks plus manifests)", self.stored_bytes.clone());
    }

    /// A plain copy of the counters, for logs and assertions.
    pub fn snapshot(&self) -> StoreMetricsSnapshot {
        StoreMetricsSnapshot {
            blocks_written: self.blocks_written.get(),
            block_bytes_written: self.block_bytes_written.get(),
            blocks_read: self.blocks_read.get(),
            block_bytes_read: self.block_bytes_read.get(),
            blocks_evicted: self.blocks_evicted.get(),
            block_bytes_evicted: self.block_bytes_evicted.get(),
            manifests_written: self.manifests_written.get(),
            manifests_evicted: self.manifests_evicted.get(),
            corrupt_blocks: self.corrupt_blocks.get(),
            pending_expired: self.pending_expired.get(),
            stored_bytes: u64::try_from(self.stored_bytes.get()).unwrap_or(0),
        }
    }
}

/// A point-in-time copy of [`StoreMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)] // Same fields as StoreMetrics.
pub struct StoreMetricsSnapshot {
    pub blocks_written: u64,
    pub block_bytes_written: u64,
    pub blocks_read: u64,
    pub block_bytes_read: u64,
    pub blocks_evicted: u64,
    pub block_bytes_evicted: u64,
    pub manifests_written: u64,
    pub manifests_evicted: u64,
    pub corrupt_blocks: u64,
    pub pending_expired: u64,
    pub stored_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_encode_with_prefix_and_values() {
        let m = StoreMetrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        m.blocks_written.inc_by(3);
        m.stored_bytes.set(42);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("shoal_store_blocks_written_total 3"), "{out}");
        assert!(out.contains("shoal_store_stored_bytes 42"), "{out}");
        assert_eq!(m.clone().snapshot().blocks_written, 3);
    }
}
