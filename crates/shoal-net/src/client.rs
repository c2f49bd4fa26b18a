//! [`NetClient`]: the cloneable handle to the network task. Every call sends
//! one [`Command`] down a bounded channel; calls that need an answer carry a
//! oneshot sender that the loop completes.

use bytes::Bytes;
use libp2p::{Multiaddr, PeerId, gossipsub::MessageId};
use shoal_core::{
    BlockCid, ChannelId, VerifiedBlock, VerifiedDirectoryEntry, VerifiedManifest,
    exchange::{ExchangeRequest, ExchangeResponse, Want, WantKind},
    limits::MAX_EXCHANGE_ENTRIES,
};
use tokio::sync::{mpsc, oneshot};

use crate::{Acceptance, DenyRule, MetricsSnapshot, NetError, NetMetrics};

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

/// Commands from [`NetClient`] to the event loop.
#[derive(Debug)]
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Dial(Multiaddr, Reply<()>),
    Join(ChannelId, Reply<()>),
    Leave(ChannelId, Reply<()>),
    Publish { topic: Topic, bytes: Bytes, reply: Reply<MessageId> },
    Validation { message_id: MessageId, source: PeerId, acceptance: Acceptance },
    Exchange { peer: PeerId, request: ExchangeRequest, reply: Reply<ExchangeResponse> },
    BlockAvailable(VerifiedBlock),
    Announce { channel: ChannelId, cids: Vec<BlockCid> },
    AnnounceTo { peers: Vec<PeerId>, cids: Vec<BlockCid> },
    Connect(PeerId),
    Head { peer: PeerId, channel: ChannelId, max: u32, reply: Reply<Vec<VerifiedManifest>> },
    Status(oneshot::Sender<NetStatus>),
    MeshPeers(ChannelId, oneshot::Sender<Vec<PeerId>>),
    Directory(oneshot::Sender<Vec<VerifiedDirectoryEntry>>),
    SetDenyList(Vec<DenyRule>, oneshot::Sender<usize>),
    DenyList(oneshot::Sender<Vec<DenyRule>>),
    Shutdown(oneshot::Sender<()>),
}

/// Which gossip topic a publish goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Topic {
    Channel(ChannelId),
    Directory,
}

/// A summary of the network's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStatus {
    /// This node.
    pub peer_id: Option<PeerId>,
    /// Connected peers.
    pub connected: Vec<PeerId>,
    /// Peers in the Kademlia routing table.
    pub routing_table: usize,
    /// Channels joined.
    pub channels: Vec<ChannelId>,
    /// Wants held now.
    pub held_wants: usize,
    /// Peers banned now (strikes reached `max_strikes`; the ban lasts
    /// `ban_secs`), at most `MAX_BANNED_PEERS`.
    pub banned: Vec<PeerId>,
}

/// A cloneable handle to the network task. Cheap to clone; every clone
/// talks to the same swarm. When every clone is dropped the task stops.
#[derive(Debug, Clone)]
pub struct NetClient {
    tx: mpsc::Sender<Command>,
    peer_id: PeerId,
    metrics: NetMetrics,
}

impl NetClient {
    pub(crate) fn new(tx: mpsc::Sender<Command>, peer_id: PeerId, metrics: NetMetrics) -> Self {
        Self { tx, peer_id, metrics }
    }

    async fn send(&self, cmd: Command) -> Result<(), NetError> {
        self.tx.send(cmd).await.map_err(|_| NetError::Stopped)
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// A plain copy of the network metrics (no round trip to the loop).
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    /// Addresses the swarm listens on now.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, NetError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::ListenAddrs(tx)).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Starts dialing `addr` (with `/p2p/<id>` the peer is also added to the
    /// DHT routing table). Returns once the dial started, not when it connected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NetError> {
        self.ask(|r| Command::Dial(addr, r)).await
    }

    /// Connects to `peer` by id if it is not connected, with the addresses
    /// we know for it (identify, the DHT). Fire and forget: a dial of it
    /// already pending is not repeated. For peers a block's upstream named
    /// in a redirect (a publisher's seeds).
    pub async fn connect(&self, peer: PeerId) -> Result<(), NetError> {
        self.send(Command::Connect(peer)).await
    }

    /// Joins a channel: subscribes to its manifest topic, provides it in the
    /// DHT (republished every `provider_republish_secs`), looks up providers
    /// and dials up to `join_dial_providers` of them. Returns once
    /// subscribed; [`crate::NetEvent::ProvidersFound`] reports the lookup.
    pub async fn join_channel(&self, channel: ChannelId) -> Result<(), NetError> {
        self.ask(|r| Command::Join(channel, r)).await
    }

    /// Leaves a channel: unsubscribes and stops providing it.
    pub async fn leave_channel(&self, channel: ChannelId) -> Result<(), NetError> {
        self.ask(|r| Command::Leave(channel, r)).await
    }

    /// Publishes signed manifest bytes on the channel's topic. The bytes are
    /// sent as given (the node publishes only what it signed); peers verify
    /// them. Errors if no peer is subscribed yet.
    pub async fn publish_manifest(&self, channel: ChannelId, bytes: Bytes) -> Result<MessageId, NetError> {
        self.ask(|reply| Command::Publish { topic: Topic::Channel(channel), bytes, reply }).await
    }

    /// Publishes a signed directory entry on the directory topic.
    pub async fn publish_directory(&self, bytes: Bytes) -> Result<MessageId, NetError> {
        self.ask(|reply| Command::Publish { topic: Topic::Directory, bytes, reply }).await
    }

    /// The node's verdict on a [`crate::NetEvent::Manifest`] with
    /// `pending_validation`. Call exactly once per such event.
    pub async fn report_validation(
        &self,
        message_id: MessageId,
        source: PeerId,
        acceptance: Acceptance,
    ) -> Result<(), NetError> {
        self.send(Command::Validation { message_id, source, acceptance }).await
    }

    /// Sends a raw exchange request and waits for the response. Blocks in the
    /// response are verified against their CIDs; `bad_blocks` lists the ones
    /// that were not (the peer has already been struck for them).
    pub async fn exchange(&self, peer: PeerId, request: ExchangeRequest) -> Result<ExchangeResponse, NetError> {
        let n = request.wants.len() + request.cancels.len() + request.haves.len();
        if n > MAX_EXCHANGE_ENTRIES {
            return Err(NetError::RequestTooLarge(format!(
                "{n} entries; the limit is {MAX_EXCHANGE_ENTRIES}, split the request"
            )));
        }
        self.ask(|reply| Command::Exchange { peer, request, reply }).await
    }

    /// Asks `peer` for blocks. With `hold_ms > 0`, a peer that expects a
    /// block holds the want until it arrives (or the hold expires) and the
    /// response waits for every held want in this request; put wants for
    /// future blocks in their own request. Missing blocks come back in
    /// `dont_haves`; blocks that did not fit the frame come back in `haves`.
    pub async fn want_blocks(
        &self,
        peer: PeerId,
        cids: &[BlockCid],
        hold_ms: u32,
    ) -> Result<ExchangeResponse, NetError> {
        let wants =
            cids.iter().map(|&cid| Want { cid, kind: WantKind::Block, send_dont_have: true, hold_ms }).collect();
        self.exchange(peer, ExchangeRequest { wants, ..Default::default() }).await
    }

    /// Asks `peer` which of these blocks it holds (answered in `haves` and
    /// `dont_haves`).
    pub async fn want_haves(&self, peer: PeerId, cids: &[BlockCid]) -> Result<ExchangeResponse, NetError> {
        let wants =
            cids.iter().map(|&cid| Want { cid, kind: WantKind::Have, send_dont_have: true, hold_ms: 0 }).collect();
        self.exchange(peer, ExchangeRequest { wants, ..Default::default() }).await
    }

    /// Cancels wants `peer` is holding for us; the held request completes
    /// with what it gathered so far.
    pub async fn cancel(&self, peer: PeerId, cids: &[BlockCid]) -> Result<(), NetError> {
        self.exchange(peer, ExchangeRequest { cancels: cids.to_vec(), ..Default::default() }).await.map(drop)
    }

    /// Tells `peer` which blocks we now hold (it sees a
    /// [`crate::NetEvent::PeerHaves`]).
    pub async fn send_haves(&self, peer: PeerId, cids: &[BlockCid]) -> Result<(), NetError> {
        self.exchange(peer, ExchangeRequest { haves: cids.to_vec(), ..Default::default() }).await.map(drop)
    }

    /// Announces blocks the node now holds (HAVE) to the channel's gossip
    /// mesh peers, skipping, per peer, the blocks it is known to hold
    /// already (it announced them, sent them to us, or we sent them to it).
    /// Fire and forget: the loop sends one request per peer that still
    /// needs to hear, and nobody waits for the empty responses.
    pub async fn announce(&self, channel: ChannelId, cids: Vec<BlockCid>) -> Result<(), NetError> {
        if cids.is_empty() {
            return Ok(());
        }
        self.send(Command::Announce { channel, cids }).await
    }

    /// Announces blocks the node just published (HAVE, marked
    /// `first_copies`) to these connected peers, its seeds, whatever their
    /// mesh, skipping blocks a peer is known to hold. Fire and forget, and
    /// queued behind earlier commands: a HAVE sent before
    /// [`Self::publish_manifest`] leaves before the manifest's gossip.
    pub async fn announce_to(&self, peers: Vec<PeerId>, cids: Vec<BlockCid>) -> Result<(), NetError> {
        if peers.is_empty() || cids.is_empty() {
            return Ok(());
        }
        self.send(Command::AnnounceTo { peers, cids }).await
    }

    /// A block the node now holds: held wants for it are answered at once.
    pub async fn block_available(&self, block: VerifiedBlock) -> Result<(), NetError> {
        self.send(Command::BlockAvailable(block)).await
    }

    /// Asks `peer` for the channel's latest `max` manifests. Each one is
    /// verified against `channel` (no age limit: history is old by nature);
    /// a peer that sends one that does not verify is struck and the call
    /// fails. Returned oldest first, newest last.
    pub async fn request_head(
        &self,
        peer: PeerId,
        channel: ChannelId,
        max: u32,
    ) -> Result<Vec<VerifiedManifest>, NetError> {
        self.ask(|reply| Command::Head { peer, channel, max, reply }).await
    }

    /// Connected peers, routing table size, channels, held wants.
    pub async fn status(&self) -> Result<NetStatus, NetError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Status(tx)).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Gossipsub mesh peers for a channel.
    pub async fn mesh_peers(&self, channel: ChannelId) -> Result<Vec<PeerId>, NetError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::MeshPeers(channel, tx)).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// The directory: the newest verified entry per public channel, entries
    /// not re-announced within `directory_ttl_secs` dropped.
    pub async fn directory(&self) -> Result<Vec<VerifiedDirectoryEntry>, NetError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Directory(tx)).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Replaces the exclusion list. Connections it now excludes are closed
    /// at once; new ones are refused when they are made. Returns how many
    /// connections were closed.
    pub async fn set_deny_list(&self, rules: Vec<DenyRule>) -> Result<usize, NetError> {
        if rules.len() > crate::MAX_DENY_RULES {
            return Err(NetError::Config {
                key: "deny",
                reason: format!("{} rules; at most {}", rules.len(), crate::MAX_DENY_RULES),
            });
        }
        let (tx, rx) = oneshot::channel();
        self.send(Command::SetDenyList(rules, tx)).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// The exclusion list in force.
    pub async fn deny_list(&self) -> Result<Vec<DenyRule>, NetError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::DenyList(tx)).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }

    /// Stops the network task: stops listening, closes connections. Returns
    /// when the loop has exited.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        let (tx, rx) = oneshot::channel();
        self.send(Command::Shutdown(tx)).await?;
        rx.await.map_err(|_| NetError::Stopped)
    }
}
