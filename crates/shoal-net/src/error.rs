//! [`NetError`]: what can go wrong when using the network, in words that say
//! what to do about it.

use libp2p::{Multiaddr, PeerId};
use shoal_core::ChannelId;

/// Errors from building the network or from a [`crate::NetClient`] call.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A config value breaks a rule.
    #[error("invalid [net] config key `{key}`: {reason}")]
    Config {
        /// The key to fix.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A bootstrap address without a peer id cannot be authenticated.
    #[error("bootstrap address {addr} has no /p2p/<peer id>; append the peer's id so the node knows whom it reaches")]
    BootstrapWithoutPeerId {
        /// The address.
        addr: Multiaddr,
    },
    /// The transport or a behaviour could not be built.
    #[error("could not build the libp2p swarm: {0}")]
    Build(String),
    /// Listening failed (address in use, unsupported transport...).
    #[error("cannot listen on {addr}: {reason} (is the port in use, or the transport not enabled?)")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        reason: String,
    },
    /// Dialing failed before a connection attempt started.
    #[error("cannot dial {target}: {reason}")]
    Dial {
        /// Peer or address.
        target: String,
        /// Why.
        reason: String,
    },
    /// The network task is gone.
    #[error("the network task has stopped (the node is shutting down, or the task panicked; see the log)")]
    Stopped,
    /// `max_channels` reached.
    #[error("cannot join channel {channel}: already in {limit} channels (raise [net] max_channels or leave one)")]
    TooManyChannels {
        /// The channel.
        channel: ChannelId,
        /// The limit.
        limit: usize,
    },
    /// Gossipsub refused to publish.
    #[error("cannot publish on {topic}: {reason}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why (no peers yet, duplicate, too large...).
        reason: String,
    },
    /// Too many of our requests open to this peer.
    #[error(
        "{limit} requests already open to {peer}; wait for answers (or raise [net] max_outbound_requests_per_peer)"
    )]
    PeerBusy {
        /// The peer.
        peer: PeerId,
        /// The limit.
        limit: usize,
    },
    /// A request to a peer failed.
    #[error("{protocol} request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// Which protocol.
        protocol: &'static str,
        /// Why (timeout, unsupported, connection closed, malformed answer).
        reason: String,
    },
    /// A request carried more than the protocol allows.
    #[error("request too large: {0}")]
    RequestTooLarge(String),
}
