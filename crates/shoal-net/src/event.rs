//! What the network tells the node ([`NetEvent`]) and what the node answers
//! about gossip ([`Acceptance`]).

use libp2p::{Multiaddr, PeerId, gossipsub::MessageId};
use shoal_core::{BlockCid, ChannelId, VerifiedDirectoryEntry, VerifiedManifest};

/// The node's verdict on a gossip message, as in gossipsub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Valid and new: forward it.
    Accept,
    /// Invalid: drop it and penalise the peer that sent it.
    Reject,
    /// Not useful (duplicate seq, stale, not ours): drop it, no penalty.
    Ignore,
}

/// Why a peer was penalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// A block whose bytes do not match its CID.
    BadBlock,
    /// A frame that did not decode or broke a size limit.
    MalformedFrame,
    /// A head response with a manifest that did not verify.
    BadHeadManifest,
    /// A gossip message invalid from its bytes alone (bad signature,
    /// malformed, wrong channel). Honest peers validate before forwarding,
    /// so only the peer that made it up sends one.
    InvalidGossip,
    /// A flood: requests over `[net] exchange_requests_per_sec_per_peer` or
    /// `head_requests_per_sec_per_peer` (one strike per 100 refused), a
    /// second of request streams over 4× that rate (one strike per second,
    /// from the stream guard), or inbound connections over the connection
    /// limits (one strike per 10 denied).
    Flood,
    /// Held want-blocks for blocks this node neither holds nor expects
    /// (made-up CIDs), over 16 a second: one strike per 64 over.
    JunkWants,
    /// A request of ours with want-blocks left unanswered past its hold +
    /// 5 s (our timeout, or a stream it reset), with no want of ours
    /// answered since it was sent: it holds our streams open (attack 6).
    /// One strike per such request.
    Stall,
}

/// Events from the network, delivered over a bounded channel. The loop never
/// waits for the consumer: when the channel is full the event is dropped and
/// counted in `shoal_net_events_dropped` (a dropped manifest that needed
/// validation is reported Ignore, so it is not forwarded unvalidated).
#[derive(Debug)]
pub enum NetEvent {
    /// A listen address became active.
    Listening {
        /// The address.
        addr: Multiaddr,
    },
    /// First connection to a peer.
    PeerConnected {
        /// The peer.
        peer: PeerId,
    },
    /// Last connection to a peer closed.
    PeerDisconnected {
        /// The peer.
        peer: PeerId,
    },
    /// A channel manifest that passed the stateless checks (decode, size,
    /// channel signature, clock bounds).
    Manifest {
        /// The peer that forwarded it (not necessarily its publisher).
        source: PeerId,
        /// Gossipsub message id (sha-256 of the signed manifest bytes).
        message_id: MessageId,
        /// The verified manifest.
        manifest: VerifiedManifest,
        /// True in [`crate::ManifestValidation::Node`] mode: the node must call
        /// [`crate::NetClient::report_validation`] with `message_id` and
        /// `source`; until then it is not forwarded. False: already accepted.
        pending_validation: bool,
    },
    /// A directory announcement that verified and is newer than what we had
    /// for its channel (already accepted and forwarded).
    Directory {
        /// The peer that forwarded it.
        source: PeerId,
        /// The entry.
        entry: VerifiedDirectoryEntry,
    },
    /// A peer told us which blocks it now holds.
    PeerHaves {
        /// The peer.
        peer: PeerId,
        /// The blocks.
        cids: Vec<BlockCid>,
        /// The peer says it just published them and will serve us first
        /// (we are one of its seeds). A claim, not a proof: any peer can
        /// set it.
        first_copies: bool,
    },
    /// A DHT provider lookup for a joined channel finished.
    ProvidersFound {
        /// The channel.
        channel: ChannelId,
        /// Providers found (not including this node).
        providers: Vec<PeerId>,
    },
    /// A peer misbehaved and was struck; at `[net] max_strikes` it is
    /// disconnected and banned.
    PeerPenalised {
        /// The peer.
        peer: PeerId,
        /// What it did.
        reason: Misbehaviour,
        /// Strikes so far.
        strikes: u32,
        /// Whether this strike got it banned.
        banned: bool,
    },
}

impl NetEvent {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Listening { .. } => "listening",
            Self::PeerConnected { .. } => "peer_connected",
            Self::PeerDisconnected { .. } => "peer_disconnected",
            Self::Manifest { .. } => "manifest",
            Self::Directory { .. } => "directory",
            Self::PeerHaves { .. } => "haves",
            Self::ProvidersFound { .. } => "providers",
            Self::PeerPenalised { .. } => "peer_banned",
        }
    }
}
