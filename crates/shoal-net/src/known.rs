//! Which recent blocks each connected peer is known to hold, so a HAVE is
//! not announced to a peer that told us it has the block, sent it to us, or
//! was just sent it by us. Sans-IO and bounded: a small ring of keys per
//! peer, dropped with the peer.
//!
//! Why: every stored block is announced to the channel's gossip mesh (6–12
//! peers), one request stream per peer. In a relay tree the peer the block
//! came from and the children whose held wants it just answered make up
//! much of that mesh; telling them is pure cost (a stream, a protocol
//! negotiation and an empty response each), and at 100 nodes on two cores
//! the per-stream machinery, not the video, is what runs out.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;
use shoal_core::cid::BlockCid;

/// Blocks remembered per peer. At 4 blocks a second on one channel this is
/// the last ~30 s, far longer than a block stays "new" (a HAVE matters for
/// the few seconds before its deadline); older entries fall out first.
pub(crate) const KNOWN_BLOCKS_PER_PEER: usize = 128;

/// The set of recent blocks each peer holds, as far as we know. A false
/// "does not know" costs one redundant HAVE, never a missing block; a false
/// "knows" (two CIDs sharing the first 8 digest bytes: 2^-64 per pair)
/// skips one HAVE.
#[derive(Debug, Default)]
pub(crate) struct PeerKnowledge {
    peers: HashMap<PeerId, VecDeque<u64>>,
}

/// The first 8 bytes of the CID's sha2-256 digest: uniform, and an eighth
/// of the CID's size.
fn key(cid: &BlockCid) -> u64 {
    let d = cid.digest();
    u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

impl PeerKnowledge {
    /// `peer` holds `cids` (it said so, sent them, or was sent them).
    pub(crate) fn record(&mut self, peer: PeerId, cids: impl IntoIterator<Item = BlockCid>) {
        let mut cids = cids.into_iter().peekable();
        if cids.peek().is_none() {
            return;
        }
        let ring = self.peers.entry(peer).or_insert_with(|| VecDeque::with_capacity(KNOWN_BLOCKS_PER_PEER));
        for cid in cids {
            let k = key(&cid);
            if ring.contains(&k) {
                continue;
            }
            if ring.len() == KNOWN_BLOCKS_PER_PEER {
                ring.pop_front();
            }
            ring.push_back(k);
        }
    }

    /// Whether `peer` is known to hold `cid`.
    pub(crate) fn knows(&self, peer: &PeerId, cid: &BlockCid) -> bool {
        self.peers.get(peer).is_some_and(|ring| ring.contains(&key(cid)))
    }

    /// The peer disconnected: forget it.
    pub(crate) fn remove(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }

    /// Peers with an entry (for tests and status).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(i: u32) -> BlockCid {
        BlockCid::of(&i.to_le_bytes())
    }

    #[test]
    fn records_and_forgets_per_peer() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut k = PeerKnowledge::default();
        k.record(a, [cid(1), cid(2)]);
        assert!(k.knows(&a, &cid(1)));
        assert!(k.knows(&a, &cid(2)));
        assert!(!k.knows(&a, &cid(3)));
        assert!(!k.knows(&b, &cid(1)), "knowledge is per peer");
        k.remove(&a);
        assert!(!k.knows(&a, &cid(1)));
        assert_eq!(k.len(), 0);
    }

    #[test]
    fn nothing_recorded_makes_no_entry() {
        let mut k = PeerKnowledge::default();
        k.record(PeerId::random(), std::iter::empty());
        assert_eq!(k.len(), 0);
    }

    #[test]
    fn the_oldest_fall_out_past_the_bound() {
        let a = PeerId::random();
        let mut k = PeerKnowledge::default();
        let n = KNOWN_BLOCKS_PER_PEER as u32 + 10;
        for i in 0..n {
            k.record(a, [cid(i)]);
            // A repeat does not take a second slot.
            k.record(a, [cid(i)]);
        }
        for i in 0..10 {
            assert!(!k.knows(&a, &cid(i)), "block {i} should have fallen out");
        }
        for i in 10..n {
            assert!(k.knows(&a, &cid(i)), "block {i} should be remembered");
        }
        assert_eq!(k.peers[&a].len(), KNOWN_BLOCKS_PER_PEER);
    }
}
