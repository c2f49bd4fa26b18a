use std::time::{Duration, Instant};

use shoal_core::{BlockCid, BlockRef};

use super::*;

mod late;
mod probation;
mod redirects;
mod upstream;

type P = &'static str;

fn blocks(seq: u64, n: usize) -> Vec<BlockRef> {
    (0..n).map(|i| BlockRef { cid: BlockCid::of(&[seq as u8, i as u8]), size: 100_000 }).collect()
}

fn drain(s: &mut Scheduler<P>) -> Vec<Action<P>> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn wants(actions: &[Action<P>]) -> Vec<(P, BlockCid)> {
    actions
        .iter()
        .filter_map(|a| if let Action::Want { peer, cid, .. } = a { Some((*peer, *cid)) } else { None })
        .collect()
}

fn none(_: &BlockCid) -> bool {
    false
}

/// Takes `peers` off probation: each delivers a verified block (one no
/// segment needs) at `t`, as a relay that served us before would have.
fn prove(s: &mut Scheduler<P>, peers: &[P], t: Instant) {
    for p in peers {
        s.on_block(p, BlockCid::of(p.as_bytes()), t);
    }
    drain(s);
}

#[test]
fn spreads_a_segment_over_every_holder() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["a", "b", "c", "d"] {
        s.peer_connected(p, false);
    }
    let bl = blocks(1, 8);
    // Everyone has everything: announce before the manifest lands.
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), None, none, t0);
    let first = drain(&mut s);
    for b in &bl {
        for p in ["a", "b", "c", "d"] {
            s.on_have(p, b.cid, t0);
        }
    }
    let later = drain(&mut s);
    let all: Vec<_> = wants(&first).into_iter().chain(wants(&later)).collect();
    assert_eq!(all.len(), 8, "one want per block, no duplicates: {all:?}");
    for p in ["a", "b", "c", "d"] {
        let n = all.iter().filter(|(q, _)| *q == p).count();
        assert_eq!(n, 2, "peer {p} got {n} of 8 wants; expected an even spread");
    }
}

#[test]
fn upstream_is_asked_with_a_hold_and_origin_is_not() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("publisher", true);
    s.peer_connected("up", false);
    s.add_segment(1, &blocks(1, 3), t0 + Duration::from_secs(3), Some("up"), none, t0);
    let a = drain(&mut s);
    let w = wants(&a);
    assert_eq!(w.len(), 3);
    assert!(w.iter().all(|(p, _)| *p == "up"), "{w:?}");
    assert!(a.iter().all(|x| !matches!(x, Action::Want { hold, .. } if *hold == Duration::ZERO)));
}

#[test]
fn origin_only_as_last_resort() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("publisher", true);
    s.peer_connected("relay", false);
    let bl = blocks(1, 1);
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), None, none, t0);
    assert!(wants(&drain(&mut s)).is_empty(), "no HAVE, no upstream: wait for HAVEs first");
    // After probe_after the plain neighbour is probed (no hold) before the origin.
    s.tick(t0 + Duration::from_millis(500));
    let a = drain(&mut s);
    assert_eq!(wants(&a), vec![("relay", bl[0].cid)]);
    assert!(a.iter().any(|x| matches!(x, Action::Want { hold, .. } if *hold == Duration::ZERO)));
    // It does not have it: now the origin.
    s.on_dont_have(&"relay", bl[0].cid, t0 + Duration::from_millis(510));
    assert_eq!(wants(&drain(&mut s)), vec![("publisher", bl[0].cid)]);
    s.on_block(&"publisher", bl[0].cid, t0 + Duration::from_millis(550));
    let a = drain(&mut s);
    assert!(a.contains(&Action::SegmentComplete { seq: 1 }));
    assert!(a.contains(&Action::AnnounceHave { cid: bl[0].cid }));
    assert_eq!(s.stats().origin_bytes, 100_000);
}

#[test]
fn first_hop_node_asks_the_publisher_it_heard_from() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("publisher", true);
    s.add_segment(1, &blocks(1, 2), t0 + Duration::from_secs(3), Some("publisher"), none, t0);
    assert_eq!(wants(&drain(&mut s)).len(), 2);
}

#[test]
fn slow_peer_is_re_requested_elsewhere_and_loses_rank() {
    let t0 = Instant::now();
    let cfg = SchedulerConfig { max_hold: Duration::from_millis(200), ..SchedulerConfig::default() };
    let mut s = Scheduler::new(cfg);
    s.peer_connected("slow", false);
    s.peer_connected("fast", false);
    let bl = blocks(1, 1);
    s.add_segment(1, &bl, t0 + Duration::from_secs(10), None, none, t0);
    s.on_have("slow", bl[0].cid, t0);
    s.on_have("fast", bl[0].cid, t0);
    let first = wants(&drain(&mut s));
    assert_eq!(first.len(), 1);
    let (asked, cid) = first[0];
    // Nothing arrives. After hold + transfer estimate + base timeout the
    // request times out and goes to the other holder.
    s.tick(t0 + Duration::from_millis(100));
    assert!(wants(&drain(&mut s)).is_empty(), "no re-request before the timeout");
    s.tick(t0 + Duration::from_secs(2));
    let second = wants(&drain(&mut s));
    let other = if asked == "slow" { "fast" } else { "slow" };
    assert_eq!(second, vec![(other, cid)]);
    assert_eq!(s.stats().timeouts, 1);
    s.on_block(&other, cid, t0 + Duration::from_millis(2100));
    assert!(drain(&mut s).contains(&Action::SegmentComplete { seq: 1 }));
}

#[test]
fn hedges_only_inside_the_deadline_window() {
    let t0 = Instant::now();
    // A long request timeout and no early hedge, so only the deadline rule
    // can add a request.
    let cfg = SchedulerConfig {
        base_timeout: Duration::from_secs(10),
        stall_hedge_after: Duration::from_secs(10),
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg); // hedge window 800 ms
    s.peer_connected("a", false);
    s.peer_connected("b", false);
    let bl = blocks(1, 1);
    let deadline = t0 + Duration::from_secs(2);
    s.add_segment(1, &bl, deadline, None, none, t0);
    s.on_have("a", bl[0].cid, t0);
    s.on_have("b", bl[0].cid, t0);
    assert_eq!(wants(&drain(&mut s)).len(), 1);
    s.tick(t0 + Duration::from_millis(1100));
    assert!(wants(&drain(&mut s)).is_empty(), "1.1 s: still outside the hedge window");
    s.tick(t0 + Duration::from_millis(1300));
    assert_eq!(wants(&drain(&mut s)).len(), 1, "1.3 s: inside the window, one hedge");
    assert_eq!(s.stats().hedges, 1);
    s.tick(t0 + Duration::from_millis(1400));
    assert!(wants(&drain(&mut s)).is_empty(), "never more than two requests per block");
}

#[test]
fn delivery_cancels_the_other_request() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("a", false);
    s.peer_connected("b", false);
    let bl = blocks(1, 1);
    s.add_segment(1, &bl, t0 + Duration::from_millis(500), None, none, t0);
    s.on_have("a", bl[0].cid, t0);
    s.on_have("b", bl[0].cid, t0);
    // Inside the hedge window from the start: both are asked.
    let w = wants(&drain(&mut s));
    s.tick(t0 + Duration::from_millis(1));
    let w2 = wants(&drain(&mut s));
    assert_eq!(w.len() + w2.len(), 2);
    s.on_block(&"a", bl[0].cid, t0 + Duration::from_millis(100));
    let a = drain(&mut s);
    assert!(a.contains(&Action::Cancel { peer: "b", cid: bl[0].cid }), "{a:?}");
    // b's copy arrives anyway: counted as a duplicate.
    s.on_block(&"b", bl[0].cid, t0 + Duration::from_millis(110));
    s.on_duplicate_bytes(100_000);
    assert_eq!(s.stats().duplicate_blocks, 1);
    assert_eq!(s.stats().duplicate_bytes, 100_000);
    assert_eq!(s.stats().payload_bytes, 100_000);
    assert_eq!(s.stats().duplicates_raced, 1, "the loser of the race is named as the cause");
    assert_eq!(s.stats().duplicates_switched + s.stats().duplicates_timed_out, 0);
    // A copy from a peer never asked is a duplicate with no cause.
    s.peer_connected("c", false);
    s.on_block(&"c", bl[0].cid, t0 + Duration::from_millis(120));
    assert_eq!((s.stats().duplicate_blocks, s.stats().duplicates_raced), (2, 1));
}

#[test]
fn a_missed_deadline_gives_up_cleanly() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("a", false);
    let bl = blocks(1, 3);
    s.add_segment(1, &bl, t0 + Duration::from_secs(1), Some("a"), none, t0);
    let w = wants(&drain(&mut s));
    s.on_block(&"a", w[0].1, t0 + Duration::from_millis(100));
    drain(&mut s);
    s.tick(t0 + Duration::from_secs(1));
    let a = drain(&mut s);
    assert!(a.contains(&Action::GiveUp { seq: 1, missing: 2 }), "{a:?}");
    let cancels = a.iter().filter(|x| matches!(x, Action::Cancel { .. })).count();
    assert_eq!(cancels, 2, "outstanding wants are cancelled");
    assert_eq!(s.tracked_blocks(), 0);
    // The next segment is unaffected.
    s.add_segment(2, &blocks(2, 1), t0 + Duration::from_secs(3), Some("a"), none, t0 + Duration::from_secs(1));
    assert_eq!(wants(&drain(&mut s)).len(), 1);
}

/// A want held at "up" that moves to "sib" (which announced HAVE 20 ms
/// in) after `switch_after`, at t0 + 300 ms.
fn switched_want(t0: Instant) -> (Scheduler<P>, Vec<BlockRef>) {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("up", false);
    s.peer_connected("sib", false);
    prove(&mut s, &["up", "sib"], t0);
    let bl = blocks(1, 1);
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("up"), none, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("up", bl[0].cid)]);
    s.on_have("sib", bl[0].cid, t0 + Duration::from_millis(20));
    assert!(wants(&drain(&mut s)).is_empty(), "the held want gets switch_after to be answered");
    s.tick(t0 + Duration::from_millis(300));
    let a = drain(&mut s);
    assert!(a.contains(&Action::Cancel { peer: "up", cid: bl[0].cid }), "{a:?}");
    assert_eq!(wants(&a), vec![("sib", bl[0].cid)]);
    (s, bl)
}

#[test]
fn have_moves_a_held_want_to_the_holder() {
    let t0 = Instant::now();
    let (mut s, bl) = switched_want(t0);
    // The cancel loses the race: the upstream's copy comes after the
    // sibling's, and the duplicate is put down to the switch.
    s.on_block(&"sib", bl[0].cid, t0 + Duration::from_millis(350));
    s.on_block(&"up", bl[0].cid, t0 + Duration::from_millis(360));
    let st = s.stats();
    assert_eq!((st.duplicate_blocks, st.duplicates_switched, st.duplicates_raced), (1, 1, 0));
    assert_eq!(st.switches_lost, 0, "the switch won");
}

#[test]
fn a_switched_from_peer_asked_again_that_delivers_is_not_a_lost_switch() {
    let t0 = Instant::now();
    let (mut s, bl) = switched_want(t0);
    // The holder refuses after all; the want goes back to the upstream.
    s.on_dont_have(&"sib", bl[0].cid, t0 + Duration::from_millis(320));
    assert_eq!(wants(&drain(&mut s)), vec![("up", bl[0].cid)]);
    s.on_block(&"up", bl[0].cid, t0 + Duration::from_millis(400));
    let st = s.stats();
    assert_eq!((st.blocks_received, st.switches, st.switches_lost), (1, 1, 0), "{st:?}");
}

#[test]
fn a_switched_from_copy_that_wins_makes_the_switched_to_copy_the_switchs_duplicate() {
    let t0 = Instant::now();
    let (mut s, bl) = switched_want(t0);
    // The upstream's copy was already on its way and wins.
    s.on_block(&"up", bl[0].cid, t0 + Duration::from_millis(310));
    s.on_block(&"sib", bl[0].cid, t0 + Duration::from_millis(350));
    let st = s.stats();
    assert_eq!((st.blocks_received, st.duplicate_blocks), (1, 1));
    assert_eq!((st.duplicates_switched, st.duplicates_raced), (1, 0), "the switch caused it: {st:?}");
    assert_eq!((st.switches, st.switches_lost), (1, 1), "and the switch lost");
}

#[test]
fn memory_is_bounded_by_dropping_the_oldest_segment() {
    let t0 = Instant::now();
    let cfg = SchedulerConfig { max_tracked_blocks: 10, ..SchedulerConfig::default() };
    let mut s = Scheduler::new(cfg);
    s.peer_connected("a", false);
    for seq in 0..5 {
        s.add_segment(seq, &blocks(seq, 4), t0 + Duration::from_secs(10), None, none, t0);
    }
    assert!(s.tracked_blocks() <= 10);
    let gave_up: Vec<u64> = drain(&mut s)
        .into_iter()
        .filter_map(|a| if let Action::GiveUp { seq, .. } = a { Some(seq) } else { None })
        .collect();
    assert_eq!(gave_up, vec![0, 1, 2]);
}

#[test]
fn disconnect_re_plans_outstanding_wants() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("a", false);
    s.peer_connected("b", false);
    let bl = blocks(1, 1);
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("a"), none, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("a", bl[0].cid)]);
    s.peer_disconnected(&"a", t0 + Duration::from_millis(5));
    assert!(wants(&drain(&mut s)).is_empty(), "b is only probed after probe_after");
    s.tick(t0 + Duration::from_millis(500));
    assert_eq!(wants(&drain(&mut s)), vec![("b", bl[0].cid)]);
}

#[test]
fn repeated_blocks_within_and_across_segments_complete() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("a", false);
    let silence = BlockRef { cid: BlockCid::of(b"silence"), size: 1000 };
    let other = BlockRef { cid: BlockCid::of(b"other"), size: 1000 };
    // Segment 1 repeats one block; segment 2 shares it.
    s.add_segment(1, &[silence, silence, other], t0 + Duration::from_secs(3), Some("a"), none, t0);
    s.add_segment(2, &[silence], t0 + Duration::from_secs(4), Some("a"), none, t0);
    let w = wants(&drain(&mut s));
    assert_eq!(w.len(), 2, "one want per distinct block: {w:?}");
    s.on_block(&"a", silence.cid, t0 + Duration::from_millis(10));
    let a = drain(&mut s);
    assert!(a.contains(&Action::SegmentComplete { seq: 2 }), "{a:?}");
    assert!(!a.contains(&Action::SegmentComplete { seq: 1 }));
    s.on_block(&"a", other.cid, t0 + Duration::from_millis(20));
    assert!(drain(&mut s).contains(&Action::SegmentComplete { seq: 1 }));
    assert_eq!(s.tracked_blocks(), 0);
}

#[test]
fn giving_up_one_segment_keeps_blocks_another_needs() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("a", false);
    let shared = BlockRef { cid: BlockCid::of(b"shared"), size: 1000 };
    s.add_segment(1, &[shared], t0 + Duration::from_secs(1), Some("a"), none, t0);
    s.add_segment(2, &[shared], t0 + Duration::from_secs(5), Some("a"), none, t0);
    drain(&mut s);
    s.tick(t0 + Duration::from_secs(2));
    let a = drain(&mut s);
    assert!(a.contains(&Action::GiveUp { seq: 1, missing: 1 }));
    assert_eq!(s.tracked_blocks(), 1, "segment 2 still needs the block");
    s.on_block(&"a", shared.cid, t0 + Duration::from_secs(2));
    assert!(drain(&mut s).contains(&Action::SegmentComplete { seq: 2 }));
}

#[test]
fn a_peer_that_claims_have_then_fails_to_deliver_loses_rank() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    // "a" sorts first, so on a tie it would be chosen.
    s.peer_connected("a", false);
    s.peer_connected("b", false);
    let limit = SchedulerConfig::default().stall_limit as u64;
    for seq in 1..=limit {
        let bl = blocks(seq, 1);
        s.add_segment(seq, &bl, t0 + Duration::from_secs(30), None, none, t0);
        s.on_have("a", bl[0].cid, t0);
        let w = wants(&drain(&mut s));
        assert_eq!(w, vec![("a", bl[0].cid)], "the only holder is asked");
        // It claimed HAVE, then answered DONT_HAVE: a lie or a loss.
        s.on_dont_have(&"a", bl[0].cid, t0);
        drain(&mut s);
        s.give_up(seq);
        drain(&mut s);
    }
    // A block nobody announced is probed at a neighbour after probe_after:
    // on a tie "a" would be asked; the liar now ranks behind "b".
    let bl = blocks(100, 1);
    s.add_segment(100, &bl, t0 + Duration::from_secs(30), None, none, t0);
    assert!(wants(&drain(&mut s)).is_empty());
    s.tick(t0 + Duration::from_millis(600));
    let w = wants(&drain(&mut s));
    assert_eq!(w, vec![("b", bl[0].cid)], "after {limit} broken HAVEs the honest peer goes first");
}

#[test]
fn a_block_that_did_not_fit_is_asked_again_without_penalty() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("a", false);
    s.peer_connected("b", false);
    for seq in 1..=5u64 {
        let bl = blocks(seq, 1);
        s.add_segment(seq, &bl, t0 + Duration::from_secs(30), None, none, t0);
        s.on_have("a", bl[0].cid, t0);
        assert_eq!(wants(&drain(&mut s)), vec![("a", bl[0].cid)]);
        s.on_deferred(&"a", bl[0].cid, t0);
        s.on_have("a", bl[0].cid, t0);
        assert_eq!(wants(&drain(&mut s)), vec![("a", bl[0].cid)], "asked again at once");
        s.on_block(&"a", bl[0].cid, t0);
        drain(&mut s);
    }
}

#[test]
fn the_download_budget_paces_wants() {
    let t0 = Instant::now();
    // 100 kB/s with a 100 kB burst; blocks are 100 kB.
    let budget = std::sync::Arc::new(std::sync::Mutex::new(shoal_net::TokenBucket::new(100_000.0, 100_000.0, t0)));
    let cfg = SchedulerConfig { download: Some(budget), ..SchedulerConfig::default() };
    let mut s = Scheduler::new(cfg);
    for p in ["a", "b", "c", "d"] {
        s.peer_connected(p, false);
    }
    let bl = blocks(1, 8);
    s.add_segment(1, &bl, t0 + Duration::from_secs(30), None, none, t0);
    for b in &bl {
        for p in ["a", "b", "c", "d"] {
            s.on_have(p, b.cid, t0);
        }
    }
    assert_eq!(wants(&drain(&mut s)).len(), 1, "one block of credit at t0");
    let mut sent = 1;
    for ms in (50..=3000).step_by(50) {
        s.tick(t0 + Duration::from_millis(ms));
        sent += wants(&drain(&mut s)).len();
    }
    // 100 kB burst + 3 s × 100 kB/s = 4 blocks, at most one more of debt;
    // without the budget all 8 go out at once.
    assert!((3..=5).contains(&sent), "{sent} wants of 100 kB in 3 s at 100 kB/s");
}

/// Two holders of segment 1's one block, "a" and "c". "a" sorts first, so
/// on a tie it is chosen: it is asked and stalls (one timeout, estimate
/// 100 ms + 500 ms), then "c" is asked and delivers at `t0 + delivered`.
fn a_stalls_once_then_c_delivers(t0: Instant, delivered: Duration) -> Scheduler<P> {
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("a", false);
    s.peer_connected("c", false);
    let x = blocks(1, 1)[0];
    s.add_segment(1, &[x], t0 + Duration::from_secs(30), None, none, t0);
    s.on_have("a", x.cid, t0);
    s.on_have("c", x.cid, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("a", x.cid)]);
    s.tick(t0 + Duration::from_secs(1));
    assert_eq!(wants(&drain(&mut s)), vec![("c", x.cid)], "a timed out once");
    s.on_block(&"c", x.cid, t0 + delivered);
    drain(&mut s);
    assert_eq!(s.stats().timeouts, 1);
    s
}

#[test]
fn one_stall_ranks_a_holder_after_clean_ones() {
    let t0 = Instant::now();
    // "c" delivers slowly, which leaves it a worse finish estimate than "a".
    let mut s = a_stalls_once_then_c_delivers(t0, Duration::from_secs(2));
    // One stall is below stall_limit (3), so "a" stays in its class, but it
    // now ranks after the clean peer despite its better estimate. (A block
    // nobody announced is probed at both, class 2, after probe_after.)
    let now = t0 + Duration::from_secs(2);
    let y = blocks(2, 1)[0];
    s.add_segment(2, &[y], t0 + Duration::from_secs(30), None, none, now);
    assert!(drain(&mut s).is_empty());
    s.tick(now + Duration::from_millis(500));
    assert_eq!(wants(&drain(&mut s)), vec![("c", y.cid)], "the staller ranks after a clean peer");
}

#[test]
fn a_delivery_forgives_a_stall() {
    let t0 = Instant::now();
    let mut s = a_stalls_once_then_c_delivers(t0, Duration::from_millis(1100));
    // "a" alone holds the next block and delivers it fast.
    let now = t0 + Duration::from_secs(2);
    let y = blocks(2, 1)[0];
    s.add_segment(2, &[y], t0 + Duration::from_secs(30), None, none, now);
    s.on_have("a", y.cid, now);
    assert_eq!(wants(&drain(&mut s)), vec![("a", y.cid)]);
    s.on_block(&"a", y.cid, now + Duration::from_millis(10));
    drain(&mut s);
    // Forgiven: probed at both, the faster "a" is asked again.
    let z = blocks(3, 1)[0];
    s.add_segment(3, &[z], t0 + Duration::from_secs(30), None, none, now + Duration::from_millis(100));
    s.tick(now + Duration::from_millis(600));
    assert_eq!(wants(&drain(&mut s)), vec![("a", z.cid)], "one delivery cancels one stall");
}

/// "bad" claims segment 1's one block and never sends it: one timeout,
/// one stall, over by `t0 + 1 s`.
fn bad_claims_and_stalls_once(s: &mut Scheduler<P>, t0: Instant) {
    let x = blocks(1, 1)[0];
    s.add_segment(1, &[x], t0 + Duration::from_secs(30), None, none, t0);
    s.on_have("bad", x.cid, t0);
    assert_eq!(wants(&drain(s)), vec![("bad", x.cid)]);
    s.tick(t0 + Duration::from_secs(1));
    drain(s);
    assert_eq!(s.stats().timeouts, 1);
}

#[test]
fn a_held_want_does_not_move_to_a_holder_that_stalled() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["up", "bad", "good"] {
        s.peer_connected(p, false);
    }
    prove(&mut s, &["good"], t0);
    bad_claims_and_stalls_once(&mut s, t0);
    // The next segment is held at the upstream; "bad" claims it too.
    let now = t0 + Duration::from_secs(1);
    let y = blocks(2, 1)[0];
    s.add_segment(2, &[y], t0 + Duration::from_secs(30), Some("up"), none, now);
    assert_eq!(wants(&drain(&mut s)), vec![("up", y.cid)]);
    s.on_have("bad", y.cid, now + Duration::from_millis(10));
    s.tick(now + Duration::from_millis(300));
    assert!(drain(&mut s).is_empty(), "the held want stays at the upstream");
    // A clean holder gets it.
    s.on_have("good", y.cid, now + Duration::from_millis(310));
    s.tick(now + Duration::from_millis(350));
    let a = drain(&mut s);
    assert!(a.contains(&Action::Cancel { peer: "up", cid: y.cid }), "{a:?}");
    assert_eq!(wants(&a), vec![("good", y.cid)]);
}

#[test]
fn a_holder_that_stalled_ranks_behind_the_upstream_even_when_its_have_came_first() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["up", "bad"] {
        s.peer_connected(p, false);
    }
    // "bad" claims a block and stalls once (a timeout).
    bad_claims_and_stalls_once(&mut s, t0);
    // Its HAVE for the next segment's block lands before the manifest does
    // (it sends HAVEs the moment it sees a manifest): it is a holder from
    // the start, yet the want goes to the upstream, held.
    let now = t0 + Duration::from_secs(1);
    let y = blocks(2, 1)[0];
    s.on_have("bad", y.cid, now);
    s.add_segment(2, &[y], t0 + Duration::from_secs(30), Some("up"), none, now + Duration::from_millis(5));
    assert_eq!(wants(&drain(&mut s)), vec![("up", y.cid)], "one broken HAVE puts a holder behind the upstream");
    // With the upstream at its request cap, the staller is still asked
    // rather than nobody: a demotion, not a ban.
    let busy = SchedulerConfig::default().max_inflight_per_peer;
    let z: Vec<BlockRef> = (0..busy + 1).map(|i| BlockRef { cid: BlockCid::of(&[9, i as u8]), size: 1000 }).collect();
    for b in &z {
        s.on_have("bad", b.cid, now + Duration::from_millis(6));
    }
    s.add_segment(3, &z, t0 + Duration::from_secs(30), Some("up"), none, now + Duration::from_millis(10));
    let mut w = wants(&drain(&mut s));
    // (Blocks whose HAVE is under `spread_wait` old wait a tick once the
    // best peer has two requests queued.)
    s.tick(now + Duration::from_millis(100));
    w.extend(wants(&drain(&mut s)));
    let z_wants: Vec<P> = w.iter().filter(|(_, c)| z.iter().any(|b| b.cid == *c)).map(|(p, _)| *p).collect();
    assert_eq!(z_wants.len(), busy + 1, "every block asked of someone: {w:?}");
    let first_bad = z_wants.iter().position(|p| *p == "bad").expect("the staller takes the overflow");
    assert!(z_wants[first_bad..].iter().all(|p| *p == "bad"), "the upstream first, until it is full: {z_wants:?}");
    assert!(first_bad >= busy - 2, "the upstream took {first_bad} of {}: {z_wants:?}", busy + 1);
}

#[test]
fn a_stalled_upstream_that_claims_the_block_is_hedged_at_once() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["bad", "good"] {
        s.peer_connected(p, false);
    }
    prove(&mut s, &["good"], t0);
    bad_claims_and_stalls_once(&mut s, t0);
    // "bad" forwarded the next manifest first: it is the upstream and, not
    // claiming the block, keeps its class and holds our want.
    let now = t0 + Duration::from_secs(1);
    let y = blocks(2, 1)[0];
    s.add_segment(2, &[y], t0 + Duration::from_secs(30), Some("bad"), none, now);
    assert_eq!(wants(&drain(&mut s)), vec![("bad", y.cid)]);
    // Then it claims the block and sends nothing, and a clean peer has it:
    // asked at once, not after the transfer estimate and
    // `stall_hedge_after` (~300 ms here), and not after `switch_after`.
    s.on_have("bad", y.cid, now + Duration::from_millis(5));
    s.on_have("good", y.cid, now + Duration::from_millis(10));
    s.tick(now + Duration::from_millis(20));
    assert_eq!(wants(&drain(&mut s)), vec![("good", y.cid)]);
}
