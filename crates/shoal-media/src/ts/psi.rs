//! Program-specific information: PAT and PMT sections, CRC-checked.
//!
//! A section may span packets and a packet may end one section and start
//! another (the pointer field says where). The assembler keeps at most one
//! section of [`MAX_SECTION_BYTES`] per PID.

/// A PAT or PMT section is at most 1024 bytes (section_length ≤ 1021 plus
/// the 3-byte header, ISO 13818-1 2.4.4.3 and 2.4.4.8).
pub const MAX_SECTION_BYTES: usize = 1024;
/// Packets one PAT or PMT section can span: 1024 bytes over 183 payload
/// bytes after the pointer field, rounded up.
pub const MAX_SECTION_PACKETS: usize = 6;

/// Stream types shoal recognises (ISO 13818-1 table 2-34 and common
/// registrations).
pub mod stream_type {
    /// MPEG-1 video.
    pub const MPEG1_VIDEO: u8 = 0x01;
    /// MPEG-2 video.
    pub const MPEG2_VIDEO: u8 = 0x02;
    /// MPEG-1 audio (MP2/MP3).
    pub const MPEG1_AUDIO: u8 = 0x03;
    /// MPEG-2 audio.
    pub const MPEG2_AUDIO: u8 = 0x04;
    /// Private PES data (Opus, AC-3 in DVB, subtitles: see descriptors).
    pub const PRIVATE_PES: u8 = 0x06;
    /// AAC in ADTS.
    pub const AAC_ADTS: u8 = 0x0F;
    /// MPEG-4 part 2 video.
    pub const MPEG4_VIDEO: u8 = 0x10;
    /// AAC in LATM.
    pub const AAC_LATM: u8 = 0x11;
    /// H.264 / AVC.
    pub const H264: u8 = 0x1B;
    /// H.265 / HEVC.
    pub const H265: u8 = 0x24;
    /// AC-3 (ATSC).
    pub const AC3: u8 = 0x81;
    /// E-AC-3 (ATSC).
    pub const EAC3: u8 = 0x87;
}

/// What one elementary stream carries, from its PMT stream type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// A video stream.
    Video,
    /// An audio stream.
    Audio,
    /// Anything else (private data, subtitles, metadata).
    Other,
}

/// The kind and codec name of a PMT stream type.
pub fn classify(ty: u8) -> (StreamKind, &'static str) {
    use stream_type as st;
    match ty {
        st::H264 => (StreamKind::Video, "h264"),
        st::H265 => (StreamKind::Video, "h265"),
        st::MPEG1_VIDEO => (StreamKind::Video, "mpeg1video"),
        st::MPEG2_VIDEO => (StreamKind::Video, "mpeg2video"),
        st::MPEG4_VIDEO => (StreamKind::Video, "mpeg4"),
        st::AAC_ADTS => (StreamKind::Audio, "aac"),
        st::AAC_LATM => (StreamKind::Audio, "aac_latm"),
        st::MPEG1_AUDIO | st::MPEG2_AUDIO => (StreamKind::Audio, "mp3"),
        st::AC3 => (StreamKind::Audio, "ac3"),
        st::EAC3 => (StreamKind::Audio, "eac3"),
        st::PRIVATE_PES => (StreamKind::Other, "private"),
        _ => (StreamKind::Other, "unknown"),
    }
}

/// One elementary stream listed in the PMT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EsInfo {
    /// Its PID.
    pub pid: u16,
    /// Its PMT stream type.
    pub stream_type: u8,
}

/// The first program of a PAT, and what its PMT lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The PID that carries the PCR.
    pub pcr_pid: u16,
    /// Elementary streams in PMT order.
    pub streams: Vec<EsInfo>,
}

impl Program {
    /// The first video stream.
    pub fn video(&self) -> Option<EsInfo> {
        self.streams.iter().copied().find(|s| classify(s.stream_type).0 == StreamKind::Video)
    }

    /// The first audio stream.
    pub fn audio(&self) -> Option<EsInfo> {
        self.streams.iter().copied().find(|s| classify(s.stream_type).0 == StreamKind::Audio)
    }

    /// The stream whose timestamps pace segments: the first video stream,
    /// else the first audio stream, else the first stream.
    pub fn reference(&self) -> Option<EsInfo> {
        self.video().or_else(|| self.audio()).or_else(|| self.streams.first().copied())
    }

    /// Whether `pid` carries an elementary stream of this program.
    pub fn is_es(&self, pid: u16) -> bool {
        self.streams.iter().any(|s| s.pid == pid)
    }
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, no reflection, no final xor), the
/// checksum that ends every PSI section.
pub fn crc32_mpeg2(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = (i as u32) << 24;
            let mut k = 0;
            while k < 8 {
                c = if c & 0x8000_0000 != 0 { (c << 1) ^ 0x04C1_1DB7 } else { c << 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    data.iter().fold(0xFFFF_FFFF, |crc, &b| (crc << 8) ^ TABLE[(((crc >> 24) ^ u32::from(b)) & 0xFF) as usize])
}

/// Reassembles PSI sections of one PID from packet payloads.
#[derive(Debug, Default)]
pub struct SectionAssembler {
    buf: Vec<u8>,
    active: bool,
}

impl SectionAssembler {
    /// Feeds one packet's payload; returns the sections it completes (each
    /// with its CRC verified; sections failing it are dropped).
    pub fn push(&mut self, payload_unit_start: bool, payload: &[u8]) -> Vec<Vec<u8>> {
        let mut done = Vec::new();
        let mut data = payload;
        if payload_unit_start {
            let Some((&ptr, rest)) = data.split_first() else { return done };
            let ptr = usize::from(ptr);
            if ptr > rest.len() {
                self.reset();
                return done;
            }
            if self.active {
                self.extend(&rest[..ptr], &mut done);
            }
            self.reset();
            self.active = true;
            data = &rest[ptr..];
        } else if !self.active {
            return done;
        }
        self.extend(data, &mut done);
        done
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.active = false;
    }

    fn extend(&mut self, mut data: &[u8], done: &mut Vec<Vec<u8>>) {
        while self.active && !data.is_empty() {
            // Stuffing (0xFF) where a table id would be ends the sections.
            if self.buf.is_empty() && data[0] == 0xFF {
                self.reset();
                return;
            }
            let need = if self.buf.len() < 3 {
                3 - self.buf.len()
            } else {
                let total = 3 + (usize::from(self.buf[1] & 0x0F) << 8 | usize::from(self.buf[2]));
                if !(3 + 9..=MAX_SECTION_BYTES).contains(&total) {
                    self.reset();
                    return;
                }
                total - self.buf.len()
            };
            let n = need.min(data.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() >= 3 {
                let total = 3 + (usize::from(self.buf[1] & 0x0F) << 8 | usize::from(self.buf[2]));
                if self.buf.len() == total {
                    if crc32_mpeg2(&self.buf) == 0 {
                        done.push(std::mem::take(&mut self.buf));
                    }
                    self.buf.clear();
                    // Another section may follow in the same payload.
                }
            }
        }
    }
}

/// The PMT PID of the first program in a PAT section, if it is one.
pub fn parse_pat(section: &[u8]) -> Option<u16> {
    if section.first() != Some(&0x00) || section.len() < 12 {
        return None;
    }
    // Entries run from byte 8 to the 4-byte CRC.
    section[8..section.len() - 4].chunks_exact(4).find_map(|e| {
        let program = u16::from_be_bytes([e[0], e[1]]);
        // Program 0 points at the network information table, not a PMT.
        (program != 0).then(|| u16::from(e[2] & 0x1F) << 8 | u16::from(e[3]))
    })
}

/// The program a PMT section describes, if it is one.
pub fn parse_pmt(section: &[u8]) -> Option<Program> {
    if section.first() != Some(&0x02) || section.len() < 16 {
        return None;
    }
    let end = section.len() - 4;
    let pcr_pid = u16::from(section[8] & 0x1F) << 8 | u16::from(section[9]);
    let info_len = usize::from(section[10] & 0x0F) << 8 | usize::from(section[11]);
    let mut i = 12 + info_len;
    let mut streams = Vec::new();
    while i + 5 <= end {
        let stream_type = section[i];
        let pid = u16::from(section[i + 1] & 0x1F) << 8 | u16::from(section[i + 2]);
        let es_info_len = usize::from(section[i + 3] & 0x0F) << 8 | usize::from(section[i + 4]);
        // PIDs below 0x10 are reserved for tables and 0x1FFF is padding: a
        // PMT listing them as streams is malformed, and believing it would
        // make the PAT look like video.
        if (0x10..super::NULL_PID).contains(&pid) && !streams.iter().any(|s: &EsInfo| s.pid == pid) {
            streams.push(EsInfo { pid, stream_type });
        }
        i += 5 + es_info_len;
    }
    Some(Program { pcr_pid, streams })
}
