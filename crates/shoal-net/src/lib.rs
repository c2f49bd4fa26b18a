//! shoal's network layer: a libp2p swarm with Kademlia discovery, validated
//! gossipsub announcements and a bitswap-like chunk exchange. It knows
//! shoal's wire formats and nothing about video.
//!
//! One task owns the swarm ([`Network::spawn`]). Everything else talks to it
//! through a cloneable [`NetClient`]; it reports through a bounded channel of
//! [`NetEvent`]s and reads the node's data through a [`BlockSource`].
//!
//! ```text
//!   node ──NetClient (bounded mpsc, oneshot replies)──▶ event loop ──▶ Swarm
//!   node ◀──NetEvent (bounded, try_send, drops counted)── event loop
//!   event loop ──BlockSource (sync, cheap)──▶ node's store
//! ```
#![deny(missing_docs)]

mod behaviour;
mod budget;
mod client;
mod codec;
mod config;
mod directory;
mod error;
mod event;
mod event_loop;
mod gate;
mod guard;
mod held;
mod junk;
mod known;
mod metrics;
mod rate;
mod served;
mod source;
mod upload;
mod validate;

use std::sync::Arc;

pub use libp2p::{Multiaddr, PeerId, gossipsub::MessageId, identity::Keypair};
use prometheus_client::registry::Registry;
use tokio::{sync::mpsc, task::JoinHandle};

pub use crate::{
    behaviour::{
        IDENTIFY_PROTOCOL_VERSION, KAD_PROTOCOL, MAX_GOSSIP_TRANSMIT_BYTES, TransportFn, TransportKind,
        memory_transport,
    },
    client::{NetClient, NetStatus},
    codec::{EXCHANGE_PROTOCOL, HEAD_PROTOCOL},
    config::{ENOUGH_PROVIDERS, ManifestValidation, NetConfig, peer_id_of},
    error::NetError,
    event::{Acceptance, Misbehaviour, NetEvent},
    gate::{BadDenyRule, DenyList, DenyRule, IpRange, MAX_DENY_RULES},
    metrics::{MetricsSnapshot, NetMetrics},
    rate::{KeyedBuckets, TokenBucket},
    source::{BlockSource, NoBlocks},
};

/// Commands queued to the loop. Callers wait (async) when it is full, which
/// is the backpressure the node should feel; 256 covers bursts of wants for
/// a few segments from a fetch scheduler.
pub const COMMAND_CAPACITY: usize = 256;

/// Events queued to the node. A manifest per second per rendition per
/// channel, plus haves and peer churn: 1024 is many seconds of slack. When
/// full, events are dropped and counted (`shoal_net_events_dropped`).
pub const EVENT_CAPACITY: usize = 1024;

/// What [`Network::spawn`] returns.
#[derive(Debug)]
pub struct NetHandle {
    /// The handle to give to the node's tasks.
    pub client: NetClient,
    /// The events; drain it promptly.
    pub events: mpsc::Receiver<NetEvent>,
    /// The network task; it ends after [`NetClient::shutdown`] or when every
    /// client clone is dropped.
    pub task: JoinHandle<()>,
}

/// Builder entry point for the network task.
#[derive(Debug)]
pub struct Network;

impl Network {
    /// Builds the swarm, starts listening on `config.listen`, contacts the
    /// bootstrap peers and spawns the event loop on the current tokio
    /// runtime. Metrics (ours, libp2p's bandwidth, gossipsub's) are
    /// registered in `registry`.
    pub fn spawn(
        config: NetConfig,
        identity: Keypair,
        transport: TransportKind,
        registry: &mut Registry,
        source: Arc<dyn BlockSource>,
    ) -> Result<NetHandle, NetError> {
        config.validate()?;
        let peer_id = identity.public().to_peer_id();
        let metrics = NetMetrics::new(registry);
        let mut swarm = behaviour::build_swarm(&config, identity, transport, registry, &metrics)?;
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen { addr: addr.clone(), reason: e.to_string() })?;
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_CAPACITY);
        let p2p_metrics = libp2p::metrics::Metrics::new(registry);
        let mut event_loop =
            event_loop::EventLoop::new(swarm, config, cmd_rx, ev_tx, metrics.clone(), source, p2p_metrics);
        event_loop.start()?;
        let task = tokio::spawn(event_loop.run());
        Ok(NetHandle { client: NetClient::new(cmd_tx, peer_id, metrics), events: ev_rx, task })
    }
}
