use super::{
    nal::{NalCodec, NalScanner, Verdict},
    psi::{self, SectionAssembler, crc32_mpeg2, stream_type},
    testutil::{h264_au, packet, packetize, pat_packet, pes, pmt_packet},
    *,
};

fn read_all(chunks: &[&[u8]]) -> (Vec<[u8; PACKET_SIZE]>, PacketReader) {
    let mut r = PacketReader::new();
    let mut out = Vec::new();
    for c in chunks {
        r.push(c);
        while let Some(p) = r.next_packet().expect("TS") {
            out.push(p);
        }
    }
    r.finish();
    while let Some(p) = r.next_packet().expect("TS") {
        out.push(p);
    }
    (out, r)
}

fn numbered(n: usize) -> Vec<[u8; PACKET_SIZE]> {
    (0..n).map(|i| packet(0x100, false, i as u8, false, None, &[i as u8; 184])).collect()
}

#[test]
fn packet_fields_pcr_and_random_access() {
    let pcr = TIMESTAMP_MODULO - 3;
    let p = packet(0x1ABC, true, 7, true, Some(pcr), &[1, 2, 3]);
    let pkt = parse_packet(&p).unwrap();
    assert_eq!(pkt.pid, 0x1ABC);
    assert!(pkt.payload_unit_start && pkt.random_access && !pkt.transport_error);
    assert_eq!(pkt.continuity_counter, 7);
    assert_eq!(pkt.pcr_90k, Some(pcr));
    assert_eq!(pkt.payload, &[1, 2, 3]);
    let mut bad = p;
    bad[3] = 0x30;
    bad[4] = 183; // with a payload at most 182 fits
    assert_eq!(parse_packet(&bad), Err(PacketError::BadAdaptationLength(183)));
    bad[0] = 0x48;
    assert_eq!(parse_packet(&bad), Err(PacketError::NoSyncByte));
}

#[test]
fn pes_timestamps_round_trip() {
    for (pts, dts) in [(0u64, 0u64), (TIMESTAMP_MODULO - 1, TIMESTAMP_MODULO - 3600), (123_456_789, 123_450_000)] {
        let b = pes(0xE0, Some(pts), Some(dts), &[0, 0, 1, 0x65]);
        let h = parse_pes_header(&b).unwrap();
        assert_eq!((h.stream_id, h.pts, h.dts, h.payload_offset), (0xE0, Some(pts), Some(dts), 19));
    }
    let h = parse_pes_header(&pes(0xC0, Some(90_000), None, &[])).unwrap();
    assert_eq!((h.pts, h.dts, h.payload_offset), (Some(90_000), None, 14));
    assert_eq!(parse_pes_header(&[0, 0, 2, 0xE0, 0, 0, 0x80, 0, 0]), None);
}

#[test]
fn timestamps_wrap_at_33_bits() {
    assert_eq!(wrapping_delta_90k(TIMESTAMP_MODULO - 1, 0), 1);
    assert_eq!(wrapping_delta_90k(0, TIMESTAMP_MODULO - 1), -1);
    assert_eq!(wrapping_delta_90k(TIMESTAMP_MODULO - 1800, 1800), 3600);
    let mut c = Clock::default();
    let mut u = Unwrapper::default();
    let start = TIMESTAMP_MODULO - 90_000;
    let mut total = 0;
    let mut last = 0;
    for i in 0..100u64 {
        let t = (start + i * 3600) % TIMESTAMP_MODULO;
        let s = c.step(t);
        assert!(!s.jumped);
        total += s.elapsed_90k;
        let ext = u.unwrap(t);
        assert!(i == 0 || ext == last + 3600, "unwrapped values grow by 3600 across the wrap");
        last = ext;
    }
    assert_eq!(total, 99 * 3600);
    assert!(last > TIMESTAMP_MODULO, "extended past 33 bits: {last}");
    // A jump backwards, and one of an hour forwards, are discontinuities.
    assert!(c.step(5).jumped);
    assert!(c.step(5 + 3600 * 90_000).jumped);
    assert_eq!(c.step(5 + 3600 * 90_000 + 3600), ClockStep { elapsed_90k: 3600, jumped: false });
}

#[test]
fn reader_is_independent_of_chunking() {
    let pkts = numbered(20);
    let bytes: Vec<u8> = pkts.iter().flatten().copied().collect();
    let (whole, _) = read_all(&[&bytes]);
    assert_eq!(whole, pkts);
    let singles: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(read_all(&singles).0, pkts);
    let odd: Vec<&[u8]> = bytes.chunks(191).collect();
    assert_eq!(read_all(&odd).0, pkts);
}

#[test]
fn reader_skips_a_truncated_packet_instead_of_splicing_it() {
    let pkts = numbered(10);
    let mut bytes = Vec::new();
    for (i, p) in pkts.iter().enumerate() {
        // Packet 4 loses its last 100 bytes (a dropped UDP fragment).
        bytes.extend_from_slice(if i == 4 { &p[..88] } else { &p[..] });
    }
    let (got, r) = read_all(&[&bytes]);
    let want: Vec<_> = pkts.iter().enumerate().filter(|(i, _)| *i != 4).map(|(_, p)| *p).collect();
    assert_eq!(got, want, "packet 4 dropped, packet 5 intact");
    assert_eq!((r.skipped_packets(), r.skipped_bytes()), (1, 88));
}

#[test]
fn reader_resyncs_after_garbage_and_counts_it() {
    let pkts = numbered(12);
    let mut bytes = Vec::new();
    for (i, p) in pkts.iter().enumerate() {
        if i == 3 {
            bytes.extend_from_slice(&[0x47; 5]); // garbage that even looks like sync bytes
            bytes.extend_from_slice(&[0x11; 400]);
        }
        bytes.extend_from_slice(p);
    }
    bytes.extend_from_slice(&[0x47, 1, 2]); // a trailing partial packet
    for chunk in [1usize, 7, 188, 4096] {
        let chunks: Vec<&[u8]> = bytes.chunks(chunk).collect();
        let (got, r) = read_all(&chunks);
        assert_eq!(got, pkts, "chunk size {chunk}");
        assert_eq!(r.skipped_bytes(), 405 + 3, "chunk size {chunk}");
        // 405 bytes are three packets' worth, the trailing 3 bytes one more.
        assert_eq!(r.skipped_packets(), 3 + 1, "chunk size {chunk}");
    }
}

#[test]
fn not_ts_inputs_say_what_they_are() {
    let cases: [(&[u8], &str); 5] = [
        (b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41", "MP4 'ftyp' box"),
        (b"hello, this is a README and not a video stream at all\n", "text (\"hello, this is"),
        (b"\x1a\x45\xdf\xa3\x01\0\0\0", "Matroska"),
        (b"\0\0\0\x01\x67\x42", "raw H.264/H.265 elementary stream"),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n", "M3U"),
    ];
    for (head, want) in cases {
        let mut input = head.to_vec();
        input.resize(2000, b' ');
        let mut r = PacketReader::new();
        r.push(&input);
        let e = r.next_packet().unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} should mention {want:?}");
        assert!(e.contains("--format bytes"), "{e:?} should say how to publish it anyway");
        // Sticky, and the same as the client-side sniff.
        assert_eq!(r.next_packet().unwrap_err().to_string(), e);
        assert_eq!(sniff(&input[..SNIFF_BYTES]).unwrap_err().to_string(), e);
    }
    let noise: Vec<u8> = (0..2000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1).collect();
    let e = sniff(&noise).unwrap_err().to_string();
    assert!(e.contains("no 0x47 sync byte pattern") && e.contains("first 564 bytes"), "{e}");
    let mut m2ts = Vec::new();
    for p in numbered(4) {
        m2ts.extend_from_slice(&[0, 0, 0, 0]);
        m2ts.extend_from_slice(&p);
    }
    assert!(sniff(&m2ts).unwrap_err().to_string().contains("M2TS"));
    // Real TS passes, even shorter than three packets once the input ended.
    let ts: Vec<u8> = numbered(3).into_iter().flatten().collect();
    assert!(sniff(&ts).is_ok());
    assert!(sniff(&ts[..188]).is_ok());
    assert!(sniff(&ts[..100]).is_err());
}

#[test]
fn reader_locks_on_short_inputs_only_at_the_end() {
    let pkts = numbered(2);
    let bytes: Vec<u8> = pkts.iter().flatten().copied().collect();
    let mut r = PacketReader::new();
    r.push(&bytes);
    assert_eq!(r.next_packet().unwrap(), None, "two packets are not enough to lock while more may come");
    r.finish();
    assert_eq!(r.next_packet().unwrap(), Some(pkts[0]));
    assert_eq!(r.next_packet().unwrap(), Some(pkts[1]));
    assert_eq!(r.next_packet().unwrap(), None);
}

#[test]
fn crc_and_tables() {
    // The CRC-32/MPEG-2 check value.
    assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_E6E7);
    let pat = pat_packet(0x1000, 0);
    let pmt = pmt_packet(0x1000, 0x100, &[(stream_type::H264, 0x100), (stream_type::AAC_ADTS, 0x101)], 0);
    let mut a = SectionAssembler::default();
    let s = a.push(true, parse_packet(&pat).unwrap().payload);
    assert_eq!(s.len(), 1);
    assert_eq!(psi::parse_pat(&s[0]), Some(0x1000));
    let s = a.push(true, parse_packet(&pmt).unwrap().payload);
    let prog = psi::parse_pmt(&s[0]).unwrap();
    assert_eq!(prog.pcr_pid, 0x100);
    assert_eq!(prog.video().map(|v| v.pid), Some(0x100));
    assert_eq!(prog.audio().map(|v| (v.pid, v.stream_type)), Some((0x101, 0x0F)));
    assert_eq!(prog.reference().map(|v| v.pid), Some(0x100));
    // A flipped bit fails the CRC: no section.
    let mut bad = pmt;
    bad[20] ^= 0x04;
    assert!(SectionAssembler::default().push(true, parse_packet(&bad).unwrap().payload).is_empty());
    // A section split across two packets, with a pointer field.
    let mut payload = vec![3u8, 0xAA, 0xBB, 0xCC];
    payload.extend_from_slice(&parse_packet(&pmt).unwrap().payload[1..10]);
    let mut a = SectionAssembler::default();
    assert!(a.push(true, &payload).is_empty());
    let s = a.push(false, &parse_packet(&pmt).unwrap().payload[10..]);
    assert_eq!(s.len(), 1);
    assert_eq!(psi::parse_pmt(&s[0]), Some(prog));
}

#[test]
fn nal_scan_finds_idr_across_any_split() {
    let au = pes(0xE0, Some(1), None, &h264_au(true, 2000));
    for split in 1..60 {
        let mut s = NalScanner::new(NalCodec::H264);
        let mut v = None;
        for c in au.chunks(split) {
            v = v.or(s.push(c));
        }
        assert_eq!(v, Some(Verdict::Keyframe), "split {split}");
    }
    let mut s = NalScanner::new(NalCodec::H264);
    assert_eq!(s.push(&pes(0xE0, Some(1), None, &h264_au(false, 500))), Some(Verdict::NotKeyframe));
    // An IDR slice with no SPS before it.
    let mut s = NalScanner::new(NalCodec::H264);
    assert_eq!(
        s.push(&pes(0xE0, None, None, &[0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x65, 0x88])),
        Some(Verdict::IdrWithoutParameterSets)
    );
    // H.265: VPS, SPS, PPS, then CRA (type 21), or a TRAIL_R (type 1).
    let hevc = |pic: u8| -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1, 0x40, 0x01, 0, 0, 0, 1, 0x42, 0x01, 0, 0, 0, 1, 0x44, 0x01];
        v.extend_from_slice(&[0, 0, 1, pic << 1, 0x01, 0xAF]);
        pes(0xE0, Some(1), None, &v)
    };
    assert_eq!(NalScanner::new(NalCodec::H265).push(&hevc(21)), Some(Verdict::Keyframe));
    assert_eq!(NalScanner::new(NalCodec::H265).push(&hevc(19)), Some(Verdict::Keyframe));
    assert_eq!(NalScanner::new(NalCodec::H265).push(&hevc(1)), Some(Verdict::NotKeyframe));
    // Nothing but parameter sets: undecided until forced.
    let mut s = NalScanner::new(NalCodec::H264);
    assert_eq!(s.push(&pes(0xE0, None, None, &[0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x68, 0xCE])), None);
    assert_eq!(s.force(), Verdict::NotKeyframe);
}

#[test]
fn stream_clock_follows_pcr_across_the_wrap() {
    let mut cc = 0;
    let mut bytes = Vec::new();
    let start = TIMESTAMP_MODULO - 45_000; // 0.5 s before the wrap
    for i in 0..31u64 {
        let pcr = (start + i * 9000) % TIMESTAMP_MODULO; // every 100 ms
        for p in packetize(0x100, &mut cc, false, Some(pcr), &pes(0xE0, None, None, &[0xAB; 300])) {
            bytes.extend_from_slice(&p);
        }
    }
    let mut clock = StreamClock::new();
    let mut t = 0;
    for c in bytes.chunks(1000) {
        t = clock.push(c);
    }
    // The last packet waits for the next sync byte; everything before it
    // counts: 29 or 30 steps of 100 ms.
    assert!((2900..=3000).contains(&t), "stream time {t} ms");
}
