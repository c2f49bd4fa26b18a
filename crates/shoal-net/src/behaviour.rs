//! The composed libp2p behaviour and the swarm builder: transports,
//! Kademlia under shoal's protocol name, gossipsub tuned for low-rate
//! signed announcements, and the two request-response protocols.

use std::time::Duration;

use libp2p::{
    PeerId, StreamProtocol, Swarm, SwarmBuilder, allow_block_list, connection_limits,
    core::{
        Transport,
        muxing::StreamMuxerBox,
        transport::{Boxed, MemoryTransport},
        upgrade::Version,
    },
    gossipsub::{
        self, AllowAllSubscriptionFilter, IdentityTransform, MaxCountSubscriptionFilter, MessageAuthenticity,
        MessageId, PeerScoreParams, PeerScoreThresholds, TopicScoreParams, ValidationMode,
    },
    identify,
    identity::Keypair,
    kad, mdns, memory_connection_limits, noise, ping, request_response,
    swarm::{NetworkBehaviour, behaviour::toggle::Toggle},
    tcp, yamux,
};
use prometheus_client::registry::Registry;
use sha2::{Digest, Sha256};
use shoal_core::limits::{MAX_DIRECTORY_ENTRY_BYTES, MAX_SIGNED_MANIFEST_BYTES};

use crate::{
    NetConfig, NetError, NetMetrics,
    codec::{EXCHANGE_PROTOCOL, Exchange, FrameCodec, HEAD_PROTOCOL, Head},
    gate::{DenyList, Gate},
    guard::{Guarded, STREAM_GUARD_FACTOR},
    metrics::NetProtocol,
};

/// Kademlia protocol name: shoal's own DHT, not the IPFS one, so provider
/// records for channels never mix with unrelated content routing.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/kad/1.0.0");

/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/shoal/1.0.0";

/// Gossipsub frame cap: one signed manifest (the largest gossip payload) plus
/// 4 KiB for the RPC envelope (topic, control messages piggy-backed on the
/// same frame). Anything bigger is not a manifest and is dropped by the
/// codec before it is buffered.
pub const MAX_GOSSIP_TRANSMIT_BYTES: usize = MAX_SIGNED_MANIFEST_BYTES + 4 * 1024;

/// How long gossipsub remembers message ids. Longer than the default
/// `manifest_max_age_ms` (60 s), so an exact replay inside the age window is
/// a silent duplicate and one outside it fails the age check.
const DUPLICATE_CACHE: Duration = Duration::from_secs(120);

/// The in-process transport: memory, upgraded with noise and yamux exactly
/// as TCP is. Public so test peers (including hostile ones) speak the same
/// stack as a node built with [`TransportKind::Memory`].
pub fn memory_transport(
    key: &Keypair,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .boxed())
}

/// Builds an authenticated, multiplexed transport for one node's key: the
/// signature of [`memory_transport`]. A plain `fn` (not a closure) keeps
/// [`TransportKind`] `Copy`; an implementation that needs per-node state
/// looks it up by the key's peer id.
pub type TransportFn =
    fn(&Keypair) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>>;

/// Which transports the swarm runs.
#[derive(Debug, Clone, Copy)]
pub enum TransportKind {
    /// In-process memory transport with noise and yamux, for fast tests
    /// (`/memory/<port>` addresses).
    Memory,
    /// TCP (noise, yamux) and QUIC, with DNS resolution: a real node.
    TcpQuic,
    /// A transport built by the caller, e.g. the bench's memory transport
    /// with emulated latency and bandwidth caps (`shoal-bench`'s shaping).
    /// Listen addresses must be ones it understands.
    Custom(TransportFn),
}

impl PartialEq for TransportKind {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Memory, Self::Memory) | (Self::TcpQuic, Self::TcpQuic) => true,
            // Function addresses are not a meaningful identity; two custom
            // transports compare equal as kinds.
            (Self::Custom(_), Self::Custom(_)) => true,
            _ => false,
        }
    }
}

impl Eq for TransportKind {}

type Gossipsub = gossipsub::Behaviour<IdentityTransform, MaxCountSubscriptionFilter<AllowAllSubscriptionFilter>>;

/// Every protocol shoal speaks.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// First: an excluded peer or address is refused before any other
    /// behaviour spends anything on it.
    pub(crate) gate: Gate,
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) memory: Toggle<memory_connection_limits::Behaviour>,
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) gossipsub: Gossipsub,
    /// Request-response behind the stream guard (crate::guard): inbound
    /// streams far over the request rate are dropped in the connection task.
    pub(crate) exchange: Guarded<request_response::Behaviour<FrameCodec<Exchange>>>,
    pub(crate) head: Guarded<request_response::Behaviour<FrameCodec<Head>>>,
}

/// Message id: sha-256 over the topic and the payload (the signed manifest
/// bytes). Content-addressed, so the same manifest relayed by many peers is
/// one message; the topic is included so a copy replayed onto another
/// channel's topic (and rejected there) cannot shadow the genuine one on a
/// node subscribed to both.
fn message_id(m: &gossipsub::Message) -> MessageId {
    let mut h = Sha256::new();
    h.update(m.topic.as_str().as_bytes());
    h.update([0u8]);
    h.update(&m.data);
    MessageId::from(h.finalize().to_vec())
}

/// Score parameters for a manifest or directory topic: a few messages per
/// second at most, often fewer. See docs/protocol.md for the reasoning.
pub(crate) fn topic_score_params() -> TopicScoreParams {
    TopicScoreParams {
        topic_weight: 1.0,
        // P1: staying in the mesh is worth a little (max +1 after ~100 s).
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 100.0,
        // P2: first deliveries count; decay slowly because they are rare.
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.99,
        first_message_deliveries_cap: 50.0,
        // P3/P3b off: a delivery-rate threshold punishes honest mesh peers
        // whenever a low-rate channel pauses (a publisher reconnecting, a
        // stream between shows).
        mesh_message_deliveries_weight: 0.0,
        mesh_message_deliveries_decay: 0.5,
        mesh_message_deliveries_cap: 100.0,
        mesh_message_deliveries_threshold: 1.0,
        mesh_message_deliveries_window: Duration::from_millis(10),
        mesh_message_deliveries_activation: Duration::from_secs(60),
        mesh_failure_penalty_weight: 0.0,
        mesh_failure_penalty_decay: 0.5,
        // P4: an invalid message is provable from its bytes (bad channel
        // signature), and honest peers validate before forwarding, so each
        // one costs a lot: 3 invalid messages reach the graylist (-80).
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
    }
}

fn peer_score() -> (PeerScoreParams, PeerScoreThresholds) {
    let params = PeerScoreParams {
        topic_score_cap: 50.0,
        // Exchange/head strikes land here via set_application_score (-10 per strike).
        app_specific_weight: 1.0,
        // Off: home users behind one NAT and testnets on one host share IPs.
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    };
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -10.0,
        publish_threshold: -50.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 3.0,
    };
    (params, thresholds)
}

fn build_behaviour(
    config: &NetConfig,
    key: &Keypair,
    registry: &mut Registry,
    metrics: &NetMetrics,
) -> Result<Behaviour, NetError> {
    let peer_id = key.public().to_peer_id();
    let build = |e: String| NetError::Build(e);

    let gossip_config = gossipsub::ConfigBuilder::default()
        // The channel signature inside the payload is what authenticates a
        // manifest; a per-hop libp2p signature would add ~150 bytes and a
        // verification per hop, and reveal which node published.
        .validation_mode(ValidationMode::Anonymous)
        .validate_messages()
        .message_id_fn(message_id)
        .flood_publish(false)
        .max_transmit_size(MAX_GOSSIP_TRANSMIT_BYTES)
        .heartbeat_interval(Duration::from_millis(config.gossip_heartbeat_ms))
        .duplicate_cache_time(DUPLICATE_CACHE)
        .build()
        .map_err(|e| build(format!("gossipsub config: {e}")))?;
    let filter = MaxCountSubscriptionFilter {
        filter: AllowAllSubscriptionFilter {},
        max_subscribed_topics: config.max_peer_subscriptions,
        max_subscriptions_per_request: config.max_peer_subscriptions,
    };
    let mut gossipsub = Gossipsub::new_with_subscription_filter(MessageAuthenticity::Anonymous, gossip_config, filter)
        .map_err(|e| build(format!("gossipsub: {e}")))?
        .with_metrics(registry, gossipsub::MetricsConfig::default());
    let (params, thresholds) = peer_score();
    gossipsub.with_peer_score(params, thresholds).map_err(|e| build(format!("gossipsub scoring: {e}")))?;
    const { assert!(MAX_DIRECTORY_ENTRY_BYTES < MAX_GOSSIP_TRANSMIT_BYTES) };

    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config
        .set_provider_record_ttl(Some(Duration::from_secs(config.provider_ttl_secs)))
        .set_provider_publication_interval(Some(Duration::from_secs(config.provider_republish_secs)))
        .set_periodic_bootstrap_interval(Some(Duration::from_secs(config.kad_bootstrap_interval_secs.max(1))))
        .set_query_timeout(Duration::from_secs(30));
    let mut kad = kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
    if config.kad_server_mode {
        kad.set_mode(Some(kad::Mode::Server));
    }

    let mdns = if config.mdns {
        Some(mdns::tokio::Behaviour::new(mdns::Config::default(), peer_id).map_err(|e| build(format!("mdns: {e}")))?)
    } else {
        None
    };

    let rr_config = request_response::Config::default()
        .with_request_timeout(config.request_timeout())
        .with_max_concurrent_streams(config.max_inbound_requests_per_peer);
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(config.max_connections))
        .with_max_established_per_peer(Some(config.max_connections_per_peer))
        .with_max_pending_incoming(Some(config.max_pending_connections))
        .with_max_pending_outgoing(Some(config.max_pending_connections));

    let memory = (config.max_memory_percent > 0).then(|| {
        memory_connection_limits::Behaviour::with_max_percentage(f64::from(config.max_memory_percent) / 100.0)
    });

    Ok(Behaviour {
        gate: Gate::new(
            DenyList::new(&config.deny),
            config.max_connections_per_ip,
            metrics.connections_refused.clone(),
        ),
        limits: connection_limits::Behaviour::new(limits),
        memory: Toggle::from(memory),
        blocked: allow_block_list::Behaviour::default(),
        identify: identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL_VERSION.into(), key.public())
                .with_agent_version(format!("shoal/{}", env!("CARGO_PKG_VERSION")))
                // No cache of peers' listen addresses for dials by peer id:
                // it would offer their loopback addresses, which reach our
                // own listener (event_loop/addrs.rs). The event loop feeds
                // Kademlia the usable ones; that is where dials look.
                .with_cache_size(0),
        ),
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(Duration::from_millis(config.ping_interval_ms))
                .with_timeout(Duration::from_millis(config.ping_timeout_ms)),
        ),
        kad,
        mdns: Toggle::from(mdns),
        gossipsub,
        exchange: Guarded::new(
            request_response::Behaviour::with_codec(
                FrameCodec::new(metrics.protocol_bytes(NetProtocol::Exchange)),
                [(EXCHANGE_PROTOCOL, request_response::ProtocolSupport::Full)],
                rr_config.clone(),
            ),
            f64::from(config.inbound_streams_per_sec_per_peer),
        ),
        head: Guarded::new(
            request_response::Behaviour::with_codec(
                FrameCodec::new(metrics.protocol_bytes(NetProtocol::Head)),
                [(HEAD_PROTOCOL, request_response::ProtocolSupport::Full)],
                rr_config,
            ),
            STREAM_GUARD_FACTOR * f64::from(config.head_requests_per_sec_per_peer),
        ),
    })
}

/// The swarm's settings, the same on every transport. Outbound streams
/// negotiate their protocol lazily (multistream-select `V1Lazy`): the
/// protocol proposal goes out with the request's first bytes instead of
/// waiting a round trip for the listener's confirmation. Every request in
/// shoal (want, cancel, HAVE, head) opens a fresh stream, so `V1` cost a
/// whole extra RTT on each: measured, a cancel took 63–65 ms to reach its
/// peer over a 20 ms one-way link (docs/benchmarks.md). The bytes on the
/// wire are the same as `V1`'s, and a listener behaves the same either
/// way; a peer that lacks the protocol fails the request when its
/// response is read, instead of before it is sent.
fn swarm_config(c: libp2p::swarm::Config, idle: Duration) -> libp2p::swarm::Config {
    c.with_idle_connection_timeout(idle)
        .with_substream_upgrade_protocol_override(libp2p::core::upgrade::Version::V1Lazy)
}

/// Builds the swarm on the chosen transports, with libp2p's bandwidth
/// metrics on `registry`.
pub(crate) fn build_swarm(
    config: &NetConfig,
    key: Keypair,
    transport: TransportKind,
    registry: &mut Registry,
    metrics: &NetMetrics,
) -> Result<Swarm<Behaviour>, NetError> {
    let behaviour = build_behaviour(config, &key, registry, metrics)?;
    let idle = Duration::from_secs(config.idle_timeout_secs);
    let err = |e: &dyn std::fmt::Display| NetError::Build(e.to_string());
    let swarm = match transport {
        TransportKind::Memory | TransportKind::Custom(_) => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(match transport {
                TransportKind::Custom(make) => make,
                _ => memory_transport,
            })
            .map_err(|e| err(&e))?
            .with_bandwidth_metrics(registry)
            .with_behaviour(|_| behaviour)
            .map_err(|e| err(&e))?
            .with_swarm_config(|c| swarm_config(c, idle))
            .build(),
        TransportKind::TcpQuic => SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .map_err(|e| err(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| err(&e))?
            .with_bandwidth_metrics(registry)
            .with_behaviour(|_| behaviour)
            .map_err(|e| err(&e))?
            .with_swarm_config(|c| swarm_config(c, idle))
            .build(),
    };
    Ok(swarm)
}
