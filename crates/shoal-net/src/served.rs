//! Who this node just sent each recent block to, so a want it sheds at its
//! upload cap can name where the block went (a redirect). Sans-IO and
//! bounded: a few peers per block, a ring of recent blocks.
//!
//! Why: a relay capped at its line serves the first few held wants when a
//! block arrives and sheds the rest as DONT_HAVE. Without a name, every
//! shed viewer probes its neighbours one DONT_HAVE at a time, or all of
//! them pile onto the same well-known peer (the publisher's seed) and are
//! shed again. Naming the peers that were just given the block grows the
//! tree by capacity: each shed viewer waits at a sibling that will hold the
//! block one transfer later. Names rotate per shed, so the shed askers
//! spread over the served peers instead of all choosing the first.

use std::collections::{HashMap, VecDeque};

use libp2p::PeerId;
use shoal_core::BlockCid;

/// Peers remembered per block: the first ones served, who hold it soonest.
pub(crate) const SERVED_PEERS_PER_BLOCK: usize = 4;
/// Blocks remembered. A block is worth redirecting to for the second or
/// two it is new; at 4 blocks a second on a few channels, 256 is a minute.
pub(crate) const SERVED_BLOCKS: usize = 256;
/// Names put in one shed DONT_HAVE. Two, not all: every shed asker would
/// otherwise rank the same first name best and pile onto it.
pub(crate) const NAMES_PER_SHED: usize = 2;

#[derive(Debug, Default)]
struct Entry {
    peers: Vec<PeerId>,
    /// Where the next shed's names start (rotation).
    next: usize,
}

/// The log of recent blocks served, per block.
#[derive(Debug, Default)]
pub(crate) struct ServedLog {
    blocks: HashMap<BlockCid, Entry>,
    order: VecDeque<BlockCid>,
}

impl ServedLog {
    /// `peer` was just sent `cid`.
    pub(crate) fn record(&mut self, peer: PeerId, cid: BlockCid) {
        if !self.blocks.contains_key(&cid) {
            if self.order.len() == SERVED_BLOCKS
                && let Some(old) = self.order.pop_front()
            {
                self.blocks.remove(&old);
            }
            self.order.push_back(cid);
        }
        let e = self.blocks.entry(cid).or_default();
        if e.peers.len() < SERVED_PEERS_PER_BLOCK && !e.peers.contains(&peer) {
            e.peers.push(peer);
        }
    }

    /// How many peers `cid` was sent to (at most
    /// [`SERVED_PEERS_PER_BLOCK`]): the upload line sends the rarest first.
    pub(crate) fn count(&self, cid: &BlockCid) -> usize {
        self.blocks.get(cid).map_or(0, |e| e.peers.len())
    }

    /// Up to [`NAMES_PER_SHED`] peers `cid` was sent to, other than `asker`
    /// and those `usable` rejects (gone), starting where the last call
    /// stopped.
    pub(crate) fn names(&mut self, cid: &BlockCid, asker: &PeerId, usable: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let Some(e) = self.blocks.get_mut(cid) else { return Vec::new() };
        let n = e.peers.len();
        let mut out = Vec::with_capacity(NAMES_PER_SHED);
        for i in 0..n {
            let p = e.peers[(e.next + i) % n];
            if p != *asker && usable(&p) {
                out.push(p);
                if out.len() == NAMES_PER_SHED {
                    break;
                }
            }
        }
        e.next = (e.next + 1) % n.max(1);
        out
    }

    /// Blocks remembered (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(i: u32) -> BlockCid {
        BlockCid::of(&i.to_le_bytes())
    }

    #[test]
    fn names_rotate_over_the_served_and_skip_the_asker() {
        let mut log = ServedLog::default();
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for p in &peers {
            log.record(*p, cid(1));
        }
        let asker = PeerId::random();
        let all = |_: &PeerId| true;
        assert_eq!(log.names(&cid(1), &asker, all), vec![peers[0], peers[1]]);
        assert_eq!(log.names(&cid(1), &asker, all), vec![peers[1], peers[2]], "the next shed starts one further");
        assert_eq!(log.names(&cid(1), &asker, all), vec![peers[2], peers[0]]);
        // A served peer is never named to itself, nor a gone one.
        let named = log.names(&cid(1), &peers[0], |p| *p != peers[1]);
        assert_eq!(named, vec![peers[2]]);
        assert!(log.names(&cid(2), &asker, all).is_empty(), "a block never served names nobody");
    }

    #[test]
    fn bounded_per_block_and_in_blocks() {
        let mut log = ServedLog::default();
        let first: Vec<PeerId> = (0..SERVED_PEERS_PER_BLOCK + 3).map(|_| PeerId::random()).collect();
        for p in &first {
            log.record(*p, cid(0));
            log.record(*p, cid(0));
        }
        assert_eq!(log.blocks[&cid(0)].peers, first[..SERVED_PEERS_PER_BLOCK], "the first served are kept");
        for i in 1..=SERVED_BLOCKS as u32 {
            log.record(first[0], cid(i));
        }
        assert_eq!(log.len(), SERVED_BLOCKS);
        assert!(log.names(&cid(0), &PeerId::random(), |_| true).is_empty(), "the oldest block fell out");
    }
}
