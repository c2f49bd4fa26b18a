//! What peers answer: a verified block, a block deferred to the next
//! response, a refusal (DONT_HAVE) and the peers it names. Each one ends a
//! request, moves rank (rate, stalls, probation) and counts duplicates by
//! cause. The policy is in the module docs of `scheduler.rs`.

use std::time::Instant;

use shoal_core::BlockCid;

use super::{Action, ENDED_MEMORY, Ended, MAX_REDIRECTS_PER_BLOCK, Scheduler};

impl<P: Clone + Eq + std::hash::Hash + Ord + std::fmt::Debug> Scheduler<P> {
    /// A verified block arrived from `peer`.
    pub fn on_block(&mut self, peer: &P, cid: BlockCid, now: Instant) {
        let (trial, newly_proven) = self.proof_of_delivery(peer, &cid, now);
        let Some(b) = self.blocks.remove(&cid) else {
            if self.done_set.contains(&cid) {
                self.stats.duplicate_blocks += 1;
                match (trial.is_some(), self.ended.get(&(cid, peer.clone()))) {
                    (true, _) => self.stats.duplicates_trial += 1,
                    (false, Some(Ended::Switched)) => self.stats.duplicates_switched += 1,
                    (false, Some(Ended::Raced)) => self.stats.duplicates_raced += 1,
                    (false, Some(Ended::TimedOut)) => self.stats.duplicates_timed_out += 1,
                    (false, None) => {}
                }
                // Size unknown here; the caller adds bytes via on_duplicate_bytes.
            }
            if let Some(p) = self.peers.get_mut(peer) {
                p.inflight = p.inflight.saturating_sub(1);
            }
            if newly_proven {
                self.after_proof(now);
            }
            return;
        };
        if trial.is_some()
            && let Some(p) = self.peers.get_mut(peer)
        {
            p.inflight = p.inflight.saturating_sub(1);
        }
        self.pending.remove(&(b.deadline, cid));
        self.stats.blocks_received += 1;
        self.stats.payload_bytes += u64::from(b.size);
        if let Some(p) = self.peers.get_mut(peer) {
            // Stall decay: each needed block forgives one stall, so an honest
            // peer that once timed out under congestion is back to its place
            // after one delivery, while a peer that stalls more often than it
            // delivers keeps ranking behind clean holders (a staller or a
            // peer sending corrupt bytes never gets here: only verified
            // blocks do). Decrementing, not resetting, makes each stall cost
            // one good delivery.
            p.stalls = p.stalls.saturating_sub(1);
            p.delivered_at = Some(now);
            p.received_bytes += u64::from(b.size);
            if p.origin {
                self.stats.origin_bytes += u64::from(b.size);
            }
        }
        for r in &b.requests {
            let size = u64::from(b.size);
            if let Some(p) = self.peers.get_mut(&r.peer) {
                p.inflight = p.inflight.saturating_sub(1);
                p.queued_bytes = p.queued_bytes.saturating_sub(size);
                if r.peer == *peer {
                    // Rate from when the want went out; a held want inflates
                    // the time, which only makes the estimate conservative.
                    let secs = now.saturating_duration_since(r.sent).as_secs_f64().max(0.001);
                    p.rate_bps = 0.7 * p.rate_bps + 0.3 * (size as f64 / secs);
                } else if r.is_late(now) {
                    // Late and beaten by another copy (usually the early
                    // hedge): a stall, or a staller whose request we cancel
                    // here would never time out and never lose rank. A peer
                    // that is delivering is busy, not stalling.
                    p.stall(&mut self.stats, true, self.cfg.busy_grace, now);
                }
            }
            if r.peer != *peer {
                self.actions.push_back(Action::Cancel { peer: r.peer.clone(), cid });
            }
        }
        // The other requests' copies, if they come, are duplicates. Their
        // cause is the winner's if the winner's own request had ended and
        // it was not asked again (a switched or timed-out want whose copy
        // came after all, ahead of the want that replaced it), else a race
        // between live requests.
        let live = b.requests.iter().any(|r| r.peer == *peer);
        let why = match self.ended.get(&(cid, peer.clone())) {
            Some(w @ (Ended::Switched | Ended::TimedOut)) if !live => *w,
            _ => Ended::Raced,
        };
        if why == Ended::Switched {
            self.stats.switches_lost += 1;
        }
        for r in b.requests.iter().filter(|r| r.peer != *peer) {
            self.ended(cid, r.peer.clone(), why);
        }
        self.remember_done(cid);
        self.actions.push_back(Action::AnnounceHave { cid });
        for seq in &b.seqs {
            if let Some(seg) = self.segments.get_mut(seq) {
                seg.missing -= 1;
                if seg.missing == 0 {
                    self.segments.remove(seq);
                    self.upstream.remove(seq);
                    self.stats.segments_complete += 1;
                    self.actions.push_back(Action::SegmentComplete { seq: *seq });
                }
            }
        }
        if newly_proven {
            self.after_proof(now);
        } else {
            self.dispatch(now);
        }
    }

    /// Adds `bytes` of a duplicate block to the counters (the caller knows
    /// the size; the scheduler already forgot the block).
    pub fn on_duplicate_bytes(&mut self, bytes: u64) {
        self.stats.duplicate_bytes += bytes;
    }

    /// Remembers that `peer`'s request for `cid` ended without the block,
    /// and why.
    pub(super) fn ended(&mut self, cid: BlockCid, peer: P, why: Ended) {
        if self.ended.insert((cid, peer.clone()), why).is_none() {
            self.ended_order.push_back((cid, peer));
            if self.ended_order.len() > ENDED_MEMORY
                && let Some(old) = self.ended_order.pop_front()
            {
                self.ended.remove(&old);
            }
        }
    }

    /// Ends `peer`'s open request for `cid` without a block: frees its
    /// in-flight slot and the bytes it had queued there.
    pub(super) fn end_request(&mut self, peer: &P, cid: &BlockCid) {
        if let Some(p) = self.peers.get_mut(peer) {
            p.inflight = p.inflight.saturating_sub(1);
        }
        let Some(b) = self.blocks.get_mut(cid) else { return };
        if let Some(i) = b.requests.iter().position(|r| r.peer == *peer) {
            b.requests.remove(i);
            if let Some(p) = self.peers.get_mut(peer) {
                p.queued_bytes = p.queued_bytes.saturating_sub(u64::from(b.size));
            }
        }
    }

    /// `peer` holds `cid` but did not send it this time (it did not fit the
    /// response frame): ask again, without a penalty.
    pub fn on_deferred(&mut self, peer: &P, cid: BlockCid, now: Instant) {
        // A trial that did not fit is no failure: the peer may be tried again.
        let _ = self.take_trial(peer, &cid);
        self.end_request(peer, &cid);
        let Some(b) = self.blocks.get_mut(&cid) else { return };
        if b.requests.is_empty() {
            self.pending.insert((b.deadline, cid));
        }
        self.dispatch(now);
    }

    /// `from` refused `cid` and named `to` as peers that hold or are being
    /// given it: a publisher's first-copies gate names its seeds, and a
    /// relay that shed our want at its upload cap names the peers it just
    /// sent the block to. Honoured only from a peer we had reason to ask:
    /// the block's upstream, a peer an earlier redirect named (so a chain
    /// walks down the tree as far as capacity requires), or a peer that
    /// announced HAVE; and only for connected peers, at most
    /// `MAX_REDIRECTS_PER_BLOCK` in all. Each named peer then ranks and
    /// holds like an upstream (for at most `redirect_hold`), so a refused
    /// viewer waits at a peer about to hold the block instead of probing
    /// neighbours one DONT_HAVE at a time. Call before
    /// [`Self::on_dont_have`], which re-plans the block. Returns the peers
    /// the *upstream* named that are not connected: the caller may connect
    /// to them (the publisher's seeds), so that the next segment's redirect
    /// can be followed. Names further down a chain change with every block
    /// and are not worth a connection.
    pub fn on_redirect(&mut self, from: &P, cid: BlockCid, to: impl IntoIterator<Item = P>) -> Vec<P> {
        let mut unknown = Vec::new();
        let Some(b) = self.blocks.get_mut(&cid) else { return unknown };
        let from_upstream = self.upstream.get(&b.seq) == Some(from);
        if !(from_upstream || b.redirects.contains(from) || b.holders.contains(from)) {
            return unknown;
        }
        for p in to.into_iter().take(MAX_REDIRECTS_PER_BLOCK) {
            if p == *from || b.redirects.contains(&p) {
                continue;
            }
            if !self.peers.contains_key(&p) {
                if from_upstream && !unknown.contains(&p) {
                    unknown.push(p);
                }
            } else if b.redirects.len() < MAX_REDIRECTS_PER_BLOCK {
                b.redirects.push(p);
            }
        }
        unknown
    }

    /// `peer` answered DONT_HAVE for `cid` and named nobody: no redirect
    /// (a redirect goes to [`Self::on_redirect`], then
    /// [`Self::on_dont_have`]). From the block's upstream this is a refused
    /// held want, which honest relays rarely send: a relay that forwarded
    /// the manifest holds our want until it has the block, and its two
    /// designed refusals (the publisher's first-copies gate, a shed at an
    /// upload cap) name where the block went; only its request-rate and
    /// held-want caps and an expired hold refuse without names. A peer
    /// that forwards manifests and holds no block refuses like this (the
    /// hostile suite's idle strangers). Counted
    /// (`SchedulerStats::upstream_refusals`), not yet acted on: a rule
    /// that handed such a forwarder's later held wants to the peer that
    /// last fed us as an upstream was measured and not kept (it built hold
    /// cycles, docs/security.md, "A refusal that names nobody"). An error
    /// or a timeout is not a refusal: call [`Self::on_dont_have`] for
    /// those.
    pub fn on_refused(&mut self, peer: &P, cid: BlockCid, now: Instant) {
        if let Some(b) = self.blocks.get(&cid)
            && self.upstream.get(&b.seq) == Some(peer)
            && b.requests.iter().any(|r| r.peer == *peer)
        {
            self.stats.upstream_refusals += 1;
        }
        self.on_dont_have(peer, cid, now);
    }

    /// `peer` does not have `cid` (DONT_HAVE, an error, or a refused request).
    pub fn on_dont_have(&mut self, peer: &P, cid: BlockCid, now: Instant) {
        let trial = self.take_trial(peer, &cid).is_some();
        self.end_request(peer, &cid);
        if let Some(p) = self.peers.get_mut(peer) {
            p.unkept = p.unkept.saturating_add(1);
        }
        if trial {
            // It claimed the block (a trial goes only to a holder) and did
            // not give it: a broken claim, wherever the block is by now.
            self.trial_failed(peer, now);
        }
        let Some(b) = self.blocks.get_mut(&cid) else { return };
        // A peer that announced HAVE and then does not deliver lied or
        // lost the block: either way it counts as a stall, so a peer that
        // keeps claiming blocks it cannot serve drops below honest ones;
        // unless it is delivering to us: then it is shedding at its upload
        // cap, and ranking it below a probe would strand its redirects.
        let claimed = b.holders.contains(peer);
        b.holders.retain(|h| h != peer);
        b.refused.insert(peer.clone(), now);
        if b.requests.is_empty() {
            self.pending.insert((b.deadline, cid));
        }
        if claimed
            && !trial
            && let Some(p) = self.peers.get_mut(peer)
        {
            p.stall(&mut self.stats, true, self.cfg.busy_grace, now);
        }
        self.dispatch(now);
    }
}
