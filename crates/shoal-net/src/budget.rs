//! The peer budget: which connections to close when a node holds more
//! than it needs. Sans-IO: the event loop tells it who connected, who was
//! useful and when, and asks it whom to trim; time is passed in.
//!
//! Why shoal needs one: libp2p closes a connection only when every
//! protocol on it is idle, and gossipsub keeps its per-peer streams open
//! for as long as the connection lives (rust-libp2p#5190), so every
//! connection a Kademlia lookup opens to a peer that speaks gossipsub
//! stays up for good. A swarm drifts towards a full mesh: 200 viewers held
//! 199 connections each, pinged every second (docs/benchmarks.md). What a
//! viewer needs is far less: its gossip mesh (≤ 12 per topic), the few
//! peers it pulls blocks from or serves, and the DHT's short-lived queries.
//!
//! Policy (go-libp2p's connection manager is the model: a high and a low
//! watermark with a grace period): when more than `max_peers` are
//! connected, close the least useful unprotected peers until `target_peers`
//! remain. Protected, never trimmed: peers the event loop marks protected
//! (gossip mesh members, peers with requests open either way), peers
//! connected less than the grace period ago (a new connection must get the
//! chance to join a mesh or answer a query), and peers that exchanged
//! blocks with us within the active window. The rest are closed oldest
//! activity first, never-useful first of all.
//!
//! A trimmed peer is remembered for `TRIM_QUARANTINE`, so that the
//! quiet-channel redials do not dial straight back a provider the budget
//! just closed: in an idle 100-node bench swarm that loop (trim, redial
//! two seconds later, trim again after the grace period) made 120 redials
//! per viewer in two minutes, 38 with the quarantine (docs/benchmarks.md;
//! most of the ~700 connections per viewer in that run come from DHT queries).

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
    time::{Duration, Instant},
};

/// A peer that served us a block, or asked us for one, this recently is in
/// active use and is not trimmed: 10 s is several segments, so a peer that
/// feeds us every segment is never between two uses this long.
pub(crate) const ACTIVE_WINDOW: Duration = Duration::from_secs(10);

/// How long a peer the budget closed is not redialed for a quiet channel
/// whose mesh is full: several of the loop's cycles (the grace period plus
/// a maintenance tick, ~12 s), yet short enough that a channel quiet for a
/// minute (a partition on the publisher's side) redials every provider it
/// knows again. Provider lookups are not held back by it, and a thin mesh
/// redials regardless (event_loop.rs).
pub(crate) const TRIM_QUARANTINE: Duration = Duration::from_secs(60);

/// Trimmed peers remembered: the default `max_connections` (256) four
/// times over; when full, the entries past their quarantine go first,
/// then the oldest.
pub(crate) const MAX_TRIMMED_REMEMBERED: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct PeerUse {
    connected: Instant,
    last_used: Option<Instant>,
}

/// Connection ages and last uses, one entry per connected peer (so bounded
/// by the connection limits), and the trimming rule.
#[derive(Debug)]
pub(crate) struct PeerBudget<P> {
    max_peers: usize,
    target_peers: usize,
    grace: Duration,
    peers: HashMap<P, PeerUse>,
    /// Peers closed by `trim`, and when (at most `MAX_TRIMMED_REMEMBERED`).
    trimmed: HashMap<P, Instant>,
}

impl<P: Copy + Eq + Hash> PeerBudget<P> {
    /// Trims from above `max_peers` down to `target_peers` (`target_peers
    /// <= max_peers`, checked by the config).
    pub(crate) fn new(max_peers: usize, target_peers: usize, grace: Duration) -> Self {
        Self {
            max_peers,
            target_peers: target_peers.min(max_peers),
            grace,
            peers: HashMap::new(),
            trimmed: HashMap::new(),
        }
    }

    /// A first connection to `peer` is up.
    pub(crate) fn connected(&mut self, peer: P, now: Instant) {
        self.peers.entry(peer).or_insert(PeerUse { connected: now, last_used: None });
    }

    /// The last connection to `peer` closed.
    pub(crate) fn disconnected(&mut self, peer: &P) {
        self.peers.remove(peer);
    }

    /// `peer` did useful work for or with us (a block either way).
    pub(crate) fn used(&mut self, peer: &P, now: Instant) {
        if let Some(u) = self.peers.get_mut(peer) {
            u.last_used = Some(now);
        }
    }

    /// Peers tracked (connected).
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the budget closed `peer` less than `TRIM_QUARANTINE` ago.
    pub(crate) fn recently_trimmed(&self, peer: &P, now: Instant) -> bool {
        self.trimmed.get(peer).is_some_and(|t| now.saturating_duration_since(*t) < TRIM_QUARANTINE)
    }

    /// Whom to disconnect now: empty unless more than `max_peers` are
    /// connected; otherwise the least useful of those `protected` does not
    /// name, enough to come down to `target_peers` if that many are
    /// unprotected. The caller closes them; they are remembered as
    /// trimmed (`recently_trimmed`).
    pub(crate) fn trim(&mut self, now: Instant, protected: &HashSet<P>) -> Vec<P> {
        if self.peers.len() <= self.max_peers {
            return Vec::new();
        }
        let chosen = self.choose(now, protected);
        for p in &chosen {
            self.remember_trimmed(*p, now);
        }
        chosen
    }

    fn remember_trimmed(&mut self, peer: P, now: Instant) {
        if self.trimmed.len() >= MAX_TRIMMED_REMEMBERED && !self.trimmed.contains_key(&peer) {
            self.trimmed.retain(|_, t| now.saturating_duration_since(*t) < TRIM_QUARANTINE);
            if self.trimmed.len() >= MAX_TRIMMED_REMEMBERED {
                let oldest = self.trimmed.iter().min_by_key(|(_, t)| **t).map(|(p, _)| *p);
                if let Some(o) = oldest {
                    self.trimmed.remove(&o);
                }
            }
        }
        self.trimmed.insert(peer, now);
    }

    fn choose(&self, now: Instant, protected: &HashSet<P>) -> Vec<P> {
        let excess = self.peers.len() - self.target_peers;
        let mut candidates: Vec<(Option<Instant>, Instant, P)> = self
            .peers
            .iter()
            .filter(|(p, u)| {
                !protected.contains(p)
                    && now.saturating_duration_since(u.connected) >= self.grace
                    && u.last_used.is_none_or(|t| now.saturating_duration_since(t) >= ACTIVE_WINDOW)
            })
            .map(|(p, u)| (u.last_used, u.connected, *p))
            .collect();
        // Never used sorts first (None < Some), then least recently used,
        // then the oldest connection (it had the longest chance to be useful).
        candidates.sort_unstable_by_key(|(used, connected, _)| (*used, *connected));
        candidates.into_iter().take(excess).map(|(_, _, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    fn budget_with(n: u32, at: Instant) -> PeerBudget<u32> {
        let mut b = PeerBudget::new(6, 4, GRACE);
        for p in 0..n {
            b.connected(p, at);
        }
        b
    }

    #[test]
    fn nothing_is_trimmed_at_or_below_the_high_watermark() {
        let t0 = Instant::now();
        let mut b = budget_with(6, t0);
        assert!(b.trim(t0 + Duration::from_secs(60), &HashSet::new()).is_empty());
    }

    #[test]
    fn above_the_high_watermark_trims_down_to_the_target() {
        let t0 = Instant::now();
        let mut b = budget_with(9, t0);
        let out = b.trim(t0 + Duration::from_secs(60), &HashSet::new());
        assert_eq!(out.len(), 5, "9 connected, target 4");
        assert_eq!(out.iter().collect::<HashSet<_>>().len(), 5, "no peer twice");
    }

    #[test]
    fn protected_new_and_active_peers_are_kept_and_the_idlest_go_first() {
        let t0 = Instant::now();
        let mut b = budget_with(6, t0);
        let later = t0 + Duration::from_secs(30);
        // Peers 6 and 7 are inside their grace period at `later`.
        b.connected(6, later - Duration::from_secs(1));
        b.connected(7, later - Duration::from_secs(1));
        // 0: used long ago; 1: used recently (active); 2: used less long ago
        // than 0; 3: protected (mesh); 4, 5: never used.
        b.used(&0, t0 + Duration::from_secs(1));
        b.used(&1, later - Duration::from_secs(2));
        b.used(&2, t0 + Duration::from_secs(5));
        let out = b.trim(later, &HashSet::from([3]));
        // 8 connected, target 4: four to go, from 0, 2, 4, 5 (never-used
        // first, then the least recently used).
        assert_eq!(out.len(), 4);
        let (first, last) = out.split_at(2);
        assert_eq!(first.iter().collect::<HashSet<_>>(), HashSet::from([&4, &5]));
        assert_eq!(last, [0, 2]);
        for kept in [1, 3, 6, 7] {
            assert!(!out.contains(&kept), "{kept} must be kept: {out:?}");
        }
    }

    #[test]
    fn when_too_few_are_unprotected_only_those_go() {
        let t0 = Instant::now();
        let mut b = budget_with(9, t0);
        let out = b.trim(t0 + Duration::from_secs(60), &(0..8).collect());
        assert_eq!(out, vec![8]);
    }

    #[test]
    fn a_disconnected_peer_is_forgotten() {
        let t0 = Instant::now();
        let mut b = budget_with(7, t0);
        b.disconnected(&0);
        assert_eq!(b.len(), 6);
        assert!(b.trim(t0 + Duration::from_secs(60), &HashSet::new()).is_empty());
        // Uses of unknown peers are ignored, not tracked.
        b.used(&42, t0);
        assert_eq!(b.len(), 6);
    }

    #[test]
    fn trimmed_peers_are_quarantined_for_a_while_and_no_others() {
        let t0 = Instant::now();
        let mut b = budget_with(9, t0);
        let at = t0 + Duration::from_secs(60);
        let out = b.trim(at, &(0..8).collect());
        assert_eq!(out, vec![8]);
        b.disconnected(&8);
        assert!(b.recently_trimmed(&8, at));
        assert!(b.recently_trimmed(&8, at + TRIM_QUARANTINE - Duration::from_millis(1)));
        assert!(!b.recently_trimmed(&8, at + TRIM_QUARANTINE), "quarantine over");
        for kept in 0..8 {
            assert!(!b.recently_trimmed(&kept, at), "{kept} was not trimmed");
        }
        // Nothing over the high watermark: nothing trimmed, nothing noted.
        let mut quiet = budget_with(6, t0);
        assert!(quiet.trim(at, &HashSet::new()).is_empty());
        assert!((0..6).all(|p| !quiet.recently_trimmed(&p, at)));
    }

    #[test]
    fn the_trimmed_record_stays_bounded() {
        let t0 = Instant::now();
        let mut b: PeerBudget<u32> = PeerBudget::new(1, 0, Duration::ZERO);
        let n = MAX_TRIMMED_REMEMBERED as u32 + 10;
        for p in 0..n {
            // Each trim closes the one connected peer, all inside one
            // quarantine, so the oldest records make room.
            b.connected(p, t0);
            b.connected(p + n, t0);
            let at = t0 + Duration::from_millis(u64::from(p));
            let out = b.trim(at, &HashSet::from([p + n]));
            assert_eq!(out, vec![p]);
            b.disconnected(&p);
            b.disconnected(&(p + n));
        }
        assert_eq!(b.trimmed.len(), MAX_TRIMMED_REMEMBERED);
        let end = t0 + Duration::from_millis(u64::from(n));
        assert!(b.recently_trimmed(&(n - 1), end), "the newest is kept");
        assert!(!b.recently_trimmed(&0, end), "the oldest made room");
    }
}
