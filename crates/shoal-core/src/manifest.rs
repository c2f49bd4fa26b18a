//! Manifests: what a publisher signs for every segment.
//!
//! [`Manifest`] is the plain value a publisher fills in. [`ChannelKey::sign_manifest`]
//! encodes it once and signs those bytes. [`SignedManifest::decode`] parses
//! peer bytes with size bounds; [`SignedManifest::verify`] checks the signature
//! over the exact received bytes (never a re-encoding), the key/channel match
//! and the policy bounds, and is the only way to get a [`VerifiedManifest`].

use bytes::Bytes;
use prost::Message;
use shoal_proto::v1 as pb;

use crate::{
    BlockCid, ChannelId, ChannelKey, ManifestCid,
    limits::{MAX_BLOCK_SIZE, MAX_BLOCKS_PER_SEGMENT, MAX_SIGNED_MANIFEST_BYTES, MAX_TEXT_BYTES},
};

/// Domain separator for manifest signatures: `"shoal/manifest/v1"` and a NUL,
/// so no other shoal signature (or any other protocol's) can be replayed as a
/// manifest signature.
pub const MANIFEST_SIGNING_DOMAIN: &[u8] = b"shoal/manifest/v1\0";

/// Why a manifest was not accepted. Each message names what was wrong and the
/// bound it broke.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Larger than [`MAX_SIGNED_MANIFEST_BYTES`] (or the policy's bound).
    #[error("signed manifest is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Received size.
        size: usize,
        /// The bound.
        limit: usize,
    },
    /// Not a valid protobuf `SignedManifest`/`Manifest`.
    #[error("malformed manifest: {0}")]
    Malformed(String),
    /// The signature does not verify under the channel key.
    #[error("bad signature on manifest seq {seq} for channel {channel}")]
    BadSignature {
        /// Claimed channel.
        channel: ChannelId,
        /// Claimed seq.
        seq: u64,
    },
    /// A manifest that arrived on another channel's topic or request.
    #[error("manifest is for channel {actual}, expected {expected}")]
    WrongChannel {
        /// The channel we were reading.
        expected: ChannelId,
        /// The channel in the manifest.
        actual: ChannelId,
    },
    /// Too many blocks, a zero/oversized block, or an empty segment.
    #[error("manifest seq {seq}: {what}")]
    OutOfBounds {
        /// Claimed seq.
        seq: u64,
        /// Which bound.
        what: String,
    },
    /// Signed further in the future than the allowed clock skew.
    #[error(
        "manifest seq {seq} is dated {ahead_ms} ms in the future; the allowed skew is {skew_ms} ms (check this machine's clock)"
    )]
    FromTheFuture {
        /// Claimed seq.
        seq: u64,
        /// How far ahead.
        ahead_ms: u64,
        /// The bound.
        skew_ms: u64,
    },
    /// Older than the policy's maximum age (a replay on a live topic).
    #[error("manifest seq {seq} is {age_ms} ms old; live announcements older than {max_age_ms} ms are ignored")]
    TooOld {
        /// Claimed seq.
        seq: u64,
        /// Its age.
        age_ms: u64,
        /// The bound.
        max_age_ms: u64,
    },
}

/// One block of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockRef {
    /// The block's CID.
    pub cid: BlockCid,
    /// Its size in bytes.
    pub size: u32,
}

/// Optional description of the stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamInfo {
    /// Video codec name, e.g. `h264`.
    pub video_codec: String,
    /// Audio codec name, e.g. `aac`.
    pub audio_codec: String,
    /// Nominal bitrate.
    pub bitrate_kbps: u32,
    /// Stream title.
    pub title: String,
}

/// The segment a manifest announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Segment number within the rendition.
    pub number: u64,
    /// True duration in milliseconds.
    pub duration_ms: u32,
    /// Rendition id.
    pub rendition: u32,
    /// Starts with a random access point.
    pub keyframe: bool,
    /// Blocks in playback order.
    pub blocks: Vec<BlockRef>,
}

impl Segment {
    /// Total bytes of the segment.
    pub fn byte_len(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.size)).sum()
    }
}

/// A manifest's content, before signing or after verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The channel.
    pub channel: ChannelId,
    /// Strictly increasing per channel.
    pub seq: u64,
    /// Unix time of signing, ms.
    pub published_at_ms: u64,
    /// CID of the previous manifest (None for the first of a chain).
    pub prev: Option<ManifestCid>,
    /// The announced segment.
    pub segment: Segment,
    /// Optional stream description.
    pub info: Option<StreamInfo>,
}

impl Manifest {
    fn to_proto(&self) -> pb::Manifest {
        pb::Manifest {
            channel: Bytes::copy_from_slice(self.channel.as_bytes()),
            seq: self.seq,
            published_at_ms: self.published_at_ms,
            prev: self.prev.map(|c| Bytes::copy_from_slice(&c.to_bytes())).unwrap_or_default(),
            segment: Some(pb::Segment {
                number: self.segment.number,
                duration_ms: self.segment.duration_ms,
                rendition: self.segment.rendition,
                keyframe: self.segment.keyframe,
                blocks: self
                    .segment
                    .blocks
                    .iter()
                    .map(|b| pb::BlockRef { cid: Bytes::copy_from_slice(&b.cid.to_bytes()), size: b.size })
                    .collect(),
            }),
            info: self.info.as_ref().map(|i| pb::StreamInfo {
                video_codec: i.video_codec.clone(),
                audio_codec: i.audio_codec.clone(),
                bitrate_kbps: i.bitrate_kbps,
                title: i.title.clone(),
            }),
        }
    }

    /// Parses and bounds-checks encoded manifest bytes (no signature check).
    fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m = pb::Manifest::decode(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        let channel = ChannelId::from_bytes(&m.channel)
            .map_err(|_| ManifestError::Malformed("channel is not a 32-byte ed25519 key".into()))?;
        let seq = m.seq;
        let oob = |what: String| ManifestError::OutOfBounds { seq, what };
        let prev = if m.prev.is_empty() {
            None
        } else {
            Some(ManifestCid::from_bytes(&m.prev).map_err(|e| ManifestError::Malformed(format!("prev: {e}")))?)
        };
        let seg = m.segment.ok_or_else(|| ManifestError::Malformed("no segment".into()))?;
        if seg.blocks.is_empty() {
            return Err(oob("segment has no blocks".into()));
        }
        if seg.blocks.len() > MAX_BLOCKS_PER_SEGMENT {
            return Err(oob(format!("{} blocks; the limit is {MAX_BLOCKS_PER_SEGMENT}", seg.blocks.len())));
        }
        let mut blocks = Vec::with_capacity(seg.blocks.len());
        for (i, b) in seg.blocks.iter().enumerate() {
            let cid = BlockCid::from_bytes(&b.cid).map_err(|e| ManifestError::Malformed(format!("block {i}: {e}")))?;
            if b.size == 0 || b.size > MAX_BLOCK_SIZE {
                return Err(oob(format!("block {i} is {} bytes; allowed 1..={MAX_BLOCK_SIZE}", b.size)));
            }
            blocks.push(BlockRef { cid, size: b.size });
        }
        let info = match m.info {
            None => None,
            Some(i) => {
                for (name, s) in [("video_codec", &i.video_codec), ("audio_codec", &i.audio_codec), ("title", &i.title)]
                {
                    if s.len() > MAX_TEXT_BYTES {
                        return Err(oob(format!("{name} is {} bytes; the limit is {MAX_TEXT_BYTES}", s.len())));
                    }
                }
                Some(StreamInfo {
                    video_codec: i.video_codec,
                    audio_codec: i.audio_codec,
                    bitrate_kbps: i.bitrate_kbps,
                    title: i.title,
                })
            }
        };
        Ok(Self {
            channel,
            seq,
            published_at_ms: m.published_at_ms,
            prev,
            segment: Segment {
                number: seg.number,
                duration_ms: seg.duration_ms,
                rendition: seg.rendition,
                keyframe: seg.keyframe,
                blocks,
            },
            info,
        })
    }
}

impl ChannelKey {
    /// Encodes `manifest` once and signs the bytes. The result verifies under
    /// any policy the manifest's own bounds satisfy. Errors if the manifest
    /// is not for this key's channel or breaks a size bound, so a publisher
    /// cannot sign something every peer would reject.
    pub fn sign_manifest(&self, manifest: &Manifest) -> Result<SignedManifest, ManifestError> {
        if manifest.channel != self.channel_id() {
            return Err(ManifestError::WrongChannel { expected: self.channel_id(), actual: manifest.channel });
        }
        let bytes = Bytes::from(manifest.to_proto().encode_to_vec());
        // Re-parse what we are about to sign so the publisher fails loudly on
        // anything a verifier would refuse.
        let parsed = Manifest::from_bytes(&bytes)?;
        let signature = self.sign(MANIFEST_SIGNING_DOMAIN, &bytes);
        let signed = SignedManifest { manifest_bytes: bytes, signature, manifest: parsed };
        let size = signed.encoded_len();
        if size > MAX_SIGNED_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { size, limit: MAX_SIGNED_MANIFEST_BYTES });
        }
        Ok(signed)
    }
}

/// What verification enforces beyond the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyPolicy {
    /// Largest accepted encoded signed manifest.
    pub max_bytes: usize,
    /// How far in the future `published_at_ms` may be (PPSPP uses 30 s).
    pub max_future_skew_ms: u64,
    /// If set, manifests older than this are refused (used for live gossip,
    /// where an old manifest is a replay; not for head/history fetches).
    pub max_age_ms: Option<u64>,
}

impl Default for VerifyPolicy {
    fn default() -> Self {
        Self { max_bytes: MAX_SIGNED_MANIFEST_BYTES, max_future_skew_ms: 30_000, max_age_ms: None }
    }
}

/// A decoded signed manifest whose signature has not been checked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    manifest_bytes: Bytes,
    signature: [u8; 64],
    manifest: Manifest,
}

impl SignedManifest {
    /// Decodes peer bytes, enforcing the size bound before parsing.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_SIGNED_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { size: bytes.len(), limit: MAX_SIGNED_MANIFEST_BYTES });
        }
        let env = pb::SignedManifest::decode(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        Self::from_proto(env)
    }

    /// Builds from an already-decoded envelope (e.g. inside a head response).
    pub fn from_proto(env: pb::SignedManifest) -> Result<Self, ManifestError> {
        let signature: [u8; 64] = env.signature.as_ref().try_into().map_err(|_| {
            ManifestError::Malformed(format!("signature is {} bytes, expected 64", env.signature.len()))
        })?;
        let manifest = Manifest::from_bytes(&env.manifest)?;
        Ok(Self { manifest_bytes: env.manifest, signature, manifest })
    }

    /// The envelope as a prost message (shares the manifest bytes).
    pub fn to_proto(&self) -> pb::SignedManifest {
        pb::SignedManifest { manifest: self.manifest_bytes.clone(), signature: Bytes::copy_from_slice(&self.signature) }
    }

    /// The envelope's wire encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.to_proto().encode_to_vec()
    }

    /// Length of [`Self::encode`].
    pub fn encoded_len(&self) -> usize {
        self.to_proto().encoded_len()
    }

    /// The claimed (unverified) content.
    pub fn claimed(&self) -> &Manifest {
        &self.manifest
    }

    /// Checks signature, bounds and clock skew. `now_ms` is unix time.
    pub fn verify(self, policy: &VerifyPolicy, now_ms: u64) -> Result<VerifiedManifest, ManifestError> {
        let m = &self.manifest;
        let size = self.encoded_len();
        if size > policy.max_bytes {
            return Err(ManifestError::TooLarge { size, limit: policy.max_bytes });
        }
        if m.published_at_ms > now_ms.saturating_add(policy.max_future_skew_ms) {
            return Err(ManifestError::FromTheFuture {
                seq: m.seq,
                ahead_ms: m.published_at_ms - now_ms,
                skew_ms: policy.max_future_skew_ms,
            });
        }
        if let Some(max_age_ms) = policy.max_age_ms {
            let age_ms = now_ms.saturating_sub(m.published_at_ms);
            if age_ms > max_age_ms {
                return Err(ManifestError::TooOld { seq: m.seq, age_ms, max_age_ms });
            }
        }
        // The signature covers the bytes exactly as received.
        if !m.channel.verify(MANIFEST_SIGNING_DOMAIN, &self.manifest_bytes, &self.signature) {
            return Err(ManifestError::BadSignature { channel: m.channel, seq: m.seq });
        }
        let cid = ManifestCid::of(&self.manifest_bytes);
        Ok(VerifiedManifest { signed: self, cid })
    }

    /// Like [`Self::verify`], and also requires the manifest to be for `channel`.
    pub fn verify_for(
        self,
        channel: &ChannelId,
        policy: &VerifyPolicy,
        now_ms: u64,
    ) -> Result<VerifiedManifest, ManifestError> {
        if self.manifest.channel != *channel {
            return Err(ManifestError::WrongChannel { expected: *channel, actual: self.manifest.channel });
        }
        self.verify(policy, now_ms)
    }
}

/// A manifest whose signature and bounds have been checked. Only
/// [`SignedManifest::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedManifest {
    signed: SignedManifest,
    cid: ManifestCid,
}

impl VerifiedManifest {
    /// The verified content.
    pub fn manifest(&self) -> &Manifest {
        &self.signed.manifest
    }

    /// The signed envelope (to forward or store).
    pub fn signed(&self) -> &SignedManifest {
        &self.signed
    }

    /// The manifest's CID (what the next manifest's `prev` must be).
    pub fn cid(&self) -> ManifestCid {
        self.cid
    }

    /// Channel shortcut.
    pub fn channel(&self) -> ChannelId {
        self.signed.manifest.channel
    }

    /// Seq shortcut.
    pub fn seq(&self) -> u64 {
        self.signed.manifest.seq
    }

    /// The signed envelope's wire bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.signed.encode()
    }
}

#[cfg(test)]
mod tests;
