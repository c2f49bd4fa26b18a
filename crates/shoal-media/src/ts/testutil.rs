//! Hand-built MPEG-TS for unit tests: packets, PES headers, PAT and PMT,
//! with exactly the fields a test wants (timestamps near the 33-bit wrap,
//! pictures without keyframes, damaged packets).

use super::{PACKET_SIZE, psi::crc32_mpeg2};

/// One packet: `pid`, payload unit start, continuity counter, optional
/// adaptation field (random access, PCR), then `payload`, padded with
/// adaptation-field stuffing to 188 bytes. Panics if it does not fit.
pub(crate) fn packet(pid: u16, pusi: bool, cc: u8, rai: bool, pcr: Option<u64>, payload: &[u8]) -> [u8; PACKET_SIZE] {
    let mut af = Vec::new();
    if rai || pcr.is_some() || payload.len() < 184 {
        let mut flags = 0u8;
        if rai {
            flags |= 0x40;
        }
        let mut body = Vec::new();
        if let Some(p) = pcr {
            flags |= 0x10;
            body.extend_from_slice(&[(p >> 25) as u8, (p >> 17) as u8, (p >> 9) as u8, (p >> 1) as u8]);
            body.push((((p & 1) as u8) << 7) | 0x7E);
            body.push(0);
        }
        let need = 184 - payload.len();
        assert!(need >= 1 || (!rai && pcr.is_none()), "payload too long for an adaptation field");
        if need >= 1 {
            // length byte + flags + body + stuffing = need
            let len = need - 1;
            af.push(len as u8);
            if len >= 1 {
                af.push(flags);
                af.extend_from_slice(&body);
                assert!(af.len() <= need, "payload too long for PCR");
                af.resize(need, 0xFF);
            }
        }
    }
    let afc = match (af.is_empty(), payload.is_empty()) {
        (true, _) => 0x10,
        (false, false) => 0x30,
        (false, true) => 0x20,
    };
    let mut p = vec![0x47, ((pid >> 8) as u8 & 0x1F) | if pusi { 0x40 } else { 0 }, pid as u8, afc | (cc & 0x0F)];
    p.extend_from_slice(&af);
    p.extend_from_slice(payload);
    assert_eq!(p.len(), PACKET_SIZE, "packet for pid {pid:#x} is {} bytes", p.len());
    p.try_into().expect("188 bytes")
}

fn ts_bytes(marker: u8, t: u64) -> [u8; 5] {
    [
        (marker << 4) | ((((t >> 30) & 0x07) as u8) << 1) | 1,
        (t >> 22) as u8,
        ((((t >> 15) & 0x7F) as u8) << 1) | 1,
        (t >> 7) as u8,
        (((t & 0x7F) as u8) << 1) | 1,
    ]
}

/// A PES packet (header and `es`), unbounded length.
pub(crate) fn pes(stream_id: u8, pts: Option<u64>, dts: Option<u64>, es: &[u8]) -> Vec<u8> {
    let mut opt = Vec::new();
    let flags = match (pts, dts) {
        (Some(p), Some(d)) => {
            opt.extend_from_slice(&ts_bytes(0x3, p));
            opt.extend_from_slice(&ts_bytes(0x1, d));
            0xC0
        }
        (Some(p), None) => {
            opt.extend_from_slice(&ts_bytes(0x2, p));
            0x80
        }
        _ => 0,
    };
    let mut v = vec![0, 0, 1, stream_id, 0, 0, 0x80, flags, opt.len() as u8];
    v.extend_from_slice(&opt);
    v.extend_from_slice(es);
    v
}

/// A PSI section with its CRC.
fn section(table_id: u8, id: u16, body: &[u8]) -> Vec<u8> {
    let len = 5 + body.len() + 4;
    let mut s = vec![table_id, 0xB0 | ((len >> 8) as u8 & 0x0F), len as u8, (id >> 8) as u8, id as u8, 0xC1, 0, 0];
    s.extend_from_slice(body);
    let crc = crc32_mpeg2(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    s
}

/// A PAT with program 1 at `pmt_pid`, as one packet.
pub(crate) fn pat_packet(pmt_pid: u16, cc: u8) -> [u8; PACKET_SIZE] {
    let s = section(0x00, 1, &[0, 1, 0xE0 | (pmt_pid >> 8) as u8, pmt_pid as u8]);
    psi_packet(0, cc, &s)
}

/// A PMT listing `(stream_type, pid)` with `pcr_pid`, as one packet.
pub(crate) fn pmt_packet(pmt_pid: u16, pcr_pid: u16, streams: &[(u8, u16)], cc: u8) -> [u8; PACKET_SIZE] {
    let mut body = vec![0xE0 | (pcr_pid >> 8) as u8, pcr_pid as u8, 0xF0, 0];
    for &(st, pid) in streams {
        body.extend_from_slice(&[st, 0xE0 | (pid >> 8) as u8, pid as u8, 0xF0, 0]);
    }
    let s = section(0x02, 1, &body);
    psi_packet(pmt_pid, cc, &s)
}

fn psi_packet(pid: u16, cc: u8, section: &[u8]) -> [u8; PACKET_SIZE] {
    let mut payload = vec![0u8];
    payload.extend_from_slice(section);
    payload.resize(184, 0xFF);
    packet(pid, true, cc, false, None, &payload)
}

/// Splits a PES packet into TS packets on `pid`, continuity counters from
/// `*cc`; the first carries the random-access flag and PCR when given.
pub(crate) fn packetize(pid: u16, cc: &mut u8, rai: bool, pcr: Option<u64>, pes: &[u8]) -> Vec<[u8; PACKET_SIZE]> {
    let mut out = Vec::new();
    let mut rest = pes;
    let mut first = true;
    while first || !rest.is_empty() {
        let (r, c) = if first { (rai, pcr) } else { (false, None) };
        // Room for the payload: 184 minus an adaptation field if one is needed.
        let room = if r || c.is_some() { 184 - 2 - if c.is_some() { 6 } else { 0 } } else { 184 };
        let n = rest.len().min(room);
        out.push(packet(pid, first, *cc, r, c, &rest[..n]));
        *cc = (*cc + 1) & 0x0F;
        rest = &rest[n..];
        first = false;
    }
    out
}

/// An H.264 access unit: AUD, then SPS + PPS + IDR slice for a keyframe,
/// else a non-IDR slice; padded to `size` bytes.
pub(crate) fn h264_au(keyframe: bool, size: usize) -> Vec<u8> {
    let mut v = vec![0, 0, 0, 1, 0x09, 0xF0];
    if keyframe {
        v.extend_from_slice(&[0, 0, 0, 1, 0x67, 0x42, 0xC0, 0x1E]);
        v.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xCE, 0x3C, 0x80]);
        v.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84]);
    } else {
        v.extend_from_slice(&[0, 0, 1, 0x41, 0x9A, 0x02]);
    }
    // Slice data without start-code emulation: 0xAB never forms 00 00 01.
    v.resize(size.max(v.len()), 0xAB);
    v
}
