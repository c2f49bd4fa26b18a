//! Probation: a HAVE holder that never delivered to us ranks behind the
//! upstream and gets one trial block beside it.

use std::time::{Duration, Instant};

use shoal_core::BlockRef;

use super::{P, blocks, drain, none, prove, wants};
use crate::scheduler::*;

fn held_at(actions: &[Action<P>], who: P) -> Vec<Duration> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Want { peer, hold, .. } if *peer == who => Some(*hold),
            _ => None,
        })
        .collect()
}

/// "liar" announces every block of a 4-block segment before the manifest
/// lands (attack 6) and never delivered anything to us. The segment goes to
/// the (trusted) upstream, held; once that held want is stuck
/// (`switch_after` without a claim) the liar gets one trial block,
/// unheld, and nothing else while it is out; its timeout is a stall and a
/// failed trial, the segment completes from the upstream with no hedge,
/// and the next trial waits `trial_retry`.
#[test]
fn a_holder_that_never_delivered_gets_one_trial_beside_a_stuck_request() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["up", "liar"] {
        s.peer_connected(p, false);
    }
    prove(&mut s, &["up"], t0);
    let bl = blocks(1, 4);
    s.add_segment(1, &bl, ms(5000), Some("up"), none, ms(1));
    // (Its HAVEs come after the manifest here: one that comes before gets
    // its trial at once, `a_delivered_trial_moves_held_wants_…`.)
    for b in &bl {
        s.on_have("liar", b.cid, ms(2));
    }
    let mut a = drain(&mut s);
    // (Two requests queued at the upstream make the rest wait a tick for
    // other holders, `spread_wait`.)
    s.tick(ms(60));
    a.extend(drain(&mut s));
    let up = held_at(&a, "up");
    assert_eq!(up.len(), 4, "every block held at the upstream: {a:?}");
    assert!(up.iter().all(|h| !h.is_zero()));
    assert!(held_at(&a, "liar").is_empty(), "no trial beside a young held want: {a:?}");
    s.tick(ms(300));
    assert_eq!(held_at(&drain(&mut s), "liar"), vec![Duration::ZERO], "one trial, unheld");
    assert_eq!(s.stats().trials, 1);
    // More HAVEs from it change nothing while its trial is out.
    for b in &bl {
        s.on_have("liar", b.cid, ms(310));
    }
    s.tick(ms(400));
    assert!(wants(&drain(&mut s)).is_empty(), "no hedge, no second trial");
    // Its trial times out (estimate 100 ms at 1 MB/s + 500 ms).
    s.tick(ms(950));
    drain(&mut s);
    let st = s.stats();
    assert_eq!((st.trials_failed, st.stalls, st.hedges), (1, 1, 0), "{st:?}");
    for b in &bl {
        s.on_block(&"up", b.cid, ms(960));
    }
    assert!(drain(&mut s).contains(&Action::SegmentComplete { seq: 1 }));
    // Next segment, within trial_retry: held at the upstream, and once that
    // held want is stuck, still no trial.
    let two = blocks(2, 2);
    for b in &two {
        s.on_have("liar", b.cid, ms(1000));
    }
    s.add_segment(2, &two, ms(6000), Some("up"), none, ms(1001));
    let mut a = drain(&mut s);
    s.tick(ms(1300));
    a.extend(drain(&mut s));
    assert_eq!(held_at(&a, "up").len(), 2);
    assert!(held_at(&a, "liar").is_empty(), "no trial before trial_retry: {a:?}");
    for b in &two {
        s.on_block(&"up", b.cid, ms(1400));
    }
    drain(&mut s);
    // After it, one more trial, once the held want is stuck.
    let three = blocks(3, 1);
    s.add_segment(3, &three, ms(9000), Some("up"), none, ms(4800));
    s.on_have("liar", three[0].cid, ms(4801));
    assert!(held_at(&drain(&mut s), "liar").is_empty(), "the held want is young");
    s.tick(ms(5100));
    assert_eq!(held_at(&drain(&mut s), "liar"), vec![Duration::ZERO]);
    assert_eq!(s.stats().trials, 2);
}

/// An honest newcomer: its trial (beside the upstream's held want, once
/// that is stuck) comes after the upstream's copy (a duplicate put down to
/// the trial, not cancelled and not a stall), and from then on its HAVE
/// ranks it ahead of the upstream.
#[test]
fn a_trial_that_delivers_takes_the_peer_off_probation() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["up", "new"] {
        s.peer_connected(p, false);
    }
    let one = blocks(1, 1);
    s.add_segment(1, &one, ms(5000), Some("up"), none, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("up", one[0].cid)]);
    s.on_have("new", one[0].cid, ms(10));
    assert!(wants(&drain(&mut s)).is_empty(), "the held want is young");
    s.tick(ms(260));
    assert_eq!(wants(&drain(&mut s)), vec![("new", one[0].cid)], "a trial beside the stuck held want");
    s.on_block(&"up", one[0].cid, ms(270));
    let a = drain(&mut s);
    assert!(!a.contains(&Action::Cancel { peer: "new", cid: one[0].cid }), "a trial is never cancelled: {a:?}");
    s.on_block(&"new", one[0].cid, ms(290));
    s.on_duplicate_bytes(100_000);
    let st = s.stats();
    assert_eq!((st.duplicate_blocks, st.duplicates_trial, st.stalls), (1, 1, 0), "{st:?}");
    // Proven: its HAVE now takes the next block ahead of the upstream.
    let two = blocks(2, 1);
    s.on_have("new", two[0].cid, ms(1000));
    s.add_segment(2, &two, ms(6000), Some("up"), none, ms(1001));
    assert_eq!(wants(&drain(&mut s)), vec![("new", two[0].cid)]);
    assert_eq!(s.stats().trials, 1);
}

/// With nobody trusted to run beside (no upstream, nobody proven), holders
/// on probation are asked as usual: a swarm where nobody has delivered yet
/// still starts, and the delivery proves the peer.
#[test]
fn with_nobody_trusted_a_holder_on_probation_is_asked_and_proven_by_its_delivery() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["a", "b"] {
        s.peer_connected(p, false);
    }
    let x: Vec<BlockRef> = blocks(1, 1);
    s.add_segment(1, &x, t0 + Duration::from_secs(5), None, none, t0);
    s.on_have("a", x[0].cid, t0);
    s.on_have("b", x[0].cid, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("a", x[0].cid)], "one request, no trial: {:?}", s.stats());
    s.on_block(&"a", x[0].cid, t0 + Duration::from_millis(30));
    drain(&mut s);
    // "a" is proven, "b" is not: "a"'s HAVE ranks it first, and "b" gets no
    // trial beside a prompt answer from a peer that has the block (it would
    // only buy a duplicate).
    let y = blocks(2, 2);
    s.peer_connected("up", false);
    for b in &y {
        s.on_have("a", b.cid, t0 + Duration::from_millis(100));
        s.on_have("b", b.cid, t0 + Duration::from_millis(100));
    }
    s.add_segment(2, &y, t0 + Duration::from_secs(6), Some("up"), none, t0 + Duration::from_millis(101));
    let a = drain(&mut s);
    let w = wants(&a);
    assert_eq!(w.iter().filter(|(p, _)| *p == "a").count(), 2, "{w:?}");
    assert!(held_at(&a, "b").is_empty(), "{w:?}");
    assert!(held_at(&a, "up").is_empty(), "{w:?}");
    // Once "a"'s request is late, "b" gets its trial (the hedge a peer on
    // probation may not be), at the tick that finds it late.
    s.tick(t0 + Duration::from_millis(500));
    let a = drain(&mut s);
    assert_eq!(held_at(&a, "b"), vec![Duration::ZERO], "{a:?}");
    assert_eq!(s.stats().trials, 1);
}

/// A seed and a publisher it has never fetched from (a fresh stream): the
/// publisher's HAVEs overtake the manifest, which came through "up". The
/// segment is held at "up" and the publisher gets a trial; the moment the
/// trial delivers, the publisher is trusted and, its HAVEs having come
/// early, the other held want moves to it at once.
#[test]
fn a_delivered_trial_moves_held_wants_to_a_peer_whose_haves_came_early() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["publisher", "up"] {
        s.peer_connected(p, false);
    }
    let bl = blocks(1, 2);
    for b in &bl {
        s.on_have("publisher", b.cid, t0);
    }
    s.add_segment(1, &bl, ms(3000), Some("up"), none, ms(5));
    let a = drain(&mut s);
    assert_eq!(held_at(&a, "up").len(), 2, "{a:?}");
    assert_eq!(wants(&a).iter().filter(|(p, _)| *p == "publisher").count(), 1, "one trial: {a:?}");
    let (_, tried) = *wants(&a).iter().find(|(p, _)| *p == "publisher").expect("trial");
    let other = bl.iter().map(|b| b.cid).find(|c| *c != tried).expect("two blocks");
    s.on_block(&"publisher", tried, ms(15));
    let a = drain(&mut s);
    assert!(a.contains(&Action::Cancel { peer: "up", cid: tried }), "{a:?}");
    assert!(a.contains(&Action::Cancel { peer: "up", cid: other }), "the held want moves: {a:?}");
    assert_eq!(wants(&a), vec![("publisher", other)]);
}

/// A staller that forwards manifests is some viewers' upstream, and its
/// HAVE often lands before the manifest it forwards. The want held at it
/// is late from the start (it claims the block and never delivered to us),
/// so the HAVE of a holder we trust hedges it at once, with no tick and no
/// `switch_after` wait.
#[test]
fn a_held_want_at_an_upstream_on_probation_that_claims_the_block_is_hedged_by_the_next_trusted_have() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["liar", "good"] {
        s.peer_connected(p, false);
    }
    prove(&mut s, &["good"], t0);
    let x = blocks(1, 1);
    s.on_have("liar", x[0].cid, ms(1));
    s.add_segment(1, &x, ms(5000), Some("liar"), none, ms(2));
    let a = drain(&mut s);
    assert_eq!(held_at(&a, "liar").len(), 1, "held at the upstream: {a:?}");
    assert!(!held_at(&a, "liar")[0].is_zero());
    s.on_have("good", x[0].cid, ms(40));
    assert_eq!(wants(&drain(&mut s)), vec![("good", x[0].cid)]);
    assert_eq!(s.stats().early_hedges, 1);
    // A proven upstream that claims the block gets its patience: the same
    // HAVE order hedges nothing.
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["up", "good"] {
        s.peer_connected(p, false);
    }
    prove(&mut s, &["up", "good"], t0);
    s.on_have("up", x[0].cid, ms(1));
    s.add_segment(1, &x, ms(5000), Some("up"), none, ms(2));
    drain(&mut s);
    s.on_have("good", x[0].cid, ms(40));
    assert!(wants(&drain(&mut s)).is_empty(), "a trusted upstream is not hedged");
}

/// The same staller as upstream, but its HAVE never comes: once it has
/// left a request of ours unkept (here it refused one), the want held at
/// it moves to the first trusted holder at once, not after
/// `switch_after`. A new upstream that has not failed us yet, and a
/// trusted one, keep the wait (moving at once from every new upstream
/// lost races to copies in flight).
#[test]
fn a_held_want_at_an_upstream_on_probation_that_failed_us_moves_to_a_trusted_holder_at_once() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    for (up, refused_before, proven, moves) in
        [("liar", true, false, true), ("new", false, false, false), ("up", false, true, false)]
    {
        let mut s = Scheduler::new(SchedulerConfig::default());
        for p in [up, "good"] {
            s.peer_connected(p, false);
        }
        prove(&mut s, &["good"], t0);
        if proven {
            prove(&mut s, &[up], t0);
        }
        if refused_before {
            let zero = blocks(0, 1);
            s.add_segment(0, &zero, ms(3000), Some(up), none, t0);
            drain(&mut s);
            s.on_dont_have(&up, zero[0].cid, ms(1));
            drain(&mut s);
        }
        let x = blocks(1, 1);
        s.add_segment(1, &x, ms(5000), Some(up), none, ms(2));
        assert_eq!(held_at(&drain(&mut s), up).len(), 1);
        s.on_have("good", x[0].cid, ms(40));
        let a = drain(&mut s);
        if moves {
            assert!(a.contains(&Action::Cancel { peer: up, cid: x[0].cid }), "{a:?}");
            assert_eq!(wants(&a), vec![("good", x[0].cid)]);
        } else {
            assert!(wants(&a).is_empty(), "{up} keeps switch_after: {a:?}");
        }
    }
}
