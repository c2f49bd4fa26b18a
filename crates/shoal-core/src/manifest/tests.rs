use proptest::prelude::*;

use super::*;

pub(crate) fn sample(key: &ChannelKey, seq: u64, prev: Option<ManifestCid>, nblocks: usize) -> Manifest {
    Manifest {
        channel: key.channel_id(),
        seq,
        published_at_ms: 1_700_000_000_000u64.saturating_add(seq.saturating_mul(1000)),
        prev,
        segment: Segment {
            number: seq,
            duration_ms: 1000,
            rendition: 0,
            keyframe: true,
            blocks: (0..nblocks)
                .map(|i| BlockRef { cid: BlockCid::of(&[seq as u8, i as u8]), size: 256 * 1024 })
                .collect(),
        },
        info: Some(StreamInfo {
            video_codec: "h264".into(),
            audio_codec: "aac".into(),
            bitrate_kbps: 2000,
            title: "t".into(),
        }),
    }
}

const NOW: u64 = 1_700_000_100_000;

#[test]
fn sign_then_verify() {
    let key = ChannelKey::from_secret_bytes(&[9; 32]);
    let m = sample(&key, 5, Some(ManifestCid::of(b"prev")), 4);
    let signed = key.sign_manifest(&m).unwrap();
    let bytes = signed.encode();
    let v = SignedManifest::decode(&bytes).unwrap().verify(&VerifyPolicy::default(), NOW).unwrap();
    assert_eq!(v.manifest(), &m);
    assert_eq!(v.encode(), bytes, "forwarding must not change a byte");
}

#[test]
fn other_key_is_rejected() {
    let key = ChannelKey::from_secret_bytes(&[1; 32]);
    let thief = ChannelKey::from_secret_bytes(&[2; 32]);
    let m = sample(&key, 1, None, 1);
    // Sign the victim's manifest bytes with the wrong key, bypassing the check
    // in sign_manifest, as an attacker would.
    let bytes = Bytes::from(m.to_proto().encode_to_vec());
    let env = pb::SignedManifest {
        manifest: bytes.clone(),
        signature: Bytes::copy_from_slice(&thief.sign(MANIFEST_SIGNING_DOMAIN, &bytes)),
    };
    let err = SignedManifest::from_proto(env).unwrap().verify(&VerifyPolicy::default(), NOW).unwrap_err();
    assert!(matches!(err, ManifestError::BadSignature { seq: 1, .. }), "{err}");
    assert!(matches!(thief.sign_manifest(&m), Err(ManifestError::WrongChannel { .. })));
}

#[test]
fn clock_skew_and_age_bounds() {
    let key = ChannelKey::from_secret_bytes(&[4; 32]);
    let mut m = sample(&key, 1, None, 1);
    m.published_at_ms = NOW + 31_000;
    let s = key.sign_manifest(&m).unwrap();
    assert!(matches!(s.clone().verify(&VerifyPolicy::default(), NOW), Err(ManifestError::FromTheFuture { .. })));
    m.published_at_ms = NOW - 60_000;
    let s = key.sign_manifest(&m).unwrap();
    assert!(s.clone().verify(&VerifyPolicy::default(), NOW).is_ok());
    let live = VerifyPolicy { max_age_ms: Some(30_000), ..VerifyPolicy::default() };
    assert!(matches!(s.verify(&live, NOW), Err(ManifestError::TooOld { .. })));
}

#[test]
fn bounds_are_enforced_at_both_ends() {
    let key = ChannelKey::from_secret_bytes(&[4; 32]);
    let m = sample(&key, 1, None, MAX_BLOCKS_PER_SEGMENT + 1);
    assert!(matches!(key.sign_manifest(&m), Err(ManifestError::OutOfBounds { .. })));
    let mut m = sample(&key, 1, None, 1);
    m.segment.blocks[0].size = MAX_BLOCK_SIZE + 1;
    assert!(matches!(key.sign_manifest(&m), Err(ManifestError::OutOfBounds { .. })));
    let huge = vec![0u8; MAX_SIGNED_MANIFEST_BYTES + 1];
    assert!(matches!(SignedManifest::decode(&huge), Err(ManifestError::TooLarge { .. })));
    let mut m = sample(&key, 1, None, 0);
    m.segment.blocks.clear();
    assert!(key.sign_manifest(&m).is_err());
}

#[test]
fn wrong_channel_is_refused_by_verify_for() {
    let a = ChannelKey::from_secret_bytes(&[1; 32]);
    let b = ChannelKey::from_secret_bytes(&[2; 32]);
    let s = a.sign_manifest(&sample(&a, 1, None, 1)).unwrap();
    assert!(matches!(
        s.verify_for(&b.channel_id(), &VerifyPolicy::default(), NOW),
        Err(ManifestError::WrongChannel { .. })
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_any_manifest(seq in any::<u64>(), t in 0u64..NOW, nblocks in 1usize..64,
                               dur in any::<u32>(), rend in any::<u32>(), kf in any::<bool>(),
                               title in "[a-z ]{0,40}", has_prev in any::<bool>()) {
        let key = ChannelKey::from_secret_bytes(&[5; 32]);
        let mut m = sample(&key, seq, has_prev.then(|| ManifestCid::of(&seq.to_le_bytes())), nblocks);
        m.published_at_ms = t;
        m.segment.duration_ms = dur;
        m.segment.rendition = rend;
        m.segment.keyframe = kf;
        m.info = Some(StreamInfo { title, ..StreamInfo::default() });
        let bytes = key.sign_manifest(&m).unwrap().encode();
        let v = SignedManifest::decode(&bytes).unwrap().verify(&VerifyPolicy::default(), NOW).unwrap();
        prop_assert_eq!(v.manifest(), &m);
        prop_assert_eq!(v.encode(), bytes);
    }

    /// Any single-bit change to the manifest bytes or the signature is caught:
    /// either the envelope no longer decodes, or verification fails.
    #[test]
    fn any_bit_flip_is_rejected(bit in any::<prop::sample::Index>(), in_sig in any::<bool>()) {
        let key = ChannelKey::from_secret_bytes(&[6; 32]);
        let signed = key.sign_manifest(&sample(&key, 42, Some(ManifestCid::of(b"p")), 3)).unwrap();
        let mut env = signed.to_proto();
        if in_sig {
            let mut sig = env.signature.to_vec();
            let i = bit.index(sig.len() * 8);
            sig[i / 8] ^= 1 << (i % 8);
            env.signature = sig.into();
        } else {
            let mut man = env.manifest.to_vec();
            let i = bit.index(man.len() * 8);
            man[i / 8] ^= 1 << (i % 8);
            env.manifest = man.into();
        }
        let result = SignedManifest::from_proto(env).and_then(|s| s.verify(&VerifyPolicy::default(), u64::MAX / 2));
        prop_assert!(result.is_err());
    }

    /// Arbitrary bytes never panic the decoder, and never verify.
    #[test]
    fn arbitrary_bytes_never_verify(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(s) = SignedManifest::decode(&bytes) {
            prop_assert!(s.verify(&VerifyPolicy::default(), NOW).is_err());
        }
    }
}
