//! The on-disk layout: column family names, key encodings and record formats.
//!
//! Every record starts with a format byte so a later schema can tell its own
//! records from these. Integers are big-endian so that keys sort by number
//! (a channel's manifests iterate in seq order, pending blocks in time order).
//! Changing anything here means bumping [`SCHEMA_VERSION`].

use shoal_core::{BlockCid, ChannelId, ManifestCid};

/// The schema this build reads and writes. Opening a store written with
/// another version is refused (see `StoreError::SchemaTooNew`/`SchemaTooOld`).
pub const SCHEMA_VERSION: u32 = 1;

/// Block CID (36 bytes) → block bytes. Large values go to blob files.
pub const CF_BLOCKS: &str = "blocks";
/// Block CID → block record (`BlockMeta`, 18 B): reference count, size, presence, pending time.
pub const CF_BLOCK_META: &str = "block_meta";
/// `put_at_ms` (8, BE) ‖ block CID → size (4, BE): blocks stored ahead of
/// their manifest, oldest first, so the sweep is a range scan.
pub const CF_PENDING: &str = "pending";
/// Channel (32) ‖ seq (8, BE) → the signed manifest envelope, as received.
pub const CF_MANIFESTS: &str = "manifests";
/// Channel (32) → channel record (`ChannelRecord`, 78 B): head, archive flag, retention totals.
pub const CF_HEADS: &str = "heads";
/// Channel (32) ‖ seq (8, BE) ‖ evidence manifest CID (36) → equivocation
/// evidence (kept CID, conflicting CID, the evidence envelope).
pub const CF_EVIDENCE: &str = "evidence";
/// Store-wide values: schema version, stored byte total.
pub const CF_META: &str = "meta";

/// Every column family of this schema (RocksDB's `default` is unused).
pub const ALL_CFS: [&str; 7] = [CF_BLOCKS, CF_BLOCK_META, CF_PENDING, CF_MANIFESTS, CF_HEADS, CF_EVIDENCE, CF_META];

/// `meta` key of the schema version (u32, BE).
pub const META_SCHEMA_VERSION: &[u8] = b"schema_version";
/// `meta` key of the stored byte total (u64, BE): unique block bytes plus
/// manifest bytes, what the disk budget is enforced against.
pub const META_STORED_BYTES: &[u8] = b"stored_bytes";

/// Format byte of [`BlockMeta`] records.
const BLOCK_META_V1: u8 = 1;
/// Format byte of [`ChannelRecord`] records.
const CHANNEL_RECORD_V1: u8 = 1;
/// Format byte of evidence records.
const EVIDENCE_V1: u8 = 1;

/// The key of manifest `seq` of `channel`.
pub fn manifest_key(channel: &ChannelId, seq: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(channel.as_bytes());
    k[32..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The seq in a manifest (or evidence) key of `channel`, if the key belongs
/// to that channel.
pub fn seq_of_key(channel: &ChannelId, key: &[u8]) -> Option<u64> {
    if key.len() < 40 || &key[..32] != channel.as_bytes() {
        return None;
    }
    Some(u64::from_be_bytes(key[32..40].try_into().ok()?))
}

/// The key of a block (its binary CID).
pub fn block_key(cid: &BlockCid) -> [u8; 36] {
    cid.to_bytes()
}

/// The key of a pending-index entry.
pub(crate) fn pending_key(put_at_ms: u64, cid: &BlockCid) -> [u8; 44] {
    let mut k = [0u8; 44];
    k[..8].copy_from_slice(&put_at_ms.to_be_bytes());
    k[8..].copy_from_slice(&cid.to_bytes());
    k
}

/// Splits a pending-index key.
pub(crate) fn parse_pending_key(key: &[u8]) -> Option<(u64, BlockCid)> {
    if key.len() != 44 {
        return None;
    }
    let at = u64::from_be_bytes(key[..8].try_into().ok()?);
    Some((at, BlockCid::from_bytes(&key[8..]).ok()?))
}

/// The key of an evidence record.
pub(crate) fn evidence_key(channel: &ChannelId, seq: u64, evidence: &ManifestCid) -> [u8; 76] {
    let mut k = [0u8; 76];
    k[..40].copy_from_slice(&manifest_key(channel, seq));
    k[40..].copy_from_slice(&evidence.to_bytes());
    k
}

/// Per-block bookkeeping. A block's bytes may be deleted (corruption found on
/// read) while manifests still reference it; `present` says whether they are
/// there, so a refetch can restore them without touching the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct BlockMeta {
    /// Stored manifests that list this block (each manifest counts once).
    pub(crate) refs: u32,
    /// Byte length of the block.
    pub(crate) size: u32,
    /// Whether the bytes are in [`CF_BLOCKS`].
    pub(crate) present: bool,
    /// When the block was put ahead of its manifest (0: not pending).
    pub(crate) pending_since_ms: u64,
}

impl BlockMeta {
    const LEN: usize = 18;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = BLOCK_META_V1;
        b[1..5].copy_from_slice(&self.refs.to_be_bytes());
        b[5..9].copy_from_slice(&self.size.to_be_bytes());
        b[9] = u8::from(self.present);
        b[10..18].copy_from_slice(&self.pending_since_ms.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() != Self::LEN || b[0] != BLOCK_META_V1 {
            return Err("block meta record has an unknown format");
        }
        Ok(Self {
            refs: u32::from_be_bytes(b[1..5].try_into().map_err(|_| "refs")?),
            size: u32::from_be_bytes(b[5..9].try_into().map_err(|_| "size")?),
            present: b[9] != 0,
            pending_since_ms: u64::from_be_bytes(b[10..18].try_into().map_err(|_| "pending")?),
        })
    }
}

/// Per-channel state: the chain head and what retention needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ChannelRecord {
    /// Keep everything (DVR/replay): no window, no byte cap, no budget.
    pub(crate) archive: bool,
    /// Equivocation evidence was recorded for this channel.
    pub(crate) flagged: bool,
    /// Highest committed seq and its manifest CID. Kept after the manifest
    /// itself is evicted, so a restart still rejects replays.
    pub(crate) head: Option<(u64, ManifestCid)>,
    /// Lowest stored seq (meaningful when `segments > 0`).
    pub(crate) first_seq: u64,
    /// Stored manifests.
    pub(crate) segments: u64,
    /// Sum over stored manifests of segment bytes plus manifest bytes.
    pub(crate) live_bytes: u64,
    /// Sum over stored manifests of segment durations.
    pub(crate) live_duration_ms: u64,
}

impl ChannelRecord {
    const LEN: usize = 2 + 8 + 36 + 8 * 4;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = CHANNEL_RECORD_V1;
        b[1] = u8::from(self.archive) | u8::from(self.flagged) << 1 | u8::from(self.head.is_some()) << 2;
        if let Some((seq, cid)) = self.head {
            b[2..10].copy_from_slice(&seq.to_be_bytes());
            b[10..46].copy_from_slice(&cid.to_bytes());
        }
        b[46..54].copy_from_slice(&self.first_seq.to_be_bytes());
        b[54..62].copy_from_slice(&self.segments.to_be_bytes());
        b[62..70].copy_from_slice(&self.live_bytes.to_be_bytes());
        b[70..78].copy_from_slice(&self.live_duration_ms.to_be_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() != Self::LEN || b[0] != CHANNEL_RECORD_V1 {
            return Err("channel record has an unknown format");
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let head = if b[1] & 4 != 0 {
            let cid = ManifestCid::from_bytes(&b[10..46]).map_err(|_| "channel record head CID")?;
            Some((u64_at(2), cid))
        } else {
            None
        };
        Ok(Self {
            archive: b[1] & 1 != 0,
            flagged: b[1] & 2 != 0,
            head,
            first_seq: u64_at(46),
            segments: u64_at(54),
            live_bytes: u64_at(62),
            live_duration_ms: u64_at(70),
        })
    }
}

/// Encodes an evidence value: kept CID, conflicting CID (or 36 zero bytes
/// for "restarted chain"), the evidence envelope.
pub(crate) fn encode_evidence(kept: &ManifestCid, conflicting: Option<&ManifestCid>, envelope: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 36 + 1 + 36 + envelope.len());
    v.push(EVIDENCE_V1);
    v.extend_from_slice(&kept.to_bytes());
    v.push(u8::from(conflicting.is_some()));
    v.extend_from_slice(&conflicting.map_or([0; 36], ManifestCid::to_bytes));
    v.extend_from_slice(envelope);
    v
}

/// Decoded evidence value.
pub(crate) type EvidenceParts<'a> = (ManifestCid, Option<ManifestCid>, &'a [u8]);

/// Decodes an evidence value.
pub(crate) fn decode_evidence(v: &[u8]) -> Result<EvidenceParts<'_>, &'static str> {
    if v.len() < 74 || v[0] != EVIDENCE_V1 {
        return Err("evidence record has an unknown format");
    }
    let kept = ManifestCid::from_bytes(&v[1..37]).map_err(|_| "evidence kept CID")?;
    let conflicting =
        if v[37] != 0 { Some(ManifestCid::from_bytes(&v[38..74]).map_err(|_| "evidence CID")?) } else { None };
    Ok((kept, conflicting, &v[74..]))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use shoal_core::ChannelKey;

    use super::*;

    proptest! {
        #[test]
        fn records_round_trip(refs: u32, size: u32, present: bool, pending: u64,
                              seq: u64, first: u64, segs: u64, bytes: u64, dur: u64,
                              archive: bool, flagged: bool, has_head: bool) {
            let m = BlockMeta { refs, size, present, pending_since_ms: pending };
            prop_assert_eq!(BlockMeta::decode(&m.encode()), Ok(m));
            let head = has_head.then(|| (seq, ManifestCid::of(&seq.to_le_bytes())));
            let r = ChannelRecord { archive, flagged, head, first_seq: first, segments: segs,
                                    live_bytes: bytes, live_duration_ms: dur };
            prop_assert_eq!(ChannelRecord::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn manifest_keys_sort_by_seq_within_a_channel() {
        let ch = ChannelKey::from_secret_bytes(&[1; 32]).channel_id();
        let keys: Vec<_> = [0u64, 1, 255, 256, u64::MAX].iter().map(|s| manifest_key(&ch, *s)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(seq_of_key(&ch, &keys[3]), Some(256));
        let other = ChannelKey::from_secret_bytes(&[2; 32]).channel_id();
        assert_eq!(seq_of_key(&other, &keys[3]), None);
    }

    #[test]
    fn unknown_formats_are_refused() {
        let mut b = BlockMeta::default().encode();
        b[0] = 2;
        assert!(BlockMeta::decode(&b).is_err());
        assert!(ChannelRecord::decode(&[1; 10]).is_err());
        let cid = ManifestCid::of(b"m");
        let e = encode_evidence(&cid, None, b"env");
        assert_eq!(decode_evidence(&e), Ok((cid, None, &b"env"[..])));
        assert!(decode_evidence(&e[..40]).is_err());
    }
}
