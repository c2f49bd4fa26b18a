//! Late requests, early hedges and stalls.

use std::time::{Duration, Instant};

use shoal_core::BlockCid;

use super::{P, blocks, drain, none, prove, wants};
use crate::scheduler::*;

/// Two HAVE holders, one block with a far deadline, asked of "a" at `t0`.
fn late_request_setup(cfg: SchedulerConfig, t0: Instant) -> (Scheduler<P>, BlockCid) {
    let mut s = Scheduler::new(cfg);
    s.peer_connected("a", false);
    s.peer_connected("b", false);
    prove(&mut s, &["a", "b"], t0);
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
    prove(&mut s, &["a", "c"], t0);
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
    prove(&mut s, &["up", "b"], t0);
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

#[test]
fn hedges_are_budgeted_per_first_request() {
    let t0 = Instant::now();
    // No burst and one hedge per two first wants: easy to count. Nothing
    // times out in this test (a timeout's new want would earn credit too).
    let cfg = SchedulerConfig {
        hedge_share: 0.5,
        hedge_burst: 1.0,
        base_timeout: Duration::from_secs(60),
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg);
    s.peer_connected("a", false);
    s.peer_connected("b", false);
    prove(&mut s, &["a", "b"], t0);
    // Eight blocks, all announced by both; "a" gets the first wants of
    // four, "b" of four (the spread), and then nobody answers.
    let bl = blocks(1, 8);
    s.add_segment(1, &bl, t0 + Duration::from_secs(30), None, none, t0);
    for b in &bl {
        s.on_have("a", b.cid, t0);
        s.on_have("b", b.cid, t0);
    }
    for ms in (0..=600).step_by(50) {
        s.tick(t0 + Duration::from_millis(ms));
    }
    drain(&mut s);
    let st = s.stats();
    // Credit: 1 at the start, capped at 1, so the eight first wants leave
    // it at 1: one hedge. The other seven late blocks keep one request.
    assert_eq!((st.wants_sent - st.hedges, st.hedges), (8, 1), "{st:?}");
    assert!(st.hedges_skipped >= 7, "{st:?}");
    // Each first want after this earns half a hedge: two blocks more, one
    // more hedge in all, for whichever late block comes first.
    let more = blocks(2, 2);
    let now = t0 + Duration::from_millis(600);
    s.add_segment(2, &more, t0 + Duration::from_secs(30), None, none, now);
    for b in &more {
        s.on_have("a", b.cid, now);
    }
    for ms in (0..=600).step_by(50) {
        s.tick(now + Duration::from_millis(ms));
    }
    drain(&mut s);
    let st = s.stats();
    assert_eq!((st.wants_sent - st.hedges, st.hedges, st.timeouts), (10, 2, 0), "{st:?}");
}
