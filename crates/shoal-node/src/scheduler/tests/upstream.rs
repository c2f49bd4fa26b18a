//! Who takes a segment's held wants: the manifest's first forwarder, unless
//! it is a peer that never delivered to us and refused a held want naming
//! nobody, and a peer that did deliver feeds us now.

use std::time::{Duration, Instant};

use super::{P, blocks, drain, none};
use crate::scheduler::*;
use shoal_core::BlockCid;

fn held(actions: &[Action<P>]) -> Vec<(P, Duration)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Want { peer, hold, .. } => Some((*peer, *hold)),
            _ => None,
        })
        .collect()
}

/// Segment 1 comes from `parent` as its upstream, at `at`: `parent` is
/// proven and delivered a needed block then.
fn fed_by(s: &mut Scheduler<P>, parent: P, origin: bool, seq: u64, at: Instant) {
    s.peer_connected(parent, origin);
    let bl = blocks(seq, 1);
    s.add_segment(seq, &bl, at + Duration::from_secs(3), Some(parent), none, at);
    drain(s);
    s.on_block(&parent, bl[0].cid, at);
    drain(s);
}

#[test]
fn a_forwarder_that_never_delivered_and_refused_a_hold_loses_the_upstream() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "parent", false, 1, t0);
    // A stranger relays the next manifest first (it skips validation, so it
    // often wins the race) and holds no block. The first time, it is the
    // upstream: an honest newcomer proves itself this way.
    s.peer_connected("stranger", false);
    let bl = blocks(2, 1);
    s.add_segment(2, &bl, ms(3000), Some("stranger"), none, ms(1000));
    let w = held(&drain(&mut s));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].0 == "stranger" && !w[0].1.is_zero(), "{w:?}");
    // It refuses the held want, naming nobody: the block is probed
    // elsewhere.
    s.on_refused(&"stranger", bl[0].cid, ms(1010));
    assert_eq!(held(&drain(&mut s)), vec![("parent", Duration::ZERO)]);
    assert_eq!(s.stats().upstreams_replaced, 0);
    assert_eq!(s.stats().upstream_refusals, 1);
    // The next manifest it forwards first: held at the parent instead.
    s.add_segment(3, &blocks(3, 2), ms(4000), Some("stranger"), none, ms(2000));
    let w = held(&drain(&mut s));
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().all(|(p, h)| *p == "parent" && !h.is_zero()), "held at the parent, not the stranger: {w:?}");
    assert_eq!(s.stats().upstreams_replaced, 1);
}

/// A silent forwarder (no refusal, no block) keeps the role: its held
/// wants move at once to a clean holder instead (`maybe_switch`), and an
/// honest upstream slower than a neighbour's HAVE looks the same.
#[test]
fn a_forwarder_whose_held_want_was_switched_away_keeps_the_upstream() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "parent", false, 1, t0);
    s.peer_connected("silent", false);
    let bl = blocks(2, 1);
    s.add_segment(2, &bl, ms(3000), Some("silent"), none, ms(1000));
    drain(&mut s);
    s.on_have("parent", bl[0].cid, ms(1300));
    let a = drain(&mut s);
    assert!(a.contains(&Action::Cancel { peer: "silent", cid: bl[0].cid }), "{a:?}");
    s.add_segment(3, &blocks(3, 1), ms(4000), Some("silent"), none, ms(2000));
    let w = held(&drain(&mut s));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].0 == "silent" && !w[0].1.is_zero(), "{w:?}");
    assert_eq!(s.stats().upstreams_replaced, 0);
}

/// The publisher's first-copies gate refuses a first-hop viewer it does
/// not seed and names its seeds: the designed path, not a stranger's
/// refusal. The engine registers the publisher as a relay like any peer,
/// so what tells them apart is the redirect.
#[test]
fn a_refusal_that_names_peers_keeps_the_upstream() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "relay", false, 1, t0);
    s.peer_connected("publisher", false);
    s.peer_connected("seed", false);
    let bl = blocks(2, 1);
    s.add_segment(2, &bl, ms(3000), Some("publisher"), none, ms(500));
    drain(&mut s);
    assert!(s.on_redirect(&"publisher", bl[0].cid, ["seed"]).is_empty());
    s.on_dont_have(&"publisher", bl[0].cid, ms(510));
    drain(&mut s);
    s.add_segment(3, &blocks(3, 1), ms(4000), Some("publisher"), none, ms(1000));
    let w = held(&drain(&mut s));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].0 == "publisher" && !w[0].1.is_zero(), "{w:?}");
    assert_eq!(s.stats().upstream_refusals, 0);
    assert_eq!(s.stats().upstreams_replaced, 0);
}

/// A parent fed us segment 1; segment 2 came first from `upstream`, and
/// `answer` is what `who` said about its block. Then `who` forwards
/// segment 3 first: it must keep the role (held there), with no refusal
/// counted and no upstream replaced.
fn keeps_the_role(upstream: P, who: P, answer: fn(&mut Scheduler<P>, &P, BlockCid, Instant)) {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "parent", false, 1, t0);
    s.peer_connected(who, false);
    let bl = blocks(2, 1);
    s.add_segment(2, &bl, ms(3000), Some(upstream), none, ms(500));
    drain(&mut s);
    answer(&mut s, &who, bl[0].cid, ms(510));
    drain(&mut s);
    s.add_segment(3, &blocks(3, 1), ms(4000), Some(who), none, ms(1000));
    let w = held(&drain(&mut s));
    assert!(w.iter().any(|(p, h)| *p == who && !h.is_zero()), "{w:?}");
    assert_eq!(s.stats().upstream_refusals, 0);
    assert_eq!(s.stats().upstreams_replaced, 0);
}

/// A want that failed (an error, a timeout, a store failure) is no
/// refusal: an honest upstream behind a broken connection looks the same.
#[test]
fn a_failed_want_is_not_a_refusal() {
    keeps_the_role("new", "new", Scheduler::on_dont_have);
}

/// Only the upstream's refusal of a want we sent it counts: a neighbour
/// we never asked (a stray DONT_HAVE) or probed without a hold may well
/// not have the block yet.
#[test]
fn a_probed_neighbours_refusal_does_not_count() {
    keeps_the_role("parent", "neighbour", Scheduler::on_refused);
}

/// A forwarder that failed one hold, and a `fed_by` parent; the failed
/// forwarder forwards the next manifest first at `at`.
fn failed_once(s: &mut Scheduler<P>, who: P, seq: u64, at: Instant) {
    s.peer_connected(who, false);
    let bl = blocks(seq, 1);
    s.add_segment(seq, &bl, at + Duration::from_secs(3), Some(who), none, at);
    drain(s);
    s.on_refused(&who, bl[0].cid, at);
    drain(s);
}

#[test]
fn a_forwarder_that_delivered_before_keeps_the_upstream() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "old", false, 1, t0);
    // Even one that let a held want down since: it has delivered.
    failed_once(&mut s, "old", 2, ms(100));
    fed_by(&mut s, "parent", false, 5, ms(500));
    s.add_segment(3, &blocks(3, 2), ms(4000), Some("old"), none, ms(1000));
    let w = held(&drain(&mut s));
    assert!(!w.is_empty() && w.iter().all(|(p, h)| *p == "old" && !h.is_zero()), "{w:?}");
    assert_eq!(s.stats().upstreams_replaced, 0);
}

#[test]
fn with_no_recent_delivery_the_first_forwarder_is_the_upstream() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "parent", false, 1, t0);
    failed_once(&mut s, "new", 2, t0);
    // The parent's last delivery is older than PARENT_RECENT: a fresh
    // swarm, or a stream that paused; the forwarder is all we know.
    let later = t0 + PARENT_RECENT + Duration::from_secs(1);
    s.add_segment(3, &blocks(3, 2), later + Duration::from_secs(3), Some("new"), none, later);
    let w = held(&drain(&mut s));
    assert!(!w.is_empty() && w.iter().all(|(p, h)| *p == "new" && !h.is_zero()), "{w:?}");
    assert_eq!(s.stats().upstreams_replaced, 0);
}

#[test]
fn a_relay_that_fed_us_stands_in_before_the_origin() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "relay", false, 1, t0);
    // The publisher delivered more recently (a rescue near a deadline),
    // but the origin is the last resort.
    fed_by(&mut s, "publisher", true, 2, ms(500));
    failed_once(&mut s, "stranger", 3, ms(600));
    s.add_segment(4, &blocks(4, 1), ms(4000), Some("stranger"), none, ms(1000));
    let w = held(&drain(&mut s));
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "relay");
    assert!(!w[0].1.is_zero());
}

#[test]
fn a_parent_with_an_unforgiven_stall_does_not_stand_in() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "parent", false, 1, t0);
    // It claims a block of segment 2 and then refuses it: a broken claim
    // (outside `busy_grace`, so not excused).
    let bl = blocks(2, 1);
    let late = ms(1500);
    s.add_segment(2, &bl, late + Duration::from_secs(3), None, none, late);
    s.on_have("parent", bl[0].cid, late);
    drain(&mut s);
    s.on_dont_have(&"parent", bl[0].cid, late);
    drain(&mut s);
    failed_once(&mut s, "new", 3, ms(1550));
    s.add_segment(4, &blocks(4, 1), ms(5000), Some("new"), none, ms(1600));
    let w = held(&drain(&mut s));
    assert!(w.iter().any(|(p, h)| *p == "new" && !h.is_zero()), "{w:?}");
    assert_eq!(s.stats().upstreams_replaced, 0);
}

/// The stand-in is a peer that fed us *as an upstream*: one that answered
/// a probe or a hedge may sit below us in the tree, and holding our want
/// at a peer that waits for the block from us is a cycle, broken only by
/// `switch_after` (~270-310 ms segments when the stand-in was any recent
/// deliverer, docs/security.md).
#[test]
fn a_peer_that_only_answered_a_probe_does_not_stand_in() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    fed_by(&mut s, "parent", false, 1, t0);
    // A sibling delivers a block it announced, as a holder, later than the
    // parent's last delivery as an upstream.
    s.peer_connected("sibling", false);
    let bl = blocks(2, 1);
    s.add_segment(2, &bl, ms(3500), Some("parent"), none, ms(400));
    drain(&mut s);
    s.on_have("sibling", bl[0].cid, ms(450));
    drain(&mut s);
    s.on_block(&"sibling", bl[0].cid, ms(500));
    drain(&mut s);
    failed_once(&mut s, "stranger", 3, ms(600));
    s.add_segment(4, &blocks(4, 1), ms(4000), Some("stranger"), none, ms(1000));
    let w = held(&drain(&mut s));
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].0 == "parent" && !w[0].1.is_zero(), "the parent, not the sibling: {w:?}");
    assert_eq!(s.stats().upstreams_replaced, 1);
}
