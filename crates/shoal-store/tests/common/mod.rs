//! Test data: a publisher that signs real manifests over real blocks.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use shoal_core::{
    BlockRef, ChannelId, ChannelKey, Manifest, ManifestCid, Segment, VerifiedBlock, VerifiedManifest, VerifyPolicy,
};
use shoal_store::StoreConfig;

/// Publish times start here (in the past, so verification accepts them).
pub const T0_MS: u64 = 1_700_000_000_000;

/// A channel that publishes segments in seq order, linking each to the last.
pub struct Publisher {
    key: ChannelKey,
    pub seq: u64,
    pub prev: Option<ManifestCid>,
}

impl Publisher {
    pub fn new(secret: u8) -> Self {
        Self { key: ChannelKey::from_secret_bytes(&[secret; 32]), seq: 0, prev: None }
    }

    pub fn channel(&self) -> ChannelId {
        self.key.channel_id()
    }

    /// Signs a manifest for `seq` (without advancing), publish time
    /// `published_at_ms`, listing `blocks`.
    pub fn sign(
        &self,
        seq: u64,
        prev: Option<ManifestCid>,
        published_at_ms: u64,
        duration_ms: u32,
        refs: Vec<BlockRef>,
    ) -> VerifiedManifest {
        let m = Manifest {
            channel: self.channel(),
            seq,
            published_at_ms,
            prev,
            segment: Segment { number: seq, duration_ms, rendition: 0, keyframe: true, blocks: refs },
            info: None,
        };
        self.key
            .sign_manifest(&m)
            .expect("sign")
            .verify(&VerifyPolicy::default(), T0_MS + 1_000_000_000)
            .expect("verify")
    }

    /// The next segment of this channel from block contents.
    pub fn next(&mut self, contents: &[Bytes], duration_ms: u32) -> (VerifiedManifest, Vec<VerifiedBlock>) {
        let blocks: Vec<VerifiedBlock> = contents.iter().map(|c| VerifiedBlock::from_content(c.clone())).collect();
        let refs = blocks.iter().map(|b| BlockRef { cid: b.cid(), size: b.data().len() as u32 }).collect();
        let m = self.sign(self.seq, self.prev, T0_MS + self.seq * u64::from(duration_ms), duration_ms, refs);
        self.prev = Some(m.cid());
        self.seq += 1;
        (m, blocks)
    }
}

/// Deterministic block content: `len` bytes derived from `tag`.
pub fn content(tag: u64, len: usize) -> Bytes {
    let mut x = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    Bytes::from(v)
}

/// A small-memory config for tests.
pub fn test_config() -> StoreConfig {
    StoreConfig {
        block_cache_bytes: 8 << 20,
        write_buffer_bytes: 8 << 20,
        max_open_files: 64,
        ..StoreConfig::default()
    }
}
