//! The node's metrics: a struct of prometheus-client values registered in
//! the one registry (with the network's and libp2p's), passed around so
//! tests can read them.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

use libp2p::PeerId;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use shoal_core::ChainDecision;

/// Most peers tracked in the per-peer received-bytes table (the smallest
/// entry is dropped beyond this, so churn cannot grow it without bound).
const MAX_PEER_ROWS: usize = 1024;
/// Most recent per-segment latency samples kept for percentiles.
const MAX_LATENCY_SAMPLES: usize = 4096;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabel {
    decision: &'static str,
}

/// Node counters.
#[derive(Debug)]
pub struct NodeMetrics {
    /// Segments this node published.
    pub segments_published: Counter,
    /// Segments fetched completely and committed.
    pub segments_complete: Counter,
    /// Segments that missed their deadline.
    pub segments_skipped: Counter,
    /// Bytes of needed blocks received.
    pub block_bytes_received: Counter,
    /// Bytes of blocks received that were no longer needed.
    pub duplicate_bytes: Counter,
    /// Publish → committed here, ms.
    pub segment_latency_ms: Histogram,
    decisions: Family<DecisionLabel, Counter>,
    received_from: Mutex<HashMap<PeerId, u64>>,
    latency_samples: Mutex<VecDeque<u64>>,
    scheduler: Mutex<crate::scheduler::SchedulerStats>,
}

impl NodeMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            segments_published: Counter::default(),
            segments_complete: Counter::default(),
            segments_skipped: Counter::default(),
            block_bytes_received: Counter::default(),
            duplicate_bytes: Counter::default(),
            segment_latency_ms: Histogram::new([
                25.0, 50.0, 100.0, 200.0, 300.0, 500.0, 750.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0,
            ]),
            decisions: Family::default(),
            received_from: Mutex::new(HashMap::new()),
            latency_samples: Mutex::new(VecDeque::new()),
            scheduler: Mutex::new(crate::scheduler::SchedulerStats::default()),
        };
        let r = registry.sub_registry_with_prefix("shoal_node");
        r.register("segments_published", "Segments this node published", m.segments_published.clone());
        r.register("segments_complete", "Segments fetched, verified and stored", m.segments_complete.clone());
        r.register("segments_skipped", "Segments that missed their deadline", m.segments_skipped.clone());
        r.register("block_bytes_received", "Bytes of needed blocks received", m.block_bytes_received.clone());
        r.register("duplicate_bytes", "Bytes of blocks received after another copy", m.duplicate_bytes.clone());
        r.register("segment_latency_ms", "Publish to stored here, ms", m.segment_latency_ms.clone());
        r.register("manifest_decisions", "Chain decisions on verified manifests", m.decisions.clone());
        m
    }

    pub(crate) fn manifest_decision(&self, d: &ChainDecision) {
        let decision = match d {
            ChainDecision::Accept => "accept",
            ChainDecision::Gap { .. } => "gap",
            ChainDecision::Backfill => "backfill",
            ChainDecision::Duplicate => "duplicate",
            ChainDecision::Stale { .. } => "stale",
            ChainDecision::Equivocation(_) => "equivocation",
        };
        self.decisions.get_or_create(&DecisionLabel { decision }).inc();
    }

    pub(crate) fn received(&self, peer: PeerId, bytes: u64) {
        let Ok(mut m) = self.received_from.lock() else { return };
        if !m.contains_key(&peer)
            && m.len() >= MAX_PEER_ROWS
            && let Some(smallest) = m.iter().min_by_key(|(_, v)| **v).map(|(k, _)| *k)
        {
            m.remove(&smallest);
        }
        *m.entry(peer).or_default() += bytes;
    }

    pub(crate) fn latency(&self, ms: u64) {
        self.segment_latency_ms.observe(ms as f64);
        if let Ok(mut v) = self.latency_samples.lock() {
            if v.len() == MAX_LATENCY_SAMPLES {
                v.pop_front();
            }
            v.push_back(ms);
        }
    }

    /// The most recent publish → verified-and-stored latencies, ms, one per
    /// segment (bounded to the last 4096).
    pub fn latency_samples(&self) -> Vec<u64> {
        self.latency_samples.lock().map(|v| v.iter().copied().collect()).unwrap_or_default()
    }

    /// The fetch schedulers' counters, summed over channels (updated every
    /// engine tick).
    pub fn scheduler(&self) -> crate::scheduler::SchedulerStats {
        self.scheduler.lock().map(|s| *s).unwrap_or_default()
    }

    pub(crate) fn set_scheduler(&self, s: crate::scheduler::SchedulerStats) {
        if let Ok(mut m) = self.scheduler.lock() {
            *m = s;
        }
    }

    /// Bytes of needed blocks received from each peer.
    pub fn received_from(&self) -> HashMap<PeerId, u64> {
        self.received_from.lock().map(|m| m.clone()).unwrap_or_default()
    }
}
