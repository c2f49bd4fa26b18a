//! The write and read API: atomic segments, blocks ahead of manifests,
//! reads by CID, seq, range and latest K, conflicts and evidence.

mod common;

use common::{Publisher, T0_MS, content, test_config};
use shoal_core::{BlockRef, ChainDecision, Equivocation, VerifiedBlock};
use shoal_store::{BlockPut, Commit, Store, StoreConfig, StoreError};

#[test]
fn a_stored_segment_reads_back_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &test_config()).unwrap();
    let mut p = Publisher::new(1);
    let contents = [content(1, 1000), content(2, 5000), content(3, 300_000)];
    let (m, blocks) = p.next(&contents, 1000);
    let c = store.store_segment(&m, &blocks).unwrap();
    assert_eq!(c, Commit::Stored { head_advanced: true, blocks_written: 3 });

    for (b, want) in blocks.iter().zip(&contents) {
        let got = store.block(&b.cid()).unwrap().expect("stored");
        assert_eq!(&*got, &want[..]);
        assert_eq!(store.block_bytes(&b.cid()).unwrap().as_ref(), Some(want));
    }
    assert_eq!(store.manifest_envelope(&p.channel(), 0).unwrap(), Some(m.encode()));
    assert_eq!(store.manifest(&p.channel(), 0).unwrap().map(|v| v.cid()), Some(m.cid()));
    let head = store.head(&p.channel()).unwrap();
    assert_eq!((head.seq, head.cid), (0, m.cid()));
    assert_eq!(store.stored_bytes(), 306_000 + m.encode().len() as u64);
    let snap = store.metrics().snapshot();
    assert_eq!((snap.blocks_written, snap.block_bytes_written, snap.manifests_written), (3, 306_000, 1));
    assert_eq!(snap.blocks_read, 6);

    // Storing it again changes nothing.
    assert_eq!(store.store_segment(&m, &blocks).unwrap(), Commit::AlreadyStored);
    assert_eq!(store.stored_bytes(), 306_000 + m.encode().len() as u64);
    let report = store.verify_integrity().unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.blocks_checked, 3);
}

#[test]
fn range_and_latest_reads_are_ordered_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &test_config()).unwrap();
    let mut p = Publisher::new(2);
    let mut envs = Vec::new();
    for i in 0..20u64 {
        let (m, b) = p.next(&[content(i, 100)], 1000);
        // Leave holes at 5 and 6 (a gap the fetcher has not filled).
        if i != 5 && i != 6 {
            store.store_segment(&m, &b).unwrap();
        }
        envs.push(m.encode());
    }
    let seqs = |v: &[shoal_store::StoredManifest]| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    let latest = store.latest_manifests(&p.channel(), 3).unwrap();
    assert_eq!(seqs(&latest), vec![17, 18, 19]);
    assert_eq!(latest[2].envelope, envs[19]);
    let range = store.manifest_range(&p.channel(), 3..=9, 100).unwrap();
    assert_eq!(seqs(&range), vec![3, 4, 7, 8, 9]);
    assert_eq!(range[2].envelope, envs[7]);
    assert_eq!(seqs(&store.manifest_range(&p.channel(), 3..=9, 2).unwrap()), vec![3, 4]);
    let (lo, hi) = (9, 3);
    assert!(store.manifest_range(&p.channel(), lo..=hi, 10).unwrap().is_empty());
    // Another channel sees nothing of this one.
    let other = Publisher::new(3);
    assert!(store.latest_manifests(&other.channel(), 10).unwrap().is_empty());
    assert_eq!(store.latest_manifests(&p.channel(), 1000).unwrap().len(), 18);
}

#[test]
fn blocks_can_arrive_before_their_manifest_is_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &test_config()).unwrap();
    let mut p = Publisher::new(4);
    let (m, blocks) = p.next(&[content(1, 4000), content(2, 4000)], 1000);

    // Nothing stored yet: the commit fails and writes nothing.
    match store.commit_segment(&m) {
        Err(StoreError::MissingBlocks { missing, seq: 0, .. }) => assert_eq!(missing.len(), 2),
        other => panic!("expected MissingBlocks, got {other:?}"),
    }
    assert_eq!(store.put_block(&m, &blocks[0]).unwrap(), BlockPut::Pending);
    assert_eq!(store.put_block(&m, &blocks[0]).unwrap(), BlockPut::AlreadyStored);
    match store.commit_segment(&m) {
        Err(StoreError::MissingBlocks { missing, .. }) => assert_eq!(missing, vec![blocks[1].cid()]),
        other => panic!("expected MissingBlocks, got {other:?}"),
    }
    assert!(store.head(&p.channel()).is_none());
    assert!(store.manifest_envelope(&p.channel(), 0).unwrap().is_none());
    assert_eq!(store.stored_bytes(), 4000);

    store.put_block(&m, &blocks[1]).unwrap();
    assert_eq!(store.commit_segment(&m).unwrap(), Commit::Stored { head_advanced: true, blocks_written: 0 });
    let report = store.verify_integrity().unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);

    // A committed block is no longer pending: expiry does not touch it.
    let r = store.evict_at(T0_MS * 2).unwrap();
    assert_eq!(r.pending_expired, 0);
    assert!(store.has_block(&blocks[1].cid()).unwrap());
}

#[test]
fn orphaned_pending_blocks_expire_and_the_pending_limit_holds() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig { max_pending_bytes: 10_000, pending_ttl_secs: 60, ..test_config() };
    let store = Store::open(dir.path(), &config).unwrap();
    let mut p = Publisher::new(5);
    let (m, blocks) = p.next(&[content(1, 6000), content(2, 6000)], 1000);
    store.put_block(&m, &blocks[0]).unwrap();
    match store.put_block(&m, &blocks[1]) {
        Err(StoreError::PendingFull { pending_bytes: 6000, limit: 10_000 }) => {}
        other => panic!("expected PendingFull, got {other:?}"),
    }
    // Not yet expired.
    let now = shoal_store_now();
    assert_eq!(store.evict_at(now).unwrap().pending_expired, 0);
    assert!(store.has_block(&blocks[0].cid()).unwrap());
    // Past the TTL: deleted, bytes returned.
    let r = store.evict_at(now + 61_000).unwrap();
    assert_eq!((r.pending_expired, r.bytes_freed), (1, 6000));
    assert!(store.block(&blocks[0].cid()).unwrap().is_none());
    assert_eq!(store.stored_bytes(), 0);
    // The limit is free again.
    store.put_block(&m, &blocks[1]).unwrap();
    assert!(store.verify_integrity().unwrap().violations.is_empty());
}

fn shoal_store_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}

#[test]
fn blocks_outside_the_manifest_or_of_the_wrong_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &test_config()).unwrap();
    let mut p = Publisher::new(6);
    let (m, _) = p.next(&[content(1, 100)], 1000);
    let stranger = VerifiedBlock::from_content(content(99, 100));
    assert!(matches!(store.put_block(&m, &stranger), Err(StoreError::BlockNotInManifest { .. })));
    assert!(matches!(store.store_segment(&m, &[stranger]), Err(StoreError::BlockNotInManifest { .. })));

    let real = VerifiedBlock::from_content(content(7, 100));
    let lying = p.sign(1, None, T0_MS, 1000, vec![BlockRef { cid: real.cid(), size: 101 }]);
    let err = store.store_segment(&lying, &[real]).unwrap_err();
    assert!(matches!(err, StoreError::BlockSizeMismatch { claimed: 101, actual: 100, .. }), "{err}");
    assert_eq!(store.stored_bytes(), 0);
}

#[test]
fn a_different_manifest_at_a_stored_seq_is_a_conflict_and_evidence_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &test_config()).unwrap();
    let mut p = Publisher::new(7);
    let (m0, b0) = p.next(&[content(1, 100)], 1000);
    store.store_segment(&m0, &b0).unwrap();
    let b = VerifiedBlock::from_content(content(2, 100));
    let twin = p.sign(0, None, T0_MS + 5, 1000, vec![BlockRef { cid: b.cid(), size: 100 }]);
    let err = store.store_segment(&twin, std::slice::from_ref(&b)).unwrap_err();
    match &err {
        StoreError::SeqConflict { seq: 0, stored, offered, .. } => {
            assert_eq!((*stored, *offered), (m0.cid(), twin.cid()));
        }
        other => panic!("expected SeqConflict, got {other}"),
    }
    assert!(!store.has_block(&b.cid()).unwrap(), "nothing of the conflicting segment was written");

    let eq = Equivocation { seq: 0, kept: m0.cid(), conflicting: Some(twin.cid()), evidence: twin.cid() };
    assert!(store.record_equivocation(&eq, &twin).unwrap());
    assert!(!store.record_equivocation(&eq, &twin).unwrap(), "recorded once");
    drop(store);

    let store = Store::open(dir.path(), &test_config()).unwrap();
    assert!(store.channel_stats(&p.channel()).unwrap().flagged);
    let ev = store.equivocations(&p.channel()).unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].seq, ev[0].kept, ev[0].conflicting), (0, m0.cid(), Some(twin.cid())));
    assert_eq!(ev[0].evidence, twin.encode());
    let cs = store.chain_state(&p.channel(), 300).unwrap().unwrap();
    assert!(cs.is_flagged(), "the restored chain state stays flagged");
    assert_eq!(cs.head(), Some((0, m0.cid())));
}

#[test]
fn the_head_only_moves_forward_and_backfills_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), &test_config()).unwrap();
    let mut p = Publisher::new(8);
    let segs: Vec<_> = (0..4).map(|i| p.next(&[content(i, 64)], 1000)).collect();
    store.store_segment(&segs[3].0, &segs[3].1).unwrap();
    let c = store.store_segment(&segs[1].0, &segs[1].1).unwrap();
    assert_eq!(c, Commit::Stored { head_advanced: false, blocks_written: 1 });
    assert_eq!(store.head(&p.channel()).unwrap().seq, 3);
    let stats = store.channel_stats(&p.channel()).unwrap();
    assert_eq!((stats.first_seq, stats.segments), (1, 2));
    // The chain state replays what is stored: seq 2 is a hole to fetch.
    let mut cs = store.chain_state(&p.channel(), 10).unwrap().unwrap();
    assert_eq!(cs.head(), Some((3, segs[3].0.cid())));
    let holes = cs.holes();
    assert!(holes.contains(&2) && !holes.contains(&1) && !holes.contains(&3), "{holes:?}");
    assert_eq!(cs.decide(&segs[2].0), ChainDecision::Backfill);
}
