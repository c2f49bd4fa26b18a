//! The segmenter against real encoder output (ffmpeg, generated at test
//! time, checked with ffprobe) and against hand-built streams for what
//! encoders rarely produce on demand (timestamps at the 33-bit wrap).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use proptest::prelude::*;

use super::*;
use crate::ts::{
    TIMESTAMP_MODULO,
    psi::stream_type,
    testutil::{h264_au, packetize, pat_packet, pes, pmt_packet},
};

const PMT_PID: u16 = 0x1000; // what ffmpeg's muxer uses

/// Runs a tool from `.ci/install-deps`; a missing tool fails the test with
/// the fix, it is never skipped.
fn run(tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("{tool} is needed by the media tests and could not run ({e}): install it with .ci/install-deps (apt-get install ffmpeg)")
    });
    assert!(out.status.success(), "{tool} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Encodes with ffmpeg to MPEG-TS in `dir`; returns the file's bytes.
fn ffmpeg_ts(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let mut all = vec!["-v", "error", "-y"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-f", "mpegts", path.to_str().unwrap()]);
    run("ffmpeg", &all);
    std::fs::read(&path).unwrap()
}

/// 320x240 testsrc at 25 fps, H.264 with a keyframe every `gop` frames,
/// plus AAC unless `audio` is false.
fn h264(dir: &Path, name: &str, secs: u32, gop: u32, audio: bool) -> Vec<u8> {
    let t = secs.to_string();
    let g = gop.to_string();
    let mut args = vec!["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"];
    if audio {
        args.extend_from_slice(&["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]);
    }
    args.extend_from_slice(&["-c:v", "libx264", "-preset", "veryfast", "-g", &g, "-sc_threshold", "0"]);
    if audio {
        args.extend_from_slice(&["-c:a", "aac"]);
    }
    args.extend_from_slice(&["-t", &t]);
    ffmpeg_ts(dir, name, &args)
}

fn segment_all(cfg: SegmenterConfig, input: &[u8], chunk: usize) -> (Vec<TsSegment>, IngestStats) {
    let mut s = Segmenter::new(cfg);
    let mut segs = Vec::new();
    for c in input.chunks(chunk.max(1)) {
        segs.extend(s.push(c).expect("valid MPEG-TS"));
    }
    segs.extend(s.finish());
    (segs, s.stats())
}

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2])
}

/// The packets that are neither PAT nor PMT, in order.
fn media_packets(data: &[u8]) -> Vec<&[u8]> {
    data.chunks_exact(188).filter(|p| pid(p) != 0 && pid(p) != PMT_PID).collect()
}

fn assert_tables_first(i: usize, seg: &TsSegment) {
    assert_eq!(seg.data.len() % 188, 0, "segment {i} is whole packets");
    assert_eq!(pid(&seg.data[..188]), 0, "segment {i} starts with the PAT");
    assert_eq!(pid(&seg.data[188..376]), PMT_PID, "segment {i} has the PMT second");
    assert!(seg.data[1] & 0x40 != 0 && seg.data[189] & 0x40 != 0, "segment {i}: tables start in those packets");
}

/// ffprobe on one segment file: the first video packet's flags and the first
/// decoded picture's `key_frame,pict_type`.
fn probe_first_picture(path: &Path) -> (String, String) {
    let p = path.to_str().unwrap();
    let first = |args: &[&str]| -> String {
        let out = run("ffprobe", args);
        String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_owned()
    };
    let flags = first(&[
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "packet=flags",
        "-of",
        "csv=p=0",
        "-read_intervals",
        "%+#1",
        p,
    ]);
    let frame = first(&[
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "frame=key_frame,pict_type",
        "-of",
        "csv=p=0",
        "-read_intervals",
        "%+#1",
        p,
    ]);
    (flags, frame)
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn decode_errors(path: &Path) -> String {
    let out = run("ffmpeg", &["-v", "error", "-i", path.to_str().unwrap(), "-f", "null", "-"]);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn frame_count(path: &Path) -> u64 {
    let out = run(
        "ffprobe",
        &[
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            path.to_str().unwrap(),
        ],
    );
    // csv prints the stream once under its program and once on its own.
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().next().unwrap_or("").trim().trim_end_matches(',').parse().unwrap()
}

#[test]
fn h264_segments_start_at_keyframes_ffprobe_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let input = h264(dir.path(), "in.ts", 6, 25, true);
    let (segs, stats) = segment_all(SegmenterConfig::default(), &input, 64 * 1024);
    assert_eq!(
        segs.len(),
        6,
        "6 s with a keyframe every second: {:?}",
        segs.iter().map(|s| s.duration_ms).collect::<Vec<_>>()
    );
    assert_eq!(stats.keyframes, 6);
    assert_eq!((stats.cuts_without_keyframe, stats.cuts_at_size_cap, stats.skipped_packets), (0, 0, 0));
    assert_eq!((stats.video_codec, stats.audio_codec), (Some("h264"), Some("aac")));
    let mut pts = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        assert_tables_first(i, seg);
        assert!(seg.keyframe, "segment {i} flagged as starting at a keyframe");
        // 25 frames of 40 ms: the DTS steps sum to exactly one second.
        assert_eq!(seg.duration_ms, 1000, "segment {i}");
        pts.push(seg.first_pts_90k.expect("every segment has a PTS"));
        let path = write(dir.path(), &format!("seg{i}.ts"), &seg.data);
        let (flags, frame) = probe_first_picture(&path);
        assert!(flags.starts_with('K'), "segment {i}: ffprobe's first video packet flags {flags:?}");
        assert_eq!(frame.trim_end_matches(','), "1,I", "segment {i}: ffprobe's first decoded picture");
    }
    assert!(pts.windows(2).all(|w| w[1] - w[0] == 90_000), "keyframe PTS one second apart: {pts:?}");
    // Nothing lost, reordered or duplicated besides the tables.
    let joined: Vec<u8> = segs.iter().flat_map(|s| s.data.iter().copied()).collect();
    assert_eq!(media_packets(&joined), media_packets(&input));
    let path = write(dir.path(), "joined.ts", &joined);
    assert_eq!(decode_errors(&path), "", "the concatenated segments decode cleanly");
    assert_eq!(frame_count(&path), 150);
}

#[test]
fn h265_irap_pictures_are_keyframes() {
    let dir = tempfile::tempdir().unwrap();
    let input = ffmpeg_ts(
        dir.path(),
        "hevc.ts",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=25",
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error:keyint=25:min-keyint=25:scenecut=0",
            "-t",
            "3",
        ],
    );
    let (segs, stats) = segment_all(SegmenterConfig::default(), &input, 5000);
    assert_eq!(stats.video_codec, Some("h265"));
    assert_eq!((segs.len(), stats.keyframes), (3, 3), "{:?}", segs.iter().map(|s| s.duration_ms).collect::<Vec<_>>());
    for (i, seg) in segs.iter().enumerate() {
        assert_tables_first(i, seg);
        assert!(seg.keyframe && seg.duration_ms == 1000, "segment {i}: {} ms", seg.duration_ms);
        let (flags, frame) = probe_first_picture(&write(dir.path(), &format!("h{i}.ts"), &seg.data));
        assert!(flags.starts_with('K') && frame.starts_with("1,I"), "segment {i}: {flags:?} {frame:?}");
    }
}

#[test]
fn audio_only_is_cut_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let input = ffmpeg_ts(
        dir.path(),
        "a.ts",
        &["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-c:a", "aac", "-t", "5"],
    );
    let (segs, stats) = segment_all(SegmenterConfig::default(), &input, 4096);
    assert_eq!((stats.video_codec, stats.audio_codec), (None, Some("aac")));
    assert!((4..=5).contains(&segs.len()), "{} segments", segs.len());
    let total: u64 = segs.iter().map(|s| s.duration_ms).sum();
    assert!((4900..=5100).contains(&total), "total {total} ms");
    for (i, seg) in segs.iter().enumerate() {
        assert_tables_first(i, seg);
        assert!(seg.keyframe);
        if i + 1 < segs.len() {
            // Cut at the first audio PES after 1 s; ffmpeg's PES hold up to
            // a few hundred ms of AAC frames.
            assert!((1000..1400).contains(&seg.duration_ms), "segment {i}: {} ms", seg.duration_ms);
        }
    }
}

#[test]
fn no_keyframe_within_the_timeout_cuts_by_time_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    // One IDR at the start, then none for 8 s.
    let input = h264(dir.path(), "long-gop.ts", 8, 1000, false);
    let cfg = SegmenterConfig { keyframe_timeout_ms: 2000, ..SegmenterConfig::default() };
    let (segs, stats) = segment_all(cfg.clone(), &input, 10_000);
    let durations: Vec<u64> = segs.iter().map(|s| s.duration_ms).collect();
    assert_eq!(stats.keyframes, 1);
    assert_eq!(
        durations,
        vec![2000, 1000, 1000, 1000, 1000, 1000, 1000],
        "first cut at the timeout, then every second"
    );
    assert_eq!(stats.cuts_without_keyframe, 6);
    assert!(segs[0].keyframe && segs[1..].iter().all(|s| !s.keyframe));
    segs.iter().enumerate().for_each(|(i, s)| assert_tables_first(i, s));

    // The same stream joined after its only keyframe: none at all.
    let skip = (input.len() / 4) / 188 * 188;
    let (segs, stats) = segment_all(cfg, &input[skip..], 10_000);
    assert_eq!(stats.keyframes, 0);
    assert!(segs.len() >= 4 && segs.iter().all(|s| !s.keyframe), "{} segments", segs.len());
    assert_eq!(stats.cuts_without_keyframe, segs.len() as u64 - 1);
    segs.iter().enumerate().for_each(|(i, s)| assert_tables_first(i, s));
}

#[test]
fn not_ts_input_is_refused_with_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("x.mp4");
    run(
        "ffmpeg",
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=25",
            "-t",
            "1",
            "-c:v",
            "libx264",
            mp4.to_str().unwrap(),
        ],
    );
    let bytes = std::fs::read(&mp4).unwrap();
    let mut s = Segmenter::new(SegmenterConfig::default());
    let e = s.push(&bytes).unwrap_err();
    assert!(matches!(&e, IngestError::NotMpegTs { found } if found.contains("MP4 'ftyp' box")), "{e}");
    assert_eq!(s.push(b"more").unwrap_err(), e, "the error is sticky");
    assert_eq!(s.finish(), None);

    let mut s = Segmenter::new(SegmenterConfig::default());
    assert!(s.push(b"GET / HTTP/1.1\r\n").unwrap().is_empty(), "too short to judge yet");
    assert_eq!(s.finish(), None);
    let e = s.error().expect("judged at the end").to_string();
    assert!(e.contains("text (\"GET / HTTP/1.1"), "{e}");
}

#[test]
fn truncated_packets_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let input = h264(dir.path(), "in.ts", 4, 25, true);
    let total = input.len() / 188;
    // Five packets lose their last 60 bytes, as when a UDP datagram is cut.
    let damaged_at = [100usize, 200, 300, 400, 500];
    let mut damaged = Vec::new();
    for (i, p) in input.chunks(188).enumerate() {
        damaged.extend_from_slice(if damaged_at.contains(&i) { &p[..128] } else { p });
    }
    let (segs, stats) = segment_all(SegmenterConfig::default(), &damaged, 1316);
    assert_eq!(stats.skipped_packets, 5);
    assert_eq!(stats.skipped_bytes, 5 * 128);
    assert_eq!(stats.packets, (total - 5) as u64);
    let joined: Vec<u8> = segs.iter().flat_map(|s| s.data.iter().copied()).collect();
    let want: Vec<&[u8]> = input
        .chunks(188)
        .enumerate()
        .filter(|(i, p)| !damaged_at.contains(i) && pid(p) != 0 && pid(p) != PMT_PID)
        .map(|(_, p)| p)
        .collect();
    assert_eq!(media_packets(&joined), want, "exactly the damaged packets are missing");
    segs.iter().enumerate().for_each(|(i, s)| assert_tables_first(i, s));
}

#[test]
fn size_cap_is_hard() {
    let dir = tempfile::tempdir().unwrap();
    let input = h264(dir.path(), "in.ts", 4, 25, true);
    let cap = 20_000;
    let (segs, stats) = segment_all(SegmenterConfig { max_segment_bytes: cap, ..Default::default() }, &input, 3000);
    assert!(stats.cuts_at_size_cap > 0);
    assert!(segs.iter().all(|s| s.data.len() <= cap), "{:?}", segs.iter().map(|s| s.data.len()).collect::<Vec<_>>());
    segs.iter().enumerate().for_each(|(i, s)| assert_tables_first(i, s));
    let joined: Vec<u8> = segs.iter().flat_map(|s| s.data.iter().copied()).collect();
    assert_eq!(media_packets(&joined), media_packets(&input));
    let total: u64 = segs.iter().map(|s| s.duration_ms).sum();
    assert_eq!(total, 4000, "durations add up across size cuts");
}

/// A hand-built H.264 stream at 25 fps with a keyframe every 25 frames,
/// PAT/PMT only at the very start, PTS starting `before_wrap` ticks before
/// the 33-bit wrap; `with_pts: false` leaves only the PCR to time it.
fn hand_built(frames: u64, before_wrap: u64, with_pts: bool) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&pat_packet(PMT_PID, 0));
    out.extend_from_slice(&pmt_packet(PMT_PID, 0x100, &[(stream_type::H264, 0x100)], 0));
    let mut cc = 0;
    for f in 0..frames {
        let t = (TIMESTAMP_MODULO - before_wrap + f * 3600) % TIMESTAMP_MODULO;
        let key = f % 25 == 0;
        let pes = pes(0xE0, with_pts.then_some(t), None, &h264_au(key, 700));
        for p in packetize(0x100, &mut cc, key, Some(t), &pes) {
            out.extend_from_slice(&p);
        }
    }
    out
}

#[test]
fn pts_and_pcr_wrap_keep_true_durations() {
    for with_pts in [true, false] {
        let input = hand_built(150, 2 * 90_000, with_pts);
        let (segs, stats) = segment_all(SegmenterConfig::default(), &input, 777);
        let durations: Vec<u64> = segs.iter().map(|s| s.duration_ms).collect();
        // With PTS the last frame counts one frame interval; the PCR only
        // measures up to the last frame's start.
        let last = if with_pts { 1000 } else { 960 };
        assert_eq!(durations, vec![1000, 1000, 1000, 1000, 1000, last], "with_pts {with_pts}");
        assert_eq!((stats.keyframes, stats.timestamp_jumps), (6, 0));
        for (i, s) in segs.iter().enumerate() {
            assert_tables_first(i, s);
            assert!(s.keyframe);
            if i > 0 {
                // The encoder sent its tables once: these are copies, byte
                // for byte.
                assert_eq!(&s.data[..376], &input[..376], "segment {i}");
            }
        }
        if with_pts {
            let pts: Vec<u64> = segs.iter().map(|s| s.first_pts_90k.unwrap()).collect();
            let start = TIMESTAMP_MODULO - 2 * 90_000;
            assert_eq!(pts, (0..6).map(|k| start + k * 90_000).collect::<Vec<_>>(), "PTS keeps growing past 2^33");
        }
    }
}

fn small_real_input() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    h264(dir.path(), "p.ts", 2, 10, true)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any chunking of the same bytes (damaged or not) gives the same
    /// segments and the same counts.
    #[test]
    fn chunking_never_changes_the_segments(
        sizes in prop::collection::vec(1usize..3000, 1..20),
        garbage in prop::collection::vec((0usize..100_000, prop::collection::vec(any::<u8>(), 0..400)), 0..3),
    ) {
        thread_local!(static INPUT: Vec<u8> = small_real_input());
        let mut input = INPUT.with(Clone::clone);
        for (at, junk) in &garbage {
            // Past the start: garbage in the first packets is "not MPEG-TS".
            let at = 2000 + at % (input.len() - 2000);
            input.splice(at..at, junk.iter().copied());
        }
        let cfg = SegmenterConfig { target_duration_ms: 400, ..Default::default() };
        let (want, want_stats) = segment_all(cfg.clone(), &input, input.len());
        prop_assert!(!want.is_empty());
        let mut s = Segmenter::new(cfg);
        let mut got = Vec::new();
        let mut rest = &input[..];
        for size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (c, r) = rest.split_at((*size).min(rest.len()));
            got.extend(s.push(c).unwrap());
            rest = r;
        }
        got.extend(s.finish());
        prop_assert_eq!(got, want);
        prop_assert_eq!(s.stats(), want_stats);
    }

    /// Arbitrary bytes never panic, and whatever comes out keeps the
    /// segment invariants.
    #[test]
    fn arbitrary_bytes_keep_the_invariants(bytes in prop::collection::vec(any::<u8>(), 0..20_000), sync_every in 0usize..4) {
        let mut input = bytes;
        if sync_every > 0 {
            // Mostly-valid packets: sync bytes where they belong.
            for i in (0..input.len()).step_by(188 * sync_every) {
                input[i] = 0x47;
            }
        }
        let mut s = Segmenter::new(SegmenterConfig { max_segment_bytes: 0, ..Default::default() });
        let mut segs = Vec::new();
        for c in input.chunks(1000) {
            match s.push(c) {
                Ok(v) => segs.extend(v),
                Err(_) => break,
            }
        }
        segs.extend(s.finish());
        for seg in &segs {
            prop_assert!(!seg.data.is_empty() && seg.data.len() % 188 == 0);
            prop_assert!(seg.data.len() <= s.max_segment_bytes());
            prop_assert_eq!(seg.data[0], 0x47);
        }
    }
}
