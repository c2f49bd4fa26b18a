//! The channel-head state machine: for each verified manifest of a channel,
//! decide whether it advances the head, fills a hole, repeats something, is
//! too old, or proves the publisher signed two histories (equivocation).
//!
//! Sans-IO and bounded: it remembers only the last `window` seqs.

use std::{collections::BTreeMap, ops::RangeInclusive};

use crate::{ChannelId, ManifestCid, VerifiedManifest};

/// Most equivocation records kept per channel. One is enough to flag the
/// channel; a few more help an operator see the pattern.
pub const MAX_EVIDENCE: usize = 16;

/// Proof that the channel key signed two different histories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    /// The seq that has two versions.
    pub seq: u64,
    /// The manifest CID we hold for that seq.
    pub kept: ManifestCid,
    /// The other version, as the evidence names it. `None` when the evidence
    /// is a manifest that claims the chain started over (no `prev`).
    pub conflicting: Option<ManifestCid>,
    /// The validly signed manifest that proves it (keep it as evidence).
    pub evidence: ManifestCid,
}

/// What to do with a verified manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainDecision {
    /// The next manifest (or the first one seen): the head advanced.
    Accept,
    /// Accepted, and the head jumped over `missing` (clipped to the window):
    /// fetch those from peers.
    Gap {
        /// Seqs between the old head and this one that are still in the window.
        missing: RangeInclusive<u64>,
    },
    /// Accepted: fills a hole below the head, inside the window.
    Backfill,
    /// Already held, byte-identical CID.
    Duplicate,
    /// Below the window (a replay or a very late copy): ignore.
    Stale {
        /// The current head seq.
        head: u64,
    },
    /// A second, different, validly signed history. The channel is flagged.
    Equivocation(Equivocation),
}

impl ChainDecision {
    /// Whether the manifest should be stored and its segment fetched.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accept | Self::Gap { .. } | Self::Backfill)
    }
}

#[derive(Debug, Clone, Copy)]
struct Known {
    cid: ManifestCid,
    prev: Option<ManifestCid>,
}

/// Per-channel chain state.
#[derive(Debug, Clone)]
pub struct ChainState {
    channel: ChannelId,
    window: u64,
    head: Option<(u64, ManifestCid)>,
    /// Lowest seq ever accepted: holes are only counted from here, since
    /// nothing before the first manifest we saw is known to exist.
    floor: Option<u64>,
    known: BTreeMap<u64, Known>,
    evidence: Vec<Equivocation>,
}

impl ChainState {
    /// A fresh state tracking the last `window` seqs (at least 2).
    pub fn new(channel: ChannelId, window: u64) -> Self {
        Self { channel, window: window.max(2), head: None, floor: None, known: BTreeMap::new(), evidence: Vec::new() }
    }

    /// Restores from a stored head (seq, cid), e.g. after a restart.
    pub fn with_head(channel: ChannelId, window: u64, head_seq: u64, head_cid: ManifestCid) -> Self {
        let mut s = Self::new(channel, window);
        s.head = Some((head_seq, head_cid));
        s.floor = Some(head_seq);
        s.known.insert(head_seq, Known { cid: head_cid, prev: None });
        s
    }

    /// The channel.
    pub fn channel(&self) -> ChannelId {
        self.channel
    }

    /// Highest accepted seq and its CID.
    pub fn head(&self) -> Option<(u64, ManifestCid)> {
        self.head
    }

    /// Whether equivocation was ever seen on this channel.
    pub fn is_flagged(&self) -> bool {
        !self.evidence.is_empty()
    }

    /// Recorded equivocations (bounded by [`MAX_EVIDENCE`]).
    pub fn evidence(&self) -> &[Equivocation] {
        &self.evidence
    }

    /// Seqs inside the window that are below the head and not held.
    pub fn holes(&self) -> Vec<u64> {
        let Some((h, _)) = self.head else { return Vec::new() };
        let lo = (h + 1).saturating_sub(self.window).max(self.floor.unwrap_or(h));
        (lo..h).filter(|s| !self.known.contains_key(s)).collect()
    }

    fn in_window(&self, seq: u64) -> bool {
        match self.head {
            None => true,
            Some((h, _)) => seq.saturating_add(self.window) > h,
        }
    }

    fn flag(&mut self, e: Equivocation) -> ChainDecision {
        if self.evidence.len() < MAX_EVIDENCE {
            self.evidence.push(e.clone());
        }
        ChainDecision::Equivocation(e)
    }

    /// Decides what `m` means for this channel and updates the state.
    /// Manifests of other channels are reported as stale and change nothing.
    pub fn decide(&mut self, m: &VerifiedManifest) -> ChainDecision {
        self.decide_parts(m.channel(), m.seq(), m.cid(), m.manifest().prev)
    }

    /// [`Self::decide`] on the parts of a manifest (for tests and models).
    pub fn decide_parts(
        &mut self,
        channel: ChannelId,
        seq: u64,
        cid: ManifestCid,
        prev: Option<ManifestCid>,
    ) -> ChainDecision {
        if channel != self.channel {
            return ChainDecision::Stale { head: self.head.map_or(0, |h| h.0) };
        }
        if !self.in_window(seq) {
            return ChainDecision::Stale { head: self.head.map_or(0, |h| h.0) };
        }
        if let Some(k) = self.known.get(&seq) {
            if k.cid == cid {
                return ChainDecision::Duplicate;
            }
            let kept = k.cid;
            return self.flag(Equivocation { seq, kept, conflicting: Some(cid), evidence: cid });
        }
        // The link to the predecessor: a manifest whose prev disagrees with
        // the seq-1 we hold proves a second seq-1 was signed.
        if let Some(p) = seq.checked_sub(1).filter(|p| self.in_window(*p))
            && let Some(k) = self.known.get(&p)
            && prev != Some(k.cid)
        {
            let kept = k.cid;
            return self.flag(Equivocation { seq: p, kept, conflicting: prev, evidence: cid });
        }
        // The link from the successor: a held seq+1 that names another seq.
        if let Some(n) = seq.checked_add(1)
            && let Some(k) = self.known.get(&n)
            && k.prev.is_some()
            && k.prev != Some(cid)
        {
            let (kept, evidence) = (k.prev.unwrap_or(cid), k.cid);
            return self.flag(Equivocation { seq, kept, conflicting: Some(cid), evidence });
        }
        self.known.insert(seq, Known { cid, prev });
        self.floor = Some(self.floor.map_or(seq, |f| f.min(seq)));
        let decision = match self.head {
            None => ChainDecision::Accept,
            Some((h, _)) if seq == h + 1 => ChainDecision::Accept,
            Some((h, _)) if seq > h => {
                let start = (h + 1).max((seq + 1).saturating_sub(self.window));
                ChainDecision::Gap { missing: start..=seq - 1 }
            }
            Some(_) => ChainDecision::Backfill,
        };
        if self.head.is_none_or(|(h, _)| seq > h) {
            self.head = Some((seq, cid));
            // Forget what fell out of the window (bounded memory).
            let keep_from = (seq + 1).saturating_sub(self.window);
            self.known = self.known.split_off(&keep_from);
        }
        decision
    }
}

#[cfg(test)]
mod tests;
