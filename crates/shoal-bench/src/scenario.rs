//! A bench scenario: the swarm, the links and the stream, as read from
//! `config/bench/*.toml`. Every key has a default, so a file names only
//! what makes the scenario what it is.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};

/// One scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Scenario {
    /// Name, for the table and the plot titles.
    pub(crate) name: String,
    /// Nodes in total: one publisher, the rest viewers.
    pub(crate) nodes: usize,
    /// Seconds of stream published.
    pub(crate) seconds: u64,
    /// Stream bitrate, kbit/s.
    pub(crate) bitrate_kbps: u64,
    /// Segment duration, ms (one manifest per segment).
    pub(crate) segment_ms: u64,
    /// Block size the publisher splits segments into, bytes.
    pub(crate) block_bytes: usize,
    /// Round-trip time of every link, ms (0: none).
    pub(crate) rtt_ms: u64,
    /// Upload cap of every viewer, kbit/s (none: uncapped).
    pub(crate) upload_kbps: Option<u64>,
    /// Download cap of every viewer, kbit/s (none: uncapped).
    pub(crate) download_kbps: Option<u64>,
    /// Upload cap of the publisher, kbit/s (none: uncapped, like a CDN
    /// origin; the `origin` baseline needs it to be).
    pub(crate) publisher_upload_kbps: Option<u64>,
    /// Share of viewers whose upload is capped at `slow_upload_kbps`.
    pub(crate) slow_share: f64,
    /// Upload cap of the slow viewers, kbit/s (below the bitrate).
    pub(crate) slow_upload_kbps: u64,
    /// Share of viewers that join halfway through the stream.
    pub(crate) late_share: f64,
    /// Viewers leaving, and as many joining, per minute, in % of viewers.
    pub(crate) churn_pct_per_min: f64,
    /// Bootstrap nodes (the first k viewers); every node starts from them
    /// and finds the rest through the DHT.
    pub(crate) bootstrap_nodes: usize,
    /// Playback deadline after publish, ms (continuity counts segments
    /// verified before it).
    pub(crate) target_latency_ms: u64,
    /// Seconds between the last viewer starting and the first segment, so
    /// meshes form.
    pub(crate) warmup_secs: u64,
    /// Seed for identities, churn choices and the stream bytes.
    pub(crate) seed: u64,
    /// Tokio worker threads of the bench process's shared runtime (the
    /// whole swarm's, unless `thread_per_node`).
    pub(crate) worker_threads: usize,
    /// In-process shoal and origin modes: run each node on its own OS
    /// thread with a current-thread tokio runtime, as a process would have
    /// it (the default), instead of every node's tasks sharing one runtime
    /// of `worker_threads` workers (`false`, or `--shared-runtime`). The
    /// kernel then time-slices nodes, and one node's long poll (a
    /// handshake, a routing-table sort) no longer holds up the tasks of
    /// others queued behind it on the same worker.
    pub(crate) thread_per_node: bool,
    /// In-process modes: the nice value for the process's one
    /// `futures-timer` thread, which runs every libp2p timer (pings,
    /// request timeouts, gossipsub heartbeats) of every node. At the
    /// default priority it gets one thread's share among hundreds of node
    /// threads and fell up to 16 s behind in a 100-node run, so every
    /// node's pings went unsent at once (lateness.rs); a process of its
    /// own per node would never wait on the others' timers. -20 (the
    /// default) needs CAP_SYS_NICE, and the run says whether it took; 0
    /// leaves the thread alone (`--plain-timer-thread`).
    pub(crate) timer_thread_nice: i32,
    /// Store block cache per node, MiB (the node default is 64; the RSS
    /// figure depends on it).
    pub(crate) store_cache_mib: Option<u64>,
    /// Store write buffers per node, MiB (the node default is 32).
    pub(crate) store_write_buffer_mib: Option<u64>,
    /// Gossipsub heartbeat of every node in every mode, ms. The node
    /// default (`[net] gossip_heartbeat_ms`, 1000): the bench measures what
    /// users run. Each heartbeat walks every mesh and scores every peer, so
    /// it is also most of an idle node's CPU.
    pub(crate) gossip_heartbeat_ms: u64,
    /// Liveness ping interval on every shoal connection, ms (`[net]
    /// ping_interval_ms`; the node default is 2500, with a 2.5 s timeout in
    /// production and 20 s in test nets). Every connection pings, so with
    /// hundreds of nodes in one process this is a large share of the idle
    /// CPU (docs/benchmarks.md).
    pub(crate) ping_interval_ms: u64,
    /// Whether capped viewers run with `max_upload` set to their line, as
    /// their operators would (the node then sheds wants past it instead of
    /// queueing them). Off: the node does not know its line.
    pub(crate) viewers_know_their_upload: bool,
    /// The publisher's `[fetch] stripe_seeds` (the node default, 4, unless
    /// set): for measuring the first hop with fewer or more seeds.
    pub(crate) stripe_seeds: Option<u32>,
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "custom".into(),
            nodes: 30,
            seconds: 30,
            bitrate_kbps: 2000,
            segment_ms: 1000,
            block_bytes: 64 * 1024,
            rtt_ms: 0,
            upload_kbps: None,
            download_kbps: None,
            publisher_upload_kbps: None,
            slow_share: 0.0,
            slow_upload_kbps: 0,
            late_share: 0.0,
            churn_pct_per_min: 0.0,
            bootstrap_nodes: 3,
            target_latency_ms: 3000,
            warmup_secs: 3,
            seed: 7,
            worker_threads: 2,
            thread_per_node: true,
            timer_thread_nice: -20,
            store_cache_mib: None,
            store_write_buffer_mib: None,
            gossip_heartbeat_ms: 1000,
            ping_interval_ms: 2500,
            viewers_know_their_upload: true,
            stripe_seeds: None,
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading scenario {}", path.display()))?;
        let s: Self = toml::from_str(&text).with_context(|| format!("scenario {}", path.display()))?;
        s.validate().with_context(|| format!("scenario {}", path.display()))?;
        Ok(s)
    }

    /// Whether the scenario's links differ from a plain, uncapped wire:
    /// what `--processes` cannot apply yet.
    pub(crate) fn shapes_links(&self) -> bool {
        self.rtt_ms > 0
            || self.upload_kbps.is_some()
            || self.download_kbps.is_some()
            || self.publisher_upload_kbps.is_some()
            || self.slow_share > 0.0
    }

    /// Values that parse but cannot run.
    pub(crate) fn validate(&self) -> Result<()> {
        ensure!(self.nodes >= 2, "nodes = {}: need a publisher and at least one viewer", self.nodes);
        ensure!(self.bootstrap_nodes >= 1 && self.bootstrap_nodes < self.nodes, "bootstrap_nodes must be 1..nodes");
        ensure!(self.seconds >= 1 && self.segment_ms >= 100, "seconds >= 1 and segment_ms >= 100");
        ensure!(
            (-20..=19).contains(&self.timer_thread_nice),
            "timer_thread_nice = {}: a nice value is -20..=19",
            self.timer_thread_nice
        );
        ensure!(self.bitrate_kbps >= 8, "bitrate_kbps must be at least 8");
        ensure!(self.block_bytes >= 1024 && self.block_bytes <= 256 * 1024, "block_bytes must be 1 KiB..256 KiB");
        ensure!((0.0..=1.0).contains(&self.slow_share), "slow_share must be 0..1");
        ensure!((0.0..1.0).contains(&self.late_share), "late_share must be 0..1");
        ensure!((0.0..=100.0).contains(&self.churn_pct_per_min), "churn_pct_per_min must be 0..100");
        ensure!(self.target_latency_ms >= 200, "target_latency_ms must be at least 200");
        ensure!(self.worker_threads >= 1, "worker_threads must be at least 1");
        ensure!(self.gossip_heartbeat_ms >= 100, "gossip_heartbeat_ms must be at least 100");
        ensure!(
            (100..20_000).contains(&self.ping_interval_ms),
            "ping_interval_ms must be 100..20000 (below the test nets' 20 s ping timeout)"
        );
        Ok(())
    }

    /// Bytes per segment.
    pub(crate) fn segment_bytes(&self) -> usize {
        ((self.bitrate_kbps * 1000 / 8) * self.segment_ms / 1000).max(1) as usize
    }

    /// Segments published.
    pub(crate) fn segments(&self) -> u64 {
        (self.seconds * 1000 / self.segment_ms).max(1)
    }

    /// Viewers (everyone but the publisher), including late joiners.
    pub(crate) fn viewers(&self) -> usize {
        self.nodes - 1
    }

    /// Viewers that join halfway.
    pub(crate) fn late_viewers(&self) -> usize {
        ((self.viewers() - self.bootstrap_nodes) as f64 * self.late_share).round() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped scenario parses and validates.
    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/bench");
        let mut names = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let s = Scenario::load(&p).unwrap();
                assert_eq!(s.name, p.file_stem().unwrap().to_str().unwrap());
                names.push(s.name);
            }
        }
        // Issue 7's five, plus probes (idle100, idle150).
        for want in ["small", "medium", "large", "churn", "constrained", "idle100", "idle150"] {
            assert!(names.iter().any(|n| n == want), "config/bench/{want}.toml missing; found {names:?}");
        }
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<Scenario>("nodez = 3").is_err());
    }
}
