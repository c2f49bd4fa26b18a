//! Redirects, HAVEs ahead of their manifest, first copies and busy seeds.

use std::time::{Duration, Instant};

use shoal_core::BlockCid;

use super::{P, blocks, drain, none, prove, wants};
use crate::scheduler::*;

fn held_for(actions: &[Action<P>], who: P) -> Option<Duration> {
    actions.iter().find_map(|a| match a {
        Action::Want { peer, hold, .. } if *peer == who => Some(*hold),
        _ => None,
    })
}

/// The publisher's gate refuses a first-hop viewer and names its seed: the
/// viewer waits at the seed (a held want, capped at `redirect_hold`) rather
/// than probing a neighbour that does not have the block.
#[test]
fn a_redirect_from_the_upstream_sends_a_held_want_to_the_named_peer() {
    let t0 = Instant::now();
    let cfg = SchedulerConfig::default();
    let redirect_hold = cfg.redirect_hold;
    let mut s = Scheduler::new(cfg);
    // "a0" sorts before "seed": without the redirect, the plain neighbour
    // would be the probe (same class, same estimate, smaller id).
    for p in ["publisher", "a0", "seed"] {
        s.peer_connected(p, false);
    }
    let bl = blocks(1, 1);
    let cid = bl[0].cid;
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("publisher"), none, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("publisher", cid)]);
    let t1 = t0 + Duration::from_millis(5);
    let unknown = s.on_redirect(&"publisher", cid, ["seed", "publisher", "stranger"]);
    assert_eq!(unknown, vec!["stranger"], "a named peer we are not connected to is for the caller to dial");
    s.on_dont_have(&"publisher", cid, t1);
    let a = drain(&mut s);
    assert_eq!(wants(&a), vec![("seed", cid)], "the named seed is asked, not the neighbour");
    assert_eq!(held_for(&a, "seed"), Some(redirect_hold), "and it may hold the want, briefly");
    s.on_block(&"seed", cid, t1 + Duration::from_millis(10));
    assert!(drain(&mut s).contains(&Action::SegmentComplete { seq: 1 }));
}

/// A plain neighbour (not the upstream, not a HAVE holder, not named by an
/// earlier redirect) may not redirect: a peer we probed cannot steer our
/// wants to a peer of its choice.
#[test]
fn a_redirect_from_anyone_but_the_upstream_is_ignored() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["up", "a0", "sybil"] {
        s.peer_connected(p, false);
    }
    let bl = blocks(1, 1);
    let cid = bl[0].cid;
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("up"), none, t0);
    drain(&mut s);
    // "a0" is not the upstream; its redirect names "sybil".
    assert!(s.on_redirect(&"a0", cid, ["sybil", "stranger"]).is_empty(), "nothing to dial either");
    s.on_dont_have(&"up", cid, t0 + Duration::from_millis(5));
    let a = drain(&mut s);
    assert_eq!(wants(&a), vec![("a0", cid)], "a plain probe, as without any redirect");
    assert_eq!(held_for(&a, "a0"), Some(Duration::ZERO));
}

/// A seed that sheds our want at its upload cap names the peers it just
/// served: the redirect chains (the seed was named by the upstream), the
/// next named peer holds our want, names further down a chain are never
/// returned for dialing, and a chain stops adding names at
/// `MAX_REDIRECTS_PER_BLOCK`.
#[test]
fn a_redirect_chains_from_a_named_peer_down_the_tree() {
    let t0 = Instant::now();
    let cfg = SchedulerConfig::default();
    let redirect_hold = cfg.redirect_hold;
    let mut s = Scheduler::new(cfg);
    let many = ["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"];
    for p in ["publisher", "a0", "seed"].iter().chain(&many) {
        s.peer_connected(*p, false);
    }
    let bl = blocks(1, 1);
    let cid = bl[0].cid;
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("publisher"), none, t0);
    drain(&mut s);
    let t1 = t0 + Duration::from_millis(5);
    s.on_redirect(&"publisher", cid, ["seed"]);
    s.on_dont_have(&"publisher", cid, t1);
    assert_eq!(wants(&drain(&mut s)), vec![("seed", cid)]);
    // The seed sheds at its cap and names the child it served ("c5", which
    // sorts after "a0": only the redirect makes it the choice).
    let t2 = t1 + Duration::from_millis(30);
    assert!(s.on_redirect(&"seed", cid, ["c5", "far-away"]).is_empty(), "a chain's names are not dialed");
    s.on_dont_have(&"seed", cid, t2);
    let a = drain(&mut s);
    assert_eq!(wants(&a), vec![("c5", cid)], "the served child is asked, not the neighbour");
    assert_eq!(held_for(&a, "c5"), Some(redirect_hold));
    // Names accumulate only up to the bound: 2 so far, 6 more fit, and
    // the sender is never its own redirect.
    s.on_redirect(&"c5", cid, many);
    assert_eq!(s.blocks[&cid].redirects, ["seed", "c5", "c1", "c2", "c3", "c4", "c6", "c7"]);
    assert_eq!(s.blocks[&cid].redirects.len(), super::MAX_REDIRECTS_PER_BLOCK);
    s.on_dont_have(&"c5", cid, t2 + Duration::from_millis(10));
    let a = drain(&mut s);
    assert_eq!(wants(&a), vec![("c1", cid)]);
    assert_eq!(held_for(&a, "c1"), Some(redirect_hold));
}

/// Without a refusal, a plain neighbour still waits for `probe_after`.
#[test]
fn a_plain_neighbour_waits_for_probe_after_while_the_upstream_holds() {
    let t0 = Instant::now();
    let cfg = SchedulerConfig::default();
    let probe_after = cfg.probe_after;
    let mut s = Scheduler::new(cfg);
    for p in ["up", "n1"] {
        s.peer_connected(p, false);
    }
    let bl = blocks(1, 1);
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("up"), none, t0);
    drain(&mut s);
    s.tick(t0 + probe_after / 2);
    assert!(wants(&drain(&mut s)).is_empty(), "no probe while the upstream holds and HAVEs may come");
}

#[test]
fn a_have_that_overtakes_its_manifest_is_used_when_the_segment_lands() {
    // The publisher tells its seed it holds a new segment just before the
    // manifest's gossip; the seed's copy of the manifest may come through
    // another viewer ("up"), which the publisher's gate refuses. The seed
    // must ask the publisher, not hold its wants at "up".
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("publisher", false);
    s.peer_connected("up", false);
    // (Off probation: a seed's first trial of a new publisher is
    // tests/probation.rs.)
    prove(&mut s, &["publisher"], t0);
    let bl = blocks(1, 2);
    for b in &bl {
        s.on_have("publisher", b.cid, t0);
    }
    assert!(wants(&drain(&mut s)).is_empty(), "no segment yet: nothing to ask");
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("up"), none, t0 + Duration::from_millis(5));
    let w = wants(&drain(&mut s));
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w.iter().all(|(p, _)| *p == "publisher"), "the early HAVE's sender goes first: {w:?}");

    // Without the early HAVE the same segment goes to the upstream.
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("publisher", false);
    s.peer_connected("up", false);
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("up"), none, t0);
    assert!(wants(&drain(&mut s)).iter().all(|(p, _)| *p == "up"));
}

#[test]
fn early_haves_expire_and_stay_bounded() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("early", false);
    s.peer_connected("up", false);
    let stale = blocks(1, 1);
    s.on_have("early", stale[0].cid, t0);
    // Its manifest comes after EARLY_HAVE_TTL: the HAVE is forgotten.
    let late = t0 + EARLY_HAVE_TTL + Duration::from_millis(1);
    s.add_segment(1, &stale, late + Duration::from_secs(3), Some("up"), none, late);
    assert_eq!(wants(&drain(&mut s)), vec![("up", stale[0].cid)]);

    // A flood of HAVEs for blocks that never come keeps at most
    // MAX_EARLY_HAVES, oldest evicted first.
    let mut s: Scheduler<P> = Scheduler::new(SchedulerConfig::default());
    let flood: Vec<BlockCid> = (0..MAX_EARLY_HAVES as u32 + 10).map(|i| BlockCid::of(&i.to_le_bytes())).collect();
    for c in &flood {
        s.on_have("flooder", *c, t0);
    }
    assert_eq!(s.early_haves.len(), MAX_EARLY_HAVES);
    assert!(!s.early_haves.contains(&flood[0]), "the oldest went first");
    assert!(s.early_haves.contains(&flood[flood.len() - 1]));
}

#[test]
fn a_peer_whose_haves_come_early_takes_a_held_want_at_once() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("publisher", false);
    s.peer_connected("up", false);
    s.peer_connected("sib", false);
    // Both delivered to us before (off probation): what is tested is when
    // a trusted holder's HAVE moves a held want.
    prove(&mut s, &["publisher", "up", "sib"], t0);
    // Segment 1: the publisher's HAVE came before the manifest.
    let one = blocks(1, 1);
    s.on_have("publisher", one[0].cid, t0);
    s.add_segment(1, &one, ms(3000), Some("up"), none, ms(1));
    assert_eq!(wants(&drain(&mut s)), vec![("publisher", one[0].cid)]);
    s.on_block(&"publisher", one[0].cid, ms(5));
    drain(&mut s);
    // Segment 2: this time the manifest won the race and the want is held
    // at "up". The publisher's HAVE right after moves it at once.
    let two = blocks(2, 1);
    s.add_segment(2, &two, ms(4000), Some("up"), none, ms(1000));
    assert_eq!(wants(&drain(&mut s)), vec![("up", two[0].cid)]);
    s.on_have("publisher", two[0].cid, ms(1002));
    let a = drain(&mut s);
    assert!(a.contains(&Action::Cancel { peer: "up", cid: two[0].cid }), "{a:?}");
    assert_eq!(wants(&a), vec![("publisher", two[0].cid)]);
    // A sibling that never announced early still waits out switch_after.
    let three = blocks(3, 1);
    s.add_segment(3, &three, ms(5000), Some("up"), none, ms(2000));
    drain(&mut s);
    s.on_have("sib", three[0].cid, ms(2002));
    assert!(wants(&drain(&mut s)).is_empty(), "no early HAVEs from sib: the held want keeps its time");
}

/// The publisher's HAVE to its seed is marked `first_copies`: it moves a
/// want held at the relay the manifest came through at once, even when it
/// never overtook a manifest (on a busy host it lands a few ms after).
#[test]
fn a_first_copies_have_takes_a_held_want_at_once() {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["publisher", "relay"] {
        s.peer_connected(p, false);
    }
    prove(&mut s, &["publisher", "relay"], t0);
    let one = blocks(1, 1);
    s.add_segment(1, &one, ms(3000), Some("relay"), none, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("relay", one[0].cid)]);
    s.on_first_copy_have("publisher", one[0].cid, ms(20));
    let a = drain(&mut s);
    assert!(a.contains(&Action::Cancel { peer: "relay", cid: one[0].cid }), "{a:?}");
    assert_eq!(wants(&a), vec![("publisher", one[0].cid)]);

    // The same HAVE without the mark waits out switch_after.
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["publisher", "relay"] {
        s.peer_connected(p, false);
    }
    prove(&mut s, &["publisher", "relay"], t0);
    s.add_segment(1, &one, ms(3000), Some("relay"), none, t0);
    drain(&mut s);
    s.on_have("publisher", one[0].cid, ms(20));
    assert!(wants(&drain(&mut s)).is_empty(), "a plain HAVE does not move a fresh held want");
}

/// A seed that holds blocks sheds three of our wants at its upload cap and
/// is late once (a hedge beats it); then the upstream names it for the next
/// block. `delivers_first`: it had just delivered a block to us.
fn shedding_seed_run(delivers_first: bool) -> (SchedulerStats, Vec<(P, BlockCid)>) {
    let t0 = Instant::now();
    let far = t0 + Duration::from_secs(30);
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["publisher", "seed", "n1"] {
        s.peer_connected(p, false);
    }
    prove(&mut s, &["n1"], t0);
    let x: Vec<BlockRef> = (1..=6).map(|q| blocks(q, 1)[0]).collect();
    if delivers_first {
        s.add_segment(1, &[x[0]], far, None, none, t0);
        s.on_have("seed", x[0].cid, t0);
        assert_eq!(wants(&drain(&mut s)), vec![("seed", x[0].cid)]);
        s.on_block(&"seed", x[0].cid, t0 + Duration::from_millis(10));
        drain(&mut s);
    }
    for q in 2..=4u64 {
        let t = t0 + Duration::from_millis(20 * q);
        let b = x[q as usize - 1];
        s.add_segment(q, &[b], far, None, none, t);
        s.on_have("seed", b.cid, t);
        assert_eq!(wants(&drain(&mut s)), vec![("seed", b.cid)], "seg {q}: the holder is asked");
        s.on_dont_have(&"seed", b.cid, t + Duration::from_millis(1));
        drain(&mut s);
    }
    // Both hold the fifth block; the seed is asked while it still ranks.
    let t5 = t0 + Duration::from_millis(100);
    s.add_segment(5, &[x[4]], far, None, none, t5);
    s.on_have("seed", x[4].cid, t5);
    s.on_have("n1", x[4].cid, t5);
    if wants(&drain(&mut s)) == vec![("seed", x[4].cid)] {
        s.tick(t5 + Duration::from_millis(300));
        assert_eq!(wants(&drain(&mut s)), vec![("n1", x[4].cid)], "an early hedge");
    }
    s.on_block(&"n1", x[4].cid, t5 + Duration::from_millis(350));
    drain(&mut s);
    // The publisher refuses the sixth and names the seed.
    let t6 = t0 + Duration::from_millis(500);
    s.add_segment(6, &[x[5]], far, Some("publisher"), none, t6);
    assert_eq!(wants(&drain(&mut s)), vec![("publisher", x[5].cid)]);
    s.on_redirect(&"publisher", x[5].cid, ["seed"]);
    s.on_dont_have(&"publisher", x[5].cid, t6 + Duration::from_millis(5));
    let sixth = wants(&drain(&mut s)).into_iter().filter(|(_, c)| *c == x[5].cid).collect();
    (s.stats(), sixth)
}

#[test]
fn a_delivering_seed_that_sheds_and_is_late_keeps_its_rank() {
    let (st, sixth) = shedding_seed_run(true);
    assert_eq!((st.stalls, st.stalls_excused), (0, 4), "3 sheds and 1 late copy, all excused: {st:?}");
    assert_eq!(sixth, vec![("seed", blocks(6, 1)[0].cid)], "the redirect to the busy seed is followed");
}

#[test]
fn a_claimer_that_never_delivers_still_loses_rank() {
    let (st, sixth) = shedding_seed_run(false);
    // Three unexcused stalls (stall_limit) from its three sheds. (Its HAVE
    // for the fifth block came first: asked then, the want moves to the
    // clean holder as soon as it announces, a switch rather than a
    // hedge, since a holder with stalls gets no benefit of the doubt.)
    let limit = SchedulerConfig::default().stall_limit as u64;
    assert!(st.stalls >= limit && st.stalls_excused == 0, "{st:?}");
    assert_eq!(sixth, vec![("n1", blocks(6, 1)[0].cid)], "a redirect to a staller is not followed");
}
