//! HLS (RFC 8216) live media playlists built from stored segment metadata.
//!
//! [`LivePlaylist`] is the state of one channel's live playlist as one
//! gateway serves it. Segments are offered in seq order as they become
//! playable (every block verified and stored); the playlist appends them,
//! slides its window and renders the text. It keeps the promises a live
//! playlist makes to a player across reloads (RFC 8216 §6.2.1–§6.2.2):
//!
//! - `EXT-X-TARGETDURATION` is fixed when the first segment is appended, at
//!   least the ceiling of every segment listed then; it is raised only if a
//!   later segment would exceed it (counted in [`LivePlaylist::target_raises`],
//!   which a well-configured publisher keeps at zero).
//! - `EXT-X-MEDIA-SEQUENCE` only grows, and a media sequence number always
//!   names the same segment: numbers are the playlist's own, contiguous, so a
//!   skipped shoal seq does not shift later segments.
//! - A seq that never became playable is a gap: the next segment carries
//!   `EXT-X-DISCONTINUITY` (its timestamps do not follow on), and removing such
//!   a segment from the window increments `EXT-X-DISCONTINUITY-SEQUENCE`. So
//!   does a long pause in publish times (the publisher restarted its encoder).
//! - The window is never shorter than three target durations (§6.2.2): the
//!   oldest segment is removed only when the rest still cover that much.
//! - Every segment carries `EXT-X-PROGRAM-DATE-TIME`: the wall-clock time of
//!   its first frame, from the publisher's signed publish time.

use std::{collections::VecDeque, fmt::Write as _};

/// The playlist's `EXT-X-VERSION`: 3 allows decimal `EXTINF` durations, and
/// nothing here needs a newer tag.
pub const HLS_VERSION: u8 = 3;

/// Most segments one playlist lists. A live window is a few target
/// durations (6–30 segments at shoal's 1 s default); 256 bounds a
/// playlist's memory and text (~20 KiB) even for 100 ms segments over a
/// 25 s window, and past it the oldest segment goes whatever the window says.
pub const MAX_PLAYLIST_SEGMENTS: usize = 256;

/// One playable segment, as the store describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentMeta {
    /// The channel's seq (the manifest's), used in the segment's URI.
    pub seq: u64,
    /// True duration in milliseconds, from the signed manifest.
    pub duration_ms: u64,
    /// When the publisher signed it (unix ms): right after its last frame.
    pub published_at_ms: u64,
}

impl SegmentMeta {
    /// Unix ms of the segment's first frame: the publish time minus its
    /// duration (the publisher signs a segment as soon as it is cut).
    pub fn starts_at_ms(&self) -> u64 {
        self.published_at_ms.saturating_sub(self.duration_ms)
    }
}

/// How a [`LivePlaylist`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistConfig {
    /// The smallest target duration announced, in seconds, whatever the
    /// first segments measure: a floor that absorbs segments a little longer
    /// than the segmenter's target without raising the target later.
    pub min_target_duration_s: u64,
    /// The window the playlist keeps, in ms, if longer than three target
    /// durations (which is always kept).
    pub min_window_ms: u64,
    /// How long a seq may stay missing while a later one is playable before
    /// it counts as skipped: the node's playback deadline, after which it
    /// stops fetching the segment anyway.
    pub gap_wait_ms: u64,
    /// A pause this long between one segment's end and the next one's start
    /// (by publish times) means the publisher stopped and started again: a
    /// new encoder session, whose timestamps start over, so the segment gets
    /// a discontinuity even though its seq follows on.
    pub pause_discontinuity_ms: u64,
}

impl Default for PlaylistConfig {
    fn default() -> Self {
        Self { min_target_duration_s: 2, min_window_ms: 0, gap_wait_ms: 3000, pause_discontinuity_ms: 10_000 }
    }
}

/// A segment listed in the playlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedSegment {
    /// What the store said about it.
    pub meta: SegmentMeta,
    /// Segments were skipped right before it.
    pub discontinuity: bool,
}

/// One channel's live media playlist (see the module docs for its rules).
#[derive(Debug, Clone)]
pub struct LivePlaylist {
    config: PlaylistConfig,
    target_duration_s: Option<u64>,
    target_raises: u64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    entries: VecDeque<ListedSegment>,
    /// The newest seq appended (or deemed skipped); offers start after it.
    last_seq: Option<u64>,
    /// When a later seq was first seen playable while `last_seq + 1` was not.
    gap_seen_at_ms: Option<u64>,
}

impl LivePlaylist {
    /// An empty playlist.
    pub fn new(config: PlaylistConfig) -> Self {
        Self {
            config,
            target_duration_s: None,
            target_raises: 0,
            media_sequence: 0,
            discontinuity_sequence: 0,
            entries: VecDeque::new(),
            last_seq: None,
            gap_seen_at_ms: None,
        }
    }

    /// The first seq the playlist can still take (`None` before any): the
    /// caller reads the store from here.
    pub fn next_seq(&self) -> Option<u64> {
        self.last_seq.map(|s| s.saturating_add(1))
    }

    /// The listed segments, oldest first.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = &ListedSegment> {
        self.entries.iter()
    }

    /// Whether nothing is listed yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `EXT-X-TARGETDURATION` in seconds (`None` until a segment is listed).
    pub fn target_duration_s(&self) -> Option<u64> {
        self.target_duration_s
    }

    /// `EXT-X-MEDIA-SEQUENCE`: the media sequence number of the first listed
    /// segment.
    pub fn media_sequence(&self) -> u64 {
        self.media_sequence
    }

    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// How often a segment longer than the announced target forced it up.
    pub fn target_raises(&self) -> u64 {
        self.target_raises
    }

    /// Total duration of the listed segments, ms.
    pub fn window_ms(&self) -> u64 {
        self.entries.iter().map(|e| e.meta.duration_ms).sum()
    }

    /// Offers the playable segments known now, in ascending seq order (the
    /// caller reads them from [`Self::next_seq`] on; older seqs are ignored,
    /// since a media sequence number, once given, is never reused). Returns
    /// how many were appended.
    ///
    /// A seq right after the last one is appended at once. One after a gap
    /// waits up to [`PlaylistConfig::gap_wait_ms`] from the first offer that
    /// showed the gap, for the missing seq to become playable; then it is
    /// appended with a discontinuity.
    pub fn offer(&mut self, available: &[SegmentMeta], now_ms: u64) -> usize {
        let mut appended = 0;
        for seg in available {
            if self.next_seq().is_some_and(|n| seg.seq < n) {
                continue;
            }
            let contiguous = self.next_seq().is_none_or(|n| seg.seq == n);
            if !contiguous {
                let since = *self.gap_seen_at_ms.get_or_insert(now_ms);
                if now_ms.saturating_sub(since) < self.config.gap_wait_ms {
                    break; // wait for the missing seq; later ones wait behind it
                }
            }
            // The first segment of a fresh playlist has nothing before it.
            let paused = self.entries.back().is_some_and(|prev| {
                seg.starts_at_ms() > prev.meta.published_at_ms + self.config.pause_discontinuity_ms
            });
            let discontinuity = (!contiguous && self.last_seq.is_some()) || paused;
            self.append(ListedSegment { meta: *seg, discontinuity });
            appended += 1;
        }
        appended
    }

    fn append(&mut self, seg: ListedSegment) {
        let needed = ceil_secs(seg.meta.duration_ms);
        match self.target_duration_s {
            None => self.target_duration_s = Some(needed.max(self.config.min_target_duration_s).max(1)),
            Some(t) if needed > t => {
                self.target_duration_s = Some(needed);
                self.target_raises += 1;
            }
            Some(_) => {}
        }
        self.last_seq = Some(seg.meta.seq);
        self.gap_seen_at_ms = None;
        self.entries.push_back(seg);
        self.slide();
    }

    /// Removes the oldest segments while the rest still cover the window
    /// (RFC 8216 §6.2.2), or while over [`MAX_PLAYLIST_SEGMENTS`].
    fn slide(&mut self) {
        let required = self.required_window_ms();
        let mut total = self.window_ms();
        while let Some(front) = self.entries.front().copied() {
            let rest = total - front.meta.duration_ms;
            let over_cap = self.entries.len() > MAX_PLAYLIST_SEGMENTS;
            if !over_cap && (self.entries.len() <= 1 || rest < required) {
                break;
            }
            self.entries.pop_front();
            total = rest;
            self.media_sequence += 1;
            if front.discontinuity {
                self.discontinuity_sequence += 1;
            }
        }
    }

    /// The shortest window the playlist keeps, ms: three target durations or
    /// the configured window, whichever is longer.
    pub fn required_window_ms(&self) -> u64 {
        let three_targets = self.target_duration_s.unwrap_or(0).saturating_mul(3000);
        three_targets.max(self.config.min_window_ms)
    }

    /// The playlist text. `uri(seq)` names each segment (relative URIs
    /// resolve against the playlist's URL).
    pub fn render(&self, uri: impl Fn(u64) -> String) -> String {
        let mut out = String::with_capacity(160 + 96 * self.entries.len());
        let target = self.target_duration_s.unwrap_or(self.config.min_target_duration_s.max(1));
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:{HLS_VERSION}\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:{}\n",
            self.media_sequence
        );
        if self.discontinuity_sequence > 0 {
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        }
        for e in &self.entries {
            if e.discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = write!(
                out,
                "#EXT-X-PROGRAM-DATE-TIME:{}\n#EXTINF:{}.{:03},\n{}\n",
                iso8601_ms(e.meta.starts_at_ms()),
                e.meta.duration_ms / 1000,
                e.meta.duration_ms % 1000,
                uri(e.meta.seq)
            );
        }
        out
    }
}

fn ceil_secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` for a unix time in ms (the date-time form
/// RFC 8216 §4.3.2.6 asks for, from ISO 8601 / RFC 3339).
pub fn iso8601_ms(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, (rem % 3600) / 60, rem % 60, unix_ms % 1000)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests;
