//! Corruption, schema versions and open errors: each is an error that names
//! the path, never a panic and never bad data served.

mod common;

use common::{Publisher, content, test_config};
use shoal_store::{
    BlockPut, Commit, Store, StoreError,
    schema::{ALL_CFS, CF_BLOCKS, CF_META, META_SCHEMA_VERSION, SCHEMA_VERSION},
};

/// Opens the store's RocksDB directly, as a disk fault or another program
/// would see it, and applies `f`.
fn raw<F: FnOnce(&rocksdb::DB)>(path: &std::path::Path, f: F) {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(&opts, path, ALL_CFS).expect("raw open");
    f(&db);
    db.flush_wal(true).expect("raw flush");
}

#[test]
fn a_corrupt_block_is_reported_deleted_and_never_served_then_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Publisher::new(1);
    let (m, blocks) = p.next(&[content(1, 64 * 1024), content(2, 1000)], 1000);
    let victim = blocks[0].clone();
    {
        let store = Store::open(dir.path(), &test_config()).unwrap();
        store.store_segment(&m, &blocks).unwrap();
    }
    // Flip one bit of the stored bytes (same length, so only the hash tells).
    let mut bad = victim.data().to_vec();
    bad[12345] ^= 0x10;
    raw(dir.path(), |db| db.put_cf(&db.cf_handle(CF_BLOCKS).unwrap(), victim.cid().to_bytes(), &bad).unwrap());

    let store = Store::open(dir.path(), &test_config()).unwrap();
    let before = store.stored_bytes();
    match store.block(&victim.cid()) {
        Err(StoreError::CorruptBlock { cid, path }) => {
            assert_eq!(cid, victim.cid());
            assert_eq!(path, dir.path());
        }
        other => panic!("expected CorruptBlock, got {other:?}"),
    }
    // Deleted: never served, not even once more.
    assert!(store.block(&victim.cid()).unwrap().is_none());
    assert!(store.block_bytes(&victim.cid()).unwrap().is_none());
    assert!(!store.has_block(&victim.cid()).unwrap());
    assert_eq!(store.stored_bytes(), before - 64 * 1024);
    let snap = store.metrics().snapshot();
    assert_eq!((snap.corrupt_blocks, snap.blocks_read), (1, 0));
    // The untouched block still reads.
    assert_eq!(store.block(&blocks[1].cid()).unwrap().as_deref(), Some(&blocks[1].data()[..]));
    let r = store.verify_integrity().unwrap();
    assert_eq!(r.awaiting_refetch, vec![victim.cid()]);
    assert!(r.violations.is_empty(), "{:?}", r.violations);

    // The refetched copy restores it (through put_block, or by storing the
    // segment again).
    assert_eq!(store.put_block(&m, &victim).unwrap(), BlockPut::Repaired);
    assert_eq!(store.block(&victim.cid()).unwrap().as_deref(), Some(&victim.data()[..]));
    drop(store);
    raw(dir.path(), |db| db.put_cf(&db.cf_handle(CF_BLOCKS).unwrap(), victim.cid().to_bytes(), &bad).unwrap());
    let store = Store::open(dir.path(), &test_config()).unwrap();
    assert!(matches!(store.block(&victim.cid()), Err(StoreError::CorruptBlock { .. })));
    assert_eq!(store.store_segment(&m, &blocks).unwrap(), Commit::AlreadyStored);
    assert_eq!(store.block(&victim.cid()).unwrap().as_deref(), Some(&victim.data()[..]));
    assert_eq!(store.stored_bytes(), before);
    let r = store.verify_integrity().unwrap();
    assert!(r.violations.is_empty() && r.awaiting_refetch.is_empty(), "{r:?}");
}

#[test]
fn a_truncated_block_is_caught_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Publisher::new(2);
    let (m, blocks) = p.next(&[content(3, 8000)], 1000);
    {
        let store = Store::open(dir.path(), &test_config()).unwrap();
        store.store_segment(&m, &blocks).unwrap();
    }
    raw(dir.path(), |db| {
        db.put_cf(&db.cf_handle(CF_BLOCKS).unwrap(), blocks[0].cid().to_bytes(), &blocks[0].data()[..100]).unwrap()
    });
    let store = Store::open(dir.path(), &test_config()).unwrap();
    assert!(matches!(store.block(&blocks[0].cid()), Err(StoreError::CorruptBlock { .. })));
    assert!(store.block(&blocks[0].cid()).unwrap().is_none());
}

fn write_version(path: &std::path::Path, v: u32) {
    raw(path, |db| {
        let meta = db.cf_handle(CF_META).expect("meta cf");
        db.put_cf(&meta, META_SCHEMA_VERSION, v.to_be_bytes()).expect("raw put");
    });
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), &test_config()).unwrap());
    write_version(dir.path(), SCHEMA_VERSION + 1);
    let err = Store::open(dir.path(), &test_config()).unwrap_err();
    match &err {
        StoreError::SchemaTooNew { found, supported, path } => {
            assert_eq!((*found, *supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
            assert_eq!(path, dir.path());
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()) && msg.contains("upgrade shoal"), "{msg}");
}

#[test]
fn a_newer_schema_with_new_column_families_is_refused_before_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), &test_config()).unwrap());
    write_version(dir.path(), SCHEMA_VERSION + 3);
    {
        let mut opts = rocksdb::Options::default();
        opts.create_missing_column_families(true);
        let cfs: Vec<&str> = ALL_CFS.iter().copied().chain(["segments_v4"]).collect();
        drop(rocksdb::DB::open_cf(&opts, dir.path(), cfs).unwrap());
    }
    let err = Store::open(dir.path(), &test_config()).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 3), "{err}");
}

#[test]
fn an_older_schema_is_refused_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path(), &test_config()).unwrap());
    write_version(dir.path(), 0);
    let err = Store::open(dir.path(), &test_config()).unwrap_err();
    assert!(matches!(err, StoreError::SchemaTooOld { found: 0, .. }), "{err}");
    assert!(err.to_string().contains("move the directory aside"), "{err}");
}

#[test]
fn another_database_is_not_taken_for_a_store() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = rocksdb::DB::open(&opts, dir.path()).unwrap();
        db.put(b"k", b"v").unwrap();
    }
    let err = Store::open(dir.path(), &test_config()).unwrap_err();
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
    // And it was not modified into one.
    let listed = rocksdb::DB::list_cf(&rocksdb::Options::default(), dir.path()).unwrap();
    assert_eq!(listed, vec!["default".to_string()]);
}

#[test]
fn a_store_in_use_is_reported_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), &test_config()).unwrap();
    let err = Store::open(dir.path(), &test_config()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("another shoal node"), "{err}");
}

#[test]
fn an_unusable_path_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let path = file.join("store");
    let err = Store::open(&path, &test_config()).unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

/// Opt-in (needs a small filesystem, e.g. `mount -t tmpfs -o size=8m tmpfs
/// /mnt/small`): set `SHOAL_STORE_SMALL_FS=/mnt/small`. Fills the disk and
/// checks that the failure is a `DiskFull` error naming the path, and that
/// what was acknowledged before still reads back after a reopen.
#[test]
fn a_full_disk_is_an_error_naming_the_path() {
    let Some(root) = std::env::var_os("SHOAL_STORE_SMALL_FS") else { return };
    let dir = tempfile::tempdir_in(root).unwrap();
    let mut p = Publisher::new(11);
    let mut acked = Vec::new();
    let err = {
        let store = Store::open(dir.path(), &test_config()).unwrap();
        let mut err = None;
        for i in 0..10_000u64 {
            let (m, b) = p.next(&[content(i, 200_000)], 1000);
            match store.store_segment(&m, &b) {
                Ok(_) => acked.push((m.seq(), b[0].cid())),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        err.expect("the small filesystem filled up")
    };
    println!("disk full after {} segments: {err}", acked.len());
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
    assert!(!acked.is_empty());
}
