use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::ChannelKey;

fn ch() -> ChannelId {
    ChannelKey::from_secret_bytes(&[1; 32]).channel_id()
}

fn cid(seq: u64, version: u8) -> ManifestCid {
    ManifestCid::of(&[&seq.to_le_bytes()[..], &[version]].concat())
}

#[test]
fn in_order_gap_backfill_duplicate_stale() {
    let mut s = ChainState::new(ch(), 10);
    assert_eq!(s.decide_parts(ch(), 1, cid(1, 0), None), ChainDecision::Accept);
    assert_eq!(s.decide_parts(ch(), 2, cid(2, 0), Some(cid(1, 0))), ChainDecision::Accept);
    assert_eq!(s.decide_parts(ch(), 5, cid(5, 0), Some(cid(4, 0))), ChainDecision::Gap { missing: 3..=4 });
    assert_eq!(s.holes(), vec![3, 4]);
    assert_eq!(s.decide_parts(ch(), 4, cid(4, 0), Some(cid(3, 0))), ChainDecision::Backfill);
    assert_eq!(s.decide_parts(ch(), 4, cid(4, 0), Some(cid(3, 0))), ChainDecision::Duplicate);
    assert_eq!(s.decide_parts(ch(), 30, cid(30, 0), Some(cid(29, 0))), ChainDecision::Gap { missing: 21..=29 });
    assert_eq!(s.decide_parts(ch(), 5, cid(5, 0), Some(cid(4, 0))), ChainDecision::Stale { head: 30 });
    assert_eq!(s.head(), Some((30, cid(30, 0))));
    assert!(!s.is_flagged());
}

#[test]
fn same_seq_twice_is_equivocation_and_flags() {
    let mut s = ChainState::new(ch(), 10);
    s.decide_parts(ch(), 1, cid(1, 0), None);
    let d = s.decide_parts(ch(), 1, cid(1, 1), None);
    assert_eq!(
        d,
        ChainDecision::Equivocation(Equivocation {
            seq: 1,
            kept: cid(1, 0),
            conflicting: Some(cid(1, 1)),
            evidence: cid(1, 1)
        })
    );
    assert!(s.is_flagged());
    assert_eq!(s.head(), Some((1, cid(1, 0))), "the second version is not accepted");
}

#[test]
fn broken_prev_link_is_a_fork() {
    let mut s = ChainState::new(ch(), 10);
    s.decide_parts(ch(), 1, cid(1, 0), None);
    let d = s.decide_parts(ch(), 2, cid(2, 0), Some(cid(1, 7)));
    assert!(matches!(d, ChainDecision::Equivocation(Equivocation { seq: 1, .. })));
    // The successor side: 4 is held and names 3 as cid(3,0); another 3 is a fork.
    let mut s = ChainState::new(ch(), 10);
    s.decide_parts(ch(), 1, cid(1, 0), None);
    s.decide_parts(ch(), 4, cid(4, 0), Some(cid(3, 0)));
    let d = s.decide_parts(ch(), 3, cid(3, 9), Some(cid(2, 0)));
    assert!(matches!(d, ChainDecision::Equivocation(Equivocation { seq: 3, .. })), "{d:?}");
}

#[test]
fn other_channels_change_nothing() {
    let other = ChannelKey::from_secret_bytes(&[2; 32]).channel_id();
    let mut s = ChainState::new(ch(), 10);
    assert!(matches!(s.decide_parts(other, 1, cid(1, 0), None), ChainDecision::Stale { .. }));
    assert_eq!(s.head(), None);
}

/// A reference model that remembers everything and applies the rules in
/// their plainest form; the real state machine must agree on every input.
#[derive(Default)]
struct Model {
    seen: BTreeMap<u64, (ManifestCid, Option<ManifestCid>)>,
    head: Option<u64>,
}

impl Model {
    fn visible(&self, seq: u64, window: u64) -> bool {
        self.head.is_none_or(|h| seq + window > h)
    }

    fn decide(&mut self, window: u64, seq: u64, c: ManifestCid, prev: Option<ManifestCid>) -> &'static str {
        if !self.visible(seq, window) {
            return "stale";
        }
        if let Some((k, _)) = self.seen.get(&seq) {
            return if *k == c { "duplicate" } else { "equivocation" };
        }
        if seq > 0
            && self.visible(seq - 1, window)
            && let Some((k, _)) = self.seen.get(&(seq - 1))
            && prev != Some(*k)
        {
            return "equivocation";
        }
        if let Some((_, Some(np))) = self.seen.get(&(seq + 1))
            && self.visible(seq + 1, window)
            && *np != c
        {
            return "equivocation";
        }
        self.seen.insert(seq, (c, prev));
        let d = match self.head {
            None => "accept",
            Some(h) if seq == h + 1 => "accept",
            Some(h) if seq > h => "gap",
            Some(_) => "backfill",
        };
        if self.head.is_none_or(|h| seq > h) {
            self.head = Some(seq);
        }
        d
    }
}

fn kind(d: &ChainDecision) -> &'static str {
    match d {
        ChainDecision::Accept => "accept",
        ChainDecision::Gap { .. } => "gap",
        ChainDecision::Backfill => "backfill",
        ChainDecision::Duplicate => "duplicate",
        ChainDecision::Stale { .. } => "stale",
        ChainDecision::Equivocation(_) => "equivocation",
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Random arrivals: mostly honest manifests in shuffled order with
    /// repeats, sometimes a second version or a broken link.
    #[test]
    fn matches_reference_model(window in 2u64..20,
                               ops in prop::collection::vec((0u64..60, 0u8..10, any::<bool>()), 1..200)) {
        let mut real = ChainState::new(ch(), window);
        let mut model = Model::default();
        for (seq, v, linked) in ops {
            // version 0 is the honest history; 9 is a second signed version.
            let version = if v == 9 { 1 } else { 0 };
            let prev = if seq == 0 || !linked && v == 8 { None } else { Some(cid(seq - 1, 0)) };
            let c = cid(seq, version);
            let got = real.decide_parts(ch(), seq, c, prev);
            let want = model.decide(window, seq, c, prev);
            prop_assert_eq!(kind(&got), want, "seq {} v{}", seq, version);
            prop_assert_eq!(real.head().map(|h| h.0), model.head);
            prop_assert!(real.known.len() as u64 <= window, "window bound");
        }
    }
}
