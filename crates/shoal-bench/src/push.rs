//! The `push` baseline: what a naive design does. Every block travels
//! inside a gossipsub message (v1.2, so large messages trigger IDONTWANT),
//! signed by the publisher and verified at every hop (libp2p's strict
//! mode). Nodes find each other through Kademlia from the same bootstrap
//! nodes, over the same shaped transport as shoal.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::{FutureExt, StreamExt, future::BoxFuture};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder,
    gossipsub::{self, IdentTopic, MessageAuthenticity},
    identify,
    identity::Keypair,
    kad,
    multiaddr::Protocol,
    swarm::{NetworkBehaviour, SwarmEvent},
};
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};

use crate::{
    driver::{BenchNode, Mode, NodeCounters, Publisher},
    report::Verified,
    scenario::Scenario,
    shaping,
};

/// The push nodes' own DHT, apart from shoal's.
const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal-bench/push/kad/1.0.0");
/// Header on every block message: seq (u64), block index and count (u16).
const HEADER: usize = 12;
/// Commands queued to one push node: a segment's publish at a time.
const COMMAND_CAPACITY: usize = 16;
/// Connections a push node keeps dialing towards (gossipsub's mesh degree
/// is 6; a few spare peers let the mesh repair itself).
const DIAL_TARGET: usize = 10;

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    identify: identify::Behaviour,
}

enum Cmd {
    Publish(Vec<Bytes>, oneshot::Sender<Result<()>>),
    Stop(oneshot::Sender<()>),
}

/// The `push` mode.
#[derive(Debug)]
pub(crate) struct PushMode {
    scenario: Scenario,
}

impl PushMode {
    pub(crate) fn new(scenario: &Scenario) -> Self {
        Self { scenario: scenario.clone() }
    }
}

/// A running push node.
#[derive(Debug)]
pub(crate) struct PushNode {
    addr: Multiaddr,
    cmd: mpsc::Sender<Cmd>,
    payload: Arc<AtomicU64>,
    registry: Arc<std::sync::Mutex<Registry>>,
}

fn topic() -> IdentTopic {
    IdentTopic::new("shoal-bench/push")
}

fn build(key: Keypair, block_bytes: usize, heartbeat: Duration, registry: &mut Registry) -> Result<Swarm<Behaviour>> {
    let peer = key.public().to_peer_id();
    let gcfg = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(heartbeat)
        // One RPC frame can carry more than one message plus control
        // (measured: 72 KiB frames with 64 KiB blocks); 4 blocks of room.
        .max_transmit_size(4 * (block_bytes + HEADER) + 16 * 1024)
        // Like shoal's publisher: send to the mesh, not to every peer.
        .flood_publish(false)
        .build()
        .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
    let mut gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), gcfg)
        .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?
        .with_metrics(registry, gossipsub::MetricsConfig::default());
    gossipsub.subscribe(&topic())?;
    let mut kad = kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad::Config::new(KAD_PROTOCOL));
    kad.set_mode(Some(kad::Mode::Server));
    let identify = identify::Behaviour::new(identify::Config::new("/shoal-bench/push/1.0.0".into(), key.public()));
    let swarm = SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(shaping::shaped_memory_transport)
        .map_err(|e| anyhow::anyhow!("transport: {e}"))?
        .with_behaviour(|_| Behaviour { gossipsub, kad, identify })
        .map_err(|e| anyhow::anyhow!("behaviour: {e}"))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    Ok(swarm)
}

async fn start(key: Keypair, bootstrap: Vec<Multiaddr>, s: &Scenario, verified: Option<Verified>) -> Result<PushNode> {
    let mut registry = Registry::default();
    let heartbeat = Duration::from_millis(s.gossip_heartbeat_ms);
    let mut swarm = build(key, s.block_bytes, heartbeat, &mut registry)?;
    swarm.listen_on("/memory/0".parse()?)?;
    let addr = loop {
        match tokio::time::timeout(Duration::from_secs(5), swarm.select_next_some()).await {
            Ok(SwarmEvent::NewListenAddr { address, .. }) => break address,
            Ok(_) => {}
            Err(_) => anyhow::bail!("push node did not listen within 5 s"),
        }
    };
    let me = *swarm.local_peer_id();
    for b in &bootstrap {
        if let Some(Protocol::P2p(p)) = b.iter().last() {
            swarm.behaviour_mut().kad.add_address(&p, b.clone());
            let _ = swarm.dial(b.clone());
        }
    }
    if !bootstrap.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
    let (tx, rx) = mpsc::channel(COMMAND_CAPACITY);
    let payload = Arc::new(AtomicU64::new(0));
    tokio::spawn(run(swarm, rx, verified, payload.clone()));
    Ok(PushNode {
        addr: addr.with(Protocol::P2p(me)),
        cmd: tx,
        payload,
        registry: Arc::new(std::sync::Mutex::new(registry)),
    })
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut rx: mpsc::Receiver<Cmd>,
    verified: Option<Verified>,
    payload: Arc<AtomicU64>,
) {
    // Blocks seen per segment, until the segment is whole (bounded by the
    // run's segment count).
    let mut partial: HashMap<u64, u16> = HashMap::new();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Cmd::Publish(blocks, reply)) => {
                    let mut r = Ok(());
                    for b in blocks {
                        if let Err(e) = swarm.behaviour_mut().gossipsub.publish(topic(), b) {
                            r = Err(anyhow::anyhow!("gossipsub publish: {e}"));
                        }
                    }
                    let _ = reply.send(r);
                }
                Some(Cmd::Stop(reply)) => {
                    let _ = reply.send(());
                    return;
                }
                None => return,
            },
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                    let d = &message.data;
                    if d.len() < HEADER {
                        continue;
                    }
                    let seq = u64::from_be_bytes(d[..8].try_into().unwrap_or_default());
                    let count = u16::from_be_bytes([d[10], d[11]]);
                    payload.fetch_add((d.len() - HEADER) as u64, Ordering::Relaxed);
                    let n = partial.entry(seq).or_default();
                    *n += 1;
                    if *n == count
                        && let Some(v) = &verified
                        && let Ok(mut m) = v.lock()
                    {
                        m.entry(seq).or_insert_with(Instant::now);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    for a in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, a);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::RoutingUpdated { peer, .. }))
                    if swarm.connected_peers().count() < DIAL_TARGET && !swarm.is_connected(&peer) =>
                {
                    let _ = swarm.dial(peer);
                }
                _ => {}
            },
        }
    }
}

/// Duplicate payload from gossipsub's own counters: every message received
/// (before de-duplication) minus the first copies, in protobuf bytes.
fn duplicate_bytes(registry: &Registry) -> u64 {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        return 0;
    }
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' ')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let all = sum("topic_msg_recv_bytes_unfiltered_total");
    let first = sum("topic_msg_recv_bytes_total");
    (all - first).max(0.0) as u64
}

impl BenchNode for PushNode {
    fn addr(&self) -> Multiaddr {
        self.addr.clone()
    }

    async fn stop(self) -> NodeCounters {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Stop(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        let duplicate = self.registry.lock().map(|r| duplicate_bytes(&r)).unwrap_or(0);
        NodeCounters { payload: self.payload.load(Ordering::Relaxed), duplicate, diagnostics: Vec::new(), upload: None }
    }
}

impl Mode for PushMode {
    type Node = PushNode;

    async fn start_publisher(&mut self, key: Keypair) -> Result<PushNode> {
        start(key, vec![], &self.scenario, None).await
    }

    async fn start_viewer(
        &mut self,
        key: Keypair,
        bootstrap: Vec<Multiaddr>,
        verified: Verified,
        _upload_kbps: Option<u64>,
    ) -> Result<PushNode> {
        // gossipsub has no upload cap to configure: its mesh pushes every
        // message to every mesh peer whatever the line.
        start(key, bootstrap, &self.scenario, Some(verified)).await
    }

    fn publisher(&self, node: &PushNode) -> Arc<dyn Publisher> {
        Arc::new(PushPublisher { cmd: node.cmd.clone(), block_bytes: self.scenario.block_bytes })
    }
}

struct PushPublisher {
    cmd: mpsc::Sender<Cmd>,
    block_bytes: usize,
}

impl Publisher for PushPublisher {
    fn publish(&self, seq: u64, data: Bytes) -> BoxFuture<'_, Result<()>> {
        async move {
            let chunks: Vec<&[u8]> = data.chunks(self.block_bytes).collect();
            let count = u16::try_from(chunks.len()).context("more than 65535 blocks in a segment")?;
            let blocks = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut m = Vec::with_capacity(HEADER + c.len());
                    m.extend_from_slice(&seq.to_be_bytes());
                    m.extend_from_slice(&(i as u16).to_be_bytes());
                    m.extend_from_slice(&count.to_be_bytes());
                    m.extend_from_slice(c);
                    Bytes::from(m)
                })
                .collect();
            let (tx, rx) = oneshot::channel();
            self.cmd.send(Cmd::Publish(blocks, tx)).await.context("push publisher stopped")?;
            tokio::time::timeout(Duration::from_secs(10), rx).await.context("push publish timed out")??
        }
        .boxed()
    }
}
