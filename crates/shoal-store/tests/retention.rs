//! Retention: the live window under a long stream, shared blocks, archive
//! channels, the per-channel byte cap, the disk budget, and restarts.

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{Publisher, content, test_config};
use shoal_core::{BlockCid, ChainDecision};
use shoal_store::{Store, StoreConfig};

fn clean(store: &Store) {
    let r = store.verify_integrity().expect("integrity scan runs");
    assert!(r.violations.is_empty(), "{:#?}", r.violations);
    assert!(r.awaiting_refetch.is_empty());
}

#[test]
fn the_live_window_holds_under_a_long_stream_and_shared_blocks_stay() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { live_window_secs: 10, ..test_config() };
    let store = Store::open(dir.path(), &config).unwrap();
    let mut p = Publisher::new(1);
    // Every segment repeats one "init" block, plus two of its own.
    let shared = content(u64::MAX, 2048);
    let shared_cid = BlockCid::of(&shared);
    let mut own: Vec<Vec<BlockCid>> = Vec::new();
    let mut envelope_len = Vec::new();
    for i in 0..600u64 {
        let (m, b) = p.next(&[shared.clone(), content(2 * i, 3000), content(2 * i + 1, 5000)], 1000);
        store.store_segment(&m, &b).unwrap();
        own.push(vec![b[1].cid(), b[2].cid()]);
        envelope_len.push(m.encode().len() as u64);
        let r = store.evict_once().unwrap();
        assert!(!r.more);
        let stats = store.channel_stats(&p.channel()).unwrap();
        // Exactly the newest 10 one-second segments are kept.
        let kept = (i + 1).min(10);
        assert_eq!(stats.segments, kept, "after seq {i}");
        assert_eq!(stats.first_seq, i + 1 - kept);
        assert_eq!(stats.head.unwrap().seq, i);
        assert_eq!(stats.live_duration_ms, kept * 1000);
        if i >= 10 {
            assert_eq!(r.window_evicted, 1, "seq {i}: one segment in, one out");
            let gone = &own[(i - 10) as usize];
            assert!(store.block(&gone[0]).unwrap().is_none() && !store.has_block(&gone[1]).unwrap());
        }
        let window_bytes: u64 = envelope_len[(i + 1 - kept) as usize..].iter().sum::<u64>() + kept * 8000 + 2048;
        assert_eq!(store.stored_bytes(), window_bytes, "after seq {i}");
    }
    assert_eq!(store.block(&shared_cid).unwrap().as_deref(), Some(&shared[..]));
    let seqs: Vec<u64> = store.latest_manifests(&p.channel(), 100).unwrap().iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (590..600).collect::<Vec<_>>());
    let snap = store.metrics().snapshot();
    assert_eq!((snap.manifests_evicted, snap.blocks_evicted), (590, 1180));
    clean(&store);
}

#[test]
fn a_block_stays_until_no_stored_manifest_lists_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { live_window_secs: 2, ..test_config() };
    let store = Store::open(dir.path(), &config).unwrap();
    let mut p = Publisher::new(2);
    let [x, y, z, w, v] = [1u64, 2, 3, 4, 5].map(|t| content(t, 1500));
    let cid = |b: &Bytes| BlockCid::of(b);
    let (a, ab) = p.next(&[x.clone(), y.clone()], 1000);
    let (b, bb) = p.next(&[y.clone(), z.clone()], 1000);
    let (c, cb) = p.next(&[z.clone(), w.clone()], 1000);
    for (m, blocks) in [(&a, &ab), (&b, &bb), (&c, &cb)] {
        store.store_segment(m, blocks).unwrap();
    }
    assert_eq!(store.evict_once().unwrap().window_evicted, 1); // a goes; b and c fill 2 s
    assert!(!store.has_block(&cid(&x)).unwrap());
    assert!(store.has_block(&cid(&y)).unwrap(), "b still lists y");
    clean(&store);
    let (d, db) = p.next(&[w.clone(), v.clone()], 1000);
    store.store_segment(&d, &db).unwrap();
    assert_eq!(store.evict_once().unwrap().window_evicted, 1); // b goes
    assert!(!store.has_block(&cid(&y)).unwrap(), "nothing lists y any more");
    assert!(store.has_block(&cid(&z)).unwrap() && store.has_block(&cid(&w)).unwrap());
    clean(&store);
}

#[test]
fn archive_channels_keep_everything_and_the_budget_spares_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { live_window_secs: 5, disk_budget_bytes: 10_000, ..test_config() };
    let store = Store::open(dir.path(), &config).unwrap();
    let mut p = Publisher::new(3);
    store.set_archive(&p.channel(), true).unwrap();
    let mut cids = Vec::new();
    for i in 0..200u64 {
        let (m, b) = p.next(&[content(i, 1000)], 1000);
        store.store_segment(&m, &b).unwrap();
        cids.push(b[0].cid());
        let r = store.evict_once().unwrap();
        assert_eq!(r.window_evicted + r.budget_evicted, 0);
        assert_eq!(r.over_budget, store.stored_bytes() > 10_000);
    }
    assert!(store.evict_once().unwrap().over_budget, "only archive data is left over the budget");
    let stats = store.channel_stats(&p.channel()).unwrap();
    assert_eq!((stats.segments, stats.first_seq, stats.archive), (200, 0, true));
    for c in &cids {
        assert!(store.has_block(c).unwrap());
    }
    // Back to live: the window and the budget apply on the next passes.
    store.set_archive(&p.channel(), false).unwrap();
    while store.evict_once().unwrap().more {}
    let stats = store.channel_stats(&p.channel()).unwrap();
    assert!(stats.segments <= 5, "{stats:?}");
    assert!(store.stored_bytes() <= 10_000);
    clean(&store);
}

#[test]
fn the_disk_budget_evicts_the_oldest_non_archive_data_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { live_window_secs: 3600, max_evictions_per_pass: 10_000, ..test_config() };
    let store = Store::open(dir.path(), &config).unwrap();
    let mut old = Publisher::new(4); // publishes at T0 + seq s
    let mut new = Publisher::new(5);
    new.seq = 1000; // publishes ~1000 s later
    let mut archive = Publisher::new(6);
    store.set_archive(&archive.channel(), true).unwrap();
    for i in 0..50u64 {
        for (p, tag) in [(&mut old, 0u64), (&mut new, 1), (&mut archive, 2)] {
            let (m, b) = p.next(&[content(i * 3 + tag, 10_000)], 1000);
            store.store_segment(&m, &b).unwrap();
        }
    }
    let total = store.stored_bytes();
    let per_channel = total / 3;
    // Room for the archive, the new channel and 10 segments of the old one.
    let budget = total - 40 * (per_channel / 50);
    drop(store);
    let store = Store::open(dir.path(), &StoreConfig { disk_budget_bytes: budget, ..config }).unwrap();
    let r = store.evict_once().unwrap();
    assert!(!r.over_budget && !r.more);
    assert!(store.stored_bytes() <= budget, "{} > {budget}", store.stored_bytes());
    let old_stats = store.channel_stats(&old.channel()).unwrap();
    let new_stats = store.channel_stats(&new.channel()).unwrap();
    let arch_stats = store.channel_stats(&archive.channel()).unwrap();
    assert_eq!(r.budget_evicted, 50 - old_stats.segments);
    assert!((39..=41).contains(&r.budget_evicted), "{r:?}");
    assert_eq!(old_stats.first_seq, r.budget_evicted, "evicted in seq order");
    assert_eq!(new_stats.segments, 50, "newer data untouched while older exists");
    assert_eq!(arch_stats.segments, 50, "archive untouched");
    clean(&store);

    // Squeeze further: the old channel empties before the new one is touched.
    drop(store);
    let store = Store::open(dir.path(), &StoreConfig { disk_budget_bytes: per_channel * 3 / 2, ..config }).unwrap();
    store.evict_once().unwrap();
    assert_eq!(store.channel_stats(&old.channel()).unwrap().segments, 0);
    assert!(store.channel_stats(&new.channel()).unwrap().segments < 50);
    assert_eq!(store.channel_stats(&archive.channel()).unwrap().segments, 50);
    assert!(store.head(&old.channel()).is_some(), "the head survives its segments");
    clean(&store);
}

#[test]
fn the_channel_byte_cap_keeps_the_newest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { channel_max_bytes: 50_000, ..test_config() };
    let store = Store::open(dir.path(), &config).unwrap();
    let mut p = Publisher::new(7);
    for i in 0..30u64 {
        let (m, b) = p.next(&[content(i, 9_000)], 1000);
        store.store_segment(&m, &b).unwrap();
    }
    store.evict_once().unwrap();
    let s = store.channel_stats(&p.channel()).unwrap();
    assert!(s.live_bytes <= 50_000 && s.live_bytes + 9_500 > 50_000, "{s:?}");
    assert_eq!(s.first_seq + s.segments, 30, "the newest are kept");
    // A single segment over the cap is still kept (the newest always stays).
    let (m, b) = p.next(&[content(1000, 60_000)], 1000);
    store.store_segment(&m, &b).unwrap();
    store.evict_once().unwrap();
    assert_eq!(store.channel_stats(&p.channel()).unwrap().segments, 1);
    clean(&store);
}

#[test]
fn a_restart_keeps_heads_totals_and_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { live_window_secs: 8, ..test_config() };
    let mut p = Publisher::new(8);
    let (head, stats, bytes) = {
        let store = Store::open(dir.path(), &config).unwrap();
        store.set_archive(&Publisher::new(9).channel(), true).unwrap();
        for i in 0..20u64 {
            let (m, b) = p.next(&[content(i, 700)], 1000);
            store.store_segment(&m, &b).unwrap();
        }
        store.evict_once().unwrap();
        store.flush().unwrap();
        (store.head(&p.channel()).unwrap(), store.channel_stats(&p.channel()).unwrap(), store.stored_bytes())
    };
    let store = Store::open(dir.path(), &config).unwrap();
    assert_eq!(store.head(&p.channel()), Some(head));
    assert_eq!(store.channel_stats(&p.channel()), Some(stats));
    assert_eq!((stats.segments, stats.first_seq), (8, 12));
    assert_eq!(store.stored_bytes(), bytes);
    assert!(store.channel_stats(&Publisher::new(9).channel()).unwrap().archive);
    clean(&store);

    let mut cs = store.chain_state(&p.channel(), 300).unwrap().unwrap();
    assert_eq!(cs.head(), Some((19, head.cid)));
    // A replay of stored seq 15 with other content is caught.
    let mut twin = Publisher::new(8);
    twin.seq = 15;
    let (fake, _) = twin.next(&[content(9999, 10)], 1000);
    assert!(matches!(cs.decide(&fake), ChainDecision::Equivocation(_)));
    let (next, nb) = p.next(&[content(20, 700)], 1000);
    assert_eq!(cs.decide(&next), ChainDecision::Accept);
    store.store_segment(&next, &nb).unwrap();
    assert_eq!(store.head(&p.channel()).unwrap().seq, 20);
}

#[test]
fn the_background_evictor_enforces_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { live_window_secs: 3, eviction_interval_ms: 5, ..test_config() };
    let store = Arc::new(Store::open(dir.path(), &config).unwrap());
    let mut p = Publisher::new(10);
    for i in 0..50u64 {
        let (m, b) = p.next(&[content(i, 100)], 1000);
        store.store_segment(&m, &b).unwrap();
    }
    let evictor = store.spawn_evictor().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.channel_stats(&p.channel()).unwrap().segments != 3 {
        assert!(Instant::now() < deadline, "evictor did not reach the window");
        std::thread::sleep(Duration::from_millis(5));
    }
    evictor.stop();
    assert_eq!(store.metrics().snapshot().manifests_evicted, 47);
    clean(&store);
}
