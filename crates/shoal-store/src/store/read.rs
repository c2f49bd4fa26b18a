//! The read path: blocks (pinned, checked against their CID), manifests by
//! seq, range or latest K, channel heads and the restored chain state.
//! Reads take no lock.

use std::ops::{Deref, RangeInclusive};

use bytes::Bytes;
use rocksdb::{DBPinnableSlice, ReadOptions, WriteBatch};
use shoal_core::{BlockCid, ChainState, ChannelId, ManifestCid, SignedManifest, VerifiedManifest, chain::MAX_EVIDENCE};

use super::{MAX_MANIFESTS_PER_READ, Store};
use crate::{
    StoreError,
    schema::{
        BlockMeta, CF_BLOCK_META, CF_BLOCKS, CF_EVIDENCE, CF_MANIFESTS, CF_META, CF_PENDING, META_STORED_BYTES,
        decode_evidence, manifest_key, pending_key, seq_of_key,
    },
};

/// A block's bytes pinned in RocksDB's cache or memtable: no copy until the
/// caller makes one. Already checked against its CID when `verify_reads` is
/// on.
pub struct BlockSlice<'a> {
    cid: BlockCid,
    slice: DBPinnableSlice<'a>,
}

impl BlockSlice<'_> {
    /// The block's CID.
    pub fn cid(&self) -> BlockCid {
        self.cid
    }
}

impl Deref for BlockSlice<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.slice
    }
}

impl AsRef<[u8]> for BlockSlice<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.slice
    }
}

impl std::fmt::Debug for BlockSlice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockSlice({}, {} bytes)", self.cid, self.slice.len())
    }
}

/// A stored manifest: its seq and the signed envelope exactly as it was
/// received (it was verified before it was stored; forward it as is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// The seq.
    pub seq: u64,
    /// The signed envelope's wire bytes.
    pub envelope: Vec<u8>,
}

/// A channel's head: the highest seq committed and its manifest CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelHead {
    /// Highest committed seq.
    pub seq: u64,
    /// Its manifest CID.
    pub cid: ManifestCid,
}

/// What the store holds for a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelStats {
    /// The head, if any manifest was ever committed.
    pub head: Option<ChannelHead>,
    /// Kept forever (no window, cap or budget eviction).
    pub archive: bool,
    /// Equivocation evidence is stored for it.
    pub flagged: bool,
    /// Lowest stored seq (when `segments > 0`).
    pub first_seq: u64,
    /// Manifests stored.
    pub segments: u64,
    /// Segment plus manifest bytes stored (shared blocks counted per segment).
    pub live_bytes: u64,
    /// Total duration of the stored segments.
    pub live_duration_ms: u64,
}

/// One stored equivocation record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEquivocation {
    /// The seq that has two versions.
    pub seq: u64,
    /// The manifest we kept for it.
    pub kept: ManifestCid,
    /// The other version (None: a manifest that restarted the chain).
    pub conflicting: Option<ManifestCid>,
    /// The signed envelope that proves it.
    pub evidence: Vec<u8>,
}

/// A raw key and value.
pub(crate) type KeyValue = (Vec<u8>, Vec<u8>);

/// Past the highest possible manifest key of a channel (exclusive bound).
fn channel_upper_bound(channel: &ChannelId) -> Vec<u8> {
    let mut k = manifest_key(channel, u64::MAX).to_vec();
    k.push(0);
    k
}

impl Store {
    /// A block's bytes, pinned (no copy). With `verify_reads` on, bytes that
    /// no longer hash to `cid` are deleted and reported as
    /// [`StoreError::CorruptBlock`]: they are never returned.
    pub fn block(&self, cid: &BlockCid) -> Result<Option<BlockSlice<'_>>, StoreError> {
        let Some(slice) = self.db().get_pinned_cf(self.cf(CF_BLOCKS), cid.to_bytes()).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        if self.config.verify_reads && cid.verify(&slice).is_err() {
            drop(slice);
            return Err(self.quarantine(cid));
        }
        self.metrics.blocks_read.inc();
        self.metrics.block_bytes_read.inc_by(slice.len() as u64);
        Ok(Some(BlockSlice { cid: *cid, slice }))
    }

    /// [`Self::block`], copied into `Bytes` (to hand to an async sender).
    pub fn block_bytes(&self, cid: &BlockCid) -> Result<Option<Bytes>, StoreError> {
        Ok(self.block(cid)?.map(|s| Bytes::copy_from_slice(&s)))
    }

    /// Whether the block's bytes are stored (without reading them).
    pub fn has_block(&self, cid: &BlockCid) -> Result<bool, StoreError> {
        Ok(self.block_meta(cid)?.is_some_and(|m| m.present))
    }

    /// Deletes a block found corrupt and counts it. Its reference count is
    /// kept (manifests still list it), so a refetched copy restores it.
    fn quarantine(&self, cid: &BlockCid) -> StoreError {
        let corrupt = StoreError::CorruptBlock { cid: *cid, path: self.path.clone() };
        let mut st = self.lock();
        // Another reader may have quarantined it, or a writer repaired it,
        // while we waited: act only on what is there now.
        let still_bad = match self.db().get_pinned_cf(self.cf(CF_BLOCKS), cid.to_bytes()) {
            Ok(Some(s)) => cid.verify(&s).is_err(),
            Ok(None) => false,
            Err(e) => return self.err(e),
        };
        if !still_bad {
            return corrupt;
        }
        let meta = match self.block_meta(cid) {
            Ok(m) => m,
            Err(e) => return e,
        };
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.cf(CF_BLOCKS), cid.to_bytes());
        let (mut stored, mut pending) = (st.stored_bytes, st.pending_bytes);
        if let Some(m) = meta {
            if m.present {
                stored = stored.saturating_sub(u64::from(m.size));
            }
            if m.refs == 0 {
                // Nothing lists it: forget it entirely.
                batch.delete_cf(self.cf(CF_BLOCK_META), cid.to_bytes());
                if m.pending_since_ms != 0 {
                    batch.delete_cf(self.cf(CF_PENDING), pending_key(m.pending_since_ms, cid));
                    pending = pending.saturating_sub(u64::from(m.size));
                }
            } else {
                batch.put_cf(self.cf(CF_BLOCK_META), cid.to_bytes(), BlockMeta { present: false, ..m }.encode());
            }
        }
        batch.put_cf(self.cf(CF_META), META_STORED_BYTES, stored.to_be_bytes());
        if let Err(e) = self.write(batch) {
            return e;
        }
        st.stored_bytes = stored;
        st.pending_bytes = pending;
        self.set_stored_gauge(&st);
        self.metrics.corrupt_blocks.inc();
        tracing::error!(%cid, path = %self.path.display(), "corrupt block deleted; it must be refetched");
        corrupt
    }

    /// The signed envelope of manifest `seq` of `channel`, as received.
    pub fn manifest_envelope(&self, channel: &ChannelId, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.db().get_cf(self.cf(CF_MANIFESTS), manifest_key(channel, seq)).map_err(|e| self.err(e))
    }

    /// Manifest `seq` of `channel`, decoded and its signature checked again
    /// (use [`Self::manifest_envelope`] to forward bytes without the cost).
    pub fn manifest(&self, channel: &ChannelId, seq: u64) -> Result<Option<VerifiedManifest>, StoreError> {
        self.manifest_envelope(channel, seq)?.map(|env| self.reverify(channel, seq, &env)).transpose()
    }

    pub(crate) fn reverify(&self, channel: &ChannelId, seq: u64, env: &[u8]) -> Result<VerifiedManifest, StoreError> {
        // Age and clock skew were checked when it arrived; only integrity
        // matters now, so no time bound applies.
        let corrupt =
            |detail: String| StoreError::CorruptManifest { channel: *channel, seq, path: self.path.clone(), detail };
        let v = SignedManifest::decode(env)
            .and_then(|s| s.verify_for(channel, &Default::default(), u64::MAX))
            .map_err(|e| corrupt(e.to_string()))?;
        if v.seq() != seq {
            return Err(corrupt(format!("stored under seq {seq} but says seq {}", v.seq())));
        }
        Ok(v)
    }

    /// Up to `k` (at most [`MAX_MANIFESTS_PER_READ`]) of the newest stored
    /// manifests of `channel`, oldest first.
    pub fn latest_manifests(&self, channel: &ChannelId, k: usize) -> Result<Vec<StoredManifest>, StoreError> {
        let k = k.min(MAX_MANIFESTS_PER_READ);
        let mut opts = ReadOptions::default();
        opts.set_iterate_lower_bound(manifest_key(channel, 0).to_vec());
        opts.set_iterate_upper_bound(channel_upper_bound(channel));
        let mut it = self.db().raw_iterator_cf_opt(self.cf(CF_MANIFESTS), opts);
        it.seek_to_last();
        let mut out = Vec::with_capacity(k.min(64));
        while out.len() < k
            && let (Some(key), Some(v)) = (it.key(), it.value())
        {
            if let Some(seq) = seq_of_key(channel, key) {
                out.push(StoredManifest { seq, envelope: v.to_vec() });
            }
            it.prev();
        }
        it.status().map_err(|e| self.err(e))?;
        out.reverse();
        Ok(out)
    }

    /// Stored manifests of `channel` with seq in `range`, in seq order, at
    /// most `limit` (and at most [`MAX_MANIFESTS_PER_READ`]). Seqs that are
    /// not stored are skipped.
    pub fn manifest_range(
        &self,
        channel: &ChannelId,
        range: RangeInclusive<u64>,
        limit: usize,
    ) -> Result<Vec<StoredManifest>, StoreError> {
        let limit = limit.min(MAX_MANIFESTS_PER_READ);
        let (lo, hi) = (*range.start(), *range.end());
        if lo > hi || limit == 0 {
            return Ok(Vec::new());
        }
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(channel_upper_bound(channel));
        let mut it = self.db().raw_iterator_cf_opt(self.cf(CF_MANIFESTS), opts);
        it.seek(manifest_key(channel, lo));
        let mut out = Vec::new();
        while out.len() < limit
            && let (Some(key), Some(v)) = (it.key(), it.value())
        {
            match seq_of_key(channel, key) {
                Some(seq) if seq <= hi => out.push(StoredManifest { seq, envelope: v.to_vec() }),
                _ => break,
            }
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// The lowest stored seq of `channel` at or above `from`.
    pub(crate) fn first_seq_from(&self, channel: &ChannelId, from: u64) -> Result<Option<u64>, StoreError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(channel_upper_bound(channel));
        let mut it = self.db().raw_iterator_cf_opt(self.cf(CF_MANIFESTS), opts);
        it.seek(manifest_key(channel, from));
        let seq = it.key().and_then(|k| seq_of_key(channel, k));
        it.status().map_err(|e| self.err(e))?;
        Ok(seq)
    }

    /// The channel's head (kept after its manifest is evicted).
    pub fn head(&self, channel: &ChannelId) -> Option<ChannelHead> {
        self.channel_stats(channel).and_then(|s| s.head)
    }

    /// What the store holds for `channel`.
    pub fn channel_stats(&self, channel: &ChannelId) -> Option<ChannelStats> {
        self.record(channel).map(|r| ChannelStats {
            head: r.head.map(|(seq, cid)| ChannelHead { seq, cid }),
            archive: r.archive,
            flagged: r.flagged,
            first_seq: r.first_seq,
            segments: r.segments,
            live_bytes: r.live_bytes,
            live_duration_ms: r.live_duration_ms,
        })
    }

    /// Every channel the store has a record for.
    pub fn channels(&self) -> Vec<ChannelId> {
        self.record_channels()
    }

    /// Bytes stored now (unique blocks plus manifests): what the disk budget
    /// is enforced against.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes_now()
    }

    /// Stored equivocation evidence of `channel` (at most [`MAX_EVIDENCE`]).
    pub fn equivocations(&self, channel: &ChannelId) -> Result<Vec<StoredEquivocation>, StoreError> {
        let mut out = Vec::new();
        for (key, value) in self.evidence_keys(channel, MAX_EVIDENCE)? {
            let seq = seq_of_key(channel, &key).unwrap_or(0);
            let (kept, conflicting, env) =
                decode_evidence(&value).map_err(|w| StoreError::record(&self.path, CF_EVIDENCE, w))?;
            out.push(StoredEquivocation { seq, kept, conflicting, evidence: env.to_vec() });
        }
        Ok(out)
    }

    pub(crate) fn evidence_keys(&self, channel: &ChannelId, max: usize) -> Result<Vec<KeyValue>, StoreError> {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(channel_upper_bound(channel));
        let mut it = self.db().raw_iterator_cf_opt(self.cf(CF_EVIDENCE), opts);
        it.seek(channel.as_bytes());
        let mut out = Vec::new();
        while out.len() < max
            && let (Some(k), Some(v)) = (it.key(), it.value())
        {
            out.push((k.to_vec(), v.to_vec()));
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Rebuilds the channel's [`ChainState`] after a restart: the stored
    /// manifests of the last `window` seqs are replayed in order (so their
    /// `prev` links are checked again), then the stored evidence (so a
    /// flagged channel stays flagged). When the head's own manifest was
    /// evicted, it starts from [`ChainState::with_head`].
    pub fn chain_state(&self, channel: &ChannelId, window: u64) -> Result<Option<ChainState>, StoreError> {
        let Some(head) = self.head(channel) else { return Ok(None) };
        let from = (head.seq + 1).saturating_sub(window.max(2));
        let stored = self.manifest_range(channel, from..=head.seq, MAX_MANIFESTS_PER_READ)?;
        let head_stored = stored.last().is_some_and(|m| m.seq == head.seq);
        let mut cs = if head_stored {
            ChainState::new(*channel, window)
        } else {
            ChainState::with_head(*channel, window, head.seq, head.cid)
        };
        for m in &stored {
            let v = self.reverify(channel, m.seq, &m.envelope)?;
            cs.decide(&v);
        }
        for e in self.equivocations(channel)? {
            if let Ok(v) = SignedManifest::decode(&e.evidence).and_then(|s| s.verify(&Default::default(), u64::MAX)) {
                cs.decide(&v);
            }
        }
        Ok(Some(cs))
    }
}
