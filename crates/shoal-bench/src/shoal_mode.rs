//! The `shoal` and `origin` modes: full shoal nodes (store, engine, fetch
//! scheduler, network) in this process over the shaped memory transport.
//! `origin` is the same node with `fetch.origin_only` set to the
//! publisher's peer id on every viewer and the publisher's first-copies
//! gate opened, so every viewer fetches every block from the publisher.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::{FutureExt, future::BoxFuture};
use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol};
use shoal_core::{ChannelId, ChannelKey};
use shoal_net::{ManifestValidation, NetConfig, TransportKind};
use shoal_node::{Node, NodeConfig, NodeHandle, PublishSegment, SegmentEvent, identity};

use crate::{
    driver::{BenchNode, Mode, NodeCounters, Publisher},
    lateness::Lateness,
    report::Verified,
    scenario::Scenario,
    shaping,
};

/// The transport every bench node runs.
const TRANSPORT: TransportKind = TransportKind::Custom(shaping::shaped_memory_transport);

/// Connections a bench node accepts: the publisher in `origin` mode holds
/// one per viewer, so the node default (256) would cap the `large` run.
pub(crate) const BENCH_MAX_CONNECTIONS: u32 = 2048;

/// `shoal` or `origin`.
#[derive(Debug)]
pub(crate) struct ShoalMode {
    dir: tempfile::TempDir,
    scenario: Scenario,
    key: Arc<ChannelKey>,
    channel: ChannelId,
    /// Set in `origin` mode once the publisher runs.
    origin: Option<(PeerId, Multiaddr)>,
    origin_mode: bool,
    next_dir: usize,
}

/// A running shoal node.
#[derive(Debug)]
pub(crate) struct ShoalNode {
    node: Node,
    addr: Multiaddr,
    recorder: Option<tokio::task::JoinHandle<()>>,
    /// The node's own thread and runtime (`thread_per_node`); none when it
    /// runs on the bench's shared runtime.
    thread: Option<NodeThread>,
}

/// How long a node's thread gets to finish its runtime after the node has
/// shut down (the node's own shutdown is bounded by `SHUTDOWN_GRACE`).
const NODE_THREAD_EXIT: Duration = Duration::from_secs(2);

/// A node's own OS thread running a current-thread tokio runtime: every
/// task the node spawns (event loop, engine, connections, the shaper's
/// delay lines, the API) runs there, so the kernel schedules nodes against
/// each other the way it schedules processes. The handle and the event
/// channels work across runtimes, so the driver talks to the node as usual.
#[derive(Debug)]
struct NodeThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// How late the runtime's own timers woke (lateness.rs): a node whose
    /// thread was held up misses pongs and deadlines a process would not.
    lateness: Arc<Lateness>,
}

impl NodeThread {
    /// Starts a node on a new thread and waits until it listens.
    async fn start(name: String, cfg: NodeConfig, key: Keypair) -> Result<(Node, Multiaddr, Self)> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let lateness = Arc::new(Lateness::default());
        let probe = lateness.clone();
        let who = name.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::from(e).context("building a node's runtime")));
                        return;
                    }
                };
                let started = rt.block_on(start_node(cfg, key));
                let ok = started.is_ok();
                if ready_tx.send(started).is_err() || !ok {
                    return;
                }
                // Drive the node's tasks until the driver has shut it down.
                rt.block_on(async {
                    tokio::select! {
                        _ = stop_rx => {}
                        () = probe.probe_tokio(&who) => {}
                    }
                });
                rt.shutdown_timeout(NODE_THREAD_EXIT);
            })
            .context("spawning a node thread")?;
        let mut t = Self { stop: Some(stop), thread: Some(thread), lateness };
        match ready_rx.await {
            Ok(Ok((node, addr))) => Ok((node, addr, t)),
            Ok(Err(e)) => {
                t.stop().await;
                Err(e)
            }
            Err(_) => {
                t.stop().await;
                bail!("a bench node's thread ended before its node started")
            }
        }
    }

    /// Lets the runtime finish and joins the thread.
    async fn stop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }
}

/// Starts a node on the current runtime and waits until it listens. The
/// identity file goes first, so the node runs under the key its link is
/// registered for.
async fn start_node(cfg: NodeConfig, key: Keypair) -> Result<(Node, Multiaddr)> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let bytes = key.to_protobuf_encoding().context("encoding a bench identity")?;
    identity::write_secret(&cfg.data_dir.join(identity::IDENTITY_FILE), &bytes)?;
    let node = Node::start_with(cfg, TRANSPORT).await?;
    let h = node.handle();
    for _ in 0..250 {
        if let Some(a) = h.listen_addrs().await.into_iter().next() {
            return Ok((node, a.with(Protocol::P2p(h.peer_id()))));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("a bench node did not start listening within 5 s")
}

impl ShoalMode {
    pub(crate) fn new(scenario: &Scenario, origin_mode: bool) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix("shoal-bench-").tempdir()?;
        let mut secret = [0u8; 32];
        secret[..8].copy_from_slice(&scenario.seed.to_le_bytes());
        let key = Arc::new(ChannelKey::from_secret_bytes(&secret));
        let channel = key.channel_id();
        Ok(Self { dir, scenario: scenario.clone(), key, channel, origin: None, origin_mode, next_dir: 0 })
    }

    fn config(&mut self, bootstrap: Vec<Multiaddr>) -> NodeConfig {
        self.next_dir += 1;
        // The test net's memory addresses and forced DHT server mode, with
        // the production manifest validation (below).
        let net = NetConfig { bootstrap, ..NetConfig::for_tests() };
        bench_node_config(&self.scenario, self.dir.path().join(format!("n{}", self.next_dir)), net)
    }

    /// Starts a node, on its own thread if the scenario says so.
    async fn start(&self, cfg: NodeConfig, key: &Keypair) -> Result<(Node, Multiaddr, Option<NodeThread>)> {
        if self.scenario.thread_per_node {
            let name = format!("node-{}", self.next_dir);
            let (node, addr, t) = NodeThread::start(name, cfg, key.clone()).await?;
            Ok((node, addr, Some(t)))
        } else {
            let (node, addr) = start_node(cfg, key.clone()).await?;
            Ok((node, addr, None))
        }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

/// The configuration every bench node runs, in either harness: `net`
/// (addresses and transport-specific settings) with the scenario's knobs on
/// top, the production heartbeat and the node's own manifest check before
/// forwarding, as users run it.
pub(crate) fn bench_node_config(s: &Scenario, data_dir: PathBuf, net: NetConfig) -> NodeConfig {
    let mut cfg = NodeConfig {
        data_dir,
        api: "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!("literal")),
        net: NetConfig {
            max_connections: BENCH_MAX_CONNECTIONS,
            gossip_heartbeat_ms: s.gossip_heartbeat_ms,
            ping_interval_ms: s.ping_interval_ms,
            manifest_validation: ManifestValidation::Node,
            ..net
        },
        ..NodeConfig::default()
    };
    cfg.fetch.target_latency_ms = s.target_latency_ms;
    if let Some(n) = s.stripe_seeds {
        cfg.fetch.stripe_seeds = n;
    }
    if let Some(m) = s.store_cache_mib {
        cfg.store.block_cache_bytes = m << 20;
    }
    if let Some(m) = s.store_write_buffer_mib {
        cfg.store.write_buffer_bytes = m << 20;
    }
    cfg
}

/// Publisher settings of the `origin` baseline: every asker gets every
/// block at once (the CDN origin), over a connection per client (no peer
/// budget).
pub(crate) fn make_origin(cfg: &mut NodeConfig) {
    cfg.fetch.origin_copies = u32::MAX;
    cfg.fetch.origin_grace_ms = 0;
    cfg.net.max_peers = BENCH_MAX_CONNECTIONS;
    cfg.net.target_peers = BENCH_MAX_CONNECTIONS;
}

/// A viewer's own settings, in either harness: its bootstrap peers, the
/// `max_upload` its operator would set, and in `origin` mode the origin.
pub(crate) fn viewer_settings(
    cfg: &mut NodeConfig,
    s: &Scenario,
    mut bootstrap: Vec<Multiaddr>,
    upload_kbps: Option<u64>,
    origin: Option<&(PeerId, Multiaddr)>,
) {
    // The operator of a capped line sets `max_upload` to it, so the node
    // sheds wants past its line instead of queueing them.
    if let Some(kbps) = upload_kbps.filter(|_| s.viewers_know_their_upload) {
        cfg.max_upload = (kbps * 1000 / 8).max(shoal_node::config::MIN_RATE_CAP);
    }
    if let Some((origin, addr)) = origin {
        cfg.fetch.origin_only = Some(origin.to_string());
        // A CDN client connects to the origin directly.
        if !bootstrap.contains(addr) {
            bootstrap.push(addr.clone());
        }
    }
    cfg.net.bootstrap = bootstrap;
}

impl BenchNode for ShoalNode {
    fn addr(&self) -> Multiaddr {
        self.addr.clone()
    }

    async fn stop(self) -> NodeCounters {
        let h = self.node.handle();
        let net = h.net().metrics();
        let sched = h.metrics().scheduler();
        let late = self.thread.as_ref().map(|t| (t.lateness.max_ms(), t.lateness.stalls()));
        let mut c = NodeCounters {
            payload: h.metrics().block_bytes_received.get(),
            duplicate: h.metrics().duplicate_bytes.get(),
            diagnostics: vec![
                ("peers_at_end", net.peers),
                ("connections", net.connections_established),
                ("trimmed", net.peers_trimmed),
                ("redials", net.provider_redials),
                ("dht_bootstraps", net.dht_bootstraps),
                ("dht_lookups", net.dht_provider_lookups),
                ("dht_announces", net.dht_provider_announcements),
                ("ping_closed", net.ping_closed),
                ("ping_timeouts", net.ping_timeouts),
                ("ping_errors", net.ping_errors),
                ("ping_slow", net.ping_slow),
                ("banned", net.peers_banned),
                ("wants_unanswered", net.wants_unanswered),
                ("junk_wants", net.junk_wants),
                ("haves_sent", net.haves_announced),
                ("haves_skipped", net.haves_suppressed),
                ("blocks_served", net.blocks_served),
                ("held_answered", net.held_wants_answered),
                ("held_expired", net.held_wants_expired),
                ("shed_or_capped", net.rate_limited),
                ("shed_named", net.shed_redirects),
                ("upload_waits", net.upload_waits),
                ("wait_sheds", net.upload_wait_sheds),
                ("wants_sent", sched.wants_sent),
                ("hedges", sched.hedges),
                ("early_hedges", sched.early_hedges),
                ("hedges_skipped", sched.hedges_skipped),
                ("timeouts", sched.timeouts),
                ("switches", sched.switches),
                ("switches_lost", sched.switches_lost),
                ("dup_blocks", sched.duplicate_blocks),
                ("dup_switched", sched.duplicates_switched),
                ("dup_raced", sched.duplicates_raced),
                ("dup_timed_out", sched.duplicates_timed_out),
                ("stalls", sched.stalls),
                ("stalls_excused", sched.stalls_excused),
                ("trials", sched.trials),
                ("trials_failed", sched.trials_failed),
                ("dup_trial", sched.duplicates_trial),
                ("upstream_refusals", sched.upstream_refusals),
                ("given_up", sched.segments_given_up),
            ],
            upload: None,
        };
        if let Some((max_ms, stalls)) = late {
            c.diagnostics.push(("loop_late_max_ms", max_ms));
            c.diagnostics.push(("loop_stalls", stalls));
        }
        tracing::debug!(peer = %h.peer_id(), sched = ?h.metrics().scheduler(), net = ?h.net().metrics(), "node counters");
        if let Some(t) = self.recorder {
            t.abort();
        }
        let dir = h.config().data_dir.clone();
        self.node.shutdown().await;
        if let Some(mut t) = self.thread {
            t.stop().await;
        }
        // 500 RocksDB instances add up: free each node's disk as it goes.
        let _ = std::fs::remove_dir_all(dir);
        c
    }
}

impl Mode for ShoalMode {
    type Node = ShoalNode;

    async fn start_publisher(&mut self, key: Keypair) -> Result<ShoalNode> {
        let mut cfg = self.config(vec![]);
        if self.origin_mode {
            make_origin(&mut cfg);
        }
        let (node, addr, thread) = self.start(cfg, &key).await?;
        if self.origin_mode {
            self.origin = Some((key.public().to_peer_id(), addr.clone()));
        }
        node.handle().join(self.channel).await?;
        Ok(ShoalNode { node, addr, recorder: None, thread })
    }

    async fn start_viewer(
        &mut self,
        key: Keypair,
        bootstrap: Vec<Multiaddr>,
        verified: Verified,
        upload_kbps: Option<u64>,
    ) -> Result<ShoalNode> {
        let mut cfg = self.config(vec![]);
        viewer_settings(&mut cfg, &self.scenario, bootstrap, upload_kbps, self.origin.as_ref());
        let (node, addr, thread) = self.start(cfg, &key).await?;
        let h = node.handle();
        let recorder = tokio::spawn(record(h.clone(), verified));
        h.join(self.channel).await?;
        Ok(ShoalNode { node, addr, recorder: Some(recorder), thread })
    }

    fn publisher(&self, node: &ShoalNode) -> Arc<dyn Publisher> {
        Arc::new(ShoalPublisher {
            handle: node.node.handle(),
            key: self.key.clone(),
            segment_ms: self.scenario.segment_ms as u32,
            block_bytes: self.scenario.block_bytes,
        })
    }
}

impl Drop for ShoalMode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.data_dir());
    }
}

/// Records when each segment became ready at a viewer.
async fn record(h: NodeHandle, verified: Verified) {
    let mut rx = h.subscribe();
    loop {
        match rx.recv().await {
            Ok(SegmentEvent::Ready { seq, .. }) => {
                let now = std::time::Instant::now();
                if let Ok(mut m) = verified.lock() {
                    m.entry(seq).or_insert(now);
                }
            }
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(n, "bench recorder lagged; ready events lost");
            }
            Err(_) => return,
        }
    }
}

struct ShoalPublisher {
    handle: NodeHandle,
    key: Arc<ChannelKey>,
    segment_ms: u32,
    block_bytes: usize,
}

impl Publisher for ShoalPublisher {
    fn publish(&self, seq: u64, data: Bytes) -> BoxFuture<'_, Result<()>> {
        async move {
            let seg = PublishSegment {
                data,
                duration_ms: self.segment_ms,
                keyframe: true,
                block_size: self.block_bytes,
                info: None,
            };
            let got = self.handle.publish(self.key.clone(), seg).await?;
            anyhow::ensure!(got == seq, "published seq {got}, expected {seq}");
            Ok(())
        }
        .boxed()
    }
}
