use std::time::{Duration, Instant};

use shoal_core::{BlockCid, BlockRef};

use super::*;

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

#[test]
fn one_stall_ranks_a_holder_after_clean_ones() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    // "a" sorts first, so on a tie it would be chosen.
    s.peer_connected("a", false);
    s.peer_connected("c", false);
    let x = blocks(1, 1)[0];
    s.add_segment(1, &[x], t0 + Duration::from_secs(30), None, none, t0);
    s.on_have("a", x.cid, t0);
    s.on_have("c", x.cid, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("a", x.cid)]);
    // "a" stalls: one timeout (estimate 100 ms + 500 ms), then "c" is asked
    // and delivers, slowly, which leaves it a worse finish estimate than "a".
    s.tick(t0 + Duration::from_secs(1));
    assert_eq!(wants(&drain(&mut s)), vec![("c", x.cid)]);
    s.on_block(&"c", x.cid, t0 + Duration::from_secs(2));
    drain(&mut s);
    assert_eq!(s.stats().timeouts, 1);
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
    s.on_block(&"c", x.cid, t0 + Duration::from_millis(1100));
    drain(&mut s);
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

#[test]
fn a_held_want_does_not_move_to_a_holder_that_stalled() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["up", "bad", "good"] {
        s.peer_connected(p, false);
    }
    // "bad" claims a block and stalls once.
    let x = blocks(1, 1)[0];
    s.add_segment(1, &[x], t0 + Duration::from_secs(30), None, none, t0);
    s.on_have("bad", x.cid, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("bad", x.cid)]);
    s.tick(t0 + Duration::from_secs(1));
    drain(&mut s);
    assert_eq!(s.stats().timeouts, 1);
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

/// Two HAVE holders, one block with a far deadline, asked of "a" at `t0`.
fn late_request_setup(cfg: SchedulerConfig, t0: Instant) -> (Scheduler<P>, BlockCid) {
    let mut s = Scheduler::new(cfg);
    s.peer_connected("a", false);
    s.peer_connected("b", false);
    let x = blocks(1, 1)[0];
    s.add_segment(1, &[x], t0 + Duration::from_secs(10), None, none, t0);
    s.on_have("a", x.cid, t0);
    s.on_have("b", x.cid, t0);
    let a = drain(&mut s);
    assert_eq!(wants(&a), vec![("a", x.cid)]);
    assert!(a.iter().any(|x| matches!(x, Action::Want { hold, .. } if hold.is_zero())), "an unheld want");
    (s, x.cid)
}

#[test]
fn a_late_request_is_hedged_early_without_cancelling_it() {
    let t0 = Instant::now();
    let (mut s, cid) = late_request_setup(SchedulerConfig::default(), t0);
    // Transfer estimate 100 kB at 1 MB/s = 100 ms, + stall_hedge_after 200 ms.
    for ms in [50, 100, 150, 200, 250, 299] {
        s.tick(t0 + Duration::from_millis(ms));
        assert!(drain(&mut s).is_empty(), "{ms} ms: not late yet");
    }
    s.tick(t0 + Duration::from_millis(300));
    let a = drain(&mut s);
    assert_eq!(a, vec![Action::Want { peer: "b", cid, hold: Duration::ZERO }], "a hedge, no cancel");
    let st = s.stats();
    assert_eq!((st.wants_sent, st.hedges, st.early_hedges, st.timeouts), (2, 1, 1, 0));
    s.tick(t0 + Duration::from_millis(350));
    assert!(wants(&drain(&mut s)).is_empty(), "never more than two requests per block");
    // The hedge delivers: the late request is cancelled and counts a stall.
    s.on_block(&"b", cid, t0 + Duration::from_millis(400));
    let a = drain(&mut s);
    assert!(a.contains(&Action::Cancel { peer: "a", cid }), "{a:?}");
    assert!(a.contains(&Action::SegmentComplete { seq: 1 }));
    // Equal estimates (b measured 1 MB/s), so "a" would win a probe on its
    // id, but its stall puts it behind "b".
    let now = t0 + Duration::from_millis(400);
    let y = blocks(2, 1)[0];
    s.add_segment(2, &[y], t0 + Duration::from_secs(10), None, none, now);
    s.tick(now + Duration::from_millis(500));
    assert_eq!(wants(&drain(&mut s)), vec![("b", y.cid)]);
}

#[test]
fn the_late_request_still_times_out_and_counts_its_stall() {
    let t0 = Instant::now();
    let (mut s, cid) = late_request_setup(SchedulerConfig::default(), t0);
    s.tick(t0 + Duration::from_millis(300));
    assert_eq!(wants(&drain(&mut s)), vec![("b", cid)]);
    // Neither answers. "a" times out at 100 + 500 ms; "b" is the only
    // request left and nobody else can take an early hedge.
    s.tick(t0 + Duration::from_millis(650));
    let a = drain(&mut s);
    assert!(wants(&a).is_empty(), "{a:?}");
    assert_eq!(s.stats().timeouts, 1);
    assert_eq!(s.stats().early_hedges, 1);
    s.on_block(&"b", cid, t0 + Duration::from_millis(700));
    assert!(drain(&mut s).contains(&Action::SegmentComplete { seq: 1 }));
    // "a" answers after all: a duplicate put down to its timeout.
    s.on_block(&"a", cid, t0 + Duration::from_millis(750));
    assert_eq!((s.stats().duplicate_blocks, s.stats().duplicates_timed_out), (1, 1));
}

#[test]
fn an_answer_within_its_estimate_is_not_hedged() {
    let t0 = Instant::now();
    let (mut s, cid) = late_request_setup(SchedulerConfig::default(), t0);
    for ms in (50..=250).step_by(50) {
        s.tick(t0 + Duration::from_millis(ms));
        assert!(drain(&mut s).is_empty());
    }
    s.on_block(&"a", cid, t0 + Duration::from_millis(280));
    let a = drain(&mut s);
    assert!(a.iter().all(|x| !matches!(x, Action::Cancel { .. } | Action::Want { .. })), "{a:?}");
    for ms in (300..=1000).step_by(50) {
        s.tick(t0 + Duration::from_millis(ms));
        assert!(drain(&mut s).is_empty());
    }
    assert_eq!((s.stats().hedges, s.stats().early_hedges, s.stats().wants_sent), (0, 0, 1));
}

#[test]
fn an_early_hedge_goes_only_to_a_holder_or_the_upstream() {
    let t0 = Instant::now();
    // A long timeout, so only an early hedge can add a request.
    let cfg = SchedulerConfig { base_timeout: Duration::from_secs(10), ..SchedulerConfig::default() };
    let mut s = Scheduler::new(cfg);
    s.peer_connected("a", false);
    s.peer_connected("c", false);
    s.peer_connected("publisher", true);
    let x = blocks(1, 1)[0];
    s.add_segment(1, &[x], t0 + Duration::from_secs(10), None, none, t0);
    s.on_have("a", x.cid, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("a", x.cid)]);
    // Late from 300 ms, and "c" is probeable from 500 ms, but a plain
    // neighbour or an origin is no better a bet than the late request.
    for ms in (300..=1000).step_by(50) {
        s.tick(t0 + Duration::from_millis(ms));
        assert!(wants(&drain(&mut s)).is_empty(), "{ms} ms");
    }
    // Once "c" announces HAVE, the next tick hedges to it.
    s.on_have("c", x.cid, t0 + Duration::from_millis(1010));
    s.tick(t0 + Duration::from_millis(1050));
    assert_eq!(wants(&drain(&mut s)), vec![("c", x.cid)]);
    assert_eq!(s.stats().early_hedges, 1);
}

#[test]
fn an_early_hedge_waits_for_download_credit() {
    let t0 = Instant::now();
    // 100 kB/s with a 100 kB burst, spent on the first want.
    let budget = std::sync::Arc::new(std::sync::Mutex::new(shoal_net::TokenBucket::new(100_000.0, 100_000.0, t0)));
    let cfg = SchedulerConfig {
        download: Some(budget.clone()),
        base_timeout: Duration::from_secs(10),
        ..SchedulerConfig::default()
    };
    let (mut s, cid) = late_request_setup(cfg, t0);
    // Another 100 kB of debt (say, another channel): credit is back after 1 s.
    budget.lock().unwrap().charge(100_000.0, t0);
    for ms in (300..=1000).step_by(50) {
        s.tick(t0 + Duration::from_millis(ms));
        assert!(wants(&drain(&mut s)).is_empty(), "{ms} ms: late, but no credit");
    }
    s.tick(t0 + Duration::from_millis(1050));
    assert_eq!(wants(&drain(&mut s)), vec![("b", cid)]);
    assert_eq!(s.stats().early_hedges, 1);
}

#[test]
fn a_held_want_is_hedged_once_its_upstream_claims_the_block_and_does_not_send_it() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("up", false);
    s.peer_connected("b", false);
    let x = blocks(1, 1)[0];
    s.add_segment(1, &[x], t0 + Duration::from_secs(10), Some("up"), none, t0);
    let a = drain(&mut s);
    assert!(
        matches!(a.as_slice(), [Action::Want { peer: "up", hold, .. }] if !hold.is_zero()),
        "held at the upstream: {a:?}"
    );
    // Held, no HAVE yet: waiting is the design, however long.
    s.tick(t0 + Duration::from_millis(400));
    assert!(drain(&mut s).is_empty());
    // The upstream says it has the block (and so does "b"), then sends
    // nothing: 100 kB at 1 MB/s + 200 ms after its HAVE, it is late.
    let have = t0 + Duration::from_millis(500);
    s.on_have("up", x.cid, have);
    s.on_have("b", x.cid, have);
    assert!(drain(&mut s).is_empty(), "the upstream announced HAVE: no switch yet");
    s.tick(have + Duration::from_millis(299));
    assert!(drain(&mut s).is_empty(), "not late yet");
    s.tick(have + Duration::from_millis(300));
    assert_eq!(drain(&mut s), vec![Action::Want { peer: "b", cid: x.cid, hold: Duration::ZERO }]);
    assert_eq!(s.stats().early_hedges, 1);
}

/// A first-hop node whose upstream (the publisher) refuses a block for its
/// first-copies gate asks its neighbours at once, instead of waiting
/// `probe_after` for HAVEs that may come late.
#[test]
fn a_refusal_by_the_upstream_probes_neighbours_at_once() {
    let t0 = Instant::now();
    let mut s = Scheduler::new(SchedulerConfig::default());
    for p in ["up", "n1"] {
        s.peer_connected(p, false);
    }
    let bl = blocks(1, 1);
    let cid = bl[0].cid;
    s.add_segment(1, &bl, t0 + Duration::from_secs(3), Some("up"), none, t0);
    assert_eq!(wants(&drain(&mut s)), vec![("up", cid)], "the upstream is asked first, and only it");
    let t1 = t0 + Duration::from_millis(20);
    s.on_dont_have(&"up", cid, t1);
    assert_eq!(wants(&drain(&mut s)), vec![("n1", cid)], "after the refusal the neighbour is probed at once");
}

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
    // Its HAVE for the fifth block came first, so it was asked (the only
    // holder then) and beaten by the hedge: a fourth stall.
    assert_eq!((st.stalls, st.stalls_excused), (4, 0), "{st:?}");
    assert_eq!(sixth, vec![("n1", blocks(6, 1)[0].cid)], "a redirect to a staller is not followed");
}
