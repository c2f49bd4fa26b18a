//! Arbitrary bytes, in arbitrary chunks, into the MPEG-TS segmenter: the
//! publisher's input is untrusted. Whatever comes out must be whole
//! packets, start with a sync byte and respect the size cap; the same bytes
//! in one chunk must give the same segments.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shoal_media::segment::{Segmenter, SegmenterConfig, TsSegment};

fn run(cfg: &SegmenterConfig, data: &[u8], chunk_sizes: &[u8]) -> (Vec<TsSegment>, bool) {
    let mut s = Segmenter::new(cfg.clone());
    let mut out = Vec::new();
    let mut rest = data;
    let mut sizes = chunk_sizes.iter().cycle();
    let mut failed = false;
    while !rest.is_empty() {
        // Chunk sizes 1..=4096, from the input's own bytes.
        let n = sizes.next().map_or(rest.len(), |&b| usize::from(b) * 16 + 1).min(rest.len());
        let (c, r) = rest.split_at(n);
        rest = r;
        match s.push(c) {
            Ok(v) => out.extend(v),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        out.extend(s.finish());
    }
    let cap = s.max_segment_bytes();
    for seg in &out {
        assert!(!seg.data.is_empty(), "empty segment");
        assert!(seg.data.len() <= cap, "segment of {} bytes over the {cap}-byte cap", seg.data.len());
        assert_eq!(seg.data.len() % 188, 0, "segment is not whole packets");
        assert!(seg.data.chunks(188).all(|p| p[0] == 0x47), "a packet without its sync byte");
    }
    (out, failed)
}

fuzz_target!(|input: &[u8]| {
    // The first bytes pick the chunking and a small cap (so cap cuts happen).
    if input.len() < 4 {
        return;
    }
    let (head, data) = input.split_at(4);
    let cfg = SegmenterConfig {
        target_duration_ms: 100 + u64::from(head[0]) * 10,
        max_segment_bytes: usize::from(head[1]) * 512,
        keyframe_timeout_ms: 200 + u64::from(head[2]) * 20,
    };
    let chunk_sizes = &head[3..4];
    let chunk_sizes: Vec<u8> = chunk_sizes.iter().chain(data.iter().take(8)).copied().collect();
    let (chunked, failed_chunked) = run(&cfg, data, &chunk_sizes);
    let (whole, failed_whole) = run(&cfg, data, &[]);
    assert_eq!(failed_chunked, failed_whole, "chunking changed whether the input fails");
    if !failed_whole {
        assert_eq!(chunked, whole, "chunking changed the segments");
    }
});
