//! Retention: the per-channel live window and byte cap, the node-wide disk
//! budget, and the expiry of blocks whose manifest never came. Eviction runs
//! in passes the node drives from a background task or thread.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap, HashMap},
    sync::{
        Arc,
        mpsc::{RecvTimeoutError, SyncSender, sync_channel},
    },
    thread::JoinHandle,
    time::Duration,
};

use rocksdb::{ReadOptions, WriteBatch};
use shoal_core::{BlockCid, ChannelId, Manifest, SignedManifest};

use super::{Store, WriterState, now_ms, write::segment_bytes};
use crate::{
    StoreError,
    schema::{
        CF_BLOCK_META, CF_BLOCKS, CF_HEADS, CF_MANIFESTS, CF_META, CF_PENDING, META_STORED_BYTES, manifest_key,
        parse_pending_key,
    },
};

/// What one eviction pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvictionReport {
    /// Manifests evicted by a channel's live window or byte cap.
    pub window_evicted: u64,
    /// Manifests evicted to get under the node-wide disk budget.
    pub budget_evicted: u64,
    /// Blocks deleted because no stored manifest lists them any more.
    pub blocks_deleted: u64,
    /// Bytes freed (blocks plus manifests).
    pub bytes_freed: u64,
    /// Blocks put ahead of a manifest that never came, deleted.
    pub pending_expired: u64,
    /// The pass stopped at `max_evictions_per_pass`: run another.
    pub more: bool,
    /// Still over the disk budget with only archive data left to evict.
    pub over_budget: bool,
}

impl EvictionReport {
    fn manifests(&self) -> u64 {
        self.window_evicted + self.budget_evicted
    }
}

/// The oldest stored manifest of a channel, decoded (not re-verified: it
/// was verified on the way in, and eviction only needs its block list).
struct Oldest {
    seq: u64,
    envelope_len: usize,
    manifest: Manifest,
}

impl Store {
    /// Runs one eviction pass now. See [`Self::evict_at`].
    pub fn evict_once(&self) -> Result<EvictionReport, StoreError> {
        self.evict_at(now_ms())
    }

    /// One eviction pass with `now_ms` as the clock (tests use a fake one):
    ///
    /// 1. each non-archive channel drops its oldest segments, in seq order,
    ///    while the rest still fill the live window, or while it is over its
    ///    byte cap; its newest segment always stays;
    /// 2. while the store is over the disk budget, the oldest segment (by
    ///    publish time) of any non-archive channel goes;
    /// 3. blocks put ahead of a manifest more than `pending_ttl_secs` ago
    ///    and still unreferenced are deleted.
    ///
    /// Each segment is evicted in its own batch (manifest, reference counts,
    /// blocks that reach zero, channel record), so a crash mid-pass leaves a
    /// consistent store. At most `max_evictions_per_pass` segments go per
    /// pass; `more` says whether to call again.
    pub fn evict_at(&self, now_ms: u64) -> Result<EvictionReport, StoreError> {
        let mut st = self.lock();
        let cap = u64::from(self.config.max_evictions_per_pass.max(1));
        let window_ms = self.config.live_window_secs.saturating_mul(1000);
        let mut r = EvictionReport::default();

        let mut live: Vec<ChannelId> =
            st.channels.iter().filter(|(_, c)| !c.archive && c.segments > 1).map(|(ch, _)| *ch).collect();
        live.sort_unstable();
        'channels: for ch in live {
            while let Some(rec) = st.channels.get(&ch).copied().filter(|c| c.segments > 1) {
                let Some(oldest) = self.oldest(&ch, rec.first_seq)? else { break };
                let rest_ms = rec.live_duration_ms.saturating_sub(u64::from(oldest.manifest.segment.duration_ms));
                if rest_ms < window_ms && rec.live_bytes <= self.config.channel_max_bytes {
                    break;
                }
                if r.manifests() >= cap {
                    r.more = true;
                    break 'channels;
                }
                self.evict(&mut st, &ch, &oldest, &mut r)?;
                r.window_evicted += 1;
            }
        }

        if !r.more && st.stored_bytes > self.config.disk_budget_bytes {
            self.enforce_budget(&mut st, cap, &mut r)?;
        }
        self.sweep_pending(&mut st, now_ms, cap, &mut r)?;
        if r.manifests() > 0 || r.pending_expired > 0 {
            tracing::debug!(?r, stored_bytes = st.stored_bytes, "eviction pass");
        }
        Ok(r)
    }

    fn enforce_budget(&self, st: &mut WriterState, cap: u64, r: &mut EvictionReport) -> Result<(), StoreError> {
        // Oldest first across channels: a heap of each channel's oldest
        // segment by publish time (one read per channel, then one per pop).
        let mut heap = BinaryHeap::new();
        let mut oldest: HashMap<ChannelId, Oldest> = HashMap::new();
        for (ch, rec) in st.channels.iter().filter(|(_, c)| !c.archive && c.segments > 0) {
            if let Some(o) = self.oldest(ch, rec.first_seq)? {
                heap.push(Reverse((o.manifest.published_at_ms, *ch)));
                oldest.insert(*ch, o);
            }
        }
        while st.stored_bytes > self.config.disk_budget_bytes {
            let Some(Reverse((_, ch))) = heap.pop() else {
                r.over_budget = true;
                tracing::warn!(
                    stored_bytes = st.stored_bytes,
                    budget = self.config.disk_budget_bytes,
                    "over the disk budget with only archive data left; raise [store] disk_budget_bytes"
                );
                break;
            };
            if r.manifests() >= cap {
                r.more = true;
                break;
            }
            let Some(o) = oldest.remove(&ch) else { continue };
            self.evict(st, &ch, &o, r)?;
            r.budget_evicted += 1;
            if let Some(rec) = st.channels.get(&ch).filter(|c| c.segments > 0)
                && let Some(next) = self.oldest(&ch, rec.first_seq)?
            {
                heap.push(Reverse((next.manifest.published_at_ms, ch)));
                oldest.insert(ch, next);
            }
        }
        Ok(())
    }

    fn oldest(&self, ch: &ChannelId, first_seq: u64) -> Result<Option<Oldest>, StoreError> {
        let Some(seq) = self.first_seq_from(ch, first_seq)? else { return Ok(None) };
        let Some(env) = self.manifest_envelope(ch, seq)? else { return Ok(None) };
        let manifest = SignedManifest::decode(&env)
            .map_err(|e| StoreError::CorruptManifest {
                channel: *ch,
                seq,
                path: self.path.clone(),
                detail: e.to_string(),
            })?
            .claimed()
            .clone();
        Ok(Some(Oldest { seq, envelope_len: env.len(), manifest }))
    }

    /// Evicts one segment in one batch.
    fn evict(
        &self,
        st: &mut WriterState,
        ch: &ChannelId,
        o: &Oldest,
        r: &mut EvictionReport,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let (mut freed, mut deleted) = (0u64, 0u64);
        let distinct: BTreeSet<BlockCid> = o.manifest.segment.blocks.iter().map(|b| b.cid).collect();
        for cid in distinct {
            let Some(mut m) = self.block_meta(&cid)? else { continue };
            m.refs = m.refs.saturating_sub(1);
            if m.refs == 0 && m.pending_since_ms == 0 {
                batch.delete_cf(self.cf(CF_BLOCKS), cid.to_bytes());
                batch.delete_cf(self.cf(CF_BLOCK_META), cid.to_bytes());
                if m.present {
                    freed += u64::from(m.size);
                    deleted += 1;
                }
            } else {
                // Still listed by a newer manifest (or waiting for one).
                batch.put_cf(self.cf(CF_BLOCK_META), cid.to_bytes(), m.encode());
            }
        }
        batch.delete_cf(self.cf(CF_MANIFESTS), manifest_key(ch, o.seq));
        let mut rec = st.channels.get(ch).copied().unwrap_or_default();
        rec.segments = rec.segments.saturating_sub(1);
        rec.live_bytes = rec.live_bytes.saturating_sub(segment_bytes(o.manifest.segment.byte_len(), o.envelope_len));
        rec.live_duration_ms = rec.live_duration_ms.saturating_sub(u64::from(o.manifest.segment.duration_ms));
        if rec.segments > 0 {
            rec.first_seq = self.first_seq_from(ch, o.seq.saturating_add(1))?.unwrap_or(o.seq.saturating_add(1));
        }
        batch.put_cf(self.cf(CF_HEADS), ch.as_bytes(), rec.encode());
        let freed_total = freed + o.envelope_len as u64;
        let stored = st.stored_bytes.saturating_sub(freed_total);
        batch.put_cf(self.cf(CF_META), META_STORED_BYTES, stored.to_be_bytes());
        self.write(batch)?;

        self.apply_record(st, *ch, rec);
        st.stored_bytes = stored;
        r.blocks_deleted += deleted;
        r.bytes_freed += freed_total;
        self.metrics.manifests_evicted.inc();
        self.metrics.blocks_evicted.inc_by(deleted);
        self.metrics.block_bytes_evicted.inc_by(freed);
        self.set_stored_gauge(st);
        Ok(())
    }

    fn sweep_pending(
        &self,
        st: &mut WriterState,
        now: u64,
        cap: u64,
        r: &mut EvictionReport,
    ) -> Result<(), StoreError> {
        let cutoff = now.saturating_sub(self.config.pending_ttl_secs.saturating_mul(1000));
        let mut opts = ReadOptions::default();
        // Keys start with put_at_ms (BE): everything before the cutoff.
        opts.set_iterate_upper_bound(cutoff.to_be_bytes().to_vec());
        let mut it = self.db().raw_iterator_cf_opt(self.cf(CF_PENDING), opts);
        it.seek_to_first();
        let mut expired: Vec<(Vec<u8>, u64, BlockCid)> = Vec::new();
        while (expired.len() as u64) < cap
            && let Some(k) = it.key()
        {
            if let Some((at, cid)) = parse_pending_key(k) {
                expired.push((k.to_vec(), at, cid));
            }
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        drop(it);
        if expired.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        let (mut freed, mut unpended, mut deleted) = (0u64, 0u64, 0u64);
        for (key, at, cid) in expired {
            batch.delete_cf(self.cf(CF_PENDING), key);
            let Some(mut m) = self.block_meta(&cid)? else { continue };
            if m.pending_since_ms != at {
                continue;
            }
            unpended += u64::from(m.size);
            if m.refs == 0 {
                batch.delete_cf(self.cf(CF_BLOCKS), cid.to_bytes());
                batch.delete_cf(self.cf(CF_BLOCK_META), cid.to_bytes());
                if m.present {
                    freed += u64::from(m.size);
                    deleted += 1;
                }
            } else {
                m.pending_since_ms = 0;
                batch.put_cf(self.cf(CF_BLOCK_META), cid.to_bytes(), m.encode());
            }
        }
        let stored = st.stored_bytes.saturating_sub(freed);
        batch.put_cf(self.cf(CF_META), META_STORED_BYTES, stored.to_be_bytes());
        self.write(batch)?;
        st.stored_bytes = stored;
        st.pending_bytes = st.pending_bytes.saturating_sub(unpended);
        r.pending_expired += deleted;
        r.blocks_deleted += deleted;
        r.bytes_freed += freed;
        self.metrics.pending_expired.inc_by(deleted);
        self.metrics.blocks_evicted.inc_by(deleted);
        self.metrics.block_bytes_evicted.inc_by(freed);
        self.set_stored_gauge(st);
        Ok(())
    }

    /// Starts a std thread that runs eviction passes every
    /// `eviction_interval_ms` (back to back while a pass reports `more`).
    /// Dropping or [stopping](Evictor::stop) the handle ends it. A node on
    /// tokio can instead call [`Self::evict_once`] from `spawn_blocking` on
    /// its own interval.
    pub fn spawn_evictor(self: &Arc<Self>) -> std::io::Result<Evictor> {
        // Capacity 1: the only message is "stop".
        let (stop, rx) = sync_channel::<()>(1);
        let store = Arc::clone(self);
        let interval = Duration::from_millis(self.config.eviction_interval_ms.max(1));
        let handle = std::thread::Builder::new().name("shoal-store-evict".into()).spawn(move || {
            loop {
                match rx.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
                loop {
                    match store.evict_once() {
                        Ok(r) if r.more => continue,
                        Ok(_) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "eviction pass failed; retrying next interval");
                            break;
                        }
                    }
                }
            }
        })?;
        Ok(Evictor { stop: Some(stop), handle: Some(handle) })
    }
}

/// The background eviction thread. Stops when dropped.
#[derive(Debug)]
pub struct Evictor {
    stop: Option<SyncSender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Evictor {
    /// Stops the thread and waits for a running pass to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.try_send(());
        }
        if let Some(h) = self.handle.take()
            && h.join().is_err()
        {
            tracing::error!("eviction thread panicked");
        }
    }
}

impl Drop for Evictor {
    fn drop(&mut self) {
        self.shutdown();
    }
}
