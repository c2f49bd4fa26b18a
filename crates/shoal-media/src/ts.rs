//! MPEG-TS demuxing, as much as segmenting needs: packets, PAT/PMT, PES timestamps, PCR and random access points.
//!
//! Everything here reads untrusted bytes (a publisher's encoder, a UDP
//! socket): nothing panics on malformed input, every buffer has a bound, and
//! what cannot be parsed is skipped and counted rather than guessed at.
//!
//! - [`PacketReader`] cuts a byte stream, in chunks of any size, into
//!   188-byte packets. It locks on three sync bytes 188 apart, confirms each
//!   packet by the sync byte of the next one, and resynchronises after
//!   garbage or a truncated packet, so a damaged packet is dropped instead of
//!   being spliced into the output.
//! - [`parse_packet`] reads one packet's header and adaptation field (PCR,
//!   random-access indicator); [`parse_pes_header`] reads PTS and DTS.
//! - [`psi`] assembles PAT and PMT sections (CRC-checked) into a [`psi::Program`].
//! - [`nal`] confirms keyframes by scanning H.264/H.265 NAL units.
//! - [`Clock`] and [`Unwrapper`] handle the 33-bit wrap of PTS, DTS and PCR.
//! - [`StreamClock`] follows a stream's PCR, to pace a file at its own speed.

pub mod nal;
pub mod psi;

use crate::segment::IngestError;

/// Size of one MPEG-TS packet.
pub const PACKET_SIZE: usize = 188;
/// First byte of every packet.
pub const SYNC_BYTE: u8 = 0x47;
/// PID of the program association table.
pub const PAT_PID: u16 = 0x0000;
/// PID of null (padding) packets.
pub const NULL_PID: u16 = 0x1FFF;
/// Bytes looked at before deciding that an input is not MPEG-TS: three
/// packets, so a lock needs three sync bytes 188 apart (one 0x47 in random
/// data is a 1-in-256 event; three in a row at the right spacing is 1 in 16
/// million).
pub const SNIFF_BYTES: usize = 3 * PACKET_SIZE;
/// PTS, DTS and the PCR base are 33-bit counts of a 90 kHz clock.
pub const TIMESTAMP_MODULO: u64 = 1 << 33;
/// A timestamp step larger than this (forward) or any step backwards is a
/// discontinuity (an encoder restart, a spliced file), not elapsed time:
/// 10 s is far beyond any frame or audio-packet interval.
pub const MAX_TIMESTAMP_STEP_90K: u64 = 10 * 90_000;

/// One packet's header fields and adaptation field, borrowed from the packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Packet identifier (13 bits).
    pub pid: u16,
    /// Payload unit start indicator: a PES packet or PSI section starts here.
    pub payload_unit_start: bool,
    /// Transport error indicator: the sender says the packet is damaged.
    pub transport_error: bool,
    /// Continuity counter (4 bits).
    pub continuity_counter: u8,
    /// Adaptation field's random access indicator.
    pub random_access: bool,
    /// Adaptation field's discontinuity indicator.
    pub discontinuity: bool,
    /// PCR base (33 bits, 90 kHz), when the adaptation field carries one.
    pub pcr_90k: Option<u64>,
    /// The payload after the header and adaptation field (may be empty).
    pub payload: &'a [u8],
}

/// Why one packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// The first byte is not 0x47.
    NoSyncByte,
    /// The adaptation field claims more bytes than the packet has.
    BadAdaptationLength(u8),
}

/// Parses one 188-byte packet's header and adaptation field.
pub fn parse_packet(p: &[u8; PACKET_SIZE]) -> Result<Packet<'_>, PacketError> {
    if p[0] != SYNC_BYTE {
        return Err(PacketError::NoSyncByte);
    }
    let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
    let afc = (p[3] >> 4) & 0x3;
    let mut pkt = Packet {
        pid,
        payload_unit_start: p[1] & 0x40 != 0,
        transport_error: p[1] & 0x80 != 0,
        continuity_counter: p[3] & 0x0F,
        random_access: false,
        discontinuity: false,
        pcr_90k: None,
        payload: &[],
    };
    let mut start = 4;
    if afc & 0x2 != 0 {
        let len = p[4];
        // 183 bytes fill the packet after the length byte (adaptation only);
        // with a payload, at most 182 leave one payload byte.
        let max = if afc & 0x1 != 0 { 182 } else { 183 };
        if len > max {
            return Err(PacketError::BadAdaptationLength(len));
        }
        let af = &p[5..5 + usize::from(len)];
        if let Some(&flags) = af.first() {
            pkt.discontinuity = flags & 0x80 != 0;
            pkt.random_access = flags & 0x40 != 0;
            if flags & 0x10 != 0 && af.len() >= 7 {
                let b = &af[1..7];
                pkt.pcr_90k = Some(
                    (u64::from(b[0]) << 25)
                        | (u64::from(b[1]) << 17)
                        | (u64::from(b[2]) << 9)
                        | (u64::from(b[3]) << 1)
                        | (u64::from(b[4]) >> 7),
                );
            }
        }
        start = 5 + usize::from(len);
    }
    if afc & 0x1 != 0 {
        pkt.payload = &p[start..];
    }
    Ok(pkt)
}

/// The timestamps in a PES header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PesHeader {
    /// The PES stream id (0xE0.. video, 0xC0.. audio, 0xBD private).
    pub stream_id: u8,
    /// Presentation timestamp (33 bits, 90 kHz).
    pub pts: Option<u64>,
    /// Decoding timestamp (33 bits, 90 kHz); only present when it differs
    /// from the PTS (B-frames).
    pub dts: Option<u64>,
    /// Offset of the elementary-stream payload from the PES start.
    pub payload_offset: usize,
}

/// Reads a PES header from the start of a PES packet. `None` when the bytes
/// are not a PES start (no 00 00 01 prefix) or are too short to hold the
/// header they announce.
pub fn parse_pes_header(b: &[u8]) -> Option<PesHeader> {
    if b.len() < 6 || b[..3] != [0, 0, 1] {
        return None;
    }
    let stream_id = b[3];
    // These stream ids carry no optional header (ISO 13818-1, 2.4.3.7):
    // program stream map, padding, private stream 2, ECM, EMM, directory,
    // DSMCC, H.222.1 type E.
    if matches!(stream_id, 0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF) {
        return Some(PesHeader { stream_id, pts: None, dts: None, payload_offset: 6 });
    }
    if b.len() < 9 || b[6] & 0xC0 != 0x80 {
        return None;
    }
    let payload_offset = 9 + usize::from(b[8]);
    let flags = b[7] >> 6;
    let ts = |o: usize| -> Option<u64> {
        let t = b.get(o..o + 5)?;
        Some(
            (u64::from((t[0] >> 1) & 0x07) << 30)
                | (u64::from(t[1]) << 22)
                | (u64::from(t[2] >> 1) << 15)
                | (u64::from(t[3]) << 7)
                | u64::from(t[4] >> 1),
        )
    };
    let (pts, dts) = match flags {
        0b10 if b[8] >= 5 => (ts(9), None),
        0b11 if b[8] >= 10 => (ts(9), ts(14)),
        _ => (None, None),
    };
    Some(PesHeader { stream_id, pts, dts, payload_offset })
}

/// The signed difference `cur - prev` of two 33-bit timestamps, across the
/// wrap: a step from 2^33 - 1 to 0 is +1, not -(2^33 - 1).
pub fn wrapping_delta_90k(prev: u64, cur: u64) -> i64 {
    let d = cur.wrapping_sub(prev) & (TIMESTAMP_MODULO - 1);
    if d >= TIMESTAMP_MODULO / 2 { d as i64 - TIMESTAMP_MODULO as i64 } else { d as i64 }
}

/// Elapsed time from a series of 33-bit timestamps: each step is added when
/// it is a plausible interval (0..=10 s), and a jump is counted instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Clock {
    last: Option<u64>,
}

/// One timestamp's contribution to a [`Clock`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockStep {
    /// Elapsed 90 kHz ticks since the previous timestamp (0 on a jump).
    pub elapsed_90k: u64,
    /// The step was a discontinuity (backwards, or over 10 s forwards).
    pub jumped: bool,
}

impl Clock {
    /// Feeds the next timestamp.
    pub fn step(&mut self, ts_90k: u64) -> ClockStep {
        let ts = ts_90k & (TIMESTAMP_MODULO - 1);
        let step = match self.last {
            None => ClockStep { elapsed_90k: 0, jumped: false },
            Some(prev) => {
                let d = wrapping_delta_90k(prev, ts);
                if (0..=MAX_TIMESTAMP_STEP_90K as i64).contains(&d) {
                    ClockStep { elapsed_90k: d as u64, jumped: false }
                } else {
                    ClockStep { elapsed_90k: 0, jumped: true }
                }
            }
        };
        self.last = Some(ts);
        step
    }
}

/// Extends 33-bit timestamps to 64 bits, so values keep growing across the
/// wrap (every 26.5 hours at 90 kHz).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unwrapper {
    last: Option<(u64, i64)>,
}

impl Unwrapper {
    /// The 64-bit value of the next 33-bit timestamp.
    pub fn unwrap(&mut self, ts_90k: u64) -> u64 {
        let ts = ts_90k & (TIMESTAMP_MODULO - 1);
        let ext = match self.last {
            None => ts as i64,
            Some((prev, prev_ext)) => prev_ext.saturating_add(wrapping_delta_90k(prev, ts)),
        };
        self.last = Some((ts, ext));
        ext.max(0) as u64
    }
}

/// Largest chunk the reader keeps consumed bytes around before compacting.
const COMPACT_AT: usize = 64 * 1024;

/// Cuts a byte stream, in chunks of any size, into 188-byte packets.
///
/// The reader locks on three sync bytes 188 apart. While locked it accepts
/// a packet only when the byte after it is the next sync byte (or the input
/// has ended), so a truncated packet is dropped, not glued to the start of
/// the next one. After a loss of sync it skips to the next offset confirmed
/// by three sync bytes. Decisions never depend on how the input was
/// chunked: when a decision needs bytes that have not arrived, it waits.
#[derive(Debug, Default)]
pub struct PacketReader {
    buf: Vec<u8>,
    pos: usize,
    locked: bool,
    resyncing: bool,
    finished: bool,
    failed: Option<IngestError>,
    /// The input's first bytes, for describing what was found instead of TS.
    head: Vec<u8>,
    skip_run: usize,
    skipped_packets: u64,
    skipped_bytes: u64,
}

impl PacketReader {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds input bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.head.len() < SNIFF_BYTES {
            let n = (SNIFF_BYTES - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
        }
        if self.pos >= COMPACT_AT {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Marks the end of the input: the last packets are accepted without a
    /// following sync byte, and a trailing partial packet is skipped.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Runs of bytes dropped as garbage or truncated packets, each counted as
    /// at least one packet (one per 188 bytes).
    pub fn skipped_packets(&self) -> u64 {
        self.skipped_packets
    }

    /// Bytes dropped as garbage or truncated packets.
    pub fn skipped_bytes(&self) -> u64 {
        self.skipped_bytes
    }

    /// Whether the reader has locked onto 188-byte packets.
    pub fn locked(&self) -> bool {
        self.locked
    }

    /// The next packet, `Ok(None)` when more input is needed (or, after
    /// [`finish`](Self::finish), when the input is exhausted), or the error
    /// that says the input is not MPEG-TS (sticky).
    pub fn next_packet(&mut self) -> Result<Option<[u8; PACKET_SIZE]>, IngestError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if !self.locked {
            match self.lock()? {
                true => self.locked = true,
                false => return Ok(None),
            }
        }
        loop {
            if self.resyncing {
                match self.find_sync() {
                    Some(q) => {
                        self.skip(q);
                        self.resyncing = false;
                    }
                    None => return Ok(None),
                }
            }
            let b = &self.buf[self.pos..];
            if b.len() < PACKET_SIZE || (b.len() == PACKET_SIZE && !self.finished) {
                if self.finished && !b.is_empty() {
                    // A trailing partial packet: the input ended mid-packet.
                    self.skip(b.len());
                }
                if self.finished {
                    self.end_skip_run();
                }
                return Ok(None);
            }
            if b[0] == SYNC_BYTE && (b.len() == PACKET_SIZE || b[PACKET_SIZE] == SYNC_BYTE) {
                let mut p = [0u8; PACKET_SIZE];
                p.copy_from_slice(&b[..PACKET_SIZE]);
                self.end_skip_run();
                self.pos += PACKET_SIZE;
                return Ok(Some(p));
            }
            // Lost sync at this packet (garbage, or a packet cut short):
            // search from the next byte for an offset confirmed again.
            self.skip(1);
            self.resyncing = true;
        }
    }

    /// Before the first packet: finds the lock in the first bytes, or fails
    /// with what was found instead. `Ok(false)`: needs more input.
    fn lock(&mut self) -> Result<bool, IngestError> {
        let avail = self.buf.len() - self.pos;
        if avail < SNIFF_BYTES && !self.finished {
            return Ok(false);
        }
        if avail == 0 {
            return Ok(false);
        }
        let found = sync_offset(&self.buf[self.pos..], self.finished);
        match found {
            Some(q) => {
                self.skip(q);
                self.end_skip_run();
                Ok(true)
            }
            None => {
                let e = IngestError::NotMpegTs { found: describe_non_ts(&self.head) };
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The first offset `q` (relative to `pos`) confirmed by sync
    /// bytes at q, q+188 and q+376. Offsets proven wrong by the bytes
    /// present are skipped at once; `None` when the first undecided offset
    /// needs bytes that have not arrived (after `finish`, the bytes present
    /// decide, and everything left is skipped when nothing matches).
    fn find_sync(&mut self) -> Option<usize> {
        let b = &self.buf[self.pos..];
        let mut q = 0;
        while q < b.len() {
            let mut decided = true;
            let mut ok = true;
            for k in 0..3 {
                match b.get(q + k * PACKET_SIZE) {
                    Some(&SYNC_BYTE) => {}
                    Some(_) => {
                        ok = false;
                        break;
                    }
                    None => {
                        decided = self.finished;
                        // Without the third sync byte at the end of the
                        // input, a whole packet must at least be present.
                        ok = self.finished && q + PACKET_SIZE <= b.len();
                        break;
                    }
                }
            }
            if !decided {
                // Everything before q is proven garbage: drop it now, so a
                // long run of garbage never accumulates.
                self.skip(q);
                return None;
            }
            if ok {
                return Some(q);
            }
            q += 1;
        }
        let n = b.len();
        self.skip(n);
        if self.finished {
            self.end_skip_run();
        }
        None
    }

    fn skip(&mut self, n: usize) {
        self.pos += n;
        self.skip_run += n;
        self.skipped_bytes += n as u64;
    }

    fn end_skip_run(&mut self) {
        if self.skip_run > 0 {
            self.skipped_packets += self.skip_run.div_ceil(PACKET_SIZE) as u64;
            self.skip_run = 0;
        }
    }
}

/// The first offset below 188 where 188-byte packets start in `b`, judged
/// by three sync bytes 188 apart; with `short` (the input ended before
/// [`SNIFF_BYTES`]), by every sync byte that fits, and at least one whole
/// packet.
fn sync_offset(b: &[u8], short: bool) -> Option<usize> {
    (0..PACKET_SIZE.min(b.len())).find(|&q| {
        if short && b.len() < SNIFF_BYTES {
            q + PACKET_SIZE <= b.len() && (q..b.len()).step_by(PACKET_SIZE).all(|i| b[i] == SYNC_BYTE)
        } else {
            (0..3).all(|k| b.get(q + k * PACKET_SIZE) == Some(&SYNC_BYTE))
        }
    })
}

/// Checks an input's first bytes (ideally [`SNIFF_BYTES`] of them, fewer if
/// the input is shorter) the way [`PacketReader`] will, so a client can
/// refuse a wrong input before sending it anywhere.
pub fn sniff(prefix: &[u8]) -> Result<(), IngestError> {
    match sync_offset(prefix, prefix.len() < SNIFF_BYTES) {
        Some(_) => Ok(()),
        None => Err(IngestError::NotMpegTs { found: describe_non_ts(prefix) }),
    }
}

/// Says what an input that is not MPEG-TS looks like, from its first bytes.
pub fn describe_non_ts(head: &[u8]) -> String {
    let starts = |m: &[u8]| head.starts_with(m);
    if head.is_empty() {
        return "an empty input".to_owned();
    }
    if head.len() >= 8 && &head[4..8] == b"ftyp" {
        return "an MP4 'ftyp' box (an MP4/MOV file)".to_owned();
    }
    if head.len() >= 8 && matches!(&head[4..8], b"moov" | b"mdat" | b"free" | b"wide" | b"styp" | b"moof") {
        return format!("an MP4 '{}' box (an MP4/MOV file)", String::from_utf8_lossy(&head[4..8]));
    }
    if head.len() > 4 + 2 * PACKET_SIZE && head[4] == SYNC_BYTE && head[4 + 192] == SYNC_BYTE {
        return "192-byte M2TS/BDAV packets (MPEG-TS with a 4-byte timestamp prefix)".to_owned();
    }
    let known: &[(&[u8], &str)] = &[
        (b"\x1a\x45\xdf\xa3", "a Matroska/WebM header"),
        (b"FLV", "an FLV header"),
        (b"RIFF", "a RIFF header (AVI or WAV)"),
        (b"OggS", "an Ogg page"),
        (b"ID3", "an ID3 tag (an MP3 file)"),
        (b"\x00\x00\x01\xba", "an MPEG program stream pack header (MPEG-PS, not TS)"),
        (b"\x00\x00\x00\x01", "an Annex B start code (a raw H.264/H.265 elementary stream, not wrapped in MPEG-TS)"),
        (b"#EXTM3U", "an M3U/HLS playlist (text)"),
        (b"\x89PNG", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"\x1f\x8b", "gzip-compressed data"),
    ];
    if let Some((_, what)) = known.iter().find(|(m, _)| starts(m)) {
        return (*what).to_owned();
    }
    if head.len() >= 2 && head[0] == 0xFF && head[1] & 0xF6 == 0xF0 {
        return "an ADTS header (raw AAC audio, not wrapped in MPEG-TS)".to_owned();
    }
    if let Ok(text) = std::str::from_utf8(head)
        && text.chars().all(|c| !c.is_control() || c.is_ascii_whitespace())
    {
        let shown: String = text.chars().take(40).collect();
        return format!("text ({shown:?})");
    }
    let hex: String = head.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ");
    format!(
        "no 0x47 sync byte pattern (a 0x47 every 188 bytes) in the first {} bytes; they start with {hex}",
        head.len().min(SNIFF_BYTES)
    )
}

/// Follows a stream's PCR: how much stream time the bytes pushed so far
/// cover. Used to send a file at its own speed (`shoal publish --realtime`).
#[derive(Debug, Default)]
pub struct StreamClock {
    reader: PacketReader,
    pcr_pid: Option<u16>,
    clock: Clock,
    elapsed_90k: u64,
}

impl StreamClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the stream time they reach, in milliseconds since
    /// the first PCR. Discontinuities add nothing; input that is not
    /// MPEG-TS leaves the clock where it is.
    pub fn push(&mut self, bytes: &[u8]) -> u64 {
        self.reader.push(bytes);
        while let Ok(Some(p)) = self.reader.next_packet() {
            let Ok(pkt) = parse_packet(&p) else { continue };
            let Some(pcr) = pkt.pcr_90k else { continue };
            // One PCR PID: several clocks in one stream would not add up.
            if *self.pcr_pid.get_or_insert(pkt.pid) == pkt.pid {
                self.elapsed_90k += self.clock.step(pcr).elapsed_90k;
            }
        }
        self.elapsed_90k / 90
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;
