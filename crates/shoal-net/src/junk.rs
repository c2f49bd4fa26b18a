//! Junk wants: held want-blocks (`hold_ms > 0`) for blocks this node
//! neither holds nor expects. An honest requester holds a want only at a
//! peer that forwarded it the block's manifest or that a redirect named as
//! being given the block (protocol.md §6, items 1 and 3), so such a want is
//! a race at worst (a manifest evicted, a seed asked a moment before its
//! manifest arrives): a few a minute. A flood of made-up CIDs is hundreds a
//! second, and each one costs a lookup in the store.
//!
//! The request rate cap alone bans such a flood only as fast as it refuses
//! whole requests, and a flooder that keeps near the cap (16 wants in each
//! of 20 requests a second) is refused a few requests a second: the attack
//! suite measured bans at 12–18 s on a busy 2-core host. The meter looks at
//! what the admitted requests ask for instead. Sans-IO: time is passed in.

use std::{collections::HashMap, time::Instant};

use libp2p::PeerId;

use crate::rate::KeyedBuckets;

/// Junk wants a peer may send per second without penalty. Far above an
/// honest peer's races (a handful per segment at worst), far below a flood.
pub(crate) const JUNK_WANTS_PER_SEC: f64 = 16.0;

/// Junk wants a peer may send at once: 8 s of the rate, so a burst of
/// races (a restarted node asking for a window its peer evicted) is free.
pub(crate) const JUNK_WANTS_BURST: f64 = 128.0;

/// One strike per this many junk wants over the allowance: with
/// `max_strikes` = 3, a peer is banned after 192 junk wants beyond its
/// allowance, about a second of a 16-wants-per-request flood at the request
/// cap, and a peer sending twice the allowance in about 20 s.
pub(crate) const JUNK_WANTS_PER_STRIKE: u32 = 64;

/// Peers tracked; past this the quiet ones are forgotten first (the
/// buckets), or everything (the counts: a flooder is struck again soon).
const MAX_METERED_PEERS: usize = 4096;

/// Per-peer allowance of junk wants, and the count of those over it.
#[derive(Debug)]
pub(crate) struct JunkMeter {
    allowance: KeyedBuckets<PeerId>,
    over: HashMap<PeerId, u32>,
}

impl Default for JunkMeter {
    fn default() -> Self {
        Self {
            allowance: KeyedBuckets::new(JUNK_WANTS_PER_SEC, JUNK_WANTS_BURST, MAX_METERED_PEERS),
            over: HashMap::new(),
        }
    }
}

impl JunkMeter {
    /// `peer` sent `n` junk wants now; returns the strikes they earn.
    pub(crate) fn record(&mut self, peer: PeerId, n: u32, now: Instant) -> u32 {
        if n == 0 {
            return 0;
        }
        let allowed = self.allowance.get(peer, now).take_up_to(n, now);
        let over_now = n - allowed;
        if over_now == 0 {
            return 0;
        }
        if self.over.len() >= MAX_METERED_PEERS && !self.over.contains_key(&peer) {
            self.over.clear();
        }
        let over = self.over.entry(peer).or_default();
        *over = over.saturating_add(over_now);
        let strikes = *over / JUNK_WANTS_PER_STRIKE;
        *over %= JUNK_WANTS_PER_STRIKE;
        strikes
    }

    /// Forgets a peer (it disconnected).
    pub(crate) fn remove(&mut self, peer: &PeerId) {
        self.allowance.remove(peer);
        self.over.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Strikes earned by `per_request` junk wants in each of `per_sec`
    /// requests a second for `secs` seconds, and when the third came.
    fn run(per_sec: u64, per_request: u32, secs: u64) -> (u32, Option<Duration>) {
        let t0 = Instant::now();
        let peer = PeerId::random();
        let mut m = JunkMeter::default();
        let (mut strikes, mut third) = (0, None);
        let step = Duration::from_millis(1000 / per_sec);
        let mut t = Duration::ZERO;
        while t < Duration::from_secs(secs) {
            strikes += m.record(peer, per_request, t0 + t);
            if strikes >= 3 && third.is_none() {
                third = Some(t);
            }
            t += step;
        }
        (strikes, third)
    }

    #[test]
    fn honest_races_are_never_struck() {
        // 8 a second for ten minutes, half the allowance.
        assert_eq!(run(8, 1, 600), (0, None));
        // A burst of 100 at once, then nothing.
        let mut m = JunkMeter::default();
        assert_eq!(m.record(PeerId::random(), 100, Instant::now()), 0);
    }

    #[test]
    fn a_flood_at_the_request_cap_is_struck_out_in_about_a_second() {
        // The attack suite's flood: 16 made-up CIDs in each of 20 requests a second.
        let (strikes, third) = run(20, 16, 5);
        let third = third.expect("never struck out");
        assert!(third <= Duration::from_millis(1200), "third strike at {third:?}");
        assert!(strikes >= 15, "{strikes} strikes in 5 s");
    }

    #[test]
    fn twice_the_allowance_is_struck_out_in_tens_of_seconds() {
        let (_, third) = run(32, 1, 60);
        let third = third.expect("never struck out");
        assert!((Duration::from_secs(15)..=Duration::from_secs(25)).contains(&third), "third strike at {third:?}");
    }

    #[test]
    fn a_forgotten_peer_starts_afresh() {
        let t0 = Instant::now();
        let peer = PeerId::random();
        let mut m = JunkMeter::default();
        assert_eq!(m.record(peer, 128 + 63, t0), 0);
        m.remove(&peer);
        assert_eq!(m.record(peer, 128 + 63, t0), 0);
        assert_eq!(m.record(peer, 64, t0), 1);
    }
}
