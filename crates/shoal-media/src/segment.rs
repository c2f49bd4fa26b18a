//! The keyframe segmenter: live MPEG-TS in, self-contained segments out.
//!
//! [`Segmenter`] takes a publisher's MPEG-TS in chunks of any size and cuts
//! it into segments a player can start on:
//!
//! - With video, a segment is cut only at a confirmed keyframe (see
//!   [`crate::ts::nal`]), once the segment has reached the target duration.
//!   If no keyframe comes for `keyframe_timeout_ms`, segments are cut by time
//!   at any picture and counted in [`IngestStats::cuts_without_keyframe`].
//! - Audio-only streams are cut by time at PES boundaries.
//! - A segment never exceeds `max_segment_bytes`: when it would, it is cut
//!   where it is (counted in [`IngestStats::cuts_at_size_cap`]).
//! - Every segment starts with the PAT and PMT (the encoder's own when they
//!   come right before the cut, else copies of the latest ones), so a player
//!   can start on any segment.
//! - Durations are the true ones, from the reference stream's DTS/PTS (the
//!   PCR when it has none), across the 33-bit wrap.
//!
//! Cut decisions depend only on the bytes, never on how they were chunked,
//! so the same input always gives the same segments.

use bytes::Bytes;

use crate::ts::{
    Clock, NULL_PID, PACKET_SIZE, PAT_PID, PacketReader, Unwrapper,
    nal::{NalCodec, NalScanner, Verdict},
    parse_packet, parse_pes_header,
    psi::{self, EsInfo, MAX_SECTION_PACKETS, Program, SectionAssembler},
};

/// Smallest hard cap accepted: the copies of PAT and PMT, the packets
/// [`Segmenter::finish`] may still append, and some room for media.
pub const MIN_SEGMENT_BYTES: usize = 32 * PACKET_SIZE;
/// Room kept in every segment for the PAT and PMT copies inserted at its
/// start (each section at most [`MAX_SECTION_PACKETS`] packets).
const PSI_RESERVE: usize = 2 * MAX_SECTION_PACKETS * PACKET_SIZE;
/// Room kept for the packets still inside the packet reader when the input
/// ends: it holds back at most three (the lock needs three sync bytes), and
/// `finish` appends them without cutting.
const FINISH_SLACK: usize = 3 * PACKET_SIZE;
/// Packets accepted without ever seeing a PMT before giving up: ffmpeg and
/// OBS repeat PAT/PMT every 100 ms, and 4096 packets are 770 KB, seconds
/// of video at any usual bitrate.
const MAX_PACKETS_WITHOUT_PMT: u64 = 4096;
/// Packets at a segment's start examined for PAT/PMT (a muxer writes its
/// tables, SDT included, in a handful of packets before a keyframe).
const MAX_LEADING_TABLE_PACKETS: usize = 32;

/// How segments are cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// A segment is cut at the first keyframe (audio-only: PES start) after
    /// it reaches this duration.
    pub target_duration_ms: u64,
    /// Hard cap on one segment's size (raised to [`MIN_SEGMENT_BYTES`]).
    pub max_segment_bytes: usize,
    /// With video, how long to wait for a keyframe before cutting by time.
    pub keyframe_timeout_ms: u64,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self { target_duration_ms: 1000, max_segment_bytes: 8 * 1024 * 1024, keyframe_timeout_ms: 5000 }
    }
}

/// One cut segment: whole TS packets, starting with PAT and PMT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TsSegment {
    /// The packets.
    pub data: Bytes,
    /// True duration from the stream's timestamps, ms.
    pub duration_ms: u64,
    /// Starts at a random access point: a confirmed video keyframe, or (for
    /// streams without video) the start of an audio PES packet.
    pub keyframe: bool,
    /// PTS of the reference stream's first PES packet in the segment,
    /// extended past 33 bits so it keeps growing across the wrap.
    pub first_pts_90k: Option<u64>,
}

/// What the segmenter has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Input bytes pushed.
    pub bytes: u64,
    /// Packets accepted.
    pub packets: u64,
    /// Packets dropped: truncated packets and garbage between packets (one
    /// per 188 bytes of a run), and packets flagged as damaged.
    pub skipped_packets: u64,
    /// Bytes dropped as truncated packets or garbage.
    pub skipped_bytes: u64,
    /// Null (padding) packets dropped.
    pub null_packets: u64,
    /// Segments cut.
    pub segments: u64,
    /// Their total duration, ms.
    pub duration_ms: u64,
    /// Confirmed video keyframes.
    pub keyframes: u64,
    /// Segments cut by time on a video stream because no keyframe came
    /// within `keyframe_timeout_ms`: they do not start at a keyframe.
    pub cuts_without_keyframe: u64,
    /// Segments cut because they reached `max_segment_bytes`.
    pub cuts_at_size_cap: u64,
    /// IDR/IRAP pictures without an SPS before them in the access unit.
    pub idr_without_parameter_sets: u64,
    /// PES packets flagged random-access whose first picture was not a
    /// keyframe.
    pub unconfirmed_random_access: u64,
    /// Timestamp discontinuities (backwards, or over 10 s forwards).
    pub timestamp_jumps: u64,
    /// The video codec, from the PMT.
    pub video_codec: Option<&'static str>,
    /// The audio codec, from the PMT.
    pub audio_codec: Option<&'static str>,
}

/// Why an input cannot be segmented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// The input does not look like MPEG-TS at all.
    #[error(
        "the input is not MPEG-TS: found {found}. Remux it to MPEG-TS \
         (`ffmpeg -i INPUT -c copy -f mpegts -`) or publish it as raw bytes with `--format bytes`"
    )]
    NotMpegTs {
        /// What was found instead.
        found: String,
    },
    /// MPEG-TS packets, but no program tables to find the streams with.
    #[error(
        "no PAT/PMT in the first {packets} MPEG-TS packets: without program tables the video and audio \
         streams cannot be found; check the encoder's MPEG-TS muxer settings"
    )]
    NoProgramTables {
        /// Packets read.
        packets: u64,
    },
}

type RawPacket = [u8; PACKET_SIZE];

/// The packets of the latest complete PAT or PMT section, to copy to the
/// start of a segment that lacks them.
#[derive(Debug, Default)]
struct TablePackets {
    collecting: Vec<RawPacket>,
    /// The section started at the first byte of the payload, so the
    /// collected packets hold exactly that section.
    aligned: bool,
    latest: Vec<RawPacket>,
}

impl TablePackets {
    fn add(&mut self, raw: &RawPacket, unit_start: bool, payload: &[u8]) {
        if unit_start {
            self.collecting.clear();
            self.aligned = payload.first() == Some(&0);
        } else if self.collecting.is_empty() || self.collecting.len() >= MAX_SECTION_PACKETS {
            self.aligned = false;
        }
        if self.aligned {
            self.collecting.push(*raw);
        }
    }

    fn section_done(&mut self) {
        if self.aligned && !self.collecting.is_empty() {
            self.latest = std::mem::take(&mut self.collecting);
            self.aligned = false;
        }
    }
}

/// State of the segment being built.
#[derive(Debug, Default)]
struct SegState {
    /// Reference-stream time covered, 90 kHz.
    duration_90k: u64,
    /// PCR time covered, 90 kHz (used when the stream has no PES timestamps).
    pcr_90k: u64,
    first_pts: Option<u64>,
    /// Whether it starts at a random access point; `None` until known.
    keyframe: Option<bool>,
    /// PAT and PMT packets valid when it started.
    tables: Option<(Vec<RawPacket>, Vec<RawPacket>)>,
}

/// A video PES packet whose first picture is not judged yet.
#[derive(Debug)]
struct Candidate {
    /// Where a cut before it would go (before the tables that precede it).
    cut_at: usize,
    scanner: Option<NalScanner>,
    random_access: bool,
    pts: Option<u64>,
}

impl Candidate {
    /// The verdict now: the scan's, "not a keyframe" if the scan found no
    /// picture, or the random-access flag for codecs without NAL units.
    fn forced_verdict(&mut self) -> Verdict {
        match &mut self.scanner {
            Some(s) => s.force(),
            None if self.random_access => Verdict::Keyframe,
            None => Verdict::NotKeyframe,
        }
    }
}

/// Live MPEG-TS in, keyframe-aligned segments out. Sans-IO.
#[derive(Debug)]
pub struct Segmenter {
    cfg: SegmenterConfig,
    cap: usize,
    reader: PacketReader,
    pat: SectionAssembler,
    pmt: SectionAssembler,
    pat_packets: TablePackets,
    pmt_packets: TablePackets,
    pmt_pid: Option<u16>,
    program: Option<Program>,
    cur: Vec<u8>,
    seg: SegState,
    /// Offset in `cur` where the trailing run of non-media packets starts.
    tail_start: Option<usize>,
    /// Offset in `cur` of its first media packet.
    first_es: Option<usize>,
    candidate: Option<Candidate>,
    ref_clock: Clock,
    pcr_clock: Clock,
    pts_unwrap: Unwrapper,
    ref_ts_seen: bool,
    last_ref_step_90k: u64,
    since_keyframe_90k: u64,
    since_keyframe_pcr_90k: u64,
    finishing: bool,
    corrupt_packets: u64,
    stats: IngestStats,
    failed: Option<IngestError>,
}

impl Segmenter {
    /// A segmenter with `cfg`.
    pub fn new(cfg: SegmenterConfig) -> Self {
        let cap = cfg.max_segment_bytes.max(MIN_SEGMENT_BYTES);
        Self {
            cfg,
            cap,
            reader: PacketReader::new(),
            pat: SectionAssembler::default(),
            pmt: SectionAssembler::default(),
            pat_packets: TablePackets::default(),
            pmt_packets: TablePackets::default(),
            pmt_pid: None,
            program: None,
            cur: Vec::new(),
            seg: SegState::default(),
            tail_start: None,
            first_es: None,
            candidate: None,
            ref_clock: Clock::default(),
            pcr_clock: Clock::default(),
            pts_unwrap: Unwrapper::default(),
            ref_ts_seen: false,
            last_ref_step_90k: 0,
            since_keyframe_90k: 0,
            since_keyframe_pcr_90k: 0,
            finishing: false,
            corrupt_packets: 0,
            stats: IngestStats::default(),
            failed: None,
        }
    }

    /// The hard cap every segment respects (the configured one, raised to
    /// [`MIN_SEGMENT_BYTES`]).
    pub fn max_segment_bytes(&self) -> usize {
        self.cap
    }

    /// Feeds input bytes (any chunking); returns the segments they complete.
    /// Errors are sticky: once the input is known not to be usable MPEG-TS,
    /// every call returns the same error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<TsSegment>, IngestError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.stats.bytes += bytes.len() as u64;
        self.reader.push(bytes);
        let mut out = Vec::new();
        self.drain_reader(&mut out);
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(out),
        }
    }

    /// Ends the input: flushes the last partial segment, whatever its
    /// duration. Returns `None` when nothing is left (or the input failed;
    /// see [`error`](Self::error)).
    pub fn finish(&mut self) -> Option<TsSegment> {
        if self.failed.is_some() {
            return None;
        }
        self.reader.finish();
        // No cuts from here on: the slack kept in every segment holds what
        // the reader still had, so at most one segment comes out.
        self.finishing = true;
        let mut out = Vec::new();
        self.drain_reader(&mut out);
        debug_assert!(out.is_empty(), "no cuts while finishing");
        if self.failed.is_some() {
            return None;
        }
        if let Some(mut c) = self.candidate.take() {
            let v = c.forced_verdict();
            self.apply_verdict(c, v, &mut out);
        }
        if self.ref_ts_seen {
            // The last frame lasts about as long as the one before it.
            self.seg.duration_90k += self.last_ref_step_90k;
        }
        let data = std::mem::take(&mut self.cur);
        let seg = std::mem::take(&mut self.seg);
        let has_media = self.first_es.is_some() || (self.program.is_none() && !data.is_empty());
        self.tail_start = None;
        self.first_es = None;
        if !has_media {
            return None;
        }
        self.emit(data, seg, &mut out);
        out.pop()
    }

    /// What was seen so far.
    pub fn stats(&self) -> IngestStats {
        let mut s = self.stats.clone();
        s.skipped_packets = self.reader.skipped_packets() + self.corrupt_packets;
        s.skipped_bytes = self.reader.skipped_bytes();
        s
    }

    /// The error that stopped the input, if any (also returned by `push`;
    /// `finish` can discover one too, for an input shorter than three
    /// packets).
    pub fn error(&self) -> Option<&IngestError> {
        self.failed.as_ref()
    }

    fn drain_reader(&mut self, out: &mut Vec<TsSegment>) {
        while self.failed.is_none() {
            match self.reader.next_packet() {
                Ok(Some(p)) => self.on_packet(&p, out),
                Ok(None) => break,
                Err(e) => self.failed = Some(e),
            }
        }
    }

    fn on_packet(&mut self, raw: &RawPacket, out: &mut Vec<TsSegment>) {
        let Ok(pkt) = parse_packet(raw) else {
            self.corrupt_packets += 1;
            return;
        };
        if pkt.transport_error {
            self.corrupt_packets += 1;
            return;
        }
        if pkt.pid == NULL_PID {
            // Padding from constant-bitrate muxers: not worth relaying.
            self.stats.null_packets += 1;
            return;
        }
        self.stats.packets += 1;
        if pkt.pid == PAT_PID {
            self.on_pat(raw, pkt.payload_unit_start, pkt.payload);
        } else if Some(pkt.pid) == self.pmt_pid {
            self.on_pmt(raw, pkt.payload_unit_start, pkt.payload);
        }
        let Some(program) = &self.program else {
            if self.stats.packets >= MAX_PACKETS_WITHOUT_PMT {
                self.failed = Some(IngestError::NoProgramTables { packets: self.stats.packets });
                return;
            }
            self.ensure_room(out);
            self.append(raw, false);
            return;
        };
        if let Some(pcr) = pkt.pcr_90k.filter(|_| pkt.pid == program.pcr_pid) {
            let step = self.pcr_clock.step(pcr);
            self.seg.pcr_90k += step.elapsed_90k;
            self.since_keyframe_pcr_90k += step.elapsed_90k;
        }
        let is_es = program.is_es(pkt.pid);
        let reference = program.reference().filter(|r| r.pid == pkt.pid);
        let is_video = program.video().is_some_and(|v| v.pid == pkt.pid);
        self.ensure_room(out);
        let Some(reference) = reference.filter(|_| pkt.payload_unit_start) else {
            self.append(raw, is_es);
            if is_video && let Some(c) = &mut self.candidate {
                let v = c.scanner.as_mut().and_then(|s| s.push(pkt.payload));
                if let Some(v) = v {
                    self.decide(v, out);
                }
            }
            return;
        };
        // A reference PES packet starts here: a possible cut point.
        if let Some(mut c) = self.candidate.take() {
            // The previous picture's PES ended without a verdict.
            let v = c.forced_verdict();
            self.apply_verdict(c, v, out);
        }
        let pts = self.on_pes_timestamps(pkt.payload);
        let cut_at = self.tail_start.unwrap_or(self.cur.len());
        self.append(raw, true);
        if is_video {
            let codec = match reference.stream_type {
                psi::stream_type::H264 => Some(NalCodec::H264),
                psi::stream_type::H265 => Some(NalCodec::H265),
                _ => None,
            };
            let mut scanner = codec.map(NalScanner::new);
            let early = scanner.as_mut().and_then(|s| s.push(pkt.payload));
            self.candidate = Some(Candidate { cut_at, scanner, random_access: pkt.random_access, pts });
            match (codec, early) {
                (Some(_), Some(v)) => self.decide(v, out),
                // Codecs without NAL units: the random-access flag decides.
                (None, _) => {
                    let v = if pkt.random_access { Verdict::Keyframe } else { Verdict::NotKeyframe };
                    self.decide(v, out);
                }
                (Some(_), None) => {}
            }
        } else {
            self.time_cut(cut_at, pts, out);
        }
    }

    /// Reads a reference PES header's timestamps into the clocks; returns
    /// its extended PTS.
    fn on_pes_timestamps(&mut self, payload: &[u8]) -> Option<u64> {
        let h = parse_pes_header(payload)?;
        if let Some(t) = h.dts.or(h.pts) {
            let step = self.ref_clock.step(t);
            if step.jumped {
                self.stats.timestamp_jumps += 1;
            }
            if self.ref_ts_seen && !step.jumped {
                self.last_ref_step_90k = step.elapsed_90k;
            }
            self.ref_ts_seen = true;
            self.seg.duration_90k += step.elapsed_90k;
            self.since_keyframe_90k += step.elapsed_90k;
        }
        h.pts.map(|p| self.pts_unwrap.unwrap(p))
    }

    fn decide(&mut self, verdict: Verdict, out: &mut Vec<TsSegment>) {
        if let Some(c) = self.candidate.take() {
            self.apply_verdict(c, verdict, out);
        }
    }

    fn apply_verdict(&mut self, c: Candidate, verdict: Verdict, out: &mut Vec<TsSegment>) {
        let keyframe = verdict == Verdict::Keyframe;
        match verdict {
            Verdict::Keyframe => self.stats.keyframes += 1,
            Verdict::IdrWithoutParameterSets => self.stats.idr_without_parameter_sets += 1,
            Verdict::NotKeyframe => {}
        }
        if c.random_access && !keyframe {
            self.stats.unconfirmed_random_access += 1;
        }
        let ready = self.first_es.is_some_and(|o| o < c.cut_at);
        let duration = self.seg_duration_ms();
        let cut = !self.finishing
            && ready
            && if keyframe {
                duration >= self.cfg.target_duration_ms || self.seg.keyframe == Some(false)
            } else {
                self.since_keyframe_ms() >= self.cfg.keyframe_timeout_ms && duration >= self.cfg.target_duration_ms
            };
        if cut {
            if !keyframe {
                self.stats.cuts_without_keyframe += 1;
            }
            self.cut(c.cut_at, out);
            self.seg.first_pts = c.pts;
            self.seg.keyframe = Some(keyframe);
        } else {
            self.seg.first_pts = self.seg.first_pts.or(c.pts);
            self.seg.keyframe.get_or_insert(keyframe);
        }
        if keyframe {
            self.since_keyframe_90k = 0;
            self.since_keyframe_pcr_90k = 0;
        }
    }

    /// Streams without video: cut by time at the reference PES start.
    fn time_cut(&mut self, cut_at: usize, pts: Option<u64>, out: &mut Vec<TsSegment>) {
        let ready = self.first_es.is_some_and(|o| o < cut_at);
        if !self.finishing && ready && self.seg_duration_ms() >= self.cfg.target_duration_ms {
            self.cut(cut_at, out);
            self.seg.first_pts = pts;
            self.seg.keyframe = Some(true);
        } else {
            self.seg.first_pts = self.seg.first_pts.or(pts);
            self.seg.keyframe.get_or_insert(true);
        }
    }

    fn seg_duration_ms(&self) -> u64 {
        let d = if self.ref_ts_seen { self.seg.duration_90k } else { self.seg.pcr_90k };
        (d + 45) / 90
    }

    fn since_keyframe_ms(&self) -> u64 {
        let d = if self.ref_ts_seen { self.since_keyframe_90k } else { self.since_keyframe_pcr_90k };
        d / 90
    }

    /// Before appending a packet: cuts where we are if the segment would
    /// outgrow the cap (keeping room for the table copies and for `finish`).
    fn ensure_room(&mut self, out: &mut Vec<TsSegment>) {
        let limit = self.cap - PSI_RESERVE - FINISH_SLACK;
        if self.finishing || self.cur.len() + PACKET_SIZE <= limit {
            return;
        }
        if let Some(mut c) = self.candidate.take() {
            let v = c.forced_verdict();
            self.apply_verdict(c, v, out);
            if self.cur.len() + PACKET_SIZE <= limit {
                return;
            }
        }
        self.stats.cuts_at_size_cap += 1;
        let len = self.cur.len();
        self.cut(len, out);
        // The next segment starts mid-picture.
        self.seg.keyframe = Some(false);
    }

    fn append(&mut self, raw: &RawPacket, is_es: bool) {
        let off = self.cur.len();
        self.cur.extend_from_slice(raw);
        if is_es {
            self.tail_start = None;
            self.first_es.get_or_insert(off);
        } else if self.tail_start.is_none() {
            self.tail_start = Some(off);
        }
    }

    /// Emits `cur[..at]` as a segment; the rest starts the next one.
    fn cut(&mut self, at: usize, out: &mut Vec<TsSegment>) {
        if let Some(c) = &mut self.candidate {
            // Pictures are judged before any cut; only a program change can
            // leave one pending, and its offset moves with the bytes.
            c.cut_at = c.cut_at.saturating_sub(at);
        }
        let rest = self.cur.split_off(at);
        let data = std::mem::replace(&mut self.cur, rest);
        let seg = std::mem::take(&mut self.seg);
        self.emit(data, seg, out);
        self.seg.tables = Some((self.pat_packets.latest.clone(), self.pmt_packets.latest.clone()));
        // Recompute the offsets for what moved to the new segment.
        self.tail_start = None;
        self.first_es = None;
        for (i, p) in self.cur.chunks_exact(PACKET_SIZE).enumerate() {
            let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
            let is_es = self.program.as_ref().is_some_and(|pr| pr.is_es(pid));
            if is_es {
                self.tail_start = None;
                self.first_es.get_or_insert(i * PACKET_SIZE);
            } else if self.tail_start.is_none() {
                self.tail_start = Some(i * PACKET_SIZE);
            }
        }
    }

    fn emit(&mut self, data: Vec<u8>, seg: SegState, out: &mut Vec<TsSegment>) {
        if data.is_empty() {
            return;
        }
        let (pat, pmt) =
            seg.tables.unwrap_or_else(|| (self.pat_packets.latest.clone(), self.pmt_packets.latest.clone()));
        let data = self.tables_first(data, &pat, &pmt);
        let d = if self.ref_ts_seen { seg.duration_90k } else { seg.pcr_90k };
        let duration_ms = (d + 45) / 90;
        self.stats.segments += 1;
        self.stats.duration_ms += duration_ms;
        out.push(TsSegment {
            data: Bytes::from(data),
            duration_ms,
            keyframe: seg.keyframe.unwrap_or(false),
            first_pts_90k: seg.first_pts,
        });
    }

    /// Puts PAT then PMT first: the segment's leading non-media packets are
    /// reordered (per-PID order is kept, so continuity counters stay
    /// valid), and copies of the latest tables go in where the encoder did
    /// not send them.
    fn tables_first(&self, data: Vec<u8>, pat: &[RawPacket], pmt: &[RawPacket]) -> Vec<u8> {
        let pid_of = |p: &[u8]| (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        let is_es = |pid: u16| self.program.as_ref().is_some_and(|pr| pr.is_es(pid));
        let run =
            data.chunks_exact(PACKET_SIZE).take(MAX_LEADING_TABLE_PACKETS).take_while(|p| !is_es(pid_of(p))).count();
        let lead = &data[..run * PACKET_SIZE];
        let of = |want: &dyn Fn(u16) -> bool| -> Vec<u8> {
            lead.chunks_exact(PACKET_SIZE).filter(|p| want(pid_of(p))).flatten().copied().collect()
        };
        let pmt_pid = self.pmt_pid;
        let own_pat = of(&|pid| pid == PAT_PID);
        let own_pmt = of(&|pid| Some(pid) == pmt_pid);
        let others = of(&|pid| pid != PAT_PID && Some(pid) != pmt_pid);
        let mut v = Vec::with_capacity(data.len() + PSI_RESERVE);
        if own_pat.is_empty() {
            pat.iter().for_each(|p| v.extend_from_slice(p));
        } else {
            v.extend_from_slice(&own_pat);
        }
        if own_pmt.is_empty() {
            pmt.iter().for_each(|p| v.extend_from_slice(p));
        } else {
            v.extend_from_slice(&own_pmt);
        }
        v.extend_from_slice(&others);
        v.extend_from_slice(&data[run * PACKET_SIZE..]);
        v
    }

    fn on_pat(&mut self, raw: &RawPacket, unit_start: bool, payload: &[u8]) {
        self.pat_packets.add(raw, unit_start, payload);
        for section in self.pat.push(unit_start, payload) {
            let Some(pmt_pid) = psi::parse_pat(&section) else { continue };
            if !(0x10..NULL_PID).contains(&pmt_pid) {
                continue;
            }
            self.pat_packets.section_done();
            if self.pmt_pid != Some(pmt_pid) {
                self.pmt_pid = Some(pmt_pid);
                self.pmt = SectionAssembler::default();
                self.pmt_packets = TablePackets::default();
            }
        }
    }

    fn on_pmt(&mut self, raw: &RawPacket, unit_start: bool, payload: &[u8]) {
        self.pmt_packets.add(raw, unit_start, payload);
        for section in self.pmt.push(unit_start, payload) {
            let Some(program) = psi::parse_pmt(&section) else { continue };
            self.pmt_packets.section_done();
            let codec = |s: Option<EsInfo>| s.map(|s| psi::classify(s.stream_type).1);
            self.stats.video_codec = codec(program.video());
            self.stats.audio_codec = codec(program.audio());
            self.program = Some(program);
        }
    }
}

#[cfg(test)]
mod tests;
