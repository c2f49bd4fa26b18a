//! The run itself, the same for every mode: start the publisher and the
//! bootstrap nodes, then the viewers; publish the stream; add late joiners
//! halfway; churn viewers; drain; stop everything and keep the counters.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::{Multiaddr, PeerId, identity::Keypair};
use rand::{SeedableRng, rngs::StdRng, seq::IndexedRandom};

use crate::{
    report::{RunLog, Verified, ViewerLog},
    scenario::Scenario,
    shaping::{self, Shaper},
};

/// What a node hands back when it stops.
#[derive(Debug, Default, Clone)]
pub(crate) struct NodeCounters {
    /// Needed payload bytes received.
    pub(crate) payload: u64,
    /// Duplicate payload bytes received.
    pub(crate) duplicate: u64,
    /// Bytes the node wrote to the wire, when the node counts them itself
    /// (`--processes`); otherwise the driver's link shaper counts them.
    pub(crate) upload: Option<u64>,
    /// Diagnostic counters (connections, HAVEs, trims…), summed over the
    /// viewers and printed as a mean per viewer: where the cost goes.
    pub(crate) diagnostics: Vec<(&'static str, u64)>,
}

/// One started node of a mode.
pub(crate) trait BenchNode: Sized {
    /// The address others dial (with `/p2p/…`).
    fn addr(&self) -> Multiaddr;
    /// Stops the node and returns its counters.
    fn stop(self) -> impl Future<Output = NodeCounters>;
}

/// How a mode starts nodes and publishes; the driver does the rest.
pub(crate) trait Mode {
    /// Its node type.
    type Node: BenchNode;
    /// The publisher (not a bootstrap node; found through the DHT).
    fn start_publisher(&mut self, key: Keypair) -> impl Future<Output = Result<Self::Node>>;
    /// A viewer that bootstraps from `bootstrap` and records verified
    /// segments into `verified`. `upload_kbps` is its link's upload cap,
    /// which a mode may configure the node with, as its operator would.
    fn start_viewer(
        &mut self,
        key: Keypair,
        bootstrap: Vec<Multiaddr>,
        verified: Verified,
        upload_kbps: Option<u64>,
    ) -> impl Future<Output = Result<Self::Node>>;
    /// A cloneable publishing function for the publish task.
    fn publisher(&self, node: &Self::Node) -> Arc<dyn Publisher>;
    /// Called once every node has stopped, before the figures are taken:
    /// a mode that observes the stream from outside its nodes (real
    /// processes) corrects the log here.
    fn finish(&mut self, _log: &mut RunLog) {}
}

/// Publishes one segment (seq is the index from 0).
pub(crate) trait Publisher: Send + Sync {
    /// Publishes `data` as segment `seq`.
    fn publish(&self, seq: u64, data: Bytes) -> futures::future::BoxFuture<'_, Result<()>>;
}

struct Running<N> {
    node: N,
    peer: PeerId,
    shaper: Arc<Shaper>,
    log: usize,
}

fn keypair(seed: u64, i: u64) -> Keypair {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..16].copy_from_slice(&i.to_le_bytes());
    bytes[16] = 0x5b;
    // Invariant: any 32 bytes are a valid ed25519 secret.
    Keypair::ed25519_from_bytes(bytes).unwrap_or_else(|_| unreachable!("32-byte ed25519 secret"))
}

/// Viewer number `i`'s upload cap (slow viewers spread evenly).
fn viewer_upload_kbps(s: &Scenario, i: usize) -> Option<u64> {
    let slow = s.slow_share > 0.0 && ((i as f64 + 0.5) * s.slow_share).fract() < s.slow_share;
    if slow { Some(s.slow_upload_kbps) } else { s.upload_kbps }
}

/// The viewer link for viewer number `i`.
fn viewer_shaper(s: &Scenario, i: usize) -> Arc<Shaper> {
    Shaper::new(Duration::from_millis(s.rtt_ms), viewer_upload_kbps(s, i), s.download_kbps)
}

/// Segment bytes: xorshift, different for every segment and run seed, so
/// no two blocks share a CID.
fn segment_data(seed: u64, seq: u64, len: usize) -> Bytes {
    let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ seed.rotate_left(17) ^ (seq + 1);
    let mut v = vec![0u8; len];
    for chunk in v.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Bytes::from(v)
}

/// Advances the bar by one. Without a terminal the bar is hidden, so a
/// line goes to stderr at every tenth of the way instead: a long run that
/// is stopped by a timeout still says how far it got.
fn step(bar: &ProgressBar, what: &str) {
    bar.inc(1);
    let (pos, len) = (bar.position(), bar.length().unwrap_or(0));
    if bar.is_hidden() && len > 0 && (pos == len || pos * 10 / len != (pos - 1) * 10 / len) {
        eprintln!("{} {pos}/{len} {what} ({:.0} s)", bar.prefix(), bar.elapsed().as_secs_f64());
    }
}

/// Runs one mode through the scenario.
pub(crate) async fn run<M: Mode>(mode: &mut M, s: &Scenario, bar: &ProgressBar) -> Result<RunLog> {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut log = RunLog::default();
    let mut next_id = 0u64;
    let mut new_key = || {
        next_id += 1;
        keypair(s.seed, next_id)
    };

    bar.set_style(ProgressStyle::with_template("{prefix:>8} {bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| {
        // Invariant: the template above is valid.
        unreachable!("progress template")
    }));
    bar.set_length((s.viewers() - s.late_viewers()) as u64);
    bar.set_message("starting nodes");

    let pkey = new_key();
    let ppeer = pkey.public().to_peer_id();
    let pshaper = Shaper::new(Duration::from_millis(s.rtt_ms), s.publisher_upload_kbps, None);
    shaping::register(ppeer, pshaper.clone());
    let publisher = mode.start_publisher(pkey).await?;
    let mut boot = vec![publisher.addr()];
    let mut running: Vec<Running<M::Node>> = Vec::new();
    let mut viewer_no = 0usize;

    macro_rules! start_viewer {
        ($bootstrap:expr) => {{
            let key = new_key();
            let peer = key.public().to_peer_id();
            let shaper = viewer_shaper(s, viewer_no);
            let upload_kbps = viewer_upload_kbps(s, viewer_no);
            viewer_no += 1;
            shaping::register(peer, shaper.clone());
            let verified: Verified = Arc::new(Mutex::new(Default::default()));
            let joined = Instant::now();
            let node = mode.start_viewer(key, $bootstrap, verified.clone(), upload_kbps).await?;
            log.viewers.push(ViewerLog { joined, left: None, verified, upload: 0, payload: 0, duplicate: 0 });
            running.push(Running { node, peer, shaper, log: log.viewers.len() - 1 });
        }};
    }

    // Bootstrap nodes: each starts from the publisher and the earlier ones.
    for _ in 0..s.bootstrap_nodes {
        start_viewer!(boot.clone());
        if let Some(r) = running.last() {
            boot.push(r.node.addr());
        }
        step(bar, "nodes started");
    }
    // Everyone else starts from the k bootstrap nodes only.
    let viewer_boot: Vec<Multiaddr> = boot[1..].to_vec();
    let initial = s.viewers() - s.late_viewers();
    for _ in s.bootstrap_nodes..initial {
        start_viewer!(viewer_boot.clone());
        step(bar, "nodes started");
    }
    bar.set_message("warming up");
    tokio::time::sleep(Duration::from_secs(s.warmup_secs)).await;

    // The stream, in its own task so joins and churn never delay it.
    let segments = s.segments();
    bar.set_position(0);
    bar.set_length(segments);
    bar.set_message("streaming");
    // Marks in the log (RUST_LOG=shoal_bench=info), so a node's own debug
    // lines (a ping close, a trim) can be put before, in or after the stream.
    tracing::info!(nodes = running.len(), segments, "stream starts");
    let published: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let publish_task = {
        let p = mode.publisher(&publisher);
        let published = published.clone();
        let (seed, len, every) = (s.seed, s.segment_bytes(), Duration::from_millis(s.segment_ms));
        let bar = bar.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for seq in 0..segments {
                tick.tick().await;
                let data = segment_data(seed, seq, len);
                let at = Instant::now();
                if let Err(e) = p.publish(seq, data).await {
                    tracing::error!(error = %e, seq, "publish failed");
                }
                if let Ok(mut v) = published.lock() {
                    v.push(at);
                }
                step(&bar, "segments published");
            }
        })
    };

    let stream_start = Instant::now();
    let stream_len = Duration::from_millis(segments * s.segment_ms);
    let churn_events_per_min = (s.viewers() as f64 * s.churn_pct_per_min / 100.0).round();
    let churn_every = (churn_events_per_min > 0.0).then(|| Duration::from_secs_f64(60.0 / churn_events_per_min));
    let mut next_churn = churn_every.map(|d| stream_start + d);
    let mut late_done = s.late_viewers() == 0;
    while stream_start.elapsed() < stream_len {
        if !late_done && stream_start.elapsed() >= stream_len / 2 {
            late_done = true;
            for _ in 0..s.late_viewers() {
                start_viewer!(viewer_boot.clone());
            }
        }
        if let (Some(at), Some(every)) = (next_churn, churn_every)
            && Instant::now() >= at
        {
            next_churn = Some(at + every);
            // One viewer leaves (never a bootstrap node), one joins.
            let candidates: Vec<usize> = (s.bootstrap_nodes..running.len()).collect();
            if let Some(&i) = candidates.choose(&mut rng) {
                let r = running.swap_remove(i);
                stop(r, &mut log).await;
            }
            start_viewer!(viewer_boot.clone());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(30), publish_task).await;
    tracing::info!(nodes = running.len(), "stream ends");
    bar.set_message("draining");
    tokio::time::sleep(Duration::from_millis(s.target_latency_ms + 1000)).await;
    log.ended = Some(Instant::now());
    log.published = published.lock().map(|v| v.clone()).unwrap_or_default();

    bar.set_message("stopping");
    // All at once: a node's ordered shutdown can wait seconds for its
    // tasks, and 500 of them one after another would take longer than the
    // run itself.
    let stopped = futures::future::join_all(running.into_iter().map(|r| async move {
        let upload = r.shaper.sent();
        let c = r.node.stop().await;
        shaping::unregister(&r.peer);
        (r.log, upload, c)
    }))
    .await;
    for (i, upload, c) in stopped {
        log.add_diagnostics(&c.diagnostics);
        let v = &mut log.viewers[i];
        v.upload = c.upload.unwrap_or(upload);
        v.payload = c.payload;
        v.duplicate = c.duplicate;
    }
    let pc = publisher.stop().await;
    log.publisher_upload = pc.upload.unwrap_or_else(|| pshaper.sent());
    shaping::unregister(&ppeer);
    mode.finish(&mut log);
    Ok(log)
}

/// Stops a viewer that leaves (churn) and keeps its counters.
async fn stop<N: BenchNode>(r: Running<N>, log: &mut RunLog) {
    let upload = r.shaper.sent();
    log.viewers[r.log].left = Some(Instant::now());
    let c = r.node.stop().await;
    log.add_diagnostics(&c.diagnostics);
    let v = &mut log.viewers[r.log];
    v.upload = c.upload.unwrap_or(upload);
    v.payload = c.payload;
    v.duplicate = c.duplicate;
    shaping::unregister(&r.peer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_viewers_match_the_share() {
        let s = Scenario { slow_share: 0.3, slow_upload_kbps: 100, upload_kbps: Some(5000), ..Scenario::default() };
        let slow = (0..100).filter(|i| ((*i as f64 + 0.5) * s.slow_share).fract() < s.slow_share).count();
        assert_eq!(slow, 30);
    }

    #[test]
    fn segments_differ() {
        assert_ne!(segment_data(1, 0, 64), segment_data(1, 1, 64));
        assert_eq!(segment_data(1, 0, 64), segment_data(1, 0, 64));
        assert_eq!(segment_data(1, 0, 61).len(), 61);
    }
}
