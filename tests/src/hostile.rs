//! A hostile shoal peer, for the attack suite only. It is built on shoal's
//! own crates (shoal-core signs and encodes) and speaks libp2p directly:
//! gossipsub on the channel's topic and the exchange and head protocols by
//! their names, with a raw codec so it can send any bytes at all.
//!
//! One [`Hostile`] runs one [`Attack`] (the list, 1–9) against every
//! honest peer it is connected to, and records what it tried and when each
//! honest peer cut it off.

mod fixture;

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
pub use fixture::{Fixture, Outcome};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
    gossipsub::{self, IdentTopic, MessageAuthenticity, MessageId, ValidationMode},
    identity::Keypair,
    request_response::{self, ProtocolSupport, ResponseChannel},
    swarm::{NetworkBehaviour, SwarmEvent, dial_opts::DialOpts},
};
use prost::Message as _;
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use shoal_core::{
    BlockCid, BlockRef, ChannelId, ChannelKey, Manifest, Segment, SignedManifest,
    exchange::{ExchangeRequest, Want, WantKind},
};
use shoal_net::{EXCHANGE_PROTOCOL, HEAD_PROTOCOL};
use shoal_proto::v1 as pb;
use tokio::{runtime::Runtime, sync::mpsc, task::JoinHandle};

/// What the hostile peer does. Numbers are the attack list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// 1: manifests signed by the wrong key, and honest ones with a flipped byte.
    WrongKey,
    /// 2: re-publish every manifest it has seen, again and again.
    Replay,
    /// 3: with the stolen channel key, a second manifest for each seq the
    /// publisher announces (validly signed, different blocks).
    Equivocate,
    /// 4: garbage, oversized and truncated frames on exchange, head and gossip.
    Malformed,
    /// 5: announce HAVE for every new block, answer wants with wrong bytes.
    CorruptBlocks,
    /// 6: announce HAVE for every new block, never answer a want.
    HaveThenStall,
    /// 7: want-blocks (with holds) as fast as it can.
    FloodWants,
    /// 8: many connections to each peer and many concurrent streams.
    ManyConnections,
    /// Not an attack: a stranger that connects, joins the topic (its
    /// gossipsub relays manifests without validating them) and answers
    /// every want with DONT_HAVE. The suite's second control: it separates
    /// what an attacker costs by being there from what its attack costs.
    Idle,
}

/// Counters and timings, shared with the test.
#[derive(Debug, Default)]
pub struct HostileStats {
    /// Bad items sent: messages, frames, blocks or requests, per the attack.
    pub tries: AtomicU64,
    /// Want-blocks honest peers sent us.
    pub wants_received: AtomicU64,
    /// Honest peers connected now.
    pub connected: AtomicU64,
    /// Honest peers connected when the attack started.
    pub connected_at_start: AtomicU64,
    /// Dials this peer started after the attack did (its own, and those
    /// libp2p starts for requests queued to a peer that cut it off).
    pub dials_during: AtomicU64,
    /// When each honest peer last closed its last connection to us.
    pub cut_off: Mutex<HashMap<PeerId, Instant>>,
    /// Want-blocks received, as (when, count) per tick, for the stall attack.
    pub wants_timeline: Mutex<Vec<(Instant, u64)>>,
    /// When the attack started.
    pub started: Mutex<Option<Instant>>,
    /// Content that no honest node may ever store: CIDs of blocks we forged.
    pub forged_cids: Mutex<HashSet<BlockCid>>,
}

/// Raw frames: requests and responses are written exactly as given (the
/// attack builds the framing), and read back as one varint-framed body.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

/// Reads are capped so honest answers can never make the attacker allocate
/// without bound: one largest exchange response plus slack.
const MAX_READ: usize = 5 * 1024 * 1024;

/// Held response channels in the stall attack (each one an open stream).
const MAX_STALLED: usize = 4096;

/// Manifests remembered for replays and CIDs.
const MAX_SEEN: usize = 64;

/// How often the attack acts.
const TICK: Duration = Duration::from_millis(100);

/// Requests per honest peer per tick in the floods: 200/s, 10× the
/// fixture's request cap (20/s) and 3.3× its stream guard (60/s). Most of
/// them never reach a victim's event loop: the stream guard drops them in
/// the connection task and strikes the flooder once a second. (An earlier
/// flood at 50/s stayed under the guard and starved the two shared cores
/// for the whole run instead of getting banned.)
const FLOOD_PER_TICK: usize = 20;

/// Delay before the equivocating copy of a manifest goes out.
const EQUIVOCATE_AFTER: Duration = Duration::from_millis(500);

/// Varint-length framing, as shoal's codec expects.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 10);
    let mut n = body.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(body);
    out
}

async fn read_body<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = 0u64;
    for i in 0..10 {
        let mut b = [0u8; 1];
        io.read_exact(&mut b).await?;
        len |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if len > MAX_READ {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "too large"));
            }
            let mut buf = vec![0u8; len];
            io.read_exact(&mut buf).await?;
            return Ok(buf);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "bad varint"))
}

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_body(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_body(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, res: Vec<u8>) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&res).await?;
        io.close().await
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    // Ping and identify, as every shoal peer must speak them: honest nodes
    // negotiate streams lazily (protocol.md §5.2), so a peer that lacks a
    // protocol they open to it fails that stream, and a failed ping closes
    // the connection (liveness). A hostile peer that wants to stay
    // connected long enough to attack answers them like anyone else.
    ping: libp2p::ping::Behaviour,
    identify: libp2p::identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
    exchange: request_response::Behaviour<RawCodec>,
    head: request_response::Behaviour<RawCodec>,
}

/// A running hostile peer.
#[derive(Debug)]
pub struct Hostile {
    /// Its identity.
    pub peer_id: PeerId,
    /// The attack it runs.
    pub attack: Attack,
    /// What it did and saw.
    pub stats: Arc<HostileStats>,
    ctl: mpsc::Sender<Ctl>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
enum Ctl {
    Dial(Vec<Multiaddr>),
    Start,
    Stop,
}

/// Control messages queued to the hostile task; the test sends a handful.
const CTL_CAPACITY: usize = 16;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The runtime every hostile peer of the process runs on: one worker
/// thread, pinned to the attackers' CPU when the suite set one aside
/// (`crate::cpu`). Its connection tasks run there too, so however many
/// hostile peers a test starts, together they take at most one CPU and
/// never queue ahead of honest tasks on the honest runtime's workers.
fn attacker_runtime() -> anyhow::Result<&'static Runtime> {
    static RT: OnceLock<Option<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(1)
            .thread_name("attacker")
            .on_thread_start(|| {
                crate::cpu::register_attacker_thread();
                if !crate::cpu::pin_attacker_thread() {
                    crate::cpu::lower_attacker_priority();
                }
            })
            .enable_all()
            .build()
            .map_err(|e| eprintln!("the attackers' runtime did not start: {e}"))
            .ok()
    })
    .as_ref()
    .ok_or_else(|| anyhow::anyhow!("no attackers' runtime (see stderr)"))
}

impl Hostile {
    /// Spawns a hostile peer for `channel`. `stolen` is the channel key, for
    /// the equivocation attack only. It does nothing until [`Self::start`].
    pub fn spawn(attack: Attack, channel: ChannelId, stolen: Option<ChannelKey>, seed: u64) -> anyhow::Result<Self> {
        let key = Keypair::generate_ed25519();
        let peer_id = key.public().to_peer_id();
        let gossip_cfg = gossipsub::ConfigBuilder::default()
            .validation_mode(ValidationMode::Anonymous)
            // Unique ids: our own duplicate cache must never stop a replay.
            .message_id_fn(|_| MessageId::from(rand::random::<[u8; 16]>().to_vec()))
            .max_transmit_size(2 * 1024 * 1024)
            .heartbeat_interval(Duration::from_millis(200))
            .build()
            .map_err(|e| anyhow::anyhow!("gossipsub config: {e}"))?;
        let gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_cfg)
            .map_err(|e| anyhow::anyhow!("gossipsub: {e}"))?;
        let rr = request_response::Config::default()
            .with_request_timeout(Duration::from_secs(30))
            .with_max_concurrent_streams(100_000);
        let behaviour = Behaviour {
            ping: libp2p::ping::Behaviour::default(),
            identify: libp2p::identify::Behaviour::new(libp2p::identify::Config::new(
                "/shoal/1.0.0".to_string(),
                key.public(),
            )),
            gossipsub,
            exchange: request_response::Behaviour::with_codec(
                RawCodec,
                [(EXCHANGE_PROTOCOL, ProtocolSupport::Full)],
                rr.clone(),
            ),
            head: request_response::Behaviour::with_codec(RawCodec, [(HEAD_PROTOCOL, ProtocolSupport::Full)], rr),
        };
        let mut swarm = SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(shoal_net::memory_transport)
            .map_err(|e| anyhow::anyhow!("transport: {e}"))?
            .with_behaviour(|_| behaviour)
            .map_err(|e| anyhow::anyhow!("behaviour: {e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        let topic = IdentTopic::new(channel.topic());
        swarm.behaviour_mut().gossipsub.subscribe(&topic).map_err(|e| anyhow::anyhow!("subscribe: {e:?}"))?;
        let stats = Arc::new(HostileStats::default());
        let (ctl, rx) = mpsc::channel(CTL_CAPACITY);
        let state = State {
            swarm,
            attack,
            channel,
            topic,
            stolen,
            own: ChannelKey::from_secret_bytes(&[seed as u8 ^ 0x5a; 32]),
            rng: StdRng::seed_from_u64(seed),
            stats: stats.clone(),
            active: false,
            honest: HashSet::new(),
            addrs: Vec::new(),
            seen: Vec::new(),
            stalled: Vec::new(),
            wants_this_tick: 0,
            forged_seq: 1_000_000,
            pending_eq: Vec::new(),
            ticks: 0,
        };
        // On the attackers' own runtime thread (see `attacker_runtime`).
        let task = attacker_runtime()?.spawn(state.run(rx));
        Ok(Self { peer_id, attack, stats, ctl, task })
    }

    /// Dials every address (each with `/p2p/`).
    pub async fn dial(&self, addrs: Vec<Multiaddr>) -> anyhow::Result<()> {
        Ok(self.ctl.send(Ctl::Dial(addrs)).await?)
    }

    /// Starts attacking.
    pub async fn start(&self) -> anyhow::Result<()> {
        Ok(self.ctl.send(Ctl::Start).await?)
    }

    /// Stops and waits for the task.
    pub async fn stop(self) {
        let _ = self.ctl.send(Ctl::Stop).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }

    /// Bad items sent so far.
    pub fn tries(&self) -> u64 {
        self.stats.tries.load(Ordering::Relaxed)
    }
}

struct State {
    swarm: Swarm<Behaviour>,
    attack: Attack,
    channel: ChannelId,
    topic: IdentTopic,
    stolen: Option<ChannelKey>,
    own: ChannelKey,
    rng: StdRng,
    stats: Arc<HostileStats>,
    active: bool,
    honest: HashSet<PeerId>,
    addrs: Vec<Multiaddr>,
    seen: Vec<SignedManifest>,
    stalled: Vec<ResponseChannel<Vec<u8>>>,
    wants_this_tick: u64,
    forged_seq: u64,
    pending_eq: Vec<(Instant, SignedManifest)>,
    ticks: u64,
}

impl State {
    async fn run(mut self, mut rx: mpsc::Receiver<Ctl>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                ctl = rx.recv() => match ctl {
                    Some(Ctl::Dial(addrs)) => {
                        for a in &addrs {
                            let _ = self.swarm.dial(a.clone());
                        }
                        self.addrs = addrs;
                    }
                    Some(Ctl::Start) => {
                        self.active = true;
                        self.stats.connected_at_start.store(self.honest.len() as u64, Ordering::Relaxed);
                        if let Ok(mut s) = self.stats.started.lock() {
                            *s = Some(Instant::now());
                        }
                    }
                    Some(Ctl::Stop) | None => break,
                },
                ev = self.swarm.select_next_some() => self.on_event(ev),
                _ = tick.tick() => {
                    if let Ok(mut t) = self.stats.wants_timeline.lock() {
                        t.push((Instant::now(), self.wants_this_tick));
                    }
                    self.wants_this_tick = 0;
                    if self.active {
                        self.act();
                    }
                }
            }
        }
    }

    fn tried(&self, n: u64) {
        self.stats.tries.fetch_add(n, Ordering::Relaxed);
    }

    fn on_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Dialing { .. } if self.active => {
                self.stats.dials_during.fetch_add(1, Ordering::Relaxed);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.honest.insert(peer_id);
                self.stats.connected.store(self.honest.len() as u64, Ordering::Relaxed);
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                self.honest.remove(&peer_id);
                self.stats.connected.store(self.honest.len() as u64, Ordering::Relaxed);
                if let Ok(mut c) = self.stats.cut_off.lock() {
                    c.insert(peer_id, Instant::now());
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message { message, .. })) => {
                if let Ok(m) = SignedManifest::decode(&message.data)
                    && m.claimed().channel == self.channel
                {
                    self.on_manifest(m);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Exchange(request_response::Event::Message {
                message: request_response::Message::Request { request, channel, .. },
                ..
            })) => self.on_exchange_request(&request, channel),
            SwarmEvent::Behaviour(BehaviourEvent::Head(request_response::Event::Message {
                message: request_response::Message::Request { channel, .. },
                ..
            })) => {
                let _ = self.swarm.behaviour_mut().head.send_response(channel, frame(&[]));
            }
            _ => {}
        }
    }

    fn on_manifest(&mut self, m: SignedManifest) {
        if self.seen.iter().any(|s| s.claimed().seq == m.claimed().seq) {
            return;
        }
        if self.active {
            match self.attack {
                Attack::CorruptBlocks | Attack::HaveThenStall => {
                    // Claim every block of the new segment at every peer.
                    let haves: Vec<BlockCid> = m.claimed().segment.blocks.iter().map(|b| b.cid).collect();
                    let body = ExchangeRequest { haves, ..Default::default() }.encode();
                    for p in self.honest.clone() {
                        self.swarm.behaviour_mut().exchange.send_request(&p, frame(&body));
                    }
                }
                // Half a second later: the publisher's manifest has reached
                // everyone, so this tests detection, not a race for first.
                Attack::Equivocate => self.pending_eq.push((Instant::now() + EQUIVOCATE_AFTER, m.clone())),
                _ => {}
            }
        }
        self.seen.push(m);
        if self.seen.len() > MAX_SEEN {
            self.seen.remove(0);
        }
    }

    /// Same channel, same seq, same prev, different blocks: validly signed
    /// with the stolen key. A node that already accepted the publisher's
    /// manifest must detect it and keep the publisher's.
    fn equivocate(&mut self, honest: &SignedManifest) {
        let Some(key) = &self.stolen else { return };
        let h = honest.claimed();
        let blocks: Vec<BlockRef> = (0..2)
            .map(|_| {
                let mut data = vec![0u8; 1024];
                self.rng.fill_bytes(&mut data);
                BlockRef { cid: BlockCid::of(&data), size: 1024 }
            })
            .collect();
        if let Ok(mut f) = self.stats.forged_cids.lock() {
            f.extend(blocks.iter().map(|b| b.cid));
        }
        let m = Manifest {
            channel: h.channel,
            seq: h.seq,
            published_at_ms: h.published_at_ms + 1,
            prev: h.prev,
            segment: Segment { blocks, ..h.segment.clone() },
            info: None,
        };
        if let Ok(signed) = key.sign_manifest(&m) {
            self.tried(1);
            let _ = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), signed.encode());
        }
    }

    fn on_exchange_request(&mut self, request: &[u8], channel: ResponseChannel<Vec<u8>>) {
        let wants: Vec<BlockCid> = ExchangeRequest::decode(request)
            .map(|r| r.wants.iter().filter(|w| w.kind == WantKind::Block).map(|w| w.cid).collect())
            .unwrap_or_default();
        self.wants_this_tick += wants.len() as u64;
        self.stats.wants_received.fetch_add(wants.len() as u64, Ordering::Relaxed);
        let reply = match self.attack {
            Attack::CorruptBlocks if self.active && !wants.is_empty() => {
                // The right CIDs, the wrong bytes.
                self.tried(wants.len() as u64);
                let blocks = wants
                    .iter()
                    .map(|c| {
                        let mut data = vec![0u8; 4096];
                        self.rng.fill_bytes(&mut data);
                        pb::Block { cid: Bytes::copy_from_slice(&c.to_bytes()), data: Bytes::from(data) }
                    })
                    .collect();
                pb::ExchangeResponse { blocks, ..Default::default() }.encode_to_vec()
            }
            Attack::HaveThenStall if self.active && !wants.is_empty() && self.stalled.len() < MAX_STALLED => {
                self.tried(wants.len() as u64);
                self.stalled.push(channel);
                return;
            }
            _ => {
                let dont_haves = wants.iter().map(|c| Bytes::copy_from_slice(&c.to_bytes())).collect();
                pb::ExchangeResponse { dont_haves, ..Default::default() }.encode_to_vec()
            }
        };
        let _ = self.swarm.behaviour_mut().exchange.send_response(channel, frame(&reply));
    }

    fn random_cid(&mut self) -> BlockCid {
        BlockCid::of(&self.rng.random::<[u8; 16]>())
    }

    fn act(&mut self) {
        let peers: Vec<PeerId> = self.honest.iter().copied().collect();
        match self.attack {
            Attack::WrongKey => {
                // A manifest for our own channel on the victim's topic, and
                // the newest honest manifest with one byte flipped.
                self.forged_seq += 1;
                let blocks = vec![BlockRef { cid: self.random_cid(), size: 1000 }];
                if let Ok(mut f) = self.stats.forged_cids.lock() {
                    f.extend(blocks.iter().map(|b| b.cid));
                }
                let m = Manifest {
                    channel: self.own.channel_id(),
                    seq: self.forged_seq,
                    published_at_ms: unix_ms(),
                    prev: None,
                    segment: Segment {
                        number: self.forged_seq,
                        duration_ms: 1000,
                        rendition: 0,
                        keyframe: true,
                        blocks,
                    },
                    info: None,
                };
                if let Ok(s) = self.own.sign_manifest(&m) {
                    self.tried(1);
                    let _ = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), s.encode());
                }
                if let Some(last) = self.seen.last() {
                    let mut bytes = last.encode();
                    let i = self.rng.random_range(0..bytes.len());
                    bytes[i] ^= 1 << self.rng.random_range(0..8);
                    self.tried(1);
                    let _ = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes);
                }
            }
            Attack::Replay => {
                let old: Vec<Vec<u8>> = self.seen.iter().map(SignedManifest::encode).collect();
                for bytes in old {
                    self.tried(1);
                    let _ = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), bytes);
                }
            }
            Attack::Malformed => {
                for p in peers {
                    let mut garbage = vec![0u8; 200];
                    self.rng.fill_bytes(&mut garbage);
                    let b = self.swarm.behaviour_mut();
                    // A valid length and garbage; a length over the cap; a
                    // truncated body; garbage on the head protocol.
                    b.exchange.send_request(&p, frame(&garbage));
                    b.exchange.send_request(&p, vec![0xff, 0xff, 0xff, 0x7f]);
                    b.exchange.send_request(&p, frame(&garbage)[..50].to_vec());
                    b.head.send_request(&p, frame(&garbage));
                    self.tried(4);
                }
                // An oversized gossip frame (honest nodes cap at ~68 KiB), once a second.
                self.ticks += 1;
                if self.ticks.is_multiple_of(10) {
                    let big = vec![0u8; 256 * 1024];
                    self.tried(1);
                    let _ = self.swarm.behaviour_mut().gossipsub.publish(self.topic.clone(), big);
                }
            }
            Attack::FloodWants => {
                // Random CIDs: the flood costs the victim lookups and, if
                // the caps failed, held wants. Leeching real blocks is the
                // serve cap's test (shoal-net tests/net/deny.rs).
                for p in peers {
                    for _ in 0..FLOOD_PER_TICK {
                        let wants: Vec<Want> = (0..16)
                            .map(|_| Want {
                                cid: self.random_cid(),
                                kind: WantKind::Block,
                                send_dont_have: false,
                                hold_ms: 10_000,
                            })
                            .collect();
                        let body = ExchangeRequest { wants, ..Default::default() }.encode();
                        self.swarm.behaviour_mut().exchange.send_request(&p, frame(&body));
                        self.tried(1);
                    }
                }
            }
            Attack::ManyConnections => {
                // Redial only peers that still let us in: dials refused after
                // a ban cost the victim a handshake each and measure nothing.
                let live: Vec<Multiaddr> = self
                    .addrs
                    .iter()
                    .filter(|a| shoal_net::peer_id_of(a).is_some_and(|p| self.honest.contains(&p)))
                    .cloned()
                    .collect();
                self.ticks += 1;
                let live = if self.ticks.is_multiple_of(10) { live } else { Vec::new() };
                for a in live {
                    for _ in 0..2 {
                        let opts = DialOpts::unknown_peer_id().address(a.clone()).build();
                        let _ = self.swarm.dial(opts);
                        self.tried(1);
                    }
                }
                for p in peers {
                    for _ in 0..FLOOD_PER_TICK {
                        let body = ExchangeRequest {
                            wants: vec![Want {
                                cid: self.random_cid(),
                                kind: WantKind::Have,
                                send_dont_have: true,
                                hold_ms: 0,
                            }],
                            ..Default::default()
                        }
                        .encode();
                        self.swarm.behaviour_mut().exchange.send_request(&p, frame(&body));
                        self.tried(1);
                    }
                }
            }
            Attack::Equivocate => {
                let now = Instant::now();
                let due: Vec<SignedManifest> =
                    self.pending_eq.iter().filter(|(t, _)| *t <= now).map(|(_, m)| m.clone()).collect();
                self.pending_eq.retain(|(t, _)| *t > now);
                for m in due {
                    self.equivocate(&m);
                }
            }
            Attack::CorruptBlocks | Attack::HaveThenStall | Attack::Idle => {}
        }
    }
}
