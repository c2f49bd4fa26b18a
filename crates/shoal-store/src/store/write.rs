//! The write path: blocks, segments (manifest + blocks + head in one batch),
//! archive flags and equivocation evidence. Only verified types go in.

use std::collections::{BTreeMap, HashMap};

use rocksdb::WriteBatch;
use shoal_core::{
    BlockCid, ChannelId, Equivocation, SignedManifest, VerifiedBlock, VerifiedManifest, chain::MAX_EVIDENCE,
};

use super::{Store, WriterState, now_ms};
use crate::{
    StoreError,
    schema::{
        BlockMeta, CF_BLOCK_META, CF_BLOCKS, CF_EVIDENCE, CF_HEADS, CF_MANIFESTS, CF_META, CF_PENDING, ChannelRecord,
        META_STORED_BYTES, encode_evidence, evidence_key, manifest_key, pending_key,
    },
};

/// What [`Store::store_segment`] / [`Store::commit_segment`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The manifest, its new blocks and the channel record were written
    /// together.
    Stored {
        /// Whether this seq became the channel's head.
        head_advanced: bool,
        /// Blocks written by this commit (the rest were already stored).
        blocks_written: usize,
    },
    /// The same manifest was already stored; nothing changed except that
    /// any given blocks deleted as corrupt were written back.
    AlreadyStored,
}

/// What [`Store::put_block`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockPut {
    /// Stored, waiting for its manifest's commit.
    Pending,
    /// Already stored; nothing written.
    AlreadyStored,
    /// Its bytes had been deleted as corrupt; they are back.
    Repaired,
}

/// The distinct blocks of a manifest with their claimed sizes. A manifest
/// that lists one block twice references it once.
fn distinct_blocks(m: &VerifiedManifest) -> BTreeMap<BlockCid, u32> {
    m.manifest().segment.blocks.iter().map(|b| (b.cid, b.size)).collect()
}

fn check_size(m: &VerifiedManifest, cid: BlockCid, claimed: u32, actual: usize) -> Result<(), StoreError> {
    let actual = u32::try_from(actual).unwrap_or(u32::MAX);
    if claimed != actual {
        return Err(StoreError::BlockSizeMismatch { cid, channel: m.channel(), seq: m.seq(), claimed, actual });
    }
    Ok(())
}

impl Store {
    /// Stores a block of `manifest` ahead of the manifest's commit (a
    /// fetcher receives blocks one at a time). The block is "pending": it
    /// counts against `max_pending_bytes` and is deleted after
    /// `pending_ttl_secs` unless [`Self::commit_segment`] takes it first.
    ///
    /// Also restores a block that was deleted as corrupt.
    pub fn put_block(&self, manifest: &VerifiedManifest, block: &VerifiedBlock) -> Result<BlockPut, StoreError> {
        let cid = block.cid();
        let Some(&claimed) = distinct_blocks(manifest).get(&cid) else {
            return Err(StoreError::BlockNotInManifest { cid, channel: manifest.channel(), seq: manifest.seq() });
        };
        check_size(manifest, cid, claimed, block.data().len())?;
        let size = u64::from(claimed);
        let mut st = self.lock();
        let mut batch = WriteBatch::default();
        let (outcome, meta, pending_add) = match self.block_meta(&cid)? {
            Some(m) if m.present => return Ok(BlockPut::AlreadyStored),
            Some(m) => (BlockPut::Repaired, BlockMeta { present: true, ..m }, 0),
            None => {
                if st.pending_bytes + size > self.config.max_pending_bytes {
                    return Err(StoreError::PendingFull {
                        pending_bytes: st.pending_bytes,
                        limit: self.config.max_pending_bytes,
                    });
                }
                let at = now_ms().max(1);
                batch.put_cf(self.cf(CF_PENDING), pending_key(at, &cid), claimed.to_be_bytes());
                (BlockPut::Pending, BlockMeta { refs: 0, size: claimed, present: true, pending_since_ms: at }, size)
            }
        };
        batch.put_cf(self.cf(CF_BLOCKS), cid.to_bytes(), block.data());
        batch.put_cf(self.cf(CF_BLOCK_META), cid.to_bytes(), meta.encode());
        let stored = st.stored_bytes + size;
        batch.put_cf(self.cf(CF_META), META_STORED_BYTES, stored.to_be_bytes());
        self.write(batch)?;
        st.stored_bytes = stored;
        st.pending_bytes += pending_add;
        self.metrics.blocks_written.inc();
        self.metrics.block_bytes_written.inc_by(size);
        self.set_stored_gauge(&st);
        Ok(outcome)
    }

    /// Commits a segment whose blocks are all stored already (put with
    /// [`Self::put_block`]). Fails with [`StoreError::MissingBlocks`], writing
    /// nothing, if any is not.
    pub fn commit_segment(&self, manifest: &VerifiedManifest) -> Result<Commit, StoreError> {
        self.store_segment(manifest, &[])
    }

    /// Stores a segment atomically: `blocks` (any of the manifest's blocks
    /// not stored yet), the signed manifest, the block reference counts and
    /// the channel head go in one `WriteBatch` with the WAL on. A reader sees
    /// all of it or none of it; a crash keeps all of it or none of it.
    ///
    /// The head advances when `seq` is above it; a lower seq (a backfill) is
    /// stored without moving it. Decide with [`shoal_core::ChainState`]
    /// first: the store refuses only a different manifest at a stored seq
    /// ([`StoreError::SeqConflict`]).
    pub fn store_segment(&self, manifest: &VerifiedManifest, blocks: &[VerifiedBlock]) -> Result<Commit, StoreError> {
        let (channel, seq) = (manifest.channel(), manifest.seq());
        let refs = distinct_blocks(manifest);
        let mut provided: HashMap<BlockCid, &VerifiedBlock> = HashMap::with_capacity(blocks.len());
        for b in blocks {
            let Some(&claimed) = refs.get(&b.cid()) else {
                return Err(StoreError::BlockNotInManifest { cid: b.cid(), channel, seq });
            };
            check_size(manifest, b.cid(), claimed, b.data().len())?;
            provided.insert(b.cid(), b);
        }
        let envelope = manifest.encode();
        let key = manifest_key(&channel, seq);

        let mut st = self.lock();
        if let Some(stored) = self.db().get_pinned_cf(self.cf(CF_MANIFESTS), key).map_err(|e| self.err(e))? {
            if *stored == *envelope {
                drop(stored);
                self.repair_blocks(&mut st, provided.values().copied())?;
                return Ok(Commit::AlreadyStored);
            }
            let stored_cid = SignedManifest::decode(&stored)
                .and_then(|s| s.verify(&Default::default(), u64::MAX))
                .map(|v| v.cid())
                .map_err(|e| StoreError::CorruptManifest {
                    channel,
                    seq,
                    path: self.path.clone(),
                    detail: e.to_string(),
                })?;
            if stored_cid == manifest.cid() {
                drop(stored);
                self.repair_blocks(&mut st, provided.values().copied())?;
                return Ok(Commit::AlreadyStored);
            }
            return Err(StoreError::SeqConflict { channel, seq, stored: stored_cid, offered: manifest.cid() });
        }

        let mut batch = WriteBatch::default();
        let (mut missing, mut added, mut unpended, mut written) = (Vec::new(), 0u64, 0u64, 0usize);
        for (&cid, &claimed) in &refs {
            let meta = self.block_meta(&cid)?;
            if let Some(m) = meta
                && m.size != claimed
            {
                return Err(StoreError::BlockSizeMismatch { cid, channel, seq, claimed, actual: m.size });
            }
            let mut m = meta.unwrap_or(BlockMeta { refs: 0, size: claimed, present: false, pending_since_ms: 0 });
            if !m.present {
                match provided.get(&cid) {
                    Some(b) => {
                        batch.put_cf(self.cf(CF_BLOCKS), cid.to_bytes(), b.data());
                        m.present = true;
                        added += u64::from(claimed);
                        written += 1;
                    }
                    None => {
                        missing.push(cid);
                        continue;
                    }
                }
            }
            if m.pending_since_ms != 0 {
                batch.delete_cf(self.cf(CF_PENDING), pending_key(m.pending_since_ms, &cid));
                unpended += u64::from(m.size);
                m.pending_since_ms = 0;
            }
            m.refs = m.refs.saturating_add(1);
            batch.put_cf(self.cf(CF_BLOCK_META), cid.to_bytes(), m.encode());
        }
        if !missing.is_empty() {
            return Err(StoreError::MissingBlocks { channel, seq, missing });
        }
        batch.put_cf(self.cf(CF_MANIFESTS), key, &envelope);

        let m = manifest.manifest();
        let mut rec = st.channels.get(&channel).copied().unwrap_or_default();
        let head_advanced = rec.head.is_none_or(|(h, _)| seq > h);
        if head_advanced {
            rec.head = Some((seq, manifest.cid()));
        }
        if rec.segments == 0 || seq < rec.first_seq {
            rec.first_seq = seq;
        }
        rec.segments += 1;
        rec.live_bytes += segment_bytes(m.segment.byte_len(), envelope.len());
        rec.live_duration_ms += u64::from(m.segment.duration_ms);
        batch.put_cf(self.cf(CF_HEADS), channel.as_bytes(), rec.encode());
        let stored = st.stored_bytes + added + envelope.len() as u64;
        batch.put_cf(self.cf(CF_META), META_STORED_BYTES, stored.to_be_bytes());
        self.write(batch)?;

        self.apply_record(&mut st, channel, rec);
        st.stored_bytes = stored;
        st.pending_bytes = st.pending_bytes.saturating_sub(unpended);
        self.metrics.manifests_written.inc();
        self.metrics.blocks_written.inc_by(written as u64);
        self.metrics.block_bytes_written.inc_by(added);
        self.set_stored_gauge(&st);
        tracing::trace!(channel = %channel, seq, head_advanced, blocks = written, "segment stored");
        Ok(Commit::Stored { head_advanced, blocks_written: written })
    }

    /// Writes back any of `blocks` whose bytes were deleted as corrupt
    /// (the manifest is stored, so their counts are already right).
    fn repair_blocks<'a>(
        &self,
        st: &mut WriterState,
        blocks: impl Iterator<Item = &'a VerifiedBlock>,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        let (mut added, mut written) = (0u64, 0u64);
        for b in blocks {
            if let Some(m) = self.block_meta(&b.cid())?
                && !m.present
            {
                batch.put_cf(self.cf(CF_BLOCKS), b.cid().to_bytes(), b.data());
                batch.put_cf(self.cf(CF_BLOCK_META), b.cid().to_bytes(), BlockMeta { present: true, ..m }.encode());
                added += u64::from(m.size);
                written += 1;
            }
        }
        if written == 0 {
            return Ok(());
        }
        let stored = st.stored_bytes + added;
        batch.put_cf(self.cf(CF_META), META_STORED_BYTES, stored.to_be_bytes());
        self.write(batch)?;
        st.stored_bytes = stored;
        self.metrics.blocks_written.inc_by(written);
        self.metrics.block_bytes_written.inc_by(added);
        self.set_stored_gauge(st);
        Ok(())
    }

    /// Marks `channel` as archive (keep everything: DVR and replay) or back
    /// to live (the window and caps apply again on the next eviction pass).
    pub fn set_archive(&self, channel: &ChannelId, archive: bool) -> Result<(), StoreError> {
        let mut st = self.lock();
        let mut rec = st.channels.get(channel).copied().unwrap_or_default();
        rec.archive = archive;
        self.put_record(&mut st, channel, rec)
    }

    /// Keeps equivocation evidence for `channel` and flags it (at most
    /// [`MAX_EVIDENCE`] records per channel; returns false when full or
    /// already recorded). `evidence` is the manifest `eq.evidence` names.
    pub fn record_equivocation(&self, eq: &Equivocation, evidence: &VerifiedManifest) -> Result<bool, StoreError> {
        let channel = evidence.channel();
        let key = evidence_key(&channel, eq.seq, &evidence.cid());
        let mut st = self.lock();
        let cf = self.cf(CF_EVIDENCE);
        if self.db().get_pinned_cf(cf, key).map_err(|e| self.err(e))?.is_some() {
            return Ok(false);
        }
        if self.evidence_keys(&channel, MAX_EVIDENCE)?.len() >= MAX_EVIDENCE {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, key, encode_evidence(&eq.kept, eq.conflicting.as_ref(), &evidence.encode()));
        let mut rec = st.channels.get(&channel).copied().unwrap_or_default();
        rec.flagged = true;
        batch.put_cf(self.cf(CF_HEADS), channel.as_bytes(), rec.encode());
        self.write(batch)?;
        self.apply_record(&mut st, channel, rec);
        tracing::warn!(channel = %channel, seq = eq.seq, "equivocation evidence stored");
        Ok(true)
    }

    pub(crate) fn put_record(
        &self,
        st: &mut WriterState,
        channel: &ChannelId,
        rec: ChannelRecord,
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_HEADS), channel.as_bytes(), rec.encode());
        self.write(batch)?;
        self.apply_record(st, *channel, rec);
        Ok(())
    }
}

/// What a stored segment counts against its channel's byte cap: its blocks
/// (shared ones counted in each segment, a conservative bound) plus the
/// manifest.
pub(crate) fn segment_bytes(block_bytes: u64, envelope_len: usize) -> u64 {
    block_bytes + envelope_len as u64
}
