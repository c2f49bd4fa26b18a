//! RFC 8216 structural rules, checked on rendered text across reloads.

use super::*;

const T0: u64 = 1_795_000_000_000;

fn seg(seq: u64, duration_ms: u64) -> SegmentMeta {
    SegmentMeta { seq, duration_ms, published_at_ms: T0 + seq * 1000 + duration_ms }
}

fn uri(seq: u64) -> String {
    format!("k51test/{seq}.ts")
}

/// What a player reads from one playlist text.
#[derive(Debug, Default)]
struct Parsed {
    version: Option<u64>,
    target: Option<u64>,
    media_sequence: Option<u64>,
    discontinuity_sequence: u64,
    /// (uri, duration ms, discontinuity before it, program date time)
    segments: Vec<(String, u64, bool, Option<String>)>,
}

/// Parses and checks the rules every live media playlist must follow.
fn parse(text: &str) -> Parsed {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("#EXTM3U"), "first line must be #EXTM3U:\n{text}");
    let mut p = Parsed::default();
    let (mut disc, mut pdt, mut extinf) = (false, None, None);
    for line in lines {
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            p.version = Some(v.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = Some(v.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            assert!(p.segments.is_empty(), "MEDIA-SEQUENCE must come before the first segment");
            p.media_sequence = Some(v.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            assert!(p.segments.is_empty(), "DISCONTINUITY-SEQUENCE must come before the first segment");
            p.discontinuity_sequence = v.parse().unwrap();
        } else if line == "#EXT-X-DISCONTINUITY" {
            disc = true;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let d = v.strip_suffix(',').expect("EXTINF ends with a comma");
            let (s, ms) = d.split_once('.').expect("decimal EXTINF");
            extinf = Some(s.parse::<u64>().unwrap() * 1000 + ms.parse::<u64>().unwrap());
        } else if line.starts_with('#') {
            panic!("unexpected tag {line}");
        } else {
            let d = extinf.take().expect("every URI follows an EXTINF");
            p.segments.push((line.to_owned(), d, std::mem::take(&mut disc), pdt.take()));
        }
    }
    assert_eq!(p.version, Some(u64::from(HLS_VERSION)));
    let target = p.target.expect("EXT-X-TARGETDURATION is required");
    assert!(p.media_sequence.is_some(), "EXT-X-MEDIA-SEQUENCE missing");
    for (u, d, _, pdt) in &p.segments {
        // §4.3.3.1: EXTINF rounded must not exceed the target; we promise
        // more: its ceiling does not.
        assert!(d.div_ceil(1000) <= target, "{u}: {d} ms exceeds target {target} s");
        assert!(pdt.is_some(), "{u} has no PROGRAM-DATE-TIME");
    }
    assert!(!text.contains("#EXT-X-ENDLIST"), "a live playlist has no ENDLIST");
    p
}

/// Checks one reload against the previous one: §6.2.1 / §6.2.2 rules.
fn check_reload(prev: &Parsed, next: &Parsed) {
    let (pm, nm) = (prev.media_sequence.unwrap(), next.media_sequence.unwrap());
    assert!(nm >= pm, "media sequence went back from {pm} to {nm}");
    assert_eq!(prev.target, next.target, "target duration changed");
    assert!(next.discontinuity_sequence >= prev.discontinuity_sequence);
    // A media sequence number names the same URI in both.
    for (i, s) in prev.segments.iter().enumerate() {
        let msn = pm + i as u64;
        if msn >= nm {
            let j = (msn - nm) as usize;
            if let Some(n) = next.segments.get(j) {
                assert_eq!(s.0, n.0, "msn {msn} changed URI");
            }
        }
    }
    // Removed segments with a discontinuity tag bump the sequence.
    let removed = (nm - pm) as usize;
    let removed_disc = prev.segments.iter().take(removed).filter(|s| s.2).count() as u64;
    assert_eq!(next.discontinuity_sequence, prev.discontinuity_sequence + removed_disc);
}

#[test]
fn steady_stream_keeps_every_rule_across_reloads() {
    let mut pl = LivePlaylist::new(PlaylistConfig::default());
    let mut prev: Option<Parsed> = None;
    let durations = [1000, 1040, 960, 1000, 1500, 1001, 999, 1000];
    for seq in 0..200u64 {
        let d = durations[seq as usize % durations.len()];
        assert_eq!(pl.offer(&[seg(seq, d)], T0 + seq * 1000), 1);
        let p = parse(&pl.render(uri));
        assert_eq!(p.segments.last().unwrap().0, uri(seq), "the newest segment is listed at once");
        let window: u64 = p.segments.iter().map(|s| s.1).sum();
        let target = p.target.unwrap();
        assert_eq!(target, 2, "ceil(1500 ms) and the 2 s floor");
        if seq >= 10 {
            assert!(window >= 3 * target * 1000, "window {window} ms < 3 × {target} s at seq {seq}");
            // ...and not longer than needed: one segment fewer would break it.
            assert!(window - p.segments[0].1 < 3 * target * 1000, "window {window} ms longer than needed");
        }
        if let Some(prev) = &prev {
            check_reload(prev, &p);
        }
        prev = Some(p);
    }
    assert_eq!(pl.target_raises(), 0);
    // Media sequence = seq of the first listed segment when nothing was skipped.
    let first = pl.segments().next().unwrap().meta.seq;
    assert_eq!(pl.media_sequence(), first);
}

#[test]
fn gap_waits_then_marks_a_discontinuity() {
    let cfg = PlaylistConfig { gap_wait_ms: 3000, ..PlaylistConfig::default() };
    let mut pl = LivePlaylist::new(cfg);
    assert_eq!(pl.offer(&[seg(10, 1000), seg(11, 1000)], T0), 2);
    // 12 is missing; 13 and 14 are playable.
    assert_eq!(pl.offer(&[seg(13, 1000), seg(14, 1000)], T0 + 100), 0, "13 waits for 12");
    assert_eq!(pl.offer(&[seg(13, 1000), seg(14, 1000)], T0 + 3000), 0, "still within the wait");
    // 12 arrives in time: no discontinuity.
    assert_eq!(pl.offer(&[seg(12, 1000), seg(13, 1000), seg(14, 1000)], T0 + 3050), 3);
    assert!(pl.segments().all(|s| !s.discontinuity));
    // 15 is missing for good.
    assert_eq!(pl.offer(&[seg(16, 1000)], T0 + 4000), 0);
    assert_eq!(pl.offer(&[seg(16, 1000), seg(17, 1000)], T0 + 7000), 2);
    let text = pl.render(uri);
    let p = parse(&text);
    let uris: Vec<&str> = p.segments.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(uris.last().copied(), Some("k51test/17.ts"));
    let i16 = uris.iter().position(|u| *u == "k51test/16.ts").unwrap();
    assert!(p.segments[i16].2, "16 follows a gap:\n{text}");
    assert_eq!(p.segments.iter().filter(|s| s.2).count(), 1, "exactly one discontinuity:\n{text}");
    // Media sequence numbers stay contiguous: 16 takes the number after 14.
    let msn16 = p.media_sequence.unwrap() + i16 as u64;
    let i14 = uris.iter().position(|u| *u == "k51test/14.ts").unwrap();
    assert_eq!(msn16, p.media_sequence.unwrap() + i14 as u64 + 1);
    // A late 15 is ignored: its number was never given.
    assert_eq!(pl.offer(&[seg(15, 1000)], T0 + 8000), 0);
}

#[test]
fn removing_a_discontinuity_bumps_the_sequence() {
    let mut pl = LivePlaylist::new(PlaylistConfig { gap_wait_ms: 0, ..PlaylistConfig::default() });
    let mut prev = None;
    let mut seq = 0;
    for i in 0..40u64 {
        // Every 5th seq is skipped.
        if i % 5 == 4 {
            seq += 1;
        }
        pl.offer(&[seg(seq, 1000)], T0 + i * 1000);
        seq += 1;
        let p = parse(&pl.render(uri));
        if let Some(prev) = &prev {
            check_reload(prev, &p);
        }
        prev = Some(p);
    }
    assert!(pl.discontinuity_sequence() >= 5, "got {}", pl.discontinuity_sequence());
    assert!(pl.render(uri).contains("#EXT-X-DISCONTINUITY-SEQUENCE:"));
}

#[test]
fn target_is_fixed_by_the_first_segment_and_raised_only_when_exceeded() {
    let mut pl = LivePlaylist::new(PlaylistConfig { min_target_duration_s: 1, ..PlaylistConfig::default() });
    pl.offer(&[seg(0, 2400)], T0);
    assert_eq!(pl.target_duration_s(), Some(3));
    pl.offer(&[seg(1, 500), seg(2, 3000)], T0);
    assert_eq!(pl.target_duration_s(), Some(3), "never lowered, 3000 ms fits");
    assert_eq!(pl.target_raises(), 0);
    pl.offer(&[seg(3, 3001)], T0);
    assert_eq!(pl.target_duration_s(), Some(4));
    assert_eq!(pl.target_raises(), 1);
    parse(&pl.render(uri));
}

#[test]
fn configured_window_longer_than_three_targets() {
    let mut pl = LivePlaylist::new(PlaylistConfig { min_window_ms: 10_000, ..PlaylistConfig::default() });
    for s in 0..30 {
        pl.offer(&[seg(s, 1000)], T0);
    }
    assert_eq!(pl.segments().len(), 10);
    assert_eq!(pl.window_ms(), 10_000);
    assert_eq!(pl.media_sequence(), 20);
}

#[test]
fn bounded_by_max_segments() {
    let mut pl = LivePlaylist::new(PlaylistConfig { min_window_ms: u64::MAX, ..PlaylistConfig::default() });
    for s in 0..(MAX_PLAYLIST_SEGMENTS as u64 + 50) {
        pl.offer(&[seg(s, 100)], T0);
    }
    assert_eq!(pl.segments().len(), MAX_PLAYLIST_SEGMENTS);
    assert_eq!(pl.media_sequence(), 50);
}

#[test]
fn fresh_playlist_starts_at_the_oldest_offered_without_discontinuity() {
    let mut pl = LivePlaylist::new(PlaylistConfig::default());
    assert!(pl.is_empty());
    assert_eq!(pl.next_seq(), None);
    let text = pl.render(uri);
    let p = parse(&text);
    assert!(p.segments.is_empty());
    // History with a hole: the first listed needs no predecessor; the hole
    // waits like any other.
    assert_eq!(pl.offer(&[seg(40, 1000), seg(41, 1000), seg(43, 1000)], T0), 2);
    assert_eq!(pl.next_seq(), Some(42));
    assert!(pl.segments().all(|s| !s.discontinuity));
    assert_eq!(pl.media_sequence(), 0, "numbering is the playlist's own");
}

#[test]
fn program_date_time_is_iso8601_utc_with_ms() {
    assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
    assert_eq!(iso8601_ms(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    assert_eq!(iso8601_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    let mut pl = LivePlaylist::new(PlaylistConfig::default());
    pl.offer(&[SegmentMeta { seq: 7, duration_ms: 1000, published_at_ms: 1_000_001_000 }], 0);
    let text = pl.render(uri);
    assert!(
        text.contains("#EXT-X-PROGRAM-DATE-TIME:1970-01-12T13:46:40.000Z\n#EXTINF:1.000,\nk51test/7.ts\n"),
        "{text}"
    );
}

#[test]
fn a_restarted_publisher_gets_a_discontinuity() {
    let mut pl = LivePlaylist::new(PlaylistConfig::default());
    pl.offer(&[seg(0, 1000), seg(1, 1000)], T0);
    // seq 2 follows on, but was published a minute after seq 1.
    let late = SegmentMeta { seq: 2, duration_ms: 1000, published_at_ms: T0 + 62_000 };
    let next = SegmentMeta { seq: 3, duration_ms: 1000, published_at_ms: T0 + 63_000 };
    assert_eq!(pl.offer(&[late, next], T0 + 63_000), 2);
    let flags: Vec<(u64, bool)> = pl.segments().map(|s| (s.meta.seq, s.discontinuity)).collect();
    assert_eq!(flags, vec![(0, false), (1, false), (2, true), (3, false)]);
    parse(&pl.render(uri));
}
