//! Whom to ask, and when: the ranking of candidate peers for a block
//! (`rank`), the choice among them, and the dispatch loop
//! that turns pending blocks into wants (holds, hedges and their budget,
//! the download cap). The policy is described in the module docs of
//! `scheduler.rs` and in docs/protocol.md §6.

use std::time::{Duration, Instant};

use super::{Action, BlockState, Request, Scheduler};

impl<P: Clone + Eq + std::hash::Hash + Ord + std::fmt::Debug> Scheduler<P> {
    /// Ranks a candidate for a block: lower is better, `None` if it cannot
    /// take another request now (or has a trial in flight). Classes: 0 a
    /// relay that announced HAVE, has delivered to us before (off
    /// probation) and has no unforgiven stall; 1 the segment's upstream (closest to
    /// the publisher, even when it is the publisher: first-hop nodes have
    /// no one else) or a peer it redirected us to; 2 another channel
    /// neighbour (it holds our want until it has the block), or a HAVE
    /// holder on probation or that stalled since its last delivery; 3 a relay that stalled
    /// too often; 4 an origin. Within a class, fewest stalls, then least
    /// expected finish: after one stall a peer is asked only when neither
    /// a clean holder nor the upstream can take the block.
    pub(super) fn rank(&self, peer: &P, b: &BlockState<P>, now: Instant) -> Option<(u8, u32, u64)> {
        let p = self.peers.get(peer)?;
        if p.inflight >= self.cfg.max_inflight_per_peer
            || p.trial.is_some()
            || b.refused.get(peer).is_some_and(|t| now.saturating_duration_since(*t) < self.cfg.refuse_ttl)
            || b.requests.iter().any(|r| r.peer == *peer)
        {
            return None;
        }
        let upstream = self.upstream.get(&b.seq) == Some(peer) || b.redirects.contains(peer);
        // Claims this block, and broke a claim since its last delivery.
        let claims_and_stalls = p.stalls > 0 && b.holders.contains(peer);
        let class = if p.stalls >= self.cfg.stall_limit {
            if p.origin { 4 } else { 3 }
        } else if upstream && !claims_and_stalls {
            // (A staller forwards manifests like any gossip peer, so it is
            // some viewers' upstream; as a holder with a stall it falls to
            // class 2 below, while an upstream that stalled once under load
            // and does not claim the block keeps its place.)
            1
        } else if p.origin {
            4
        } else if b.holders.contains(peer) && p.stalls == 0 && p.proven {
            0
        } else {
            // A holder with a stall not yet forgiven by a delivery is a
            // claim it has not kept: it goes behind the upstream, which
            // holds our want until it has the block. Ranked only within
            // class 0, a peer that sends its HAVEs the moment it sees a
            // manifest (often before our copy of the manifest lands) was
            // asked ahead of the upstream until `stall_limit` stalls, so
            // each viewer paid that many hedge delays (the hostile suite's
            // exchange group). A holder that never delivered to us is
            // here too (probation): it gets its trial beside the request
            // that goes ahead of it (`offer_trials`), and the first stall
            // of a staller costs no viewer a hedge delay.
            2
        };
        // Neither announced nor upstream: a plain neighbour or an origin is
        // asked only once HAVEs had their chance, when time is short, or
        // once the upstream said it cannot give the block yet (the
        // publisher's first-copies gate answers its mesh neighbours that
        // way: they waited out `probe_after` for HAVEs that, outside the
        // seed's mesh, came late, and that wait was the ~450 ms p95 of a
        // 30-node swarm on plain loopback, docs/benchmarks.md). Probes carry
        // no hold: holds at arbitrary neighbours build wait cycles (A holds
        // at B while B holds at A), which only timeouts break.
        let upstream_refused = self.upstream.get(&b.seq).is_some_and(|u| b.refused.contains_key(u));
        let probing = upstream_refused
            || now.saturating_duration_since(b.added) >= self.cfg.probe_after
            || now + self.cfg.hedge_window >= b.deadline;
        if matches!(class, 2..=4) && !b.holders.contains(peer) && !probing {
            return None;
        }
        let finish_us = ((p.queued_bytes + u64::from(b.size)) as f64 / p.rate_bps.max(1.0) * 1e6) as u64;
        Some((class, p.stalls, finish_us))
    }

    /// The peer to ask for `b` now, with its rank class.
    fn choose(&self, b: &BlockState<P>, now: Instant) -> Option<(u8, P)> {
        let near_deadline = now + self.cfg.hedge_window >= b.deadline;
        let best = self.peers.keys().filter_map(|id| self.rank(id, b, now).map(|r| (r, id))).min();
        match best {
            // An origin only when nobody else could take it, even later.
            Some(((4, ..), id)) if !near_deadline => {
                let relay_busy = self.peers.iter().any(|(pid, ps)| {
                    !ps.origin && !b.refused.contains_key(pid) && ps.inflight >= self.cfg.max_inflight_per_peer
                });
                (!relay_busy).then(|| (4, id.clone()))
            }
            Some(((class, ..), id)) => Some((class, id.clone())),
            None if near_deadline => {
                // Past hope elsewhere: an origin that refused earlier (its
                // first-copies cap) serves stragglers.
                self.peers
                    .iter()
                    .filter(|(id, s)| {
                        s.origin
                            && s.inflight < self.cfg.max_inflight_per_peer
                            && !b.requests.iter().any(|r| r.peer == **id)
                    })
                    .map(|(id, _)| id)
                    .min()
                    .map(|id| (4, id.clone()))
            }
            None => None,
        }
    }

    pub(super) fn dispatch(&mut self, now: Instant) {
        let mut waiting = Vec::new();
        let mut first_requests = Vec::new();
        while let Some((deadline, cid)) = self.pending.pop_first() {
            let Some(b) = self.blocks.get(&cid) else { continue };
            if b.requests.len() >= 2 {
                continue;
            }
            let Some((class, peer)) = self.choose(b, now) else {
                waiting.push((deadline, cid));
                continue;
            };
            let hedge = !b.requests.is_empty();
            let early = hedge && now + self.cfg.hedge_window < b.deadline;
            // An early hedge goes only to a HAVE holder or the upstream: a
            // probe at a plain neighbour or an origin is no better a bet than
            // the late request. Dropped, not kept waiting: `tick` re-plans it.
            if early && (class > 1 || !b.requests.iter().any(|r| r.is_late(now))) {
                continue;
            }
            // Out of hedge budget: the block keeps its one request (which
            // still times out), and `tick` offers the hedge again later.
            if hedge && self.hedge_credit < 1.0 {
                self.stats.hedges_skipped += 1;
                continue;
            }
            let queued = self.peers.get(&peer).map_or(0, |p| p.inflight);
            let young_have = b.first_have.is_some_and(|t| now.saturating_duration_since(t) < self.cfg.spread_wait);
            if queued >= 2 && young_have && now + self.cfg.hedge_window < b.deadline {
                waiting.push((deadline, cid));
                continue;
            }
            let size = u64::from(b.size);
            if let Some(budget) = &self.cfg.download {
                // Over the node's download cap: wait for credit (a tick).
                let Ok(mut bucket) = budget.lock() else { break };
                if !bucket.ready(now) {
                    waiting.push((deadline, cid));
                    continue;
                }
                bucket.charge(size as f64, now);
            }
            // Only the upstream (one hop closer to the publisher on the
            // acyclic gossip tree) holds our want, and, briefly, a peer it
            // redirected us to; anyone else answers now.
            let remaining = b.deadline.saturating_duration_since(now);
            let hold = if self.upstream.get(&b.seq) == Some(&peer) {
                remaining.min(self.cfg.max_hold)
            } else if b.redirects.contains(&peer) {
                remaining.min(self.cfg.redirect_hold)
            } else {
                Duration::ZERO
            };
            let Some(p) = self.peers.get_mut(&peer) else { continue };
            p.inflight += 1;
            p.queued_bytes += size;
            let transfer = Duration::from_secs_f64(p.queued_bytes as f64 / p.rate_bps.max(1.0));
            let timeout = now + hold + transfer + self.cfg.base_timeout;
            // A held want is late only once the peer has the block (on_have),
            // and then at once if the peer is doubted (on probation, or with
            // a stall not yet forgiven), as in `on_have`: a staller that
            // forwards manifests is some viewers' upstream, and its HAVE
            // often lands before the manifest it forwards.
            let announced = self.blocks.get(&cid).is_some_and(|b| b.holders.contains(&peer));
            let doubted = p.stalls > 0 || !p.proven;
            let patience =
                if !hold.is_zero() && doubted { Duration::ZERO } else { transfer + self.cfg.stall_hedge_after };
            let late_at = (hold.is_zero() || announced).then(|| now + patience);
            if let Some(b) = self.blocks.get_mut(&cid) {
                b.requests.push(Request { peer: peer.clone(), sent: now, timeout, late_at });
            }
            self.stats.wants_sent += 1;
            if hedge {
                self.stats.hedges += 1;
                self.hedge_credit -= 1.0;
            } else {
                first_requests.push(cid);
                self.hedge_credit = (self.hedge_credit + self.cfg.hedge_share).min(self.cfg.hedge_burst);
            }
            if early {
                self.stats.early_hedges += 1;
            }
            self.actions.push_back(Action::Want { peer, cid, hold });
        }
        self.pending.extend(waiting);
        for cid in first_requests {
            self.offer_trials(cid, now);
        }
    }
}
