//! HAVEs that came before their manifest, kept briefly (and bounded) so
//! they count when the segment is added. The publisher tells its seeds it
//! holds a new segment's blocks just before it gossips the manifest, and
//! that HAVE may overtake the manifest's copy from another viewer.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use shoal_core::BlockCid;

/// Most blocks with an early HAVE. A HAVE overtakes its manifest by
/// milliseconds, so a few segments' worth is plenty; a peer that floods
/// HAVEs for blocks that never come only evicts older entries.
pub(super) const MAX_EARLY_HAVES: usize = 1024;
/// An early HAVE older than this is dropped: its manifest was not coming.
pub(super) const EARLY_HAVE_TTL: Duration = Duration::from_secs(2);

/// Early HAVEs by block: when the first came, and from whom.
#[derive(Debug)]
pub(super) struct EarlyHaves<P> {
    by_cid: HashMap<BlockCid, (Instant, Vec<P>)>,
    /// Arrival order, oldest first; an entry whose CID was taken (or
    /// re-added later) no longer matches `by_cid` and is skipped.
    order: VecDeque<(Instant, BlockCid)>,
}

impl<P> Default for EarlyHaves<P> {
    fn default() -> Self {
        Self { by_cid: HashMap::new(), order: VecDeque::new() }
    }
}

impl<P: PartialEq> EarlyHaves<P> {
    /// `peer` says it has `cid`, which no tracked segment needs yet. At most
    /// `max_holders` peers are kept per block.
    pub(super) fn remember(&mut self, peer: P, cid: BlockCid, max_holders: usize, now: Instant) {
        if let Some((_, peers)) = self.by_cid.get_mut(&cid) {
            if !peers.contains(&peer) && peers.len() < max_holders {
                peers.push(peer);
            }
            return;
        }
        // Oldest first: over the cap, or expired.
        while self.order.len() >= MAX_EARLY_HAVES
            || self.order.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) >= EARLY_HAVE_TTL)
        {
            let Some((at, old)) = self.order.pop_front() else { break };
            if self.by_cid.get(&old).is_some_and(|(t, _)| *t == at) {
                self.by_cid.remove(&old);
            }
        }
        self.by_cid.insert(cid, (now, vec![peer]));
        self.order.push_back((now, cid));
    }

    /// The early HAVEs for `cid`, if any are still fresh; they are used up.
    pub(super) fn take(&mut self, cid: &BlockCid, now: Instant) -> Option<(Instant, Vec<P>)> {
        self.by_cid.remove(cid).filter(|(at, _)| now.saturating_duration_since(*at) < EARLY_HAVE_TTL)
    }

    /// Blocks with an early HAVE kept.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_cid.len()
    }

    /// Whether an early HAVE for `cid` is kept.
    #[cfg(test)]
    pub(super) fn contains(&self, cid: &BlockCid) -> bool {
        self.by_cid.contains_key(cid)
    }
}
