//! The stateless part of gossip validation: decode, size, channel
//! signature, clock bounds. Runs on every message before anything else sees
//! it. Faults provable from the bytes alone are `Reject` (the forwarding
//! peer loses score); faults that depend on our clock are `Ignore`, so an
//! honest peer with a skewed clock, or a slow path, is not punished.

use libp2p::gossipsub::MessageAcceptance;
use shoal_core::{
    ChannelId, DirectoryError, ManifestError, SignedDirectoryEntry, SignedManifest, VerifiedDirectoryEntry,
    VerifiedManifest, VerifyPolicy,
};

use crate::metrics::reason;

/// A refused message: what to tell gossipsub and the metric reason.
pub(crate) type Refusal = (MessageAcceptance, &'static str);

fn manifest_refusal(e: &ManifestError) -> Refusal {
    use MessageAcceptance::{Ignore, Reject};
    match e {
        ManifestError::TooLarge { .. } => (Reject, reason::TOO_LARGE),
        ManifestError::Malformed(_) => (Reject, reason::MALFORMED),
        ManifestError::BadSignature { .. } => (Reject, reason::BAD_SIGNATURE),
        ManifestError::WrongChannel { .. } => (Reject, reason::WRONG_CHANNEL),
        ManifestError::OutOfBounds { .. } => (Reject, reason::OUT_OF_BOUNDS),
        ManifestError::FromTheFuture { .. } => (Ignore, reason::FROM_THE_FUTURE),
        ManifestError::TooOld { .. } => (Ignore, reason::TOO_OLD),
    }
}

/// Checks a manifest that arrived on `channel`'s topic.
pub(crate) fn check_manifest(
    bytes: &[u8],
    channel: &ChannelId,
    policy: &VerifyPolicy,
    now_ms: u64,
) -> Result<VerifiedManifest, (Refusal, ManifestError)> {
    SignedManifest::decode(bytes)
        .and_then(|s| s.verify_for(channel, policy, now_ms))
        .map_err(|e| (manifest_refusal(&e), e))
}

/// Checks a directory entry.
pub(crate) fn check_directory(
    bytes: &[u8],
    now_ms: u64,
    max_future_skew_ms: u64,
) -> Result<VerifiedDirectoryEntry, (Refusal, DirectoryError)> {
    use MessageAcceptance::{Ignore, Reject};
    SignedDirectoryEntry::decode(bytes).and_then(|s| s.verify(now_ms, max_future_skew_ms)).map_err(|e| {
        let r = match &e {
            DirectoryError::TooLarge(_) => (Reject, reason::TOO_LARGE),
            DirectoryError::Malformed(_) => (Reject, reason::MALFORMED),
            DirectoryError::BadSignature(_) => (Reject, reason::BAD_SIGNATURE),
            DirectoryError::FromTheFuture(_) => (Ignore, reason::FROM_THE_FUTURE),
        };
        (r, e)
    })
}

#[cfg(test)]
mod tests {
    use shoal_core::{BlockCid, BlockRef, ChannelKey, Manifest, Segment, limits::MAX_SIGNED_MANIFEST_BYTES};

    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn signed(key: &ChannelKey, published_at_ms: u64) -> Vec<u8> {
        let m = Manifest {
            channel: key.channel_id(),
            seq: 1,
            published_at_ms,
            prev: None,
            segment: Segment {
                number: 1,
                duration_ms: 1000,
                rendition: 0,
                keyframe: true,
                blocks: vec![BlockRef { cid: BlockCid::of(b"b"), size: 10 }],
            },
            info: None,
        };
        key.sign_manifest(&m).unwrap().encode()
    }

    fn policy() -> VerifyPolicy {
        VerifyPolicy { max_age_ms: Some(60_000), ..VerifyPolicy::default() }
    }

    #[test]
    fn verdicts_by_fault() {
        let key = ChannelKey::from_secret_bytes(&[1; 32]);
        let ch = key.channel_id();
        let good = signed(&key, NOW);
        assert!(check_manifest(&good, &ch, &policy(), NOW).is_ok());

        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1; // inside the signature
        let ((acc, why), _) = check_manifest(&forged, &ch, &policy(), NOW).unwrap_err();
        assert_eq!((acc, why), (MessageAcceptance::Reject, reason::BAD_SIGNATURE));

        let other = ChannelKey::from_secret_bytes(&[2; 32]).channel_id();
        let ((acc, why), _) = check_manifest(&good, &other, &policy(), NOW).unwrap_err();
        assert_eq!((acc, why), (MessageAcceptance::Reject, reason::WRONG_CHANNEL));

        let big = vec![0u8; MAX_SIGNED_MANIFEST_BYTES + 1];
        let ((acc, why), _) = check_manifest(&big, &ch, &policy(), NOW).unwrap_err();
        assert_eq!((acc, why), (MessageAcceptance::Reject, reason::TOO_LARGE));

        let ((acc, why), _) = check_manifest(&[0xff, 0xff], &ch, &policy(), NOW).unwrap_err();
        assert_eq!((acc, why), (MessageAcceptance::Reject, reason::MALFORMED));

        let replay = signed(&key, NOW - 120_000);
        let ((acc, why), _) = check_manifest(&replay, &ch, &policy(), NOW).unwrap_err();
        assert_eq!((acc, why), (MessageAcceptance::Ignore, reason::TOO_OLD));

        let future = signed(&key, NOW + 120_000);
        let ((acc, why), _) = check_manifest(&future, &ch, &policy(), NOW).unwrap_err();
        assert_eq!((acc, why), (MessageAcceptance::Ignore, reason::FROM_THE_FUTURE));
    }
}
