//! A full consistency check of the store, for tests, the crash test, and an
//! operator's `store check`.

use std::collections::{BTreeSet, HashMap};

use shoal_core::{BlockCid, ChannelId};

use super::Store;
use crate::{
    StoreError,
    schema::{BlockMeta, CF_BLOCK_META, CF_BLOCKS, CF_MANIFESTS, CF_PENDING, manifest_key, parse_pending_key},
};

/// What [`Store::verify_integrity`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    /// Manifests decoded and signature-checked.
    pub manifests_checked: u64,
    /// Blocks read and hashed against their CIDs.
    pub blocks_checked: u64,
    /// Individual invariants evaluated.
    pub invariants_checked: u64,
    /// Blocks listed by a manifest whose bytes were deleted as corrupt and
    /// are waiting for a refetch (expected after a `CorruptBlock` error).
    pub awaiting_refetch: Vec<BlockCid>,
    /// Broken invariants, one line each. Empty on a healthy store.
    pub violations: Vec<String>,
}

impl IntegrityReport {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.invariants_checked += 1;
        if !ok {
            self.violations.push(what());
        }
    }
}

#[derive(Default)]
struct ChannelTotals {
    segments: u64,
    first: Option<u64>,
    last: Option<u64>,
    bytes: u64,
    duration_ms: u64,
}

impl Store {
    /// Checks every invariant the store promises, reading everything:
    ///
    /// - every stored manifest decodes, verifies, and sits under its own
    ///   channel and seq;
    /// - every block it lists is stored and hashes to its CID;
    /// - every block's reference count equals the number of stored
    ///   manifests that list it, and unreferenced blocks are pending;
    /// - each channel's head is at or above its highest stored seq (equal
    ///   to it and with the same CID while that manifest is stored), and its
    ///   totals match what is stored;
    /// - the stored and pending byte totals match.
    ///
    /// Takes the write lock for the whole scan (writes wait) and memory in
    /// proportion to the number of blocks: an offline or test tool.
    pub fn verify_integrity(&self) -> Result<IntegrityReport, StoreError> {
        let st = self.lock();
        let mut r = IntegrityReport::default();
        let mut refs: HashMap<BlockCid, u32> = HashMap::new();
        let mut totals: HashMap<ChannelId, ChannelTotals> = HashMap::new();
        let mut manifest_bytes = 0u64;

        let mut it = self.db().raw_iterator_cf(self.cf(CF_MANIFESTS));
        it.seek_to_first();
        while let (Some(k), Some(env)) = (it.key(), it.value()) {
            let Some(ch) = k.get(..32).and_then(|b| ChannelId::from_bytes(b).ok()) else {
                r.check(false, || format!("manifest key {k:02x?} has no valid channel"));
                it.next();
                continue;
            };
            let seq = u64::from_be_bytes(k.get(32..40).and_then(|b| b.try_into().ok()).unwrap_or([0; 8]));
            r.manifests_checked += 1;
            manifest_bytes += env.len() as u64;
            let v = match self.reverify(&ch, seq, env) {
                Ok(v) => v,
                Err(e) => {
                    r.check(false, || e.to_string());
                    it.next();
                    continue;
                }
            };
            r.check(manifest_key(&ch, v.seq()) == *k, || format!("manifest {} stored under the wrong key", v.cid()));
            let t = totals.entry(ch).or_default();
            t.segments += 1;
            t.first = Some(t.first.map_or(seq, |f| f.min(seq)));
            t.last = Some(t.last.map_or(seq, |l| l.max(seq)));
            t.bytes += v.manifest().segment.byte_len() + env.len() as u64;
            t.duration_ms += u64::from(v.manifest().segment.duration_ms);
            let distinct: BTreeSet<_> = v.manifest().segment.blocks.iter().map(|b| (b.cid, b.size)).collect();
            for (cid, size) in distinct {
                *refs.entry(cid).or_default() += 1;
                let meta = self.block_meta(&cid)?;
                if meta.is_some_and(|m| !m.present) {
                    r.invariants_checked += 1;
                    r.awaiting_refetch.push(cid);
                    continue;
                }
                let data = self.db().get_pinned_cf(self.cf(CF_BLOCKS), cid.to_bytes()).map_err(|e| self.err(e))?;
                r.blocks_checked += 1;
                match data {
                    None => r.check(false, || format!("channel {ch} seq {seq}: block {cid} is missing")),
                    Some(d) => {
                        r.check(cid.verify(&d).is_ok(), || format!("block {cid} does not hash to its CID"));
                        r.check(d.len() == size as usize, || {
                            format!("block {cid} is {} bytes, listed {size}", d.len())
                        });
                    }
                }
            }
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        drop(it);

        // Block records against the recount.
        let mut present_bytes = 0u64;
        let mut pending_from_meta = 0u64;
        let mut it = self.db().raw_iterator_cf(self.cf(CF_BLOCK_META));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let cid = BlockCid::from_bytes(k).ok();
            let meta = BlockMeta::decode(v).ok();
            r.check(cid.is_some() && meta.is_some(), || format!("unreadable block record {k:02x?}"));
            if let (Some(cid), Some(m)) = (cid, meta) {
                let counted = refs.get(&cid).copied().unwrap_or(0);
                r.check(m.refs == counted, || {
                    format!("block {cid} counts {} refs, manifests list it {counted} times", m.refs)
                });
                r.check(m.refs > 0 || m.pending_since_ms != 0, || format!("block {cid} is neither listed nor pending"));
                if m.present {
                    present_bytes += u64::from(m.size);
                    let stored = self.db().get_pinned_cf(self.cf(CF_BLOCKS), k).map_err(|e| self.err(e))?;
                    r.check(stored.is_some(), || format!("block {cid} is recorded present but missing"));
                }
                if m.pending_since_ms != 0 {
                    pending_from_meta += u64::from(m.size);
                }
            }
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        drop(it);

        let mut pending_index = 0u64;
        let mut it = self.db().raw_iterator_cf(self.cf(CF_PENDING));
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let ok = parse_pending_key(k).is_some() && v.len() == 4;
            r.check(ok, || format!("unreadable pending entry {k:02x?}"));
            pending_index += v.try_into().map_or(0, |a: [u8; 4]| u64::from(u32::from_be_bytes(a)));
            it.next();
        }
        it.status().map_err(|e| self.err(e))?;
        drop(it);

        r.check(pending_index == pending_from_meta && pending_index == st.pending_bytes, || {
            format!("pending bytes: index {pending_index}, records {pending_from_meta}, memory {}", st.pending_bytes)
        });
        let expected = present_bytes + manifest_bytes;
        r.check(st.stored_bytes == expected, || {
            format!("stored_bytes says {} but blocks + manifests are {expected}", st.stored_bytes)
        });

        for (ch, rec) in &st.channels {
            let t = totals.remove(ch).unwrap_or_default();
            r.check(rec.segments == t.segments, || {
                format!("channel {ch}: record says {} segments, {} stored", rec.segments, t.segments)
            });
            r.check(rec.live_bytes == t.bytes, || {
                format!("channel {ch}: record says {} bytes, {} stored", rec.live_bytes, t.bytes)
            });
            r.check(rec.live_duration_ms == t.duration_ms, || format!("channel {ch}: duration mismatch"));
            if let Some(first) = t.first {
                r.check(rec.first_seq == first, || {
                    format!("channel {ch}: first_seq {} but lowest stored is {first}", rec.first_seq)
                });
            }
            if let Some(last) = t.last {
                let head = rec.head.map(|h| h.0);
                r.check(head.is_some_and(|h| h >= last), || {
                    format!("channel {ch}: head {head:?} below stored seq {last}")
                });
                if let Some((h, cid)) = rec.head
                    && h == last
                {
                    let stored = self.manifest(ch, h)?.map(|m| m.cid());
                    r.check(stored == Some(cid), || format!("channel {ch}: head CID differs from stored seq {h}"));
                }
            }
        }
        for ch in totals.keys() {
            r.check(false, || format!("channel {ch} has manifests but no record"));
        }
        Ok(r)
    }
}
