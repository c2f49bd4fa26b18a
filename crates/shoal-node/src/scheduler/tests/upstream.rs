//! Which DONT_HAVEs count as the upstream refusing a held want
//! (`on_refused`): only one from the block's upstream, for a want we sent
//! it, that named nobody.

use std::time::{Duration, Instant};

use shoal_core::BlockCid;

use super::{P, blocks, drain, none};
use crate::scheduler::*;

/// Segment 2 comes first from `upstream`, and `answer` is what `who` said
/// about its block; returns the refusals counted.
fn refusals(upstream: P, who: P, answer: fn(&mut Scheduler<P>, &P, BlockCid, Instant)) -> u64 {
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    let mut s = Scheduler::new(SchedulerConfig::default());
    s.peer_connected("parent", false);
    s.peer_connected(who, false);
    s.peer_connected("seed", false);
    let bl = blocks(2, 1);
    s.add_segment(2, &bl, ms(3000), Some(upstream), none, ms(500));
    drain(&mut s);
    answer(&mut s, &who, bl[0].cid, ms(510));
    drain(&mut s);
    s.stats().upstream_refusals
}

#[test]
fn the_upstreams_refusal_that_names_nobody_counts() {
    assert_eq!(refusals("stranger", "stranger", Scheduler::on_refused), 1);
}

/// The publisher's first-copies gate refuses a first-hop viewer it does
/// not seed and names its seeds: the designed path, not a stranger's
/// refusal. The engine registers the publisher as a relay like any peer,
/// so what tells them apart is the redirect.
#[test]
fn a_refusal_that_names_peers_does_not_count() {
    let named = |s: &mut Scheduler<P>, who: &P, cid: BlockCid, now: Instant| {
        assert!(s.on_redirect(who, cid, ["seed"]).is_empty());
        s.on_dont_have(who, cid, now);
    };
    assert_eq!(refusals("publisher", "publisher", named), 0);
}

/// A want that failed (an error, a timeout, a store failure) is no
/// refusal: an honest upstream behind a broken connection looks the same.
#[test]
fn a_failed_want_is_not_a_refusal() {
    assert_eq!(refusals("new", "new", Scheduler::on_dont_have), 0);
}

/// Only the upstream's refusal of a want we sent it counts: here a
/// neighbour we never asked sends a stray DONT_HAVE. (A neighbour probed
/// without a hold is not the upstream either, so the same check skips it;
/// this test does not drive a probe.)
#[test]
fn a_neighbours_refusal_does_not_count() {
    assert_eq!(refusals("parent", "neighbour", Scheduler::on_refused), 0);
}
