//! The upload line: responses that carry blocks are written one at a time,
//! rarest block first; the rest wait here, briefly. Sans-IO and bounded;
//! generic over the response key `K` (the inbound request id) and reply
//! handle `R` so tests drive it with plain values and a fake clock.
//!
//! Why: when a block arrives at a relay, every held want for it fires at
//! once, and a seed with four children also holds their wants for the
//! segment's other blocks. Written together, the copies share the uplink
//! chunk by chunk, so every child's *first* whole block lands only when
//! nearly all of them do (a trace of a capped 30-node swarm in
//! docs/benchmarks.md: four blocks to four children at 10 Mbit/s all
//! finished near +800 ms), and no child can forward anything before then.
//! Written one at a time, the first child holds a whole block after one
//! transfer and starts forwarding it. Rarest first (the block this node
//! has sent to the fewest peers) hands different children different
//! blocks, so they can trade among themselves; a response that waits past
//! [`UPLOAD_WAIT`] comes back to the caller to be shed with the names of
//! peers that just got its block (a redirect to a sibling).
//!
//! A node uses the line only with an upload cap (`max_upload`): without
//! one it does not know its line, and waiting for each write's end only
//! adds an event-loop turn per response.
//!
//! The line is freed when the transport took the response's last byte
//! (libp2p's `ResponseSent`), when sending failed, or after
//! [`SLOT_TIMEOUT`]: a peer that does not read its stream keeps a slot no
//! longer than an honest slow one, and the write goes on without it.

use std::time::{Duration, Instant};

use libp2p::PeerId;
use shoal_core::{BlockCid, exchange::ExchangeResponse};

/// Responses with blocks being written at once. One: on a line that is the
/// bottleneck, two interleaved copies each take twice as long, and neither
/// child can forward until its copy is whole. A fast line loses nothing:
/// the transport takes a response in microseconds and the next starts.
pub(crate) const UPLOAD_SLOTS: usize = 1;
/// Responses waiting for the line, in all. A held want firing for a fresh
/// block is the usual entry; past this many a response skips the line (the
/// pre-line behaviour), so nothing is lost, only ordering.
pub(crate) const UPLOAD_QUEUE_CAP: usize = 64;
/// Longest a response waits for the line before it is handed back to be
/// shed with names. About four 64 KiB transfers at 10 Mbit/s: longer and
/// the asker would do better fetching from the peer that already has it.
pub(crate) const UPLOAD_WAIT: Duration = Duration::from_millis(200);
/// A response holding the line longer than this releases it (the write
/// continues). 64 KiB at 2 Mbit/s is 260 ms; a reader that stalls its
/// stream costs the line at most this per response.
pub(crate) const SLOT_TIMEOUT: Duration = Duration::from_millis(300);

struct Queued<K, R> {
    key: K,
    peer: PeerId,
    reply: R,
    response: ExchangeResponse,
    since: Instant,
}

/// What [`UploadLine::submit`] decided.
pub(crate) enum Submit<K, R> {
    /// Write it now (a slot was free, or the queue is full); call
    /// [`UploadLine::started`] with its key if the write began.
    Now(K, PeerId, R, ExchangeResponse),
    /// It waits in the line.
    Queued,
}

/// The line: slots being written, and the responses waiting.
pub(crate) struct UploadLine<K, R> {
    active: Vec<(K, Instant)>,
    queue: Vec<Queued<K, R>>,
    /// Slots released by [`SLOT_TIMEOUT`] since the last
    /// [`Self::take_slot_timeouts`].
    slot_timeouts: u64,
}

impl<K, R> Default for UploadLine<K, R> {
    fn default() -> Self {
        Self { active: Vec::new(), queue: Vec::new(), slot_timeouts: 0 }
    }
}

impl<K: PartialEq, R> UploadLine<K, R> {
    /// Responses waiting.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.queue.len()
    }

    fn free_slot(&mut self, now: Instant) -> bool {
        let before = self.active.len();
        self.active.retain(|(_, t)| now.saturating_duration_since(*t) < SLOT_TIMEOUT);
        self.slot_timeouts += (before - self.active.len()) as u64;
        self.active.len() < UPLOAD_SLOTS
    }

    /// Slots released by timeout (not by a finished write) since the last
    /// call: a reader slower than [`SLOT_TIMEOUT`] per response.
    pub(crate) fn take_slot_timeouts(&mut self) -> u64 {
        std::mem::take(&mut self.slot_timeouts)
    }

    /// A response with blocks, ready to go to `peer`.
    pub(crate) fn submit(
        &mut self,
        key: K,
        peer: PeerId,
        reply: R,
        response: ExchangeResponse,
        now: Instant,
    ) -> Submit<K, R> {
        if response.blocks.is_empty()
            || (self.queue.is_empty() && self.free_slot(now))
            || self.queue.len() >= UPLOAD_QUEUE_CAP
        {
            return Submit::Now(key, peer, reply, response);
        }
        self.queue.push(Queued { key, peer, reply, response, since: now });
        Submit::Queued
    }

    /// The response `key` is being written: it holds a slot.
    pub(crate) fn started(&mut self, key: K, now: Instant) {
        self.active.push((key, now));
    }

    /// The response `key` was written, or failed: its slot is free.
    pub(crate) fn finished(&mut self, key: &K) {
        self.active.retain(|(k, _)| k != key);
    }

    /// The next response to write, if a slot is free: the one whose first
    /// block this node has sent to the fewest peers (`sent_to`), oldest
    /// first among equals.
    pub(crate) fn next(
        &mut self,
        now: Instant,
        sent_to: impl Fn(&BlockCid) -> usize,
    ) -> Option<(K, PeerId, R, ExchangeResponse)> {
        if self.queue.is_empty() || !self.free_slot(now) {
            return None;
        }
        let rarity = |q: &Queued<K, R>| q.response.blocks.first().map_or(0, |b| sent_to(&b.cid()));
        let i = (0..self.queue.len()).min_by_key(|&i| (rarity(&self.queue[i]), self.queue[i].since))?;
        let q = self.queue.remove(i);
        Some((q.key, q.peer, q.reply, q.response))
    }

    /// Responses that waited past [`UPLOAD_WAIT`]: the caller sheds their
    /// blocks (with names) and sends what is left.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(K, PeerId, R, ExchangeResponse)> {
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queue)
            .into_iter()
            .partition(|q| now.saturating_duration_since(q.since) >= UPLOAD_WAIT);
        self.queue = keep;
        old.into_iter().map(|q| (q.key, q.peer, q.reply, q.response)).collect()
    }

    /// `peer` cancelled its wants for `cids` (it got them elsewhere, often
    /// from a sibling while it waited here): those blocks leave its waiting
    /// responses. Returns the bytes taken out (to refund) and the responses
    /// left without blocks, to be written at once.
    pub(crate) fn cancel(&mut self, peer: &PeerId, cids: &[BlockCid]) -> (u64, Vec<(K, PeerId, R, ExchangeResponse)>) {
        let mut bytes = 0;
        for q in self.queue.iter_mut().filter(|q| q.peer == *peer) {
            q.response.blocks.retain(|b| {
                let drop = cids.contains(&b.cid());
                if drop {
                    bytes += b.data().len() as u64;
                }
                !drop
            });
        }
        let (empty, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.queue).into_iter().partition(|q| q.response.blocks.is_empty());
        self.queue = keep;
        (bytes, empty.into_iter().map(|q| (q.key, q.peer, q.reply, q.response)).collect())
    }

    /// `peer` disconnected: its waiting responses are dropped (their
    /// streams are gone).
    pub(crate) fn peer_gone(&mut self, peer: &PeerId) {
        self.queue.retain(|q| q.peer != *peer);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use shoal_core::VerifiedBlock;

    use super::*;

    fn resp(tag: u8) -> ExchangeResponse {
        ExchangeResponse { blocks: vec![VerifiedBlock::from_content(Bytes::from(vec![tag; 16]))], ..Default::default() }
    }

    fn cid(tag: u8) -> BlockCid {
        resp(tag).blocks[0].cid()
    }

    #[test]
    fn one_at_a_time_rarest_first_then_oldest() {
        let t0 = Instant::now();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut line = UploadLine::<u32, ()>::default();
        let Submit::Now(k, ..) = line.submit(1, a, (), resp(1), t0) else { panic!("an idle line writes at once") };
        line.started(k, t0);
        // Block 1 to b and c, then block 2 to a: all wait behind the first.
        for (key, p, tag) in [(2, b, 1), (3, c, 1), (4, a, 2)] {
            assert!(matches!(
                line.submit(key, p, (), resp(tag), t0 + Duration::from_millis(key.into())),
                Submit::Queued
            ));
        }
        assert_eq!(line.waiting(), 3);
        let sent = |c: &BlockCid| usize::from(*c == cid(1));
        assert!(line.next(t0, sent).is_none(), "the slot is busy");
        line.finished(&1);
        // Block 1 went out once already, block 2 never: block 2 first,
        // though it came last.
        let (k, p, ..) = line.next(t0, sent).expect("a slot is free");
        assert_eq!((k, p), (4, a));
        line.started(k, t0);
        assert!(line.next(t0, sent).is_none(), "one slot");
        line.finished(&k);
        let (k, p, ..) = line.next(t0, sent).expect("free");
        assert_eq!((k, p), (2, b), "then the oldest");
    }

    #[test]
    fn a_slot_is_freed_by_timeout_and_waiting_responses_expire() {
        let t0 = Instant::now();
        let p = PeerId::random();
        let mut line = UploadLine::<u32, ()>::default();
        line.started(1, t0);
        assert!(matches!(line.submit(2, p, (), resp(1), t0), Submit::Queued));
        assert!(matches!(line.submit(3, p, (), resp(2), t0 + UPLOAD_WAIT / 2), Submit::Queued));
        let none = |_: &BlockCid| 0;
        assert!(line.next(t0 + SLOT_TIMEOUT / 2, none).is_none());
        assert!(line.expired(t0 + UPLOAD_WAIT - Duration::from_millis(1)).is_empty());
        let old = line.expired(t0 + UPLOAD_WAIT);
        assert_eq!(old.iter().map(|o| o.0).collect::<Vec<_>>(), [2]);
        assert_eq!(line.waiting(), 1);
        // The stalled write keeps the line no longer than SLOT_TIMEOUT.
        assert_eq!(line.take_slot_timeouts(), 0);
        assert!(line.next(t0 + SLOT_TIMEOUT, none).is_some());
        assert_eq!(line.take_slot_timeouts(), 1);
    }

    #[test]
    fn the_line_is_bounded_and_skips_empty_responses() {
        let t0 = Instant::now();
        let p = PeerId::random();
        let mut line = UploadLine::<usize, ()>::default();
        line.started(0, t0);
        assert!(
            matches!(line.submit(1, p, (), ExchangeResponse::default(), t0), Submit::Now(..)),
            "nothing to upload: no wait"
        );
        for k in 0..UPLOAD_QUEUE_CAP {
            assert!(matches!(line.submit(k, p, (), resp(1), t0), Submit::Queued));
        }
        assert!(matches!(line.submit(99, p, (), resp(1), t0), Submit::Now(..)), "a full line is skipped, not dropped");
        line.peer_gone(&p);
        assert_eq!(line.waiting(), 0);
    }

    #[test]
    fn a_cancel_takes_its_blocks_out_of_waiting_responses() {
        let t0 = Instant::now();
        let (a, b) = (PeerId::random(), PeerId::random());
        let mut line = UploadLine::<u32, ()>::default();
        line.started(0, t0);
        let mut two = resp(1);
        two.blocks.extend(resp(2).blocks);
        assert!(matches!(line.submit(1, a, (), two, t0), Submit::Queued));
        assert!(matches!(line.submit(2, a, (), resp(1), t0), Submit::Queued));
        assert!(matches!(line.submit(3, b, (), resp(1), t0), Submit::Queued));
        let (bytes, ready) = line.cancel(&a, &[cid(1)]);
        assert_eq!(bytes, 32, "block 1 left both of a's responses");
        assert_eq!(ready.iter().map(|r| r.0).collect::<Vec<_>>(), [2], "emptied: written at once");
        assert_eq!(line.waiting(), 2, "b's response and a's block 2 still wait");
        line.finished(&0);
        let (k, _, _, r) = line.next(t0, |c| usize::from(*c == cid(1))).expect("free");
        assert_eq!((k, r.blocks.len()), (1, 1));
    }
}
