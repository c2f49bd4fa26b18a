//! The one task that owns the [`Swarm`]. It reads commands from
//! [`crate::NetClient`], drives the swarm, serves peers from the
//! [`BlockSource`], and sends [`NetEvent`]s with `try_send` (never waiting
//! for the consumer).

mod addrs;
mod gossip;
mod liveness;
mod peers;
mod providers;
mod serve;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures::StreamExt;
use libp2p::metrics::Recorder;
use libp2p::{
    PeerId, Swarm,
    gossipsub::{IdentTopic, TopicHash},
    kad::{self, QueryId},
    multiaddr::Protocol,
    request_response::{InboundRequestId, OutboundRequestId},
    swarm::{
        ConnectionId, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
};
use shoal_core::{ChannelId, VerifiedManifest, VerifyPolicy, directory::DIRECTORY_TOPIC};
use tokio::sync::{mpsc, oneshot};

use crate::{
    BlockSource, NetConfig, NetError, NetEvent, NetMetrics,
    behaviour::{Behaviour, BehaviourEvent},
    budget::PeerBudget,
    client::Command,
    directory::DirectoryList,
    gate::{DenyList, DenyRule},
    guard::GuardedEvent,
    held::HeldWants,
    known::PeerKnowledge,
    rate::{KeyedBuckets, TokenBucket, byte_burst},
    served::ServedLog,
    upload::UploadLine,
};

/// How often held wants are checked for expiry: 100 ms is well under any
/// useful hold (segments last ~1 s) and costs nothing when none are held.
const HOLD_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// How often bans, the directory and thin channels are looked after.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(2);

/// A routing table with fewer peers than this triggers a Kademlia bootstrap.
const THIN_ROUTING_TABLE: usize = 4;

/// A joined channel with fewer mesh peers than this looks for providers again.
const THIN_MESH: usize = 2;

/// While a channel stays quiet with a full mesh, the gap between its DHT
/// lookups doubles from `quiet_channel_ms` up to this (a thin mesh keeps
/// the `quiet_channel_ms` pace). Each lookup asks ~20 peers
/// for provider records; at a fixed 4 s, 150 idle viewers of a channel that
/// had not started yet spent more bytes on lookups than the stream itself
/// (docs/benchmarks.md). Between lookups, the providers already found are
/// redialed every maintenance tick, which is what brings a partitioned
/// viewer back in seconds (a dial to a connected peer is a no-op).
const MAX_QUIET_LOOKUP_INTERVAL: Duration = Duration::from_secs(30);

/// A redial of ours to a peer that is still pending after this long no
/// longer holds back a fresh one: across a partition a dial can wait out
/// the transport's 10 s timeout. Two maintenance ticks, so at most three
/// of our dials to one peer overlap; a surplus connection once the link is
/// back is only refused by the per-peer limit.
const REDIAL_PENDING_FOR: Duration = Duration::from_secs(4);

/// Peers whose strikes we remember; the map is cleared when full (a peer
/// that misbehaves gets struck again quickly, an honest one loses nothing).
const MAX_STRUCK_PEERS: usize = 4096;

/// Peers banned at once; when full, the ban ending soonest is lifted early.
const MAX_BANNED_PEERS: usize = 1024;

/// Peers with a rate bucket; quiet peers' full buckets are forgotten first.
const MAX_RATED_PEERS: usize = 4096;

/// Requests refused by a rate cap count toward a flood strike: one strike
/// per second's worth of the cap (`exchange_requests_per_sec_per_peer`,
/// `head_requests_per_sec_per_peer`) refused, but never fewer than this
/// many. So a peer that sends twice its allowance is struck every second
/// and banned in about three, whatever the configured rate; an honest peer
/// that brushes the cap (its burst is two seconds' worth) loses a request
/// now and then. (A fixed 100 made a node with a 20/s cap take 5 s of a
/// 2x flood per strike; the hostile suite measured bans at 6-8 s.)
pub(crate) const FLOOD_STRIKE_MIN: u32 = 10;

/// One flood strike per this many inbound connections from one peer denied
/// by the connection limits (over `max_connections_per_peer`, usually).
/// Each costs us a full handshake; an honest peer trips the per-peer limit
/// only in a simultaneous dial, once.
pub(crate) const CONNECTION_STRIKE_EVERY: u32 = 10;

/// Counts one offence by `peer` in `counts` (bounded by
/// `MAX_RATED_PEERS`: cleared when full, which favours offenders for one
/// round at worst); true, and the count reset, every `every`-th.
fn count_toward_strike(counts: &mut HashMap<PeerId, u32>, peer: PeerId, every: u32) -> bool {
    if counts.len() >= MAX_RATED_PEERS && !counts.contains_key(&peer) {
        counts.clear();
    }
    let n = counts.entry(peer).or_default();
    *n += 1;
    if *n >= every {
        *n = 0;
        return true;
    }
    false
}

/// Which per-peer request rate a request counts against.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RateKind {
    Exchange,
    Head,
}

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: NetConfig,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    metrics: NetMetrics,
    source: Arc<dyn BlockSource>,
    /// Joined channels by topic.
    channels: HashMap<TopicHash, ChannelId>,
    /// When each joined channel last had a valid manifest (received or
    /// published); one entry per joined channel, so bounded by max_channels.
    heard: HashMap<TopicHash, Instant>,
    directory_topic: TopicHash,
    directory: DirectoryList,
    live_policy: VerifyPolicy,
    provider_queries: HashMap<QueryId, providers::ProviderQuery>,
    /// Joined channels this node announces in the DHT (bounded by
    /// max_channels): only those whose lookup found few carriers
    /// (`providers.rs`).
    providing: HashSet<ChannelId>,
    /// The bootstrap this loop started last (at start, or for a thin
    /// routing table), so a thin table does not stack one per tick.
    bootstrap_query: Option<QueryId>,
    /// Per quiet or thin channel: when the next DHT lookup may start, and
    /// the gap after it (doubling to `MAX_QUIET_LOOKUP_INTERVAL`). Removed
    /// when the channel is healthy again; bounded by max_channels.
    quiet_lookups: HashMap<ChannelId, (Instant, Duration)>,
    /// Providers per channel (at most `MAX_KNOWN_PROVIDERS`, newest first):
    /// found by lookups, or peers that forwarded us a valid manifest of it.
    /// Redialed while the channel is quiet or thin.
    known_providers: HashMap<ChannelId, Vec<PeerId>>,
    /// Addresses peers were reached at, for redials (`addrs.rs`).
    addr_book: addrs::AddrBook,
    /// Our pending redials: connection id and start, per peer. An entry
    /// leaves when its dial ends or after `REDIAL_PENDING_FOR`, so there is
    /// at most one per known provider being redialed.
    redials: HashMap<PeerId, (ConnectionId, Instant)>,
    /// Our open exchange requests.
    pending_exchange: HashMap<OutboundRequestId, serve::PendingExchange>,
    /// When each connected peer last answered a request of ours that
    /// carried want-blocks (`serve.rs`, stalls).
    wants_answered: HashMap<PeerId, Instant>,
    pending_head: HashMap<OutboundRequestId, (PeerId, ChannelId, Reply<Vec<VerifiedManifest>>)>,
    /// Our open requests per peer (exchange and head), for the outbound cap.
    outbound: HashMap<PeerId, usize>,
    held: HeldWants<serve::ExchangeReply>,
    /// Responses with blocks, written one at a time, rarest block first.
    upload: UploadLine<InboundRequestId, serve::ExchangeReply>,
    /// Recent blocks each connected peer holds, so HAVEs skip it.
    known: PeerKnowledge,
    /// Who was just sent each recent block: a want shed at the upload cap
    /// names them.
    served: ServedLog,
    strikes: HashMap<PeerId, u32>,
    banned: HashMap<PeerId, Instant>,
    /// The exclusion list as given (the gate holds the compiled form).
    deny_rules: Vec<DenyRule>,
    /// Bytes per second served to each peer.
    serve_per_peer: Option<KeyedBuckets<PeerId>>,
    /// Bytes per second served in total (`max_upload`).
    serve_total: Option<TokenBucket>,
    exchange_rate: KeyedBuckets<PeerId>,
    head_rate: KeyedBuckets<PeerId>,
    /// Requests refused by a rate cap, per peer, towards a flood strike.
    refusals: HashMap<PeerId, u32>,
    /// Held wants for blocks we neither hold nor expect, per peer.
    junk: crate::junk::JunkMeter,
    /// Inbound connections denied by the limits, per peer, toward a strike.
    over_limit: HashMap<PeerId, u32>,
    /// Connection ages and last uses; trims peers over `max_peers`.
    budget: PeerBudget<PeerId>,
    /// When each connection last answered a ping (or was established);
    /// one entry per open connection, so bounded by `max_connections`.
    last_pong: HashMap<ConnectionId, Instant>,
    /// libp2p's own swarm/kad/identify/ping/gossipsub event metrics.
    p2p_metrics: libp2p::metrics::Metrics,
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn without_p2p(addr: &libp2p::Multiaddr) -> libp2p::Multiaddr {
    addr.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect()
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: NetConfig,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        metrics: NetMetrics,
        source: Arc<dyn BlockSource>,
        p2p_metrics: libp2p::metrics::Metrics,
    ) -> Self {
        let live_policy = VerifyPolicy {
            max_future_skew_ms: config.max_clock_skew_ms,
            max_age_ms: Some(config.manifest_max_age_ms),
            ..VerifyPolicy::default()
        };
        let now = Instant::now();
        let per_peer = config.serve_bytes_per_sec_per_peer;
        let xr = f64::from(config.exchange_requests_per_sec_per_peer);
        let hr = f64::from(config.head_requests_per_sec_per_peer);
        Self {
            deny_rules: config.deny.clone(),
            serve_per_peer: (per_peer > 0)
                .then(|| KeyedBuckets::new(per_peer as f64, byte_burst(per_peer), MAX_RATED_PEERS)),
            serve_total: (config.max_upload > 0)
                .then(|| TokenBucket::new(config.max_upload as f64, byte_burst(config.max_upload), now)),
            exchange_rate: KeyedBuckets::new(xr, 2.0 * xr, MAX_RATED_PEERS),
            head_rate: KeyedBuckets::new(hr, 4.0 * hr, MAX_RATED_PEERS),
            refusals: HashMap::new(),
            junk: crate::junk::JunkMeter::default(),
            over_limit: HashMap::new(),
            last_pong: HashMap::new(),
            budget: PeerBudget::new(
                config.max_peers as usize,
                config.target_peers as usize,
                Duration::from_secs(config.peer_grace_secs),
            ),
            directory: DirectoryList::new(config.directory_max_entries, Duration::from_secs(config.directory_ttl_secs)),
            held: HeldWants::new(config.held_wants_per_peer, config.held_wants_total),
            known: PeerKnowledge::default(),
            served: ServedLog::default(),
            upload: UploadLine::default(),
            directory_topic: IdentTopic::new(DIRECTORY_TOPIC).hash(),
            swarm,
            config,
            commands,
            events,
            metrics,
            source,
            channels: HashMap::new(),
            heard: HashMap::new(),
            live_policy,
            provider_queries: HashMap::new(),
            providing: HashSet::new(),
            bootstrap_query: None,
            quiet_lookups: HashMap::new(),
            known_providers: HashMap::new(),
            addr_book: addrs::AddrBook::default(),
            redials: HashMap::new(),
            pending_exchange: HashMap::new(),
            wants_answered: HashMap::new(),
            pending_head: HashMap::new(),
            outbound: HashMap::new(),
            strikes: HashMap::new(),
            banned: HashMap::new(),
            p2p_metrics,
        }
    }

    /// Subscribes to the directory and contacts the bootstrap peers.
    pub(crate) fn start(&mut self) -> Result<(), NetError> {
        let topic = IdentTopic::new(DIRECTORY_TOPIC);
        let g = &mut self.swarm.behaviour_mut().gossipsub;
        g.subscribe(&topic).map_err(|e| NetError::Build(format!("directory topic: {e}")))?;
        g.set_topic_params(topic, crate::behaviour::topic_score_params())
            .map_err(|e| NetError::Build(format!("directory topic scoring: {e}")))?;
        for addr in self.config.bootstrap.clone() {
            if let Some(peer) = crate::config::peer_id_of(&addr) {
                self.swarm.behaviour_mut().kad.add_address(&peer, without_p2p(&addr));
            }
            if let Err(e) = self.swarm.dial(addr.clone()) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        if !self.config.bootstrap.is_empty() {
            self.bootstrap_query = self.swarm.behaviour_mut().kad.bootstrap().ok();
        }
        Ok(())
    }

    pub(crate) async fn run(mut self) {
        let mut sweep = tokio::time::interval(HOLD_SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut maintenance = tokio::time::interval(MAINTENANCE_INTERVAL);
        maintenance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut liveness = tokio::time::interval(liveness::LIVENESS_CHECK_INTERVAL);
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let done = loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => break Some(done),
                    Some(cmd) => self.on_command(cmd),
                    None => break None,
                },
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                _ = sweep.tick() => self.expire_held(),
                _ = maintenance.tick() => self.maintain(),
                _ = liveness.tick() => self.close_silent(Instant::now()),
            }
        };
        tracing::debug!(peer = %self.swarm.local_peer_id(), "network loop stopping");
        // Dropping the swarm closes every connection and listener; answer
        // the shutdown only after that.
        drop(self);
        if let Some(done) = done {
            let _ = done.send(());
        }
    }

    /// Sends an event without waiting; counts it when the consumer is slow.
    fn emit(&self, event: NetEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(ev)) | Err(mpsc::error::TrySendError::Closed(ev)) => {
                self.metrics.event_dropped(ev.kind());
                false
            }
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::ListenAddrs(reply) => {
                let _ = reply.send(self.swarm.listeners().cloned().collect());
            }
            Command::Dial(addr, reply) => {
                if let Some(peer) = crate::config::peer_id_of(&addr) {
                    self.swarm.behaviour_mut().kad.add_address(&peer, without_p2p(&addr));
                }
                let r = self
                    .swarm
                    .dial(addr.clone())
                    .map_err(|e| NetError::Dial { target: addr.to_string(), reason: e.to_string() });
                let _ = reply.send(r);
            }
            Command::Join(channel, reply) => {
                let _ = reply.send(self.join(channel));
            }
            Command::Leave(channel, reply) => {
                self.leave(channel);
                let _ = reply.send(Ok(()));
            }
            Command::Publish { topic, bytes, reply } => {
                let _ = reply.send(self.publish(topic, bytes));
            }
            Command::Validation { message_id, source, acceptance } => {
                self.node_verdict(message_id, source, acceptance);
            }
            Command::Exchange { peer, request, reply } => self.send_exchange(peer, request, reply),
            Command::BlockAvailable(block) => self.block_available(block),
            Command::Announce { channel, cids } => self.announce(channel, &cids),
            Command::AnnounceTo { peers, cids } => {
                for peer in peers {
                    if self.swarm.is_connected(&peer) {
                        self.send_haves_to(peer, &cids, true);
                    }
                }
            }
            Command::Connect(peer) => {
                if peer != *self.swarm.local_peer_id()
                    && !self.swarm.is_connected(&peer)
                    && self.dial_peer(peer, Instant::now())
                {
                    self.metrics.redirect_dials.inc();
                }
            }
            Command::Head { peer, channel, max, reply } => self.send_head(peer, channel, max, reply),
            Command::Status(reply) => {
                let routing_table = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
                let _ = reply.send(crate::NetStatus {
                    peer_id: Some(*self.swarm.local_peer_id()),
                    connected: self.swarm.connected_peers().copied().collect(),
                    routing_table,
                    channels: self.channels.values().copied().collect(),
                    held_wants: self.held.len(),
                    banned: self.banned.iter().filter(|(_, until)| **until > Instant::now()).map(|(p, _)| *p).collect(),
                });
            }
            Command::MeshPeers(channel, reply) => {
                let topic = IdentTopic::new(channel.topic()).hash();
                let _ = reply.send(self.swarm.behaviour().gossipsub.mesh_peers(&topic).copied().collect());
            }
            Command::Directory(reply) => {
                let _ = reply.send(self.directory.list());
            }
            Command::SetDenyList(rules, reply) => {
                let closed = self.swarm.behaviour_mut().gate.set_deny(DenyList::new(&rules));
                tracing::info!(rules = rules.len(), closed, "exclusion list replaced");
                self.deny_rules = rules;
                let _ = reply.send(closed);
            }
            Command::DenyList(reply) => {
                debug_assert_eq!(self.swarm.behaviour().gate.deny_list(), &DenyList::new(&self.deny_rules));
                let _ = reply.send(self.deny_rules.clone());
            }
            // `run` intercepts Shutdown before dispatching here.
            Command::Shutdown(_) => {}
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        self.p2p_metrics.record(&event);
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.emit(NetEvent::Listening { addr: address });
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, num_established, .. } => {
                self.heard_from(connection_id, Instant::now());
                self.addr_book.connected(peer_id, &endpoint, Instant::now());
                self.redials.remove(&peer_id);
                self.metrics.connections_established.inc();
                if num_established.get() == 1 {
                    self.budget.connected(peer_id, Instant::now());
                    self.metrics.set_peers(self.swarm.connected_peers().count());
                    self.emit(NetEvent::PeerConnected { peer: peer_id });
                }
            }
            // Our redial failed: the next maintenance tick may try again.
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id: Some(peer), .. }
                if self.redials.get(&peer).is_some_and(|(id, _)| *id == connection_id) =>
            {
                self.redials.remove(&peer);
            }
            SwarmEvent::ConnectionClosed { connection_id, num_established, .. } if num_established > 0 => {
                self.stop_watching(&connection_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } => {
                self.stop_watching(&connection_id);
                self.budget.disconnected(&peer_id);
                self.metrics.set_peers(self.swarm.connected_peers().count());
                self.held.peer_gone(&peer_id);
                self.upload.peer_gone(&peer_id);
                self.known.remove(&peer_id);
                self.metrics.held_wants.set(self.held.len() as i64);
                if let Some(b) = &mut self.serve_per_peer {
                    b.remove(&peer_id);
                }
                self.exchange_rate.remove(&peer_id);
                self.head_rate.remove(&peer_id);
                self.refusals.remove(&peer_id);
                self.junk.remove(&peer_id);
                self.wants_answered.remove(&peer_id);
                self.emit(NetEvent::PeerDisconnected { peer: peer_id });
            }
            SwarmEvent::IncomingConnectionError {
                peer_id: Some(peer),
                error: libp2p::swarm::ListenError::Denied { cause },
                ..
            } if cause.downcast_ref::<libp2p::connection_limits::Exceeded>().is_some() => {
                self.connection_over_limit(peer);
            }
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            _ => {}
        }
    }

    /// The stream guard dropped `streams` inbound streams on `connection`
    /// since its last report (at most one a second; crate::guard), over a
    /// guard of `guard_rate` streams a second. Over the guard at all is a
    /// flood, not an eager peer (the guard is 4x the request rate): one
    /// strike. A second's drops of a whole guard's worth or more mean the
    /// peer sent over twice the guard: banned at once, since every second
    /// it keeps flooding costs every honest peer on this node CPU.
    fn streams_refused(
        &mut self,
        peer: PeerId,
        connection: libp2p::swarm::ConnectionId,
        streams: u32,
        guard_rate: f64,
    ) {
        self.metrics.streams_refused.inc_by(u64::from(streams));
        tracing::debug!(%peer, ?connection, streams, "inbound streams over the guard's rate dropped");
        let weight = if f64::from(streams) >= guard_rate { self.config.max_strikes } else { 1 };
        self.strike(peer, crate::Misbehaviour::Flood, weight);
    }

    /// An inbound connection from a known peer denied by the connection
    /// limits: counted, and a flood strike every `CONNECTION_STRIKE_EVERY`.
    fn connection_over_limit(&mut self, peer: PeerId) {
        self.metrics.connections_over_limit.inc();
        if count_toward_strike(&mut self.over_limit, peer, CONNECTION_STRIKE_EVERY) {
            self.strike(peer, crate::Misbehaviour::Flood, 1);
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match &event {
            BehaviourEvent::Kad(e) => self.p2p_metrics.record(e),
            BehaviourEvent::Identify(e) => self.p2p_metrics.record(e),
            BehaviourEvent::Ping(e) => self.p2p_metrics.record(e),
            BehaviourEvent::Gossipsub(e) => self.p2p_metrics.record(e),
            _ => {}
        }
        match event {
            // Feed listen addresses of DHT peers into the routing table, so
            // peers that dialed us become reachable to others. Loopback ones
            // only from a peer on loopback with us: anywhere else they lead
            // to our own listener (addrs.rs says what that does to a dial).
            BehaviourEvent::Identify(libp2p::identify::Event::Received { peer_id, info, .. }) => {
                self.addr_book.identified(peer_id, &info.listen_addrs, Instant::now());
                if info.protocols.contains(&crate::behaviour::KAD_PROTOCOL) {
                    let on_loopback = self.addr_book.ip(&peer_id).is_some_and(|ip| ip.is_loopback());
                    for addr in info.listen_addrs {
                        let local = addrs::ip_of(&addr).is_some_and(|ip| ip.is_loopback() || ip.is_unspecified());
                        if on_loopback || !local {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            BehaviourEvent::Kad(ev) => self.on_kad_event(ev),
            // libp2p's ping only reports a failure, and late (liveness.rs);
            // close the connection ourselves, so a silently cut path is
            // dropped in seconds and the peer can be redialed (a "connected"
            // peer never is). A peer without the ping protocol is not dead:
            // leave it be.
            BehaviourEvent::Ping(libp2p::ping::Event { connection, result: Ok(rtt), .. }) => {
                self.pong(connection, rtt, Instant::now());
            }
            BehaviourEvent::Ping(libp2p::ping::Event {
                connection,
                result: Err(libp2p::ping::Failure::Unsupported),
                ..
            }) => {
                self.stop_watching(&connection);
            }
            BehaviourEvent::Ping(libp2p::ping::Event { peer, connection, result: Err(e) }) => {
                self.ping_failed(peer, connection, &e);
            }
            BehaviourEvent::Mdns(libp2p::mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr.with(Protocol::P2p(peer)));
                    }
                }
            }
            BehaviourEvent::Gossipsub(libp2p::gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.on_gossip(propagation_source, message_id, message),
            BehaviourEvent::Exchange(GuardedEvent::Inner(ev)) => self.on_exchange_event(ev),
            BehaviourEvent::Head(GuardedEvent::Inner(ev)) => self.on_head_event(ev),
            BehaviourEvent::Exchange(GuardedEvent::Refused { peer, connection, streams }) => {
                let rate = f64::from(self.config.inbound_streams_per_sec_per_peer);
                self.streams_refused(peer, connection, streams, rate);
            }
            BehaviourEvent::Head(GuardedEvent::Refused { peer, connection, streams }) => {
                let rate = crate::guard::STREAM_GUARD_FACTOR * f64::from(self.config.head_requests_per_sec_per_peer);
                self.streams_refused(peer, connection, streams, rate);
            }
            _ => {}
        }
    }

    fn on_kad_event(&mut self, event: kad::Event) {
        // What a node costs the DHT (docs/benchmarks.md, "the join storm").
        if let kad::Event::OutboundQueryProgressed { result, step, .. } = &event
            && step.last
        {
            match result {
                kad::QueryResult::Bootstrap(_) => {
                    self.metrics.dht_bootstraps.inc();
                }
                kad::QueryResult::GetProviders(_) => {
                    self.metrics.dht_provider_lookups.inc();
                }
                _ => {}
            }
        }
        if let kad::Event::OutboundQueryProgressed {
            id, result: kad::QueryResult::GetProviders(result), step, ..
        } = event
        {
            self.on_provider_progress(id, result, step.last);
        }
    }

    /// Periodic housekeeping: lift expired bans, expire directory entries,
    /// bootstrap a thin routing table, look for providers of thin channels.
    fn maintain(&mut self) {
        let now = Instant::now();
        let ended: Vec<PeerId> = self.banned.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for p in ended {
            self.banned.remove(&p);
            self.swarm.behaviour_mut().blocked.unblock_peer(p);
        }
        self.directory.expire(now);
        self.trim_peers(now);
        let routing: usize = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
        // One bootstrap at a time: each is a lookup per bucket (tens of
        // requests, dials included), and a table still thin two seconds
        // after the last one started is usually waiting on that one.
        let bootstrapping = self.bootstrap_query.is_some_and(|id| self.swarm.behaviour_mut().kad.query(&id).is_some());
        if routing < THIN_ROUTING_TABLE && !self.config.bootstrap.is_empty() && !bootstrapping {
            self.bootstrap_query = self.swarm.behaviour_mut().kad.bootstrap().ok();
        }
        let quiet_after = Duration::from_millis(self.config.quiet_channel_ms);
        let (mut thin, mut healthy) = (Vec::new(), Vec::new());
        for (topic, ch) in &self.channels {
            let thin_mesh = self.swarm.behaviour().gossipsub.mesh_peers(topic).count() < THIN_MESH;
            let quiet = self.heard.get(topic).is_none_or(|t| now.duration_since(*t) >= quiet_after);
            if thin_mesh || quiet { thin.push((*ch, thin_mesh)) } else { healthy.push(*ch) }
        }
        for ch in healthy {
            self.quiet_lookups.remove(&ch);
        }
        self.redials.retain(|_, (_, started)| now.duration_since(*started) < REDIAL_PENDING_FOR);
        for (ch, thin_mesh) in thin {
            let (next, gap) = *self.quiet_lookups.entry(ch).or_insert((now, quiet_after));
            // One lookup at a time per channel, but a lookup stuck dialing
            // across a partition (up to the 30 s query timeout) must not
            // hold back a fresh one once the path is back.
            let in_flight =
                self.provider_queries.values().any(|q| q.channel == ch && now.duration_since(q.started) < quiet_after);
            let lookup_due = now >= next && !in_flight;
            // Every tick, full mesh or not: after a partition the mesh can
            // stay full on our side while the publisher is cut off, and the
            // 5 s recovery goal (docker/test.sh) needs the redial sooner
            // than a backed-off lookup. Measured cheap while streaming: 2.2
            // redials per viewer in a 60-node bench run. Before a stream
            // starts, the quarantine of trimmed peers keeps it cheap too.
            self.redial_providers(ch, now, thin_mesh);
            if lookup_due {
                // Lost mesh peers (a partition, a relay gone): look again at
                // the quiet_channel_ms pace. A full mesh that is merely quiet
                // (a channel not live yet, or between shows): back off.
                let after =
                    if thin_mesh { quiet_after } else { (gap * 2).min(MAX_QUIET_LOOKUP_INTERVAL.max(quiet_after)) };
                self.quiet_lookups.insert(ch, (now + gap, after));
                self.find_providers(ch);
            }
        }
    }

    /// Closes the least useful connections when more than `max_peers` are
    /// up (crate::budget). Protected: every member of a joined channel's
    /// gossip mesh, peers we have requests open to, and peers whose wants
    /// we hold.
    fn trim_peers(&mut self, now: Instant) {
        if self.budget.len() <= self.config.max_peers as usize {
            return;
        }
        // Channel meshes only: the directory topic is low-rate and its mesh
        // re-forms from whoever stays connected at the next heartbeat.
        let gossip = &self.swarm.behaviour().gossipsub;
        let mut protected: std::collections::HashSet<PeerId> =
            self.channels.keys().flat_map(|topic| gossip.mesh_peers(topic)).copied().collect();
        protected.extend(self.outbound.keys().copied());
        protected.extend(self.held.peers());
        let trimmed = self.budget.trim(now, &protected);
        if trimmed.is_empty() {
            return;
        }
        tracing::debug!(trimmed = trimmed.len(), connected = self.budget.len(), "over the peer budget");
        self.metrics.peers_trimmed.inc_by(trimmed.len() as u64);
        for p in trimmed {
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    /// Counts one inbound request against the peer's rate; false if over
    /// it (and a flood strike per second's worth of the rate refused, at
    /// least `FLOOD_STRIKE_MIN`).
    pub(crate) fn admit(&mut self, peer: PeerId, kind: RateKind, now: Instant) -> bool {
        let (bucket, rate) = match kind {
            RateKind::Exchange => (self.exchange_rate.get(peer, now), self.config.exchange_requests_per_sec_per_peer),
            RateKind::Head => (self.head_rate.get(peer, now), self.config.head_requests_per_sec_per_peer),
        };
        if bucket.try_take(1.0, now) {
            return true;
        }
        self.metrics.rate_limited.inc();
        if count_toward_strike(&mut self.refusals, peer, rate.max(FLOOD_STRIKE_MIN)) {
            self.strike(peer, crate::Misbehaviour::Flood, 1);
        }
        false
    }

    /// Whether both upload buckets (this peer's, the total) have credit.
    pub(crate) fn upload_ready(&mut self, peer: PeerId, now: Instant) -> bool {
        self.serve_per_peer.as_mut().is_none_or(|b| b.get(peer, now).ready(now))
            && self.serve_total.as_mut().is_none_or(|b| b.ready(now))
    }

    /// Charges bytes sent to `peer` to the upload buckets.
    pub(crate) fn charge_upload(&mut self, peer: PeerId, bytes: u64) {
        let now = Instant::now();
        if let Some(b) = &mut self.serve_per_peer {
            b.get(peer, now).charge(bytes as f64, now);
        }
        if let Some(b) = &mut self.serve_total {
            b.charge(bytes as f64, now);
        }
    }

    /// Gives back bytes charged for blocks that were then not sent.
    pub(crate) fn refund_upload(&mut self, peer: PeerId, bytes: u64) {
        if bytes > 0 {
            let now = Instant::now();
            if let Some(b) = &mut self.serve_per_peer {
                b.get(peer, now).refund(bytes as f64, now);
            }
            if let Some(b) = &mut self.serve_total {
                b.refund(bytes as f64, now);
            }
        }
    }

    /// Dials a provider that is not connected. With addresses it was
    /// reached at: those first (the swarm tries 8 at once and the first to
    /// connect wins), then what the DHT knows in case the peer moved, and
    /// not held back by another dial still pending on worse addresses
    /// (`PeerCondition::Disconnected`). Without: by peer id, as before.
    /// Skipped while our last redial of it is pending and younger than
    /// `REDIAL_PENDING_FOR`.
    fn redial(&mut self, peer: PeerId, now: Instant) {
        if self.dial_peer(peer, now) {
            self.metrics.provider_redials.inc();
        }
    }

    /// Dials `peer` as [`Self::redial`] describes; false if a dial of it is
    /// already pending or could not start.
    fn dial_peer(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.redials.get(&peer).is_some_and(|(_, started)| now.duration_since(*started) < REDIAL_PENDING_FOR) {
            return false;
        }
        let addrs = self.addr_book.addrs(&peer).to_vec();
        let opts = if addrs.is_empty() {
            DialOpts::peer_id(peer).build()
        } else {
            DialOpts::peer_id(peer)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::Disconnected)
                .build()
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.redials.insert(peer, (id, now));
                true
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "redial not started");
                false
            }
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        // Answer every waiting caller so no client call hangs on shutdown.
        for (_, pending) in self.pending_exchange.drain() {
            if let Some(reply) = pending.reply {
                let _ = reply.send(Err(NetError::Stopped));
            }
        }
        for (_, (_, _, reply)) in self.pending_head.drain() {
            let _ = reply.send(Err(NetError::Stopped));
        }
    }
}
