//! A bounded, expiring memo from blocks to a few peers, for facts about a
//! block that arrive before the block matters to this node: the fetch
//! scheduler keeps HAVEs that overtook their manifest in one. Oldest
//! entries go first when the memo is full, so a peer that floods it only
//! evicts older entries; entries older than the TTL are never returned.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use crate::BlockCid;

/// Peers remembered per block, with when the first was.
#[derive(Debug)]
pub struct BlockPeers<P> {
    capacity: usize,
    ttl: Duration,
    by_cid: HashMap<BlockCid, (Instant, Vec<P>)>,
    /// Insertion order, oldest first; an entry whose CID was taken (or
    /// re-added later) no longer matches `by_cid` and is skipped.
    order: VecDeque<(Instant, BlockCid)>,
}

impl<P: PartialEq> BlockPeers<P> {
    /// A memo of at most `capacity` blocks, each kept for `ttl`.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self { capacity: capacity.max(1), ttl, by_cid: HashMap::new(), order: VecDeque::new() }
    }

    /// Adds `peer` to `cid`'s peers (at most `max_peers` per block).
    pub fn remember(&mut self, peer: P, cid: BlockCid, max_peers: usize, now: Instant) {
        if let Some((at, peers)) = self.by_cid.get_mut(&cid)
            && now.saturating_duration_since(*at) < self.ttl
        {
            if !peers.contains(&peer) && peers.len() < max_peers {
                peers.push(peer);
            }
            return;
        }
        while self.order.len() >= self.capacity
            || self.order.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= self.ttl)
        {
            let Some((at, old)) = self.order.pop_front() else { break };
            if self.by_cid.get(&old).is_some_and(|(t, _)| *t == at) {
                self.by_cid.remove(&old);
            }
        }
        self.by_cid.insert(cid, (now, vec![peer]));
        self.order.push_back((now, cid));
    }

    /// `cid`'s peers and when the first was remembered, if still fresh;
    /// the entry is used up.
    pub fn take(&mut self, cid: &BlockCid, now: Instant) -> Option<(Instant, Vec<P>)> {
        self.by_cid.remove(cid).filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
    }

    /// Blocks remembered (fresh or not yet evicted).
    pub fn len(&self) -> usize {
        self.by_cid.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_cid.is_empty()
    }

    /// Whether `cid` has an entry.
    pub fn contains(&self, cid: &BlockCid) -> bool {
        self.by_cid.contains_key(cid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(i: u32) -> BlockCid {
        BlockCid::of(&i.to_le_bytes())
    }

    #[test]
    fn bounded_oldest_first_and_expiring() {
        let t0 = Instant::now();
        let mut m = BlockPeers::new(3, Duration::from_secs(2));
        for i in 0..5 {
            m.remember("p", cid(i), 4, t0);
        }
        assert_eq!(m.len(), 3);
        assert!(!m.contains(&cid(0)) && !m.contains(&cid(1)), "the oldest went first");
        m.remember("q", cid(4), 4, t0);
        m.remember("q", cid(4), 4, t0);
        assert_eq!(m.take(&cid(4), t0), Some((t0, vec!["p", "q"])), "one peer once");
        assert_eq!(m.take(&cid(4), t0), None, "used up");
        let late = t0 + Duration::from_secs(2);
        assert_eq!(m.take(&cid(3), late), None, "expired");
        // A re-added CID is not evicted by its own stale order entry.
        m.remember("p", cid(2), 4, t0);
        m.remember("r", cid(2), 4, late);
        m.remember("p", cid(9), 4, late);
        assert_eq!(m.take(&cid(2), late), Some((late, vec!["r"])));
    }
}
