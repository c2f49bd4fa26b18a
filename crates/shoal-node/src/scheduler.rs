//! The fetch scheduler: which block to ask which peer for, and when.
//!
//! Sans-IO: inputs go in (a segment to fetch, a peer's HAVE, a block or
//! DONT_HAVE arrived, a tick), actions come out ([`Action`]). Time is passed
//! in, so tests drive it with a fake clock. Generic over the peer type so it
//! knows nothing about libp2p.
//!
//! Policy, and the trade-offs behind it (docs/protocol.md §6 repeats them):
//! - **Held wants down the gossip tree.** The first peer to forward us a
//!   manifest (its *upstream*) is one hop closer to the publisher. We ask it
//!   with a hold, so it answers the moment it has the block: no HAVE round
//!   trip per hop, and each node downloads each block about once. Only the
//!   upstream holds: plain neighbours are probed without a hold, after
//!   `probe_after`, near the deadline, or once the upstream refused the
//!   block (holds anywhere built wait cycles).
//! - **Multi-source.** Blocks of one segment are spread over every peer that
//!   announced HAVE or that is an upstream, by least expected finish time
//!   (queued bytes ÷ measured rate), earliest deadline first.
//! - **The origin is the last resort.** The publisher and providers are
//!   ranked behind every relay; they are asked only when nobody else is known
//!   to have or expect the block, or when a deadline is near.
//! - **A refusal may name where the block went.** The publisher's
//!   first-copies gate refuses all but its seeds and names them in the
//!   DONT_HAVE, and a relay that sheds a want at its upload cap names the
//!   peers it just sent the block to. A redirect from the block's upstream,
//!   from a HAVE holder or from a peer named earlier makes the named peers
//!   rank and hold like the upstream (for at most `redirect_hold`), so a
//!   refused viewer waits at a peer about to hold the block instead of
//!   probing neighbours one DONT_HAVE at a time, and a seed's overflow walks
//!   down the tree by capacity instead of piling onto the seed.
//! - **A HAVE may come before its manifest.** It is kept (bounded, briefly)
//!   and makes its sender a holder when the segment is added: the publisher
//!   tells its seeds this way, so a seed asks it and not a relay the
//!   publisher refuses.
//! - **Hedges near the deadline, or when a request is late.** A second peer
//!   is asked for the same block inside the hedge window before its
//!   deadline, or *early*: when an unheld want is still unanswered
//!   `stall_hedge_after` past its own transfer estimate and a HAVE holder or
//!   the upstream can take it. The first request is not cancelled. The other
//!   source of duplicates is the switch of a held want to a HAVE holder after
//!   `switch_after`, which races an upstream copy already in flight.
//!   Hedges are budgeted (`hedge_share` per first request, `hedge_burst`
//!   at once), so a congested node does not double its own load. Each
//!   duplicate is put down to its cause (`SchedulerStats::duplicates_*`):
//!   at 10 Mbit/s caps ~90 % are the switch's, and a third of switches are
//!   lost to the upstream's copy (`switches_lost`; docs/benchmarks.md).
//! - **Slow and lying peers lose rank.** A request that times out, a late
//!   request that another peer beats, or a HAVE that is not honoured counts a
//!   stall against the peer. One stall already puts a peer behind every
//!   clean holder and behind the upstream (a HAVE is a claim the peer is
//!   held to); each needed block
//!   it delivers forgives one stall. A peer that delivered within
//!   `busy_grace` is busy, not lying: its late copies and its refusals are
//!   not stalls (a timeout still is), so a capped seed keeps the rank its
//!   redirects need.
//! - **Probation: a HAVE is trusted once its sender has delivered.** A
//!   holder that has never delivered a block to us ranks behind the
//!   upstream (class 2), like one that stalled: a peer can announce HAVE
//!   for every block the moment it sees a manifest and then stall (attack
//!   6), and ranked first it cost each viewer one hedge delay before its
//!   first stall demoted it (the hostile suite's exchange group). It is
//!   taken off probation by a *trial*: one block, asked beside a request
//!   that is stuck (late, or held without a claim for `switch_after`, or
//!   at once at a peer on probation itself), never cancelled, so an honest peer proves itself even
//!   when it loses the race (one duplicate block), and a staller's trial
//!   only times out (a stall, and the next trial after `trial_retry`). A holder on
//!   probation still takes a block when nobody trusted can (a swarm where
//!   nobody has delivered yet), and that delivery proves it too.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    hash::Hash,
    time::{Duration, Instant},
};

use shoal_core::{BlockCid, BlockRef, block_peers::BlockPeers};

mod config;
mod dispatch;
mod probation;
mod replies;
pub use config::{DownloadBudget, SchedulerConfig, SchedulerStats};

/// Most blocks with a HAVE that came before their manifest. A HAVE overtakes
/// its manifest by milliseconds, so a few segments' worth is plenty; a peer
/// that floods HAVEs for blocks that never come only evicts older entries.
const MAX_EARLY_HAVES: usize = 1024;
/// An early HAVE older than this is dropped: its manifest was not coming.
const EARLY_HAVE_TTL: Duration = Duration::from_secs(2);
/// Most redirect targets kept per block, over all the redirects heard for
/// it (the wire allows 4 per response). Redirects chain (a seed shed at its
/// cap names the peers it served), so this also bounds how far a chain of
/// liars can send us: each hop costs one DONT_HAVE round trip.
const MAX_REDIRECTS_PER_BLOCK: usize = 8;

/// Most (block, peer) requests remembered after they ended without their
/// block, to tell why a duplicate came (see [`SchedulerStats`]'s
/// `duplicates_*`). A few seconds of wants at one node.
const ENDED_MEMORY: usize = 1024;

/// Why a request ended without its block: if the block comes anyway, the
/// duplicate is counted under this cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// A held want moved to a HAVE holder (`maybe_switch`).
    Switched,
    /// Another live request's copy came first (a hedge, or the first want
    /// beat its hedge).
    Raced,
    /// The request timed out.
    TimedOut,
}

/// What the scheduler wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<P> {
    /// Send a want-block (with `send_dont_have`) to `peer`, which may hold it
    /// up to `hold`.
    Want {
        /// Whom to ask.
        peer: P,
        /// The block.
        cid: BlockCid,
        /// How long the peer may hold the want.
        hold: Duration,
    },
    /// Tell `peer` we no longer need `cid` (someone else delivered it).
    Cancel {
        /// Whom.
        peer: P,
        /// The block.
        cid: BlockCid,
    },
    /// Every block of the segment has arrived (verified by the caller).
    SegmentComplete {
        /// The segment's seq.
        seq: u64,
    },
    /// The segment missed its deadline and is dropped.
    GiveUp {
        /// The segment's seq.
        seq: u64,
        /// Blocks still missing.
        missing: usize,
    },
    /// We now hold `cid`: tell our neighbours (not the whole swarm).
    AnnounceHave {
        /// The block.
        cid: BlockCid,
    },
}

#[derive(Debug)]
struct Request<P> {
    peer: P,
    sent: Instant,
    timeout: Instant,
    /// When the want counts as late (sent + transfer estimate +
    /// `stall_hedge_after`); `None` for a held want until its peer announces
    /// HAVE for the block (it waits for the block by design until then).
    late_at: Option<Instant>,
}

impl<P> Request<P> {
    fn is_late(&self, now: Instant) -> bool {
        self.late_at.is_some_and(|t| now >= t)
    }
}

#[derive(Debug)]
struct BlockState<P> {
    /// Segments waiting for this block (a CID may repeat within a segment or
    /// across segments: silence, padding).
    seqs: Vec<u64>,
    /// The earliest waiting segment, for upstream lookup.
    seq: u64,
    size: u32,
    deadline: Instant,
    added: Instant,
    first_have: Option<Instant>,
    holders: Vec<P>,
    requests: Vec<Request<P>>,
    refused: BTreeMap<P, Instant>,
    /// Peers the segment's upstream named when it refused this block (a
    /// publisher's seeds): ranked and held like the upstream.
    redirects: Vec<P>,
}

#[derive(Debug)]
struct SegmentState {
    deadline: Instant,
    missing: usize,
}

#[derive(Debug)]
struct PeerState {
    origin: bool,
    /// It has delivered a verified block to us (needed or not): off
    /// probation (see the module docs).
    proven: bool,
    /// Its trial in flight, if any; while one is, it is asked nothing else.
    trial: Option<probation::Trial>,
    /// When it last counted a stall: a peer on probation gets no trial
    /// for `trial_retry` after one.
    stalled_at: Option<Instant>,
    /// Requests of ours it ended without the block (refusals, timeouts,
    /// stalls): while it is on probation, one is enough to lose the benefit
    /// of `switch_after` on a held want.
    unkept: u32,
    inflight: usize,
    queued_bytes: u64,
    rate_bps: f64,
    stalls: u32,
    received_bytes: u64,
    /// Its HAVEs that came before their manifest: a peer that has blocks
    /// before we know they exist is ahead of our upstream (the publisher,
    /// to its seeds), so a held want moves to it at once, not after
    /// `switch_after`.
    early_haves: u32,
    /// When it last delivered a needed block (see
    /// [`SchedulerConfig::busy_grace`]).
    delivered_at: Option<Instant>,
}

impl PeerState {
    /// Counts a stall, unless it is `excusable` (late or refused, not timed
    /// out) and the peer delivered a needed block within `grace`: a busy
    /// peer, not a staller.
    fn stall(&mut self, stats: &mut SchedulerStats, excusable: bool, grace: Duration, now: Instant) {
        if excusable && self.delivered_at.is_some_and(|t| now.saturating_duration_since(t) < grace) {
            stats.stalls_excused += 1;
        } else {
            self.stalls += 1;
            self.stalled_at = Some(now);
            stats.stalls += 1;
        }
    }
}

/// The scheduler. See the module docs for the policy.
#[derive(Debug)]
pub struct Scheduler<P> {
    cfg: SchedulerConfig,
    blocks: HashMap<BlockCid, BlockState<P>>,
    /// Blocks that still need a request, earliest deadline first.
    pending: BTreeSet<(Instant, BlockCid)>,
    segments: BTreeMap<u64, SegmentState>,
    upstream: HashMap<u64, P>,
    peers: HashMap<P, PeerState>,
    /// Recently completed blocks, to recognise duplicates (bounded).
    done: VecDeque<BlockCid>,
    done_set: BTreeSet<BlockCid>,
    /// HAVEs for blocks not tracked yet, applied when their segment is
    /// added: the publisher tells its seeds it holds a new segment's blocks
    /// just before it gossips the manifest, and that HAVE may overtake it.
    early_haves: BlockPeers<P>,
    /// Requests that ended without their block, and why (bounded by
    /// `ENDED_MEMORY`, oldest forgotten).
    ended: HashMap<(BlockCid, P), Ended>,
    ended_order: VecDeque<(BlockCid, P)>,
    actions: VecDeque<Action<P>>,
    stats: SchedulerStats,
    /// Hedges that may be sent now: `hedge_share` per first request, at
    /// most `hedge_burst`, one spent per hedge.
    hedge_credit: f64,
}

/// How many completed CIDs are remembered to count late duplicates.
const DONE_MEMORY: usize = 4096;

impl<P: Clone + Eq + Hash + Ord + std::fmt::Debug> Scheduler<P> {
    /// A scheduler with `cfg`.
    pub fn new(cfg: SchedulerConfig) -> Self {
        Self {
            blocks: HashMap::new(),
            pending: BTreeSet::new(),
            segments: BTreeMap::new(),
            upstream: HashMap::new(),
            peers: HashMap::new(),
            done: VecDeque::new(),
            done_set: BTreeSet::new(),
            early_haves: BlockPeers::new(MAX_EARLY_HAVES, EARLY_HAVE_TTL),
            ended: HashMap::new(),
            ended_order: VecDeque::new(),
            actions: VecDeque::new(),
            stats: SchedulerStats::default(),
            hedge_credit: cfg.hedge_burst,
            cfg,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SchedulerStats {
        self.stats
    }

    /// Blocks currently tracked.
    pub fn tracked_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Bytes received from `peer` that were needed.
    pub fn received_from(&self, peer: &P) -> u64 {
        self.peers.get(peer).map_or(0, |p| p.received_bytes)
    }

    /// Next action, if any.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    /// A peer is connected and may be asked. `origin` marks the publisher or
    /// a provider, used only as a last resort.
    pub fn peer_connected(&mut self, peer: P, origin: bool) {
        let rate_bps = self.cfg.initial_rate_bps;
        self.peers.entry(peer).and_modify(|p| p.origin |= origin).or_insert(PeerState {
            origin,
            proven: false,
            trial: None,
            stalled_at: None,
            unkept: 0,
            inflight: 0,
            queued_bytes: 0,
            rate_bps,
            stalls: 0,
            received_bytes: 0,
            early_haves: 0,
            delivered_at: None,
        });
    }

    /// A peer went away: everything asked of it is re-planned.
    pub fn peer_disconnected(&mut self, peer: &P, now: Instant) {
        self.peers.remove(peer);
        self.upstream.retain(|_, p| p != peer);
        let mut replan = Vec::new();
        for (cid, b) in &mut self.blocks {
            b.holders.retain(|h| h != peer);
            let before = b.requests.len();
            b.requests.retain(|r| r.peer != *peer);
            if b.requests.len() != before && b.requests.is_empty() {
                replan.push((b.deadline, *cid));
            }
        }
        self.pending.extend(replan);
        self.dispatch(now);
    }

    /// A segment's manifest was accepted: fetch its blocks by `deadline`.
    /// `upstream` is the peer that forwarded the manifest first, if any.
    /// Blocks already held (per `have`) are not fetched.
    pub fn add_segment(
        &mut self,
        seq: u64,
        blocks: &[BlockRef],
        deadline: Instant,
        upstream: Option<P>,
        have: impl Fn(&BlockCid) -> bool,
        now: Instant,
    ) {
        if self.segments.contains_key(&seq) {
            return;
        }
        let mut seen = BTreeSet::new();
        let needed: Vec<&BlockRef> = blocks.iter().filter(|b| seen.insert(b.cid) && !have(&b.cid)).collect();
        if needed.is_empty() {
            self.actions.push_back(Action::SegmentComplete { seq });
            self.stats.segments_complete += 1;
            return;
        }
        // Bound memory: drop the oldest segments if this one would not fit.
        while self.blocks.len() + needed.len() > self.cfg.max_tracked_blocks {
            let Some((&old, _)) = self.segments.iter().next() else { break };
            self.give_up(old);
        }
        if let Some(u) = upstream {
            self.upstream.insert(seq, u);
        }
        self.segments.insert(seq, SegmentState { deadline, missing: needed.len() });
        for b in needed {
            if let Some(existing) = self.blocks.get_mut(&b.cid) {
                // Already wanted by another segment: one fetch serves both.
                existing.seqs.push(seq);
                continue;
            }
            let (first_have, holders) = match self.early_haves.take(&b.cid, now) {
                Some((at, peers)) => {
                    for p in &peers {
                        if let Some(ps) = self.peers.get_mut(p) {
                            ps.early_haves = ps.early_haves.saturating_add(1);
                        }
                    }
                    (Some(at), peers)
                }
                None => (None, Vec::new()),
            };
            self.blocks.insert(
                b.cid,
                BlockState {
                    seqs: vec![seq],
                    seq,
                    size: b.size,
                    deadline,
                    added: now,
                    first_have,
                    holders,
                    requests: Vec::new(),
                    refused: BTreeMap::new(),
                    redirects: Vec::new(),
                },
            );
            self.pending.insert((deadline, b.cid));
        }
        self.dispatch(now);
    }

    /// `peer` announced it holds `cid`.
    pub fn on_have(&mut self, peer: P, cid: BlockCid, now: Instant) {
        let max = self.cfg.max_holders_per_block;
        let Some(b) = self.blocks.get_mut(&cid) else {
            // Not tracked: done already, or its manifest is on the way.
            if !self.done_set.contains(&cid) {
                self.early_haves.remember(peer, cid, max, now);
            }
            return;
        };
        b.refused.remove(&peer);
        b.first_have.get_or_insert(now);
        if !b.holders.contains(&peer) && b.holders.len() < max {
            b.holders.push(peer.clone());
        }
        // A peer holding our want that now says it has the block should
        // answer at once: from here on the want can be late like an unheld
        // one (a staller that forwards manifests is some viewers' upstream,
        // and would otherwise keep the want for the whole hold).
        let rate = self.peers.get(&peer).map_or(self.cfg.initial_rate_bps, |p| p.rate_bps).max(1.0);
        let transfer = Duration::from_secs_f64(f64::from(b.size) / rate);
        // One that already broke a claim since its last delivery, or that
        // never delivered to us (probation), gets no benefit of the doubt:
        // late at once, so a clean holder is asked as soon as there is one.
        // (An honest upstream sends the block with its HAVE; the only cost
        // is a possible hedge while it is new to us.)
        let doubted = self.peers.get(&peer).is_some_and(|p| p.stalls > 0 || !p.proven);
        let patience = if doubted { Duration::ZERO } else { transfer + self.cfg.stall_hedge_after };
        for r in b.requests.iter_mut().filter(|r| r.peer == peer && r.late_at.is_none()) {
            r.late_at = Some(now + patience);
        }
        self.maybe_switch(cid, now);
        let b = &self.blocks[&cid];
        // No request, or its one request is already late: a new holder may
        // be the hedge now, not at the next tick.
        if b.requests.is_empty() || matches!(b.requests.as_slice(), [r] if r.is_late(now)) {
            self.pending.insert((b.deadline, cid));
        }
        self.dispatch(now);
        self.offer_trials(cid, now);
    }

    /// `peer` says it just published `cid` and will serve us first (a
    /// publisher's HAVE to its seeds, `first_copies` on the wire). Like
    /// [`Self::on_have`], and the peer counts as *ahead* (as if its HAVE had
    /// come before the manifest): a want held at the relay the manifest
    /// came through moves to it at once. Timing alone cannot tell: on a
    /// busy host the publisher's HAVE, on a fresh stream, often lands a few
    /// ms after a manifest relayed over two or three open gossip streams,
    /// and that relay chain can wait on this very seed (redirects), a cycle
    /// only `switch_after` broke (~270 ms on the segment).
    pub fn on_first_copy_have(&mut self, peer: P, cid: BlockCid, now: Instant) {
        if self.blocks.contains_key(&cid)
            && let Some(ps) = self.peers.get_mut(&peer)
        {
            ps.early_haves = ps.early_haves.saturating_add(1);
        }
        self.on_have(peer, cid, now);
    }

    /// Advance time: time out requests, hedge near deadlines, give up on
    /// segments past their deadline.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<u64> = self.segments.iter().filter(|(_, s)| now >= s.deadline).map(|(q, _)| *q).collect();
        for seq in expired {
            self.give_up(seq);
        }
        let mut replan = Vec::new();
        let mut stalled = Vec::new();
        for (cid, b) in &mut self.blocks {
            let (late, live): (Vec<_>, Vec<_>) =
                std::mem::take(&mut b.requests).into_iter().partition(|r| now >= r.timeout);
            b.requests = live;
            for r in late {
                // A peer that did not deliver in time is not asked for this
                // block again, and loses rank for every block.
                b.refused.insert(r.peer.clone(), now);
                b.holders.retain(|h| *h != r.peer);
                stalled.push((r.peer, b.size, *cid));
            }
            // Near the deadline, or the one request is late: a second peer
            // may be asked (`dispatch` decides whom, and whether at all).
            let hedge = matches!(b.requests.as_slice(), [r] if r.is_late(now))
                || (b.requests.len() == 1 && now + self.cfg.hedge_window >= b.deadline);
            if b.requests.is_empty() || hedge {
                replan.push((b.deadline, *cid));
            }
        }
        self.expire_trials(now);
        for (peer, size, cid) in stalled {
            self.stats.timeouts += 1;
            self.ended(cid, peer.clone(), Ended::TimedOut);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.stall(&mut self.stats, false, self.cfg.busy_grace, now);
                p.unkept = p.unkept.saturating_add(1);
                p.inflight = p.inflight.saturating_sub(1);
                p.queued_bytes = p.queued_bytes.saturating_sub(u64::from(size));
            }
        }
        self.pending.extend(replan);
        let cids: Vec<BlockCid> = self.blocks.keys().copied().collect();
        for cid in &cids {
            self.maybe_switch(*cid, now);
        }
        self.dispatch(now);
        for cid in cids {
            self.offer_trials(cid, now);
        }
    }

    /// Moves a want that a peer is only *holding* (it does not have the block
    /// yet) to a clean peer that announced HAVE, once it has waited
    /// `switch_after`.
    /// The held want is cancelled: at most a want message is wasted.
    fn maybe_switch(&mut self, cid: BlockCid, now: Instant) {
        let Some(b) = self.blocks.get(&cid) else { return };
        let [req] = b.requests.as_slice() else { return };
        // A holder answers at once, unless it broke a claim before or is on
        // probation.
        if b.holders.contains(&req.peer) && self.peers.get(&req.peer).is_none_or(|p| p.stalls == 0 && p.proven) {
            return;
        }
        // Only to a clean holder: a peer that announces HAVE and stalls
        // would otherwise take over every held want it sees. A holder that
        // has sent HAVEs ahead of their manifests is ahead of the upstream,
        // whose copy cannot be on its way yet: no wait for that one.
        let clean = |h: &P| self.rank(h, b, now).is_some_and(|(class, stalls, _)| class == 0 && stalls == 0);
        let ahead = |h: &P| self.peers.get(h).is_some_and(|p| p.early_haves > 0);
        let waited = now.saturating_duration_since(req.sent) >= self.cfg.switch_after;
        // A held want at a peer on probation that already left a request
        // of ours unkept is not given `switch_after`: a staller that
        // forwards manifests holds it without claiming the block (its HAVE
        // may come late, or not at all). A new upstream that has not failed
        // us yet keeps the wait: moving at once from every new upstream
        // lost the race to its copy in flight 6.4 times per viewer in CI's
        // debug `small` (wire 1.26, duplicates 0.10).
        let on_probation = self.peers.get(&req.peer).is_some_and(|p| !p.proven && p.unkept > 0);
        if !b.holders.iter().any(|h| clean(h) && (waited || on_probation || ahead(h))) {
            return;
        }
        let size = u64::from(b.size);
        let deadline = b.deadline;
        if let Some(b) = self.blocks.get_mut(&cid) {
            let old = b.requests.remove(0);
            if let Some(p) = self.peers.get_mut(&old.peer) {
                p.inflight = p.inflight.saturating_sub(1);
                p.queued_bytes = p.queued_bytes.saturating_sub(size);
            }
            self.actions.push_back(Action::Cancel { peer: old.peer.clone(), cid });
            self.pending.insert((deadline, cid));
            self.stats.switches += 1;
            self.ended(cid, old.peer, Ended::Switched);
        }
    }

    fn remember_done(&mut self, cid: BlockCid) {
        if self.done.len() == DONE_MEMORY
            && let Some(old) = self.done.pop_front()
        {
            self.done_set.remove(&old);
        }
        self.done.push_back(cid);
        self.done_set.insert(cid);
    }

    fn give_up(&mut self, seq: u64) {
        let Some(seg) = self.segments.remove(&seq) else { return };
        self.upstream.remove(&seq);
        let cids: Vec<BlockCid> = self.blocks.iter().filter(|(_, b)| b.seqs.contains(&seq)).map(|(c, _)| *c).collect();
        for cid in cids {
            let still_wanted = self.blocks.get_mut(&cid).is_some_and(|b| {
                b.seqs.retain(|s| *s != seq);
                if let Some(&first) = b.seqs.first() {
                    b.seq = first;
                }
                !b.seqs.is_empty()
            });
            if still_wanted {
                continue;
            }
            if let Some(b) = self.blocks.remove(&cid) {
                self.pending.remove(&(b.deadline, cid));
                for r in b.requests {
                    if let Some(p) = self.peers.get_mut(&r.peer) {
                        p.inflight = p.inflight.saturating_sub(1);
                        p.queued_bytes = p.queued_bytes.saturating_sub(u64::from(b.size));
                    }
                    self.actions.push_back(Action::Cancel { peer: r.peer, cid });
                }
            }
        }
        self.stats.segments_given_up += 1;
        self.actions.push_back(Action::GiveUp { seq, missing: seg.missing });
    }
}

#[cfg(test)]
mod tests;
