//! The honest side of the attack suite: a publisher and `n` viewers, full
//! shoal nodes in one process on the memory transport, a paced stream, and
//! the checks every attack shares: continuity, store contents, latency.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
use shoal_core::{BlockCid, ChannelKey, VerifiedBlock};
use shoal_net::{ManifestValidation, NetConfig, TransportKind};
use shoal_node::{Node, NodeConfig, PublishSegment, SegmentEvent};

/// Bytes per segment: 1 s at 1 Mbit/s, light enough for 20+ nodes on two
/// shared cores.
pub(crate) const SEGMENT_BYTES: usize = 125_000;
/// Block size: two blocks per segment.
const BLOCK_BYTES: usize = 64 * 1024;
/// Playback deadline. Twenty full nodes share two threads in CI; the
/// default 3 s is a CPU benchmark there (see swarm30.rs).
const TARGET_LATENCY_MS: u64 = 6000;

/// A running honest swarm.
#[derive(Debug)]
pub struct Fixture {
    /// Keeps the data dirs alive.
    pub tmp: tempfile::TempDir,
    /// The publisher.
    pub publisher: Node,
    /// The viewers (some may have been killed: `None`).
    pub viewers: Vec<Option<Node>>,
    /// The channel key (the equivocation attack steals it).
    pub key: Arc<ChannelKey>,
    /// Publish instants by seq.
    pub published: HashMap<u64, Instant>,
    /// Payloads by seq (for byte checks).
    pub payloads: HashMap<u64, Bytes>,
    /// Ready events per viewer: seq → when.
    ready: Vec<Arc<Mutex<HashMap<u64, Instant>>>>,
    next_seq: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// (viewer, segment) pairs expected.
    pub expected: usize,
    /// (viewer, segment) pairs that became ready.
    pub ready: usize,
    /// Publish → ready latencies (ms) for segments before `split`.
    pub before_ms: Vec<f64>,
    /// The same for segments from `split` on.
    pub after_ms: Vec<f64>,
    /// `before_ms` by segment, in seq order: one cluster per segment for
    /// the bootstrap (`crate::stats`).
    pub before_segments: Vec<Vec<f64>>,
    /// `after_ms` by segment, in seq order.
    pub after_segments: Vec<Vec<f64>>,
}

impl Outcome {
    /// ready ÷ expected.
    pub fn continuity(&self) -> f64 {
        if self.expected == 0 { 1.0 } else { self.ready as f64 / self.expected as f64 }
    }

    /// p99 after ÷ p99 before.
    pub fn p99_ratio(&self) -> f64 {
        crate::percentile(&self.after_ms, 99.0) / crate::percentile(&self.before_ms, 99.0)
    }

    /// The same ratio with its 90 % interval over resampled segments: how
    /// much of it one run can resolve.
    pub fn p99_ratio_interval(&self) -> Option<crate::stats::RatioInterval> {
        crate::stats::p99_ratio_interval(&self.after_segments, &self.before_segments, 0x5eed)
    }

    /// Writes the latencies as `phase<TAB>seq<TAB>ms` lines to a new file
    /// `<dir>/<group>-<unix ms>.tsv`, for `hostile-report` to pool over
    /// runs. Returns the file's path.
    pub fn record(&self, dir: &std::path::Path, group: &str, warmup: u64) -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        let path = dir.join(format!("{group}-{stamp}.tsv"));
        let mut out = String::new();
        for (phase, segs, first) in [
            ("before", &self.before_segments, warmup),
            ("during", &self.after_segments, warmup + self.before_segments.len() as u64),
        ] {
            for (i, seg) in segs.iter().enumerate() {
                for ms in seg {
                    out.push_str(&format!("{phase}\t{}\t{ms:.1}\n", first + i as u64));
                }
            }
        }
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

fn config(dir: &std::path::Path, bootstrap: Vec<Multiaddr>) -> NodeConfig {
    NodeConfig {
        data_dir: dir.to_owned(),
        api: "127.0.0.1:0".parse().expect("literal"),
        net: NetConfig {
            bootstrap,
            manifest_validation: ManifestValidation::Node,
            // Scaled down with the floods (see hostile.rs FLOOD_PER_TICK);
            // honest traffic in this swarm stays far below it.
            exchange_requests_per_sec_per_peer: 20,
            inbound_streams_per_sec_per_peer: 60,
            ..NetConfig::for_tests()
        },
        fetch: shoal_node::config::FetchConfig { target_latency_ms: TARGET_LATENCY_MS, ..Default::default() },
        ..NodeConfig::default()
    }
}

async fn addr_of(n: &Node) -> Result<Multiaddr> {
    let h = n.handle();
    for _ in 0..100 {
        if let Some(a) = h.listen_addrs().await.first() {
            return Ok(a.clone().with(Protocol::P2p(h.peer_id())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("node has no listen address after 2 s")
}

impl Fixture {
    /// A publisher and `viewers` viewers that joined the channel and had a
    /// few seconds to build their mesh.
    pub async fn start(viewers: usize, key_seed: u8) -> Result<Self> {
        let tmp = crate::test_dir()?;
        let publisher = Node::start_with(config(&tmp.path().join("p"), vec![]), TransportKind::Memory).await?;
        let boot = addr_of(&publisher).await?;
        let key = Arc::new(ChannelKey::from_secret_bytes(&[key_seed; 32]));
        let channel = key.channel_id();
        let mut vs = Vec::new();
        let mut ready = Vec::new();
        for i in 0..viewers {
            let n =
                Node::start_with(config(&tmp.path().join(format!("v{i}")), vec![boot.clone()]), TransportKind::Memory)
                    .await?;
            let log = Arc::new(Mutex::new(HashMap::new()));
            let mut rx = n.handle().subscribe();
            let sink = log.clone();
            tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(SegmentEvent::Ready { seq, .. }) => {
                            if let Ok(mut l) = sink.lock() {
                                l.entry(seq).or_insert_with(Instant::now);
                            }
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
            });
            n.handle().join(channel).await?;
            vs.push(Some(n));
            ready.push(log);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(Self {
            tmp,
            publisher,
            viewers: vs,
            key,
            published: HashMap::new(),
            payloads: HashMap::new(),
            ready,
            next_seq: 0,
        })
    }

    /// Every honest node's address, with `/p2p/`.
    pub async fn addrs(&self) -> Result<Vec<Multiaddr>> {
        let mut out = vec![addr_of(&self.publisher).await?];
        for v in self.viewers.iter().flatten() {
            out.push(addr_of(v).await?);
        }
        Ok(out)
    }

    /// Publishes `n` segments one second apart (distinct bytes each).
    pub async fn publish(&mut self, n: u64) -> Result<()> {
        let h = self.publisher.handle();
        for _ in 0..n {
            let s = self.next_seq;
            let mut payload = vec![0u8; SEGMENT_BYTES];
            let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ (s + 1);
            for b in payload.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let data = Bytes::from(payload);
            let seg = PublishSegment {
                data: data.clone(),
                duration_ms: 1000,
                keyframe: true,
                block_size: BLOCK_BYTES,
                info: None,
            };
            let t = Instant::now();
            let seq = h.publish(self.key.clone(), seg).await?;
            if t.elapsed() > Duration::from_millis(500) {
                println!("  (publish of seq {seq} took {:?}: the publisher's engine is starved)", t.elapsed());
            }
            ensure!(seq == s, "publisher assigned seq {seq}, expected {s}");
            self.published.insert(seq, Instant::now());
            self.payloads.insert(seq, data);
            self.next_seq += 1;
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        Ok(())
    }

    /// Waits out the playback deadline of the last segment.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(TARGET_LATENCY_MS + 500)).await;
    }

    /// Kills (drops after shutdown) the viewers at `idx`.
    pub async fn kill(&mut self, idx: &[usize]) {
        for &i in idx {
            if let Some(n) = self.viewers.get_mut(i).and_then(Option::take) {
                n.shutdown().await;
            }
        }
    }

    /// Continuity and latencies over the live viewers. Every segment counts
    /// toward continuity; for the latency sets, segments with seq below
    /// `warmup` count in neither (the swarm's first segments, while meshes
    /// and seeds form, are slower than anything an attack does later), the
    /// rest before `split` are "before" and from `split` on "after".
    pub fn outcome(&self, warmup: u64, split: u64) -> Outcome {
        let mut o = Outcome::default();
        let mut by_seq: std::collections::BTreeMap<u64, Vec<f64>> =
            self.published.keys().filter(|s| **s >= warmup).map(|s| (*s, Vec::new())).collect();
        for (i, v) in self.viewers.iter().enumerate() {
            if v.is_none() {
                continue;
            }
            let Ok(got) = self.ready[i].lock() else { continue };
            for (seq, at) in &self.published {
                o.expected += 1;
                if let Some(r) = got.get(seq) {
                    o.ready += 1;
                    let ms = r.saturating_duration_since(*at).as_secs_f64() * 1000.0;
                    if *seq < warmup {
                        continue;
                    }
                    if *seq < split {
                        o.before_ms.push(ms)
                    } else {
                        o.after_ms.push(ms)
                    }
                    by_seq.entry(*seq).or_default().push(ms);
                }
            }
        }
        for (seq, lat) in by_seq {
            if seq < split { o.before_segments.push(lat) } else { o.after_segments.push(lat) }
        }
        o.before_ms.sort_by(f64::total_cmp);
        o.after_ms.sort_by(f64::total_cmp);
        o
    }

    /// Publish → ready latencies (ms) of one segment over the live viewers
    /// that got it.
    pub fn seq_latencies(&self, seq: u64) -> Vec<f64> {
        let Some(at) = self.published.get(&seq) else { return Vec::new() };
        self.viewers
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_some())
            .filter_map(|(i, _)| self.ready[i].lock().ok()?.get(&seq).copied())
            .map(|r| r.saturating_duration_since(*at).as_secs_f64() * 1000.0)
            .collect()
    }

    /// Every live viewer's store holds, for every published seq it has,
    /// exactly the publisher's manifest and bytes, and none of `forged`.
    /// Returns the number of blocks checked.
    pub fn check_stores(&self, forged: &HashSet<BlockCid>) -> Result<usize> {
        let channel = self.key.channel_id();
        let pstore = self.publisher.handle().store().clone();
        let mut checked = 0;
        for (i, v) in self.viewers.iter().enumerate() {
            let Some(v) = v else { continue };
            let store = v.handle().store().clone();
            for cid in forged {
                ensure!(!store.has_block(cid)?, "viewer {i} stored forged block {cid}");
            }
            for seq in self.published.keys() {
                let Some(m) = store.manifest(&channel, *seq)? else { continue };
                let p = pstore.manifest(&channel, *seq)?.context("publisher lost a manifest")?;
                ensure!(m.cid() == p.cid(), "viewer {i} holds a different manifest for seq {seq}");
                let payload = &self.payloads[seq];
                let mut off = 0usize;
                for b in &m.manifest().segment.blocks {
                    let want = payload.slice(off..off + b.size as usize);
                    off += b.size as usize;
                    if let Some(bytes) = store.block_bytes(&b.cid)? {
                        ensure!(bytes == want, "viewer {i} seq {seq}: stored bytes differ from the publisher's");
                        ensure!(
                            VerifiedBlock::verify(b.cid, bytes).is_ok(),
                            "viewer {i}: block does not hash to its CID"
                        );
                        checked += 1;
                    }
                }
            }
        }
        Ok(checked)
    }

    /// Whether any live viewer is still connected to `peer`.
    pub async fn connected_to(&self, peer: &libp2p::PeerId) -> usize {
        let mut n = 0;
        for v in self.viewers.iter().flatten().chain(std::iter::once(&self.publisher)) {
            if let Ok(s) = v.handle().net().status().await
                && s.connected.contains(peer)
            {
                n += 1;
            }
        }
        n
    }

    /// Every honest node's network metrics.
    pub fn honest_metrics(&self) -> Vec<shoal_net::MetricsSnapshot> {
        self.viewers
            .iter()
            .flatten()
            .chain(std::iter::once(&self.publisher))
            .map(|v| v.handle().net().metrics())
            .collect()
    }

    /// The fetch schedulers' counters, summed over the honest viewers.
    pub fn honest_scheduler(&self) -> shoal_node::scheduler::SchedulerStats {
        let mut sum = shoal_node::scheduler::SchedulerStats::default();
        for v in self.viewers.iter().flatten() {
            sum += v.handle().metrics().scheduler();
        }
        sum
    }

    /// Peers banned, summed over the honest nodes.
    pub fn bans(&self) -> u64 {
        self.viewers
            .iter()
            .flatten()
            .chain(std::iter::once(&self.publisher))
            .map(|v| v.handle().net().metrics().peers_banned)
            .sum()
    }

    /// Honest nodes banned by honest nodes (each pair once): a defence that
    /// strikes on a judgement, not on proof (a trial left unanswered), must
    /// not turn on the honest swarm it protects.
    pub async fn honest_bans_of_honest(&self) -> Result<Vec<(PeerId, PeerId)>> {
        let nodes: Vec<_> = self.viewers.iter().flatten().chain(std::iter::once(&self.publisher)).collect();
        let honest: HashSet<PeerId> = nodes.iter().map(|n| n.handle().net().peer_id()).collect();
        let mut out = Vec::new();
        for n in nodes {
            let status = n.handle().net().status().await?;
            let me = n.handle().net().peer_id();
            out.extend(status.banned.into_iter().filter(|p| honest.contains(p)).map(|p| (me, p)));
        }
        Ok(out)
    }

    /// Honest nodes whose ban list holds `peer` now.
    pub async fn banned_by(&self, peer: &PeerId) -> Result<usize> {
        let mut n = 0;
        for v in self.viewers.iter().flatten().chain(std::iter::once(&self.publisher)) {
            if v.handle().net().status().await?.banned.contains(peer) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Channels flagged for equivocation, over the live viewers.
    pub async fn flagged(&self) -> usize {
        let mut n = 0;
        for v in self.viewers.iter().flatten() {
            if v.handle().channels().await.is_ok_and(|c| c.iter().any(|s| s.flagged)) {
                n += 1;
            }
        }
        n
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for v in self.viewers.into_iter().flatten() {
            v.shutdown().await;
        }
        self.publisher.shutdown().await;
    }
}
