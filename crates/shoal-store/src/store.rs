//! The store handle: opening RocksDB, the schema check, and the state the
//! single writer keeps.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Mutex, MutexGuard, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, DBWithThreadMode, Options,
    SingleThreaded, WriteBatch, WriteOptions,
};
use shoal_core::{BlockCid, ChannelId};

use crate::{
    StoreConfig, StoreError, StoreMetrics,
    schema::{
        ALL_CFS, BlockMeta, CF_BLOCK_META, CF_BLOCKS, CF_HEADS, CF_MANIFESTS, CF_META, CF_PENDING, ChannelRecord,
        META_SCHEMA_VERSION, META_STORED_BYTES, SCHEMA_VERSION,
    },
};

mod integrity;
mod read;
mod retention;
mod write;

pub use integrity::IntegrityReport;
pub use read::{BlockSlice, ChannelHead, ChannelStats, StoredEquivocation, StoredManifest};
pub use retention::{EvictionReport, Evictor};
pub use write::{BlockPut, Commit};

/// RocksDB with column families that are never created or dropped after
/// open, so plain `&ColumnFamily` handles work from any thread.
type Db = DBWithThreadMode<SingleThreaded>;

/// Most manifests one range or latest-K read returns, whatever the caller
/// asks: a 5-minute window of 1 s segments is 300, so 1024 covers any live
/// window while bounding one reply's memory (1024 × 64 KiB worst case).
pub const MAX_MANIFESTS_PER_READ: usize = 1024;

/// What the single writer keeps in memory, always equal to what is on disk
/// (it is updated only after a batch is written).
#[derive(Debug, Default)]
pub(crate) struct WriterState {
    /// One record per channel ever stored; the node bounds how many
    /// channels it follows, and a record is 78 bytes.
    pub(crate) channels: HashMap<ChannelId, ChannelRecord>,
    /// Unique block bytes plus manifest bytes (mirrors `meta/stored_bytes`).
    pub(crate) stored_bytes: u64,
    /// Bytes of blocks put ahead of their manifest.
    pub(crate) pending_bytes: u64,
}

/// A RocksDB store of verified blocks, signed manifests and channel heads.
///
/// Share it behind an `Arc`: reads run concurrently without locks; writes
/// (commits, block puts, eviction) take one mutex, because they update
/// reference counts and per-channel totals read-modify-write.
pub struct Store {
    db: Db,
    path: PathBuf,
    config: StoreConfig,
    metrics: StoreMetrics,
    writer: Mutex<WriterState>,
    /// A copy of `WriterState::channels` that readers use, so `head()` and
    /// `channel_stats()` never wait behind an eviction pass holding the
    /// writer lock; the writer updates it right after each batch.
    records: RwLock<HashMap<ChannelId, ChannelRecord>>,
    /// A copy of `WriterState::stored_bytes` for readers.
    stored: AtomicU64,
    write_opts: WriteOptions,
    /// Kept so the cache outlives every column family that uses it.
    _cache: Cache,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

fn cf_options(name: &str, config: &StoreConfig, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    // Index and filter blocks live in the cache too, so the cache size
    // bounds them instead of growing with the number of files.
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table.set_bloom_filter(10.0, false);
    let mut o = Options::default();
    o.set_block_based_table_factory(&table);
    let wb = usize::try_from(config.write_buffer_bytes).unwrap_or(usize::MAX);
    if name == CF_BLOCKS {
        // Video is already compressed. Blocks of 4 KiB and up live in blob
        // files, so compaction moves 36-byte pointers rather than rewriting
        // 256 KiB values, and deletes are reclaimed by blob GC.
        o.set_compression_type(DBCompressionType::None);
        o.set_enable_blob_files(true);
        o.set_min_blob_size(4096);
        o.set_blob_file_size(64 * 1024 * 1024);
        o.set_blob_compression_type(DBCompressionType::None);
        o.set_enable_blob_gc(true);
        o.set_blob_gc_age_cutoff(0.5);
        o.set_blob_cache(cache);
        // Four quarter-size memtables: one fills while others flush, so a
        // flush rarely stalls writers (p99 latency), within the same total.
        o.set_write_buffer_size((wb / 4).max(1 << 20));
        o.set_max_write_buffer_number(4);
    } else {
        o.set_compression_type(DBCompressionType::Lz4);
        o.set_write_buffer_size((wb / 8).max(1 << 20));
        o.set_max_write_buffer_number(2);
    }
    o
}

fn db_options(config: &StoreConfig) -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_open_files(i32::try_from(config.max_open_files).unwrap_or(i32::MAX));
    o.set_db_write_buffer_size(usize::try_from(config.write_buffer_bytes).unwrap_or(usize::MAX));
    // Bound the WAL: past this RocksDB flushes the column families that pin
    // old WAL files, so recovery time and WAL disk use stay small.
    o.set_max_total_wal_size(config.write_buffer_bytes.saturating_mul(4));
    o.set_max_background_jobs(2);
    // RocksDB's own info log: a few small files, not an ever-growing one.
    o.set_keep_log_file_num(4);
    o.set_max_log_file_size(4 * 1024 * 1024);
    o.set_paranoid_checks(true);
    o
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Store {
    /// Opens (or creates) the store in `path`.
    ///
    /// Refuses a store written with another schema version, a directory
    /// holding some other database, and one another process has open.
    pub fn open(path: impl AsRef<Path>, config: &StoreConfig) -> Result<Self, StoreError> {
        Self::open_with_metrics(path, config, StoreMetrics::default())
    }

    /// [`Self::open`] with metrics the caller registered.
    pub fn open_with_metrics(
        path: impl AsRef<Path>,
        config: &StoreConfig,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| StoreError::from_io(&path, &e))?;
        let existing = path.join("CURRENT").exists();
        if existing {
            check_existing_layout(&path)?;
        }
        let cache = Cache::new_lru_cache(usize::try_from(config.block_cache_bytes).unwrap_or(usize::MAX));
        let cfs = ALL_CFS.iter().map(|n| ColumnFamilyDescriptor::new(*n, cf_options(n, config, &cache)));
        let db =
            Db::open_cf_descriptors(&db_options(config), &path, cfs).map_err(|e| StoreError::from_rocks(&path, e))?;
        let mut write_opts = WriteOptions::default();
        write_opts.set_sync(config.sync_writes);
        write_opts.disable_wal(false);
        let store = Self {
            db,
            path,
            config: config.clone(),
            metrics,
            writer: Mutex::new(WriterState::default()),
            records: RwLock::new(HashMap::new()),
            stored: AtomicU64::new(0),
            write_opts,
            _cache: cache,
        };
        store.check_schema()?;
        let state = store.load_state()?;
        store.set_stored_gauge(&state);
        *store.records.write().unwrap_or_else(PoisonError::into_inner) = state.channels.clone();
        *store.lock() = state;
        tracing::info!(path = %store.path.display(), "store opened");
        Ok(store)
    }

    /// The store directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The configuration it was opened with.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// The store's metrics (clones share values).
    pub fn metrics(&self) -> &StoreMetrics {
        &self.metrics
    }

    /// Syncs the WAL to disk. Call on shutdown when `sync_writes` is off, so
    /// a power cut right after shutdown loses nothing.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|e| self.err(e))
    }

    /// RocksDB's memory figures: (block cache in use, memtables, table
    /// readers outside the cache), for the node's metrics and RSS budget.
    pub fn memory_usage(&self) -> (u64, u64, u64) {
        let p = |cf: &str, name: &str| self.db.property_int_value_cf(self.cf(cf), name).ok().flatten().unwrap_or(0);
        // The cache is shared by every column family of ours (RocksDB's
        // unused `default` has its own, empty one); memtables and table
        // readers are per column family.
        let sum = |name: &str| ALL_CFS.iter().map(|cf| p(cf, name)).sum();
        (
            p(CF_BLOCKS, "rocksdb.block-cache-usage"),
            sum("rocksdb.cur-size-all-mem-tables"),
            sum("rocksdb.estimate-table-readers-mem"),
        )
    }

    /// Bytes the store occupies on disk now (SST plus blob files; excludes
    /// the WAL). Lags deletes until compaction and blob GC reclaim them.
    pub fn disk_usage(&self) -> u64 {
        ALL_CFS
            .iter()
            .filter_map(|n| self.db.cf_handle(n))
            .map(|cf| {
                let p = |name: &str| self.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0);
                p("rocksdb.total-sst-files-size") + p("rocksdb.total-blob-file-size")
            })
            .sum()
    }

    pub(crate) fn err(&self, e: rocksdb::Error) -> StoreError {
        StoreError::from_rocks(&self.path, e)
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        // Invariant: open() created every column family in ALL_CFS and none
        // is ever dropped.
        self.db.cf_handle(name).unwrap_or_else(|| unreachable!("column family {name} exists after open"))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, WriterState> {
        // WriterState is only changed after a successful write, never half
        // way, so a panic elsewhere cannot leave it inconsistent.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `rec` for `channel` in the writer state and the readers'
    /// copy. Call only after the batch holding it was written.
    pub(crate) fn apply_record(&self, st: &mut WriterState, channel: ChannelId, rec: ChannelRecord) {
        st.channels.insert(channel, rec);
        self.records.write().unwrap_or_else(PoisonError::into_inner).insert(channel, rec);
    }

    pub(crate) fn set_stored_gauge(&self, st: &WriterState) {
        self.stored.store(st.stored_bytes, Ordering::Relaxed);
        self.metrics.stored_bytes.set(i64::try_from(st.stored_bytes).unwrap_or(i64::MAX));
    }

    pub(crate) fn stored_bytes_now(&self) -> u64 {
        self.stored.load(Ordering::Relaxed)
    }

    pub(crate) fn record(&self, channel: &ChannelId) -> Option<ChannelRecord> {
        self.records.read().unwrap_or_else(PoisonError::into_inner).get(channel).copied()
    }

    pub(crate) fn record_channels(&self) -> Vec<ChannelId> {
        self.records.read().unwrap_or_else(PoisonError::into_inner).keys().copied().collect()
    }

    pub(crate) fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.db.write_opt(batch, &self.write_opts).map_err(|e| self.err(e))
    }

    pub(crate) fn block_meta(&self, cid: &BlockCid) -> Result<Option<BlockMeta>, StoreError> {
        match self.db.get_pinned_cf(self.cf(CF_BLOCK_META), cid.to_bytes()).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => BlockMeta::decode(&v).map(Some).map_err(|w| StoreError::record(&self.path, CF_BLOCK_META, w)),
        }
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let meta = self.cf(CF_META);
        let found = self.db.get_cf(meta, META_SCHEMA_VERSION).map_err(|e| self.err(e))?;
        match found {
            Some(v) => {
                let found = decode_version(&v).ok_or_else(|| StoreError::NotAStore {
                    path: self.path.clone(),
                    detail: "the schema version record is unreadable".into(),
                })?;
                version_check(&self.path, found)
            }
            None => {
                // A fresh store, or one that crashed between creating its
                // column families and writing the version: both are empty.
                for cf in [CF_BLOCKS, CF_MANIFESTS, CF_HEADS] {
                    let mut it = self.db.raw_iterator_cf(self.cf(cf));
                    it.seek_to_first();
                    if it.valid() {
                        return Err(StoreError::NotAStore {
                            path: self.path.clone(),
                            detail: format!("column family {cf} has data but there is no schema version"),
                        });
                    }
                }
                let mut b = WriteBatch::default();
                b.put_cf(meta, META_SCHEMA_VERSION, SCHEMA_VERSION.to_be_bytes());
                b.put_cf(meta, META_STORED_BYTES, 0u64.to_be_bytes());
                self.write(b)?;
                self.flush()
            }
        }
    }

    fn load_state(&self) -> Result<WriterState, StoreError> {
        let mut st = WriterState::default();
        if let Some(v) = self.db.get_cf(self.cf(CF_META), META_STORED_BYTES).map_err(|e| self.err(e))? {
            let arr: [u8; 8] =
                v.as_slice().try_into().map_err(|_| StoreError::record(&self.path, CF_META, "stored_bytes"))?;
            st.stored_bytes = u64::from_be_bytes(arr);
        }
        let mut it = self.db.raw_iterator_cf(self.cf(CF_HEADS));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let ch = ChannelId::from_bytes(k).map_err(|_| StoreError::record(&self.path, CF_HEADS, "channel key"))?;
            let rec = ChannelRecord::decode(v).map_err(|w| StoreError::record(&self.path, CF_HEADS, w))?;
            st.channels.insert(ch, rec);
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        let mut it = self.db.raw_iterator_cf(self.cf(CF_PENDING));
        it.seek_to_first();
        while let Some(v) = it.value() {
            let arr: [u8; 4] = v.try_into().map_err(|_| StoreError::record(&self.path, CF_PENDING, "size"))?;
            st.pending_bytes += u64::from(u32::from_be_bytes(arr));
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        Ok(st)
    }
}

fn decode_version(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

fn version_check(path: &Path, found: u32) -> Result<(), StoreError> {
    use std::cmp::Ordering;
    match found.cmp(&SCHEMA_VERSION) {
        Ordering::Equal => Ok(()),
        Ordering::Greater => {
            Err(StoreError::SchemaTooNew { path: path.to_path_buf(), found, supported: SCHEMA_VERSION })
        }
        // v1 is the first schema: there is nothing to migrate from yet. A
        // future version adds its migrations here, each in one WriteBatch.
        Ordering::Less => Err(StoreError::SchemaTooOld { path: path.to_path_buf(), found, supported: SCHEMA_VERSION }),
    }
}

/// Before opening read-write (which would create column families): if the
/// database on disk has column families this schema does not know, or lacks
/// some, read its version read-only and refuse with the right error.
fn check_existing_layout(path: &Path) -> Result<(), StoreError> {
    let listed = Db::list_cf(&Options::default(), path).map_err(|e| StoreError::from_rocks(path, e))?;
    let unknown: Vec<&String> = listed.iter().filter(|n| *n != "default" && !ALL_CFS.contains(&n.as_str())).collect();
    let lacking: Vec<&&str> = ALL_CFS.iter().filter(|n| !listed.iter().any(|l| l == *n)).collect();
    if unknown.is_empty() && lacking.is_empty() {
        return Ok(());
    }
    let found = if listed.iter().any(|n| n == CF_META) {
        let ro = Db::open_cf_for_read_only(&Options::default(), path, &listed, false)
            .map_err(|e| StoreError::from_rocks(path, e))?;
        let meta = ro.cf_handle(CF_META).ok_or_else(|| StoreError::record(path, CF_META, "missing"))?;
        ro.get_cf(meta, META_SCHEMA_VERSION)
            .map_err(|e| StoreError::from_rocks(path, e))?
            .and_then(|v| decode_version(&v))
    } else {
        None
    };
    match found {
        Some(v) if v != SCHEMA_VERSION => version_check(path, v),
        Some(_) => Err(StoreError::Corruption {
            path: path.to_path_buf(),
            detail: format!(
                "schema v{SCHEMA_VERSION} store lacks column families {lacking:?} or has unknown {unknown:?}"
            ),
        }),
        None => Err(StoreError::NotAStore {
            path: path.to_path_buf(),
            detail: format!("its column families are {listed:?}, with no shoal schema version"),
        }),
    }
}
