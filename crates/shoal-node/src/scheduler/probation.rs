//! Probation: a HAVE holder that has never delivered a block to us ranks
//! behind the upstream until a *trial* (one block asked beside a request at
//! a peer we trust, never cancelled) proves it. The policy and its reasons
//! are in the module docs of `scheduler.rs` and docs/protocol.md §6.

use std::time::{Duration, Instant};

use shoal_core::BlockCid;

use super::{Action, PeerState, Scheduler};

/// A trial want at a peer on probation (see the module docs).
#[derive(Debug)]
pub(super) struct Trial {
    pub(super) cid: BlockCid,
    pub(super) size: u32,
    pub(super) sent: Instant,
    pub(super) timeout: Instant,
}

impl PeerState {
    /// On probation and free for a trial now: nothing in flight, and no
    /// stall within `retry` (a failed trial, or a request it was asked when
    /// nobody trusted could be).
    pub(super) fn trial_ready(&self, now: Instant, retry: Duration) -> bool {
        !self.proven
            && !self.origin
            && self.trial.is_none()
            && self.inflight == 0
            && self.stalled_at.is_none_or(|t| now >= t + retry)
    }
}

impl<P: Clone + Eq + std::hash::Hash + Ord + std::fmt::Debug> Scheduler<P> {
    /// Ends `peer`'s trial if it was for `cid`, returning it; its queued
    /// bytes are freed here, its in-flight slot by the caller (whose path
    /// may free it already).
    pub(super) fn take_trial(&mut self, peer: &P, cid: &BlockCid) -> Option<Trial> {
        let p = self.peers.get_mut(peer)?;
        if p.trial.as_ref().is_none_or(|t| t.cid != *cid) {
            return None;
        }
        let t = p.trial.take()?;
        p.queued_bytes = p.queued_bytes.saturating_sub(u64::from(t.size));
        Some(t)
    }

    /// Any verified block, needed or not, takes its sender off probation:
    /// ends its trial if the block was that (the trial is a first rate
    /// sample), and says whether the peer was on probation until now.
    pub(super) fn proof_of_delivery(&mut self, peer: &P, cid: &BlockCid, now: Instant) -> (Option<Trial>, bool) {
        let trial = self.take_trial(peer, cid);
        let newly_proven = self.peers.get_mut(peer).is_some_and(|p| {
            let was = p.proven;
            p.proven = true;
            if let Some(t) = &trial {
                let secs = now.saturating_duration_since(t.sent).as_secs_f64().max(0.001);
                p.rate_bps = 0.7 * p.rate_bps + 0.3 * (f64::from(t.size) / secs);
            }
            !was
        });
        (trial, newly_proven)
    }

    /// A trial timed out or was refused: a stall (never excused: the peer
    /// has delivered nothing), so no new trial for `trial_retry`.
    pub(super) fn trial_failed(&mut self, peer: &P, now: Instant) {
        let Some(p) = self.peers.get_mut(peer) else { return };
        self.stats.trials_failed += 1;
        p.unkept = p.unkept.saturating_add(1);
        p.stall(&mut self.stats, false, self.cfg.busy_grace, now);
    }

    /// A peer just came off probation: its HAVEs now rank it first, so held
    /// wants may move to it and waiting blocks may go to it.
    pub(super) fn after_proof(&mut self, now: Instant) {
        let cids: Vec<BlockCid> = self.blocks.keys().copied().collect();
        for cid in cids {
            self.maybe_switch(cid, now);
        }
        self.dispatch(now);
    }

    /// Gives each holder of `cid` that is on probation a trial for it, if
    /// the block's request is stuck (or the holder's HAVEs came before
    /// their manifests) and the download cap allows. Stuck is late, or
    /// a held want whose peer has not claimed the block for `switch_after`
    /// (at once if that peer is on probation too and has left a request of
    /// ours unkept: a staller that forwards manifests holds wants without
    /// claiming). The trial is then the
    /// hedge or the switch a peer on probation may not be given. Beside a
    /// request about to deliver it would only buy a duplicate: trials
    /// beside any request at a trusted peer cost `small` 5.4 duplicate
    /// blocks per viewer (wire 1.24 against 1.17), beside any held want
    /// 5.5.
    pub(super) fn offer_trials(&mut self, cid: BlockCid, now: Instant) {
        let Some(b) = self.blocks.get(&cid) else { return };
        let held = b.requests.iter().any(|r| r.late_at.is_none());
        let stuck = b.requests.iter().any(|r| {
            r.is_late(now)
                || (r.late_at.is_none()
                    && (now.saturating_duration_since(r.sent) >= self.cfg.switch_after
                        || self.peers.get(&r.peer).is_none_or(|p| !p.proven && p.unkept > 0)))
        });
        let size = b.size;
        let on_trial: Vec<P> = b
            .holders
            .iter()
            // Not one whose request for this block just ended without it
            // (a held want moved away from it, a race it lost).
            .filter(|h| !b.requests.iter().any(|r| r.peer == **h) && !self.ended.contains_key(&(cid, (*h).clone())))
            // Beside a stuck request, or beside a held want at once for a
            // peer whose HAVEs have come before their manifest (ahead of our
            // upstream: its trial usually wins, and the held want is
            // cancelled before it costs a copy; the publisher, to its seeds,
            // on a fresh stream).
            .filter(|h| {
                self.peers
                    .get(*h)
                    .is_some_and(|p| p.trial_ready(now, self.cfg.trial_retry) && (stuck || (held && p.early_haves > 0)))
            })
            .cloned()
            .collect();
        for peer in on_trial {
            if let Some(budget) = &self.cfg.download {
                let Ok(mut bucket) = budget.lock() else { return };
                if !bucket.ready(now) {
                    return;
                }
                bucket.charge(f64::from(size), now);
            }
            let Some(p) = self.peers.get_mut(&peer) else { continue };
            p.inflight += 1;
            p.queued_bytes += u64::from(size);
            let transfer = Duration::from_secs_f64(p.queued_bytes as f64 / p.rate_bps.max(1.0));
            p.trial = Some(Trial { cid, size, sent: now, timeout: now + transfer + self.cfg.base_timeout });
            self.stats.trials += 1;
            self.stats.wants_sent += 1;
            self.actions.push_back(Action::Want { peer, cid, hold: Duration::ZERO });
        }
    }

    /// Fails every trial past its timeout: like a timed-out request, the
    /// peer is not asked for that block again and counts a stall.
    pub(super) fn expire_trials(&mut self, now: Instant) {
        let out: Vec<(P, BlockCid)> = self
            .peers
            .iter()
            .filter_map(|(id, p)| p.trial.as_ref().filter(|t| now >= t.timeout).map(|t| (id.clone(), t.cid)))
            .collect();
        for (peer, cid) in out {
            let _ = self.take_trial(&peer, &cid);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.inflight = p.inflight.saturating_sub(1);
            }
            self.trial_failed(&peer, now);
            if let Some(b) = self.blocks.get_mut(&cid) {
                b.holders.retain(|h| *h != peer);
                b.refused.insert(peer, now);
            }
        }
    }
}
