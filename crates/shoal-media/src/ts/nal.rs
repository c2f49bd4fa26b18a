//! Keyframe confirmation: scans the NAL units at the start of a video PES
//! packet, across packet boundaries, for an H.264 IDR or an H.265 IRAP
//! picture preceded by its sequence parameter set.
//!
//! The random-access indicator in the adaptation field is a hint encoders
//! set inconsistently; the NAL types are what a decoder will actually need,
//! so they decide. A PES packet is judged by its first picture (VCL NAL
//! unit): a decoder that starts there can decode it only if it is an IDR
//! or IRAP picture and the SPS came first in the same access unit.

/// How many bytes of one PES packet are scanned at most. An access unit's
/// first picture follows its delimiter, parameter sets and SEI: x264's
/// version SEI is the largest usual one at under 1 KiB, so 64 KiB without a
/// picture means there is none to find.
pub const NAL_SCAN_LIMIT: usize = 64 * 1024;

/// Which NAL syntax a video stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NalCodec {
    /// H.264 / AVC: type = byte & 0x1F.
    H264,
    /// H.265 / HEVC: type = (byte >> 1) & 0x3F.
    H265,
}

/// What the first picture of a PES packet is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An IDR/IRAP picture after its SPS: a decoder can start here.
    Keyframe,
    /// An IDR/IRAP picture without an SPS before it in the access unit: a
    /// decoder starting here has no parameters (the encoder sends them
    /// only once, out of band).
    IdrWithoutParameterSets,
    /// Any other picture, or no picture found.
    NotKeyframe,
}

/// Scans one PES packet's bytes, fed in pieces as packets arrive.
#[derive(Debug)]
pub struct NalScanner {
    codec: NalCodec,
    buf: Vec<u8>,
    /// Where scanning resumes; `None` until the PES header is complete.
    pos: Option<usize>,
    seen_sps: bool,
    verdict: Option<Verdict>,
}

impl NalScanner {
    /// A scanner for one PES packet of `codec`.
    pub fn new(codec: NalCodec) -> Self {
        Self { codec, buf: Vec::new(), pos: None, seen_sps: false, verdict: None }
    }

    /// The verdict, once decided.
    pub fn verdict(&self) -> Option<Verdict> {
        self.verdict
    }

    /// The verdict now, deciding "not a keyframe" if no picture was found
    /// (the PES packet ended or the segmenter cannot wait).
    pub fn force(&mut self) -> Verdict {
        *self.verdict.get_or_insert(Verdict::NotKeyframe)
    }

    /// Feeds the next bytes of the PES packet (starting with its header);
    /// returns the verdict once the first picture is found.
    pub fn push(&mut self, bytes: &[u8]) -> Option<Verdict> {
        if self.verdict.is_some() {
            return self.verdict;
        }
        let room = NAL_SCAN_LIMIT.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        if self.pos.is_none() {
            if self.buf.len() < 9 {
                return None;
            }
            if self.buf[..3] != [0, 0, 1] {
                return Some(self.force());
            }
            self.pos = Some(9 + usize::from(self.buf[8]));
        }
        let mut i = self.pos.unwrap_or(0);
        while i + 3 < self.buf.len() {
            if self.buf[i] == 0 && self.buf[i + 1] == 0 && self.buf[i + 2] == 1 {
                if let Some(v) = self.nal(self.buf[i + 3]) {
                    self.verdict = Some(v);
                    return self.verdict;
                }
                i += 3;
            } else {
                i += 1;
            }
        }
        self.pos = Some(i);
        if self.buf.len() >= NAL_SCAN_LIMIT {
            return Some(self.force());
        }
        None
    }

    /// Looks at one NAL header byte; a verdict once it is a picture.
    fn nal(&mut self, header: u8) -> Option<Verdict> {
        let (is_sps, is_picture, is_random_access) = match self.codec {
            NalCodec::H264 => {
                let t = header & 0x1F;
                (t == 7, (1..=5).contains(&t), t == 5)
            }
            NalCodec::H265 => {
                let t = (header >> 1) & 0x3F;
                (t == 33, t <= 31, (16..=21).contains(&t))
            }
        };
        if is_sps {
            self.seen_sps = true;
        }
        if !is_picture {
            return None;
        }
        Some(match (is_random_access, self.seen_sps) {
            (true, true) => Verdict::Keyframe,
            (true, false) => Verdict::IdrWithoutParameterSets,
            (false, _) => Verdict::NotKeyframe,
        })
    }
}
