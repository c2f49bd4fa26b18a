//! Held wants, sans-IO: a want-block for a block this node expects but does
//! not hold yet keeps its request open until the block arrives, the hold
//! expires, or the peer cancels. Bounded per peer and in total so a peer
//! cannot make us keep unbounded response channels open.
//!
//! Generic over the reply handle `R` so tests drive it with plain values and
//! a fake clock.

use std::{
    collections::{HashMap, HashSet},
    time::Instant,
};

use libp2p::PeerId;
use shoal_core::{
    BlockCid, VerifiedBlock,
    exchange::ExchangeResponse,
    limits::{MAX_EXCHANGE_RESPONSE_BYTES, MAX_REDIRECTS},
};

/// Protobuf framing per entry (tag, length, CID) on top of a block's bytes;
/// generous so the encoded response never exceeds the frame cap.
const ENTRY_OVERHEAD: usize = 64;

/// One want being held.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldWant {
    pub(crate) cid: BlockCid,
    pub(crate) deadline: Instant,
    pub(crate) send_dont_have: bool,
}

/// A response under construction, with its byte budget.
#[derive(Debug, Default)]
pub(crate) struct ResponseBuilder {
    pub(crate) response: ExchangeResponse,
    bytes: usize,
}

impl ResponseBuilder {
    /// Adds a block if it fits the frame cap; otherwise answers "have" so the
    /// peer asks again in another request.
    pub(crate) fn push_block(&mut self, block: VerifiedBlock) -> bool {
        let size = block.data().len() + ENTRY_OVERHEAD;
        if self.bytes + size <= MAX_EXCHANGE_RESPONSE_BYTES {
            self.bytes += size;
            self.response.blocks.push(block);
            true
        } else {
            self.push_have(block.cid());
            false
        }
    }

    pub(crate) fn push_have(&mut self, cid: BlockCid) {
        self.bytes += ENTRY_OVERHEAD;
        self.response.haves.push(cid);
    }

    pub(crate) fn push_dont_have(&mut self, cid: BlockCid) {
        self.bytes += ENTRY_OVERHEAD;
        self.response.dont_haves.push(cid);
    }

    /// Names peers that hold or are being given the DONT_HAVE blocks (a
    /// first-copies gate's seeds). Duplicates collapse; past
    /// [`MAX_REDIRECTS`] the rest are dropped, as a decoder would refuse them.
    pub(crate) fn push_redirects(&mut self, peers: impl IntoIterator<Item = PeerId>) {
        self.bytes += add_redirects(&mut self.response, peers);
    }
}

/// Adds `peers` to a response's redirects: duplicates collapse, and past
/// [`MAX_REDIRECTS`] the rest are dropped, as a decoder would refuse them.
/// Returns the bytes added, framing included.
pub(crate) fn add_redirects(response: &mut ExchangeResponse, peers: impl IntoIterator<Item = PeerId>) -> usize {
    let mut added = 0;
    for p in peers {
        if response.redirects.len() >= MAX_REDIRECTS {
            break;
        }
        let raw = bytes::Bytes::from(p.to_bytes());
        if !response.redirects.contains(&raw) {
            added += raw.len() + ENTRY_OVERHEAD;
            response.redirects.push(raw);
        }
    }
    added
}

struct Pending<R> {
    peer: PeerId,
    reply: R,
    builder: ResponseBuilder,
    outstanding: Vec<HeldWant>,
}

/// What happened to wants: counts for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HoldOutcome {
    /// Wants now held.
    pub(crate) held: usize,
    /// Wants refused because a cap was reached (answered dont-have if asked).
    pub(crate) refused: usize,
}

/// All held wants of this node.
pub(crate) struct HeldWants<R> {
    per_peer_cap: usize,
    total_cap: usize,
    next_id: u64,
    pending: HashMap<u64, Pending<R>>,
    by_cid: HashMap<BlockCid, HashSet<u64>>,
    per_peer: HashMap<PeerId, usize>,
    total: usize,
}

impl<R> HeldWants<R> {
    pub(crate) fn new(per_peer_cap: usize, total_cap: usize) -> Self {
        Self {
            per_peer_cap,
            total_cap,
            next_id: 0,
            pending: HashMap::new(),
            by_cid: HashMap::new(),
            per_peer: HashMap::new(),
            total: 0,
        }
    }

    /// Wants held right now.
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// Wants held for `peer`.
    pub(crate) fn len_for(&self, peer: &PeerId) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Peers with at least one want held.
    pub(crate) fn peers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.per_peer.keys().copied()
    }

    /// Holds as many of `wants` as the caps allow; the rest are answered
    /// dont-have (if asked) in `builder`. Returns the reply back when nothing
    /// was held, so the caller sends the response now.
    pub(crate) fn hold(
        &mut self,
        peer: PeerId,
        reply: R,
        mut builder: ResponseBuilder,
        wants: Vec<HeldWant>,
    ) -> (HoldOutcome, Option<(R, ExchangeResponse)>) {
        let mut outcome = HoldOutcome::default();
        let mut outstanding = Vec::new();
        for w in wants {
            let peer_count = self.len_for(&peer) + outstanding.len();
            if peer_count >= self.per_peer_cap || self.total + outstanding.len() >= self.total_cap {
                outcome.refused += 1;
                if w.send_dont_have {
                    builder.push_dont_have(w.cid);
                }
            } else {
                outstanding.push(w);
            }
        }
        outcome.held = outstanding.len();
        if outstanding.is_empty() {
            return (outcome, Some((reply, builder.response)));
        }
        let id = self.next_id;
        self.next_id += 1;
        for w in &outstanding {
            self.by_cid.entry(w.cid).or_default().insert(id);
        }
        *self.per_peer.entry(peer).or_default() += outstanding.len();
        self.total += outstanding.len();
        self.pending.insert(id, Pending { peer, reply, builder, outstanding });
        (outcome, None)
    }

    /// A block arrived: every pending response that waits for it gets it;
    /// those with nothing left outstanding are returned to be sent now.
    pub(crate) fn block_arrived(&mut self, block: &VerifiedBlock) -> Vec<(PeerId, R, ExchangeResponse)> {
        let Some(ids) = self.by_cid.remove(&block.cid()) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        for id in ids {
            let Some(p) = self.pending.get_mut(&id) else { continue };
            let before = p.outstanding.len();
            p.outstanding.retain(|w| w.cid != block.cid());
            let answered = before - p.outstanding.len();
            if answered > 0 {
                p.builder.push_block(block.clone());
            }
            let peer = p.peer;
            self.release(peer, answered);
            if let Some(r) = self.finish_if_done(id) {
                ready.push(r);
            }
        }
        ready
    }

    /// The peer cancelled these wants. Responses left with nothing
    /// outstanding are returned (with whatever they gathered).
    pub(crate) fn cancel(&mut self, peer: &PeerId, cids: &[BlockCid]) -> (usize, Vec<(PeerId, R, ExchangeResponse)>) {
        self.drop_wants(peer, cids, false)
    }

    /// We are about to ask `peer` for these blocks ourselves, so any of its
    /// wants we hold for them wait on a block we can only get from it (or
    /// past it): a wait cycle that only a hold expiry would end. They are
    /// answered DONT_HAVE now (if asked), so the peer fetches elsewhere.
    pub(crate) fn refuse(&mut self, peer: &PeerId, cids: &[BlockCid]) -> (usize, Vec<(PeerId, R, ExchangeResponse)>) {
        self.drop_wants(peer, cids, true)
    }

    fn drop_wants(
        &mut self,
        peer: &PeerId,
        cids: &[BlockCid],
        dont_have: bool,
    ) -> (usize, Vec<(PeerId, R, ExchangeResponse)>) {
        let mut cancelled = 0;
        let mut ready = Vec::new();
        for cid in cids {
            let Some(ids) = self.by_cid.get(cid).cloned() else { continue };
            for id in ids {
                let Some(p) = self.pending.get_mut(&id) else { continue };
                if p.peer != *peer {
                    continue;
                }
                let before = p.outstanding.len();
                let mut answer = false;
                p.outstanding.retain(|w| {
                    answer |= w.cid == *cid && w.send_dont_have;
                    w.cid != *cid
                });
                if dont_have && answer {
                    p.builder.push_dont_have(*cid);
                }
                let n = before - p.outstanding.len();
                cancelled += n;
                self.release(*peer, n);
                self.unindex(cid, id);
                if let Some(r) = self.finish_if_done(id) {
                    ready.push(r);
                }
            }
        }
        (cancelled, ready)
    }

    /// Drops wants past their deadline (dont-have if asked) and returns the
    /// responses that are now complete.
    pub(crate) fn expire(&mut self, now: Instant) -> (usize, Vec<(PeerId, R, ExchangeResponse)>) {
        let mut expired = 0;
        let mut ready = Vec::new();
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            let Some(p) = self.pending.get_mut(&id) else { continue };
            let (gone, keep): (Vec<_>, Vec<_>) = p.outstanding.drain(..).partition(|w| w.deadline <= now);
            p.outstanding = keep;
            if gone.is_empty() {
                continue;
            }
            for w in &gone {
                if w.send_dont_have {
                    p.builder.push_dont_have(w.cid);
                }
            }
            let peer = p.peer;
            expired += gone.len();
            self.release(peer, gone.len());
            for w in &gone {
                self.unindex(&w.cid, id);
            }
            if let Some(r) = self.finish_if_done(id) {
                ready.push(r);
            }
        }
        (expired, ready)
    }

    /// The peer went away: its held wants are dropped (their reply channels
    /// are dead anyway). Returns how many.
    pub(crate) fn peer_gone(&mut self, peer: &PeerId) -> usize {
        let ids: Vec<u64> = self.pending.iter().filter(|(_, p)| p.peer == *peer).map(|(id, _)| *id).collect();
        let mut dropped = 0;
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                dropped += p.outstanding.len();
                for w in &p.outstanding {
                    self.unindex(&w.cid, id);
                }
            }
        }
        self.release(*peer, dropped);
        dropped
    }

    fn release(&mut self, peer: PeerId, n: usize) {
        if n == 0 {
            return;
        }
        self.total -= n;
        if let Some(c) = self.per_peer.get_mut(&peer) {
            *c -= n;
            if *c == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    fn unindex(&mut self, cid: &BlockCid, id: u64) {
        if let Some(set) = self.by_cid.get_mut(cid) {
            set.remove(&id);
            if set.is_empty() {
                self.by_cid.remove(cid);
            }
        }
    }

    fn finish_if_done(&mut self, id: u64) -> Option<(PeerId, R, ExchangeResponse)> {
        if self.pending.get(&id).is_some_and(|p| p.outstanding.is_empty()) {
            self.pending.remove(&id).map(|p| (p.peer, p.reply, p.builder.response))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn want(data: &[u8], deadline: Instant) -> (VerifiedBlock, HeldWant) {
        let b = VerifiedBlock::from_content(data.to_vec().into());
        (b.clone(), HeldWant { cid: b.cid(), deadline, send_dont_have: true })
    }

    #[test]
    fn held_want_is_answered_when_the_block_arrives() {
        let now = Instant::now();
        let peer = PeerId::random();
        let mut h = HeldWants::new(4, 8);
        let (b1, w1) = want(b"one", now + Duration::from_secs(1));
        let (b2, w2) = want(b"two", now + Duration::from_secs(1));
        let (o, ready) = h.hold(peer, "reply", ResponseBuilder::default(), vec![w1, w2]);
        assert_eq!(o, HoldOutcome { held: 2, refused: 0 });
        assert!(ready.is_none());
        assert_eq!((h.len(), h.len_for(&peer)), (2, 2));
        assert!(h.block_arrived(&b1).is_empty(), "still waiting for the second block");
        let ready = h.block_arrived(&b2);
        assert_eq!(ready.len(), 1);
        let (p, r, resp) = &ready[0];
        assert_eq!((*p, *r), (peer, "reply"));
        assert_eq!(resp.blocks, vec![b1, b2]);
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn caps_refuse_with_dont_have() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut h = HeldWants::new(2, 3);
        let wants: Vec<_> = (0..3u8).map(|i| want(&[i], now + Duration::from_secs(1)).1).collect();
        let (o, ready) = h.hold(a, 1, ResponseBuilder::default(), wants.clone());
        assert_eq!(o, HoldOutcome { held: 2, refused: 1 });
        assert!(ready.is_none());
        // Total cap: only one more fits, for another peer.
        let more: Vec<_> = (10..13u8).map(|i| want(&[i], now + Duration::from_secs(1)).1).collect();
        let (o, _) = h.hold(b, 2, ResponseBuilder::default(), more.clone());
        assert_eq!(o, HoldOutcome { held: 1, refused: 2 });
        assert_eq!(h.len(), 3);
        // Nothing more for anyone: the reply comes straight back, all dont-have.
        let (o, ready) = h.hold(b, 3, ResponseBuilder::default(), vec![want(b"z", now).1]);
        assert_eq!(o, HoldOutcome { held: 0, refused: 1 });
        let (_, resp) = ready.unwrap();
        assert_eq!(resp.dont_haves.len(), 1);
    }

    #[test]
    fn expiry_answers_dont_have_and_frees_capacity() {
        let now = Instant::now();
        let peer = PeerId::random();
        let mut h = HeldWants::new(4, 4);
        let (_, early) = want(b"early", now + Duration::from_millis(100));
        let (late_block, late) = want(b"late", now + Duration::from_millis(900));
        h.hold(peer, (), ResponseBuilder::default(), vec![early, late]);
        let (n, ready) = h.expire(now + Duration::from_millis(500));
        assert_eq!((n, ready.len(), h.len()), (1, 0, 1));
        let (n, ready) = h.expire(now + Duration::from_secs(1));
        assert_eq!((n, ready.len(), h.len()), (1, 1, 0));
        assert_eq!(ready[0].2.dont_haves, vec![early.cid, late.cid]);
        assert!(h.block_arrived(&late_block).is_empty(), "expired want must not be answered");
    }

    #[test]
    fn cancel_is_per_peer() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut h = HeldWants::new(4, 8);
        let (blk, w) = want(b"x", now + Duration::from_secs(5));
        h.hold(a, "a", ResponseBuilder::default(), vec![w]);
        h.hold(b, "b", ResponseBuilder::default(), vec![w]);
        let (n, ready) = h.cancel(&a, &[w.cid]);
        assert_eq!(n, 1);
        assert_eq!(ready.len(), 1, "a's request completes empty");
        assert!(ready[0].2.blocks.is_empty());
        let ready = h.block_arrived(&blk);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].1, "b");
        assert_eq!(h.len(), 0);
    }

    /// Asking a peer for a block we hold its want for answers that want
    /// DONT_HAVE at once (a wait cycle); a cancel answers nothing.
    #[test]
    fn refuse_answers_dont_have_only_to_that_peer() {
        let now = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut h = HeldWants::new(4, 8);
        let (blk, w) = want(b"x", now + Duration::from_secs(5));
        let (_, other) = want(b"y", now + Duration::from_secs(5));
        h.hold(a, "a", ResponseBuilder::default(), vec![w, other]);
        h.hold(b, "b", ResponseBuilder::default(), vec![w]);
        let (n, ready) = h.refuse(&a, &[w.cid]);
        assert_eq!((n, ready.len()), (1, 0), "a's request still waits for its other block");
        let (n, ready) = h.refuse(&a, &[other.cid]);
        assert_eq!((n, ready.len()), (1, 1));
        assert_eq!(ready[0].2.dont_haves, vec![w.cid, other.cid], "both refused blocks answered DONT_HAVE");
        let ready = h.block_arrived(&blk);
        assert_eq!(ready.len(), 1, "b's hold is untouched");
        assert_eq!(ready[0].1, "b");
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn peer_gone_releases_everything() {
        let now = Instant::now();
        let peer = PeerId::random();
        let mut h = HeldWants::new(4, 8);
        let ws: Vec<_> = (0..3u8).map(|i| want(&[i], now + Duration::from_secs(1)).1).collect();
        h.hold(peer, (), ResponseBuilder::default(), ws);
        assert_eq!(h.peer_gone(&peer), 3);
        assert_eq!((h.len(), h.len_for(&peer)), (0, 0));
        assert!(h.by_cid.is_empty());
    }

    #[test]
    fn response_budget_turns_overflow_into_haves() {
        let mut b = ResponseBuilder::default();
        let mut pushed = 0;
        for i in 0..5u8 {
            let mut d = vec![i; 1024 * 1024];
            d[0] = i;
            if b.push_block(VerifiedBlock::from_content(d.into())) {
                pushed += 1;
            }
        }
        assert_eq!(pushed, 3, "three 1 MiB blocks fit in 4 MiB with overhead; the next ones become haves");
        assert_eq!(b.response.haves.len(), 2);
    }
}
