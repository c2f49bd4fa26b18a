//! [`BlockSource`]: how the network reads the node's data to serve peers.

use shoal_core::{BlockCid, ChannelId, SignedManifest, VerifiedBlock};

/// The node's data, as the network sees it when serving `/shoal/xchg` and
/// `/shoal/head` requests.
///
/// Every method is called **on the network's event loop**, synchronously:
/// it must return quickly (an in-memory map, or one RocksDB point read) and
/// never block on I/O that can stall, take an async lock, or call back into
/// the [`crate::NetClient`]. A source that cannot answer cheaply should
/// answer "no" (`None`, `false`, empty): the peer asks again or asks someone
/// else, while a stalled loop stalls every peer.
pub trait BlockSource: Send + Sync + 'static {
    /// The block, if this node holds it.
    fn get_block(&self, cid: &BlockCid) -> Option<VerifiedBlock>;

    /// The block for a want-block from `peer`. The default ignores the
    /// peer; a publisher uses it to decide who gets a new block first (see
    /// the node's first-copies gate).
    fn get_block_for(&self, peer: &libp2p::PeerId, cid: &BlockCid) -> Option<VerifiedBlock> {
        let _ = peer;
        self.get_block(cid)
    }

    /// Peers to name when `get_block_for` refused `peer` a block this node
    /// holds: where the block went instead (a publisher's seeds), so the
    /// peer asks one of them rather than probing. The default names nobody.
    fn redirect(&self, peer: &libp2p::PeerId, cid: &BlockCid) -> Vec<libp2p::PeerId> {
        let _ = (peer, cid);
        Vec::new()
    }

    /// Whether this node holds the block, without reading it (for want-have).
    fn has_block(&self, cid: &BlockCid) -> bool {
        self.get_block(cid).is_some()
    }

    /// Whether the block is expected soon (its manifest is known, or it
    /// belongs to one of the channel's next segments). A want-block with a
    /// hold for such a block is held until
    /// [`crate::NetClient::block_available`] delivers it.
    fn expects(&self, cid: &BlockCid) -> bool;

    /// Up to `max` of the channel's latest signed manifests, oldest first
    /// (newest last).
    fn head(&self, channel: &ChannelId, max: u32) -> Vec<SignedManifest>;
}

/// A source with no data: serves nothing, holds nothing. For relays and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBlocks;

impl BlockSource for NoBlocks {
    fn get_block(&self, _: &BlockCid) -> Option<VerifiedBlock> {
        None
    }

    fn expects(&self, _: &BlockCid) -> bool {
        false
    }

    fn head(&self, _: &ChannelId, _: u32) -> Vec<SignedManifest> {
        Vec::new()
    }
}
