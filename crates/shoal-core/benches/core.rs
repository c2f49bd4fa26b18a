//! Throughput of the per-segment crypto: signing and verifying a typical
//! manifest, and hashing 256 KiB blocks into CIDs. Run with
//! `cargo bench -p shoal-core --bench core`; docs/benchmarks.md records the
//! figures.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use shoal_core::{BlockCid, BlockRef, ChannelKey, Manifest, Segment, SignedManifest, StreamInfo, VerifyPolicy};

/// A 1 s segment at 8 Mbit/s is ~1 MB: 4 blocks of 256 KiB.
fn typical_manifest(key: &ChannelKey, blocks: usize) -> Manifest {
    Manifest {
        channel: key.channel_id(),
        seq: 1234,
        published_at_ms: 1_700_000_000_000,
        prev: Some(shoal_core::ManifestCid::of(b"prev")),
        segment: Segment {
            number: 1234,
            duration_ms: 1000,
            rendition: 0,
            keyframe: true,
            blocks: (0..blocks).map(|i| BlockRef { cid: BlockCid::of(&[i as u8]), size: 256 * 1024 }).collect(),
        },
        info: Some(StreamInfo {
            video_codec: "h264".into(),
            audio_codec: "aac".into(),
            bitrate_kbps: 8000,
            title: "bench".into(),
        }),
    }
}

fn bench(c: &mut Criterion) {
    let key = ChannelKey::from_secret_bytes(&[42; 32]);
    let mut g = c.benchmark_group("manifest");
    for blocks in [4usize, 64] {
        let m = typical_manifest(&key, blocks);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("sign/{blocks}_blocks"), |b| b.iter(|| key.sign_manifest(black_box(&m))));
        let bytes = key.sign_manifest(&m).expect("valid manifest").encode();
        g.bench_function(format!("decode_verify/{blocks}_blocks"), |b| {
            b.iter(|| {
                SignedManifest::decode(black_box(&bytes))
                    .and_then(|s| s.verify(&VerifyPolicy::default(), 1_700_000_000_000))
                    .expect("verifies")
            })
        });
    }
    g.finish();

    let block = vec![0xa5u8; 256 * 1024];
    let mut g = c.benchmark_group("cid");
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.bench_function("sha256_256KiB", |b| b.iter(|| BlockCid::of(black_box(&block))));
    let cid = BlockCid::of(&block);
    g.bench_function("verify_256KiB", |b| b.iter(|| cid.verify(black_box(&block))));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
