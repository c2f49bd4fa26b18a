//! `TestNet`: n nodes in one process on the memory transport (or loopback
//! TCP/QUIC), seeded keys and topology, events logged with timestamps, and
//! `wait_for` instead of sleeps.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol};
use prometheus_client::registry::Registry;
use rand::{Rng, SeedableRng, rngs::StdRng};
use shoal_core::{
    BlockCid, BlockRef, ChannelId, ChannelKey, Manifest, ManifestCid, Segment, SignedManifest, VerifiedBlock,
    VerifiedManifest,
};
use shoal_net::{BlockSource, Misbehaviour, NetClient, NetConfig, NetEvent, Network, TransportKind};
use tokio::task::JoinHandle;

/// Everything a node reported, with when it arrived.
#[derive(Debug, Default)]
pub(crate) struct NodeLog {
    pub(crate) manifests: Vec<(Instant, VerifiedManifest, bool)>,
    pub(crate) pending: Vec<(libp2p::gossipsub::MessageId, PeerId, u64)>,
    pub(crate) directory: Vec<shoal_core::VerifiedDirectoryEntry>,
    pub(crate) providers: Vec<(ChannelId, Vec<PeerId>)>,
    pub(crate) penalties: Vec<(PeerId, Misbehaviour, u32, bool)>,
    pub(crate) haves: Vec<(PeerId, Vec<BlockCid>)>,
    pub(crate) connected: HashSet<PeerId>,
}

/// An in-memory [`BlockSource`] the test fills.
#[derive(Debug, Default)]
pub(crate) struct MemorySource {
    pub(crate) blocks: Mutex<HashMap<BlockCid, VerifiedBlock>>,
    pub(crate) expected: Mutex<HashSet<BlockCid>>,
    pub(crate) heads: Mutex<HashMap<ChannelId, Vec<SignedManifest>>>,
    /// Blocks held but refused to every asker, naming these peers instead
    /// (a publisher's first-copies gate).
    pub(crate) gated: Mutex<HashMap<BlockCid, Vec<PeerId>>>,
}

impl BlockSource for MemorySource {
    fn get_block(&self, cid: &BlockCid) -> Option<VerifiedBlock> {
        self.blocks.lock().unwrap().get(cid).cloned()
    }
    fn get_block_for(&self, _: &PeerId, cid: &BlockCid) -> Option<VerifiedBlock> {
        if self.gated.lock().unwrap().contains_key(cid) {
            return None;
        }
        self.get_block(cid)
    }
    fn redirect(&self, _: &PeerId, cid: &BlockCid) -> Vec<PeerId> {
        self.gated.lock().unwrap().get(cid).cloned().unwrap_or_default()
    }
    fn expects(&self, cid: &BlockCid) -> bool {
        self.expected.lock().unwrap().contains(cid)
    }
    fn head(&self, channel: &ChannelId, max: u32) -> Vec<SignedManifest> {
        let heads = self.heads.lock().unwrap();
        let all = heads.get(channel).cloned().unwrap_or_default();
        let skip = all.len().saturating_sub(max as usize);
        all[skip..].to_vec()
    }
}

pub(crate) struct TestNode {
    pub(crate) client: NetClient,
    pub(crate) peer_id: PeerId,
    /// First listen address, with `/p2p/<id>`.
    pub(crate) addr: Multiaddr,
    pub(crate) log: Arc<Mutex<NodeLog>>,
    pub(crate) source: Arc<MemorySource>,
    pub(crate) registry: Registry,
    pub(crate) task: JoinHandle<()>,
}

impl TestNode {
    /// Sum of every sample of metric families whose name starts with `prefix`.
    pub(crate) fn metric_sum(&self, prefix: &str, label_filter: &str) -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(prefix) && l.contains(label_filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub(crate) struct TestNet {
    pub(crate) nodes: Vec<TestNode>,
    pub(crate) rng: StdRng,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

pub(crate) fn listen_addr(transport: TransportKind) -> Vec<Multiaddr> {
    match transport {
        TransportKind::Memory | TransportKind::Custom(_) => vec!["/memory/0".parse().unwrap()],
        TransportKind::TcpQuic => {
            vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap(), "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()]
        }
    }
}

/// Spawns one node and a task that logs its events.
pub(crate) async fn spawn_node(config: NetConfig, key: Keypair, transport: TransportKind) -> TestNode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut registry = Registry::default();
    let source = Arc::new(MemorySource::default());
    let handle = Network::spawn(config, key, transport, &mut registry, source.clone()).expect("network spawns");
    let log = Arc::new(Mutex::new(NodeLog::default()));
    let mut events = handle.events;
    let sink = log.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let mut l = sink.lock().unwrap();
            match ev {
                NetEvent::Manifest { manifest, pending_validation, message_id, source, .. } => {
                    if pending_validation {
                        l.pending.push((message_id, source, manifest.seq()));
                    }
                    l.manifests.push((Instant::now(), manifest, pending_validation));
                }
                NetEvent::Directory { entry, .. } => l.directory.push(entry),
                NetEvent::ProvidersFound { channel, providers } => l.providers.push((channel, providers)),
                NetEvent::PeerPenalised { peer, reason, strikes, banned } => {
                    l.penalties.push((peer, reason, strikes, banned))
                }
                NetEvent::PeerHaves { peer, cids, .. } => l.haves.push((peer, cids)),
                NetEvent::PeerConnected { peer } => {
                    l.connected.insert(peer);
                }
                NetEvent::PeerDisconnected { peer } => {
                    l.connected.remove(&peer);
                }
                NetEvent::Listening { .. } => {}
            }
        }
    });
    let client = handle.client;
    let addrs = wait_for_value("listen address", Duration::from_secs(5), || {
        let c = client.clone();
        async move { c.listen_addrs().await.ok().filter(|a| !a.is_empty()) }
    })
    .await;
    let peer_id = client.peer_id();
    let addr = addrs[0].clone().with(Protocol::P2p(peer_id));
    TestNode { client, peer_id, addr, log, source, registry, task: handle.task }
}

impl TestNet {
    /// `n` nodes; node `i > 0` knows exactly one bootstrap node, a random
    /// earlier one (seeded), so discovery has to go through the DHT.
    /// Waits (30 s at most) until every node's routing table holds at
    /// least `min` peers: DHT discovery from one bootstrap node each.
    pub(crate) async fn wait_for_routing_tables(&self, min: usize) {
        for (i, n) in self.nodes.iter().enumerate() {
            let c = n.client.clone();
            wait_for(&format!("node {i} routing table"), Duration::from_secs(30), || {
                let c = c.clone();
                async move { c.status().await.unwrap().routing_table >= min }
            })
            .await;
        }
    }

    pub(crate) async fn spawn(n: usize, transport: TransportKind, seed: u64) -> Self {
        Self::spawn_with(n, transport, seed, |_, _| {}).await
    }

    pub(crate) async fn spawn_with(
        n: usize,
        transport: TransportKind,
        seed: u64,
        tweak: impl Fn(usize, &mut NetConfig),
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut nodes: Vec<TestNode> = Vec::with_capacity(n);
        for i in 0..n {
            let mut config = NetConfig { listen: listen_addr(transport), ..NetConfig::for_tests() };
            if i > 0 {
                let j = rng.random_range(0..i);
                config.bootstrap = vec![nodes[j].addr.clone()];
            }
            tweak(i, &mut config);
            let mut secret: [u8; 32] = rng.random();
            let key = Keypair::ed25519_from_bytes(&mut secret).unwrap();
            nodes.push(spawn_node(config, key, transport).await);
        }
        Self { nodes, rng }
    }

    pub(crate) async fn shutdown(self) {
        for n in self.nodes {
            let stop = async {
                n.client.shutdown().await.unwrap();
                n.task.await.unwrap();
            };
            tokio::time::timeout(Duration::from_secs(10), stop).await.expect("network task stops within 10 s");
        }
    }
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `timeout`.
pub(crate) async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for_value(what, timeout, || {
        let f = check();
        async move { f.await.then_some(()) }
    })
    .await
}

/// Polls `check` until it returns `Some`.
pub(crate) async fn wait_for_value<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        // The check itself is bounded too: a wedged network task must fail
        // the test, not hang it.
        let left = timeout.saturating_sub(start.elapsed());
        if let Ok(Some(v)) = tokio::time::timeout(left, check()).await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A signed manifest for `key`'s channel, dated `published_at_ms`.
pub(crate) fn manifest(key: &ChannelKey, seq: u64, prev: Option<ManifestCid>, published_at_ms: u64) -> SignedManifest {
    let m = Manifest {
        channel: key.channel_id(),
        seq,
        published_at_ms,
        prev,
        segment: Segment {
            number: seq,
            duration_ms: 1000,
            rendition: 0,
            keyframe: true,
            blocks: (0..4u8).map(|i| BlockRef { cid: BlockCid::of(&[seq as u8, i]), size: 256 * 1024 }).collect(),
        },
        info: None,
    };
    key.sign_manifest(&m).unwrap()
}

/// p-th percentile (0..=100) of durations, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1]
}
