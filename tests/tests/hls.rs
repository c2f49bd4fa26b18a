//! End-to-end: the HLS gateway, played by an HLS client nobody here wrote.
//!
//! ffmpeg encodes testsrc + sine (H.264/AAC, MPEG-TS) into `shoal publish`
//! on node A; node B, bootstrapped from A, serves the channel on its
//! gateway. ffmpeg's own HLS demuxer plays 8 s from B, while the test reloads
//! B's playlist every 50 ms and checks RFC 8216's structural rules on every
//! reload, then measures the playlist latency (publish → listed at B).

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::{NodeProc, http, percentile, test_pattern, wait_for};

/// Seconds of test pattern published: enough for the client's 8 s, a
/// window that slides past its first segments, and start-up.
const PUBLISH_SECONDS: u64 = 26;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One HTTP/1.0 GET: (status, headers lower-cased, body bytes).
fn get(addr: SocketAddr, path: &str) -> Result<(u16, HashMap<String, String>, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no header end")?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.lines();
    let status: u16 = lines.next().and_then(|l| l.split_whitespace().nth(1)).context("no status")?.parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, raw[end + 4..].to_vec()))
}

/// ffmpeg test pattern → `shoal publish` on `node` (MPEG-TS mode).
fn publish_test_pattern(node: &NodeProc, key: &str, extra: &[&str], log: &std::path::Path) -> Result<(Child, Child)> {
    let mut ffmpeg = test_pattern(PUBLISH_SECONDS, &log.with_extension("ffmpeg.log"))?;
    let stdout = ffmpeg.stdout.take().context("ffmpeg stdout")?;
    let publish = node
        .cli()
        .args(["publish", "--key", key, "--format", "ts"])
        .args(extra)
        .arg("-")
        .stdin(Stdio::from(stdout))
        .stderr(std::fs::File::create(log)?)
        .spawn()?;
    Ok((ffmpeg, publish))
}

/// One playlist as a player reads it.
#[derive(Debug, Clone)]
struct Playlist {
    target: u64,
    media_sequence: u64,
    discontinuity_sequence: u64,
    /// (uri, duration ms, program date time as unix ms)
    segments: Vec<(String, u64, u64)>,
}

/// Parses a live media playlist, checking the tags RFC 8216 requires.
fn parse(text: &str) -> Result<Playlist> {
    let mut lines = text.lines();
    ensure!(lines.next() == Some("#EXTM3U"), "first line must be #EXTM3U:\n{text}");
    let (mut version, mut target, mut msn, mut dsn) = (None, None, None, 0);
    let (mut extinf, mut pdt) = (None, None);
    let mut segments = Vec::new();
    for line in lines {
        if let Some(v) = line.strip_prefix("#EXT-X-VERSION:") {
            version = Some(v.parse::<u64>()?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            target = Some(v.parse::<u64>()?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            ensure!(segments.is_empty(), "MEDIA-SEQUENCE after a segment");
            msn = Some(v.parse::<u64>()?);
        } else if let Some(v) = line.strip_prefix("#EXT-X-DISCONTINUITY-SEQUENCE:") {
            dsn = v.parse()?;
        } else if let Some(v) = line.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
            pdt = Some(parse_date_time(v)?);
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            let secs: f64 = v.trim_end_matches(',').split(',').next().unwrap_or("").parse()?;
            extinf = Some((secs * 1000.0).round() as u64);
        } else if line == "#EXT-X-DISCONTINUITY" || line.is_empty() {
        } else if line.starts_with('#') {
            bail!("unknown tag {line}");
        } else {
            let d = extinf.take().with_context(|| format!("URI {line} without EXTINF"))?;
            let p = pdt.take().with_context(|| format!("URI {line} without PROGRAM-DATE-TIME"))?;
            segments.push((line.to_owned(), d, p));
        }
    }
    ensure!(version.is_some(), "EXT-X-VERSION missing");
    ensure!(!text.contains("#EXT-X-ENDLIST"), "a live playlist must not end");
    Ok(Playlist {
        target: target.context("EXT-X-TARGETDURATION missing")?,
        media_sequence: msn.context("EXT-X-MEDIA-SEQUENCE missing")?,
        discontinuity_sequence: dsn,
        segments,
    })
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` → unix ms.
fn parse_date_time(s: &str) -> Result<u64> {
    let bad = || anyhow::anyhow!("bad PROGRAM-DATE-TIME {s:?}");
    let s = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date.split('-').map(str::parse).collect::<Result<_, _>>()?;
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(str::parse).collect::<Result<_, _>>()?;
    ensure!(d.len() == 3 && t.len() == 3, "bad PROGRAM-DATE-TIME {s:?}");
    // Howard Hinnant's days_from_civil.
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    Ok(u64::try_from(secs * 1000 + ms.parse::<i64>()?)?)
}

/// The rules across two reloads (RFC 8216 §6.2.1, §6.2.2, §6.3.5).
fn check_reload(prev: &Playlist, next: &Playlist) -> Result<()> {
    ensure!(next.media_sequence >= prev.media_sequence, "media sequence went back");
    ensure!(next.target == prev.target, "target duration changed from {} to {}", prev.target, next.target);
    ensure!(next.discontinuity_sequence >= prev.discontinuity_sequence, "discontinuity sequence went back");
    for (i, s) in prev.segments.iter().enumerate() {
        let msn = prev.media_sequence + i as u64;
        if let Some(j) = msn.checked_sub(next.media_sequence)
            && let Some(n) = next.segments.get(j as usize)
        {
            ensure!(n.0 == s.0, "media sequence number {msn} named {} and now {}", s.0, n.0);
        }
    }
    Ok(())
}

#[test]
fn hls_gateway_plays_in_ffmpeg_and_follows_rfc8216() -> Result<()> {
    let tmp = shoal_tests::test_dir()?;
    let a = NodeProc::start("A", &tmp.path().join("a"), &[])?;
    let b = NodeProc::start("B", &tmp.path().join("b"), &[&a.addr])?;
    let out = a.cli().args(["key", "generate", "main"]).output()?;
    ensure!(out.status.success(), "key generate: {}", String::from_utf8_lossy(&out.stderr));
    let channel = String::from_utf8(out.stdout)?.trim().to_owned();

    // A bad channel id is a 400 that says what is wrong.
    let (status, body) = http(b.api, "GET", "/live/not-a-channel.m3u8", None)?;
    ensure!(status == 400 && body.contains("error"), "bad channel: HTTP {status} {body}");

    let (mut ffmpeg, mut publish) = publish_test_pattern(&a, "main", &[], &tmp.path().join("publish.log"))?;
    let playlist_path = format!("/live/{channel}.m3u8");
    // Opening the playlist on B joins the channel; it answers once a
    // segment is playable there.
    let started = Instant::now();
    let (first_text, headers) = wait_for(Duration::from_secs(30), "B's playlist to list a segment", || {
        let (st, h, body) = get(b.api, &playlist_path).ok()?;
        (st == 200).then(|| (String::from_utf8_lossy(&body).into_owned(), h))
    })
    .with_context(|| format!("B log:\n{}", tail(&b.log(), 40)))?;
    println!("first playlist after {:?}:\n{first_text}", started.elapsed());
    ensure!(headers.get("content-type").map(String::as_str) == Some("application/vnd.apple.mpegurl"), "{headers:?}");
    ensure!(headers.get("access-control-allow-origin").map(String::as_str) == Some("*"), "{headers:?}");
    ensure!(headers.get("cache-control").map(String::as_str) == Some("no-cache"), "{headers:?}");

    // The HLS client nobody here wrote, with its progress on stdout.
    let url = format!("http://{}{playlist_path}", b.api);
    let client = Command::new("ffmpeg")
        .args(["-v", "error", "-nostats", "-progress", "pipe:1", "-i", &url, "-t", "8", "-f", "null", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let client_done = std::thread::spawn(move || client.wait_with_output());

    // What the first playlist listed may be history fetched at join, not
    // live segments: those are left out of the latency figures.
    let at_join: HashSet<String> = parse(&first_text)?.segments.into_iter().map(|s| s.0).collect();
    // Reload every 50 ms while the client plays and the window slides.
    let mut first_seen: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new(); // uri → (seen, pdt, dur)
    let mut prev: Option<Playlist> = None;
    let mut reloads = 0u64;
    let mut left: Option<String> = None;
    let mut max_window_ms = 0u64;
    let deadline = Instant::now() + Duration::from_secs(PUBLISH_SECONDS + 10);
    // Enough live segments for the latency percentiles.
    const LIVE_SAMPLES: usize = 16;
    let live_seen = |seen: &BTreeMap<String, (u64, u64, u64)>| seen.keys().filter(|u| !at_join.contains(*u)).count();
    while Instant::now() < deadline
        && (left.is_none() || !client_done.is_finished() || live_seen(&first_seen) < LIVE_SAMPLES)
    {
        let (st, _, body) = get(b.api, &playlist_path)?;
        ensure!(st == 200, "playlist reload: HTTP {st}");
        let seen = now_ms();
        let text = String::from_utf8(body)?;
        let p = parse(&text).with_context(|| text.clone())?;
        reloads += 1;
        let window: u64 = p.segments.iter().map(|s| s.1).sum();
        max_window_ms = max_window_ms.max(window);
        for (uri, d, pdt) in &p.segments {
            ensure!(d.div_ceil(1000) <= p.target, "{uri}: {d} ms exceeds the target {} s", p.target);
            first_seen.entry(uri.clone()).or_insert((seen, *pdt, *d));
        }
        if let Some(prev) = &prev {
            check_reload(prev, &p).with_context(|| text.clone())?;
            // §6.2.2: a segment leaves only while the rest cover 3 targets.
            if p.media_sequence > prev.media_sequence {
                ensure!(
                    window >= 3 * p.target * 1000,
                    "window {window} ms < 3 × {} s after a removal:\n{text}",
                    p.target
                );
                left.get_or_insert_with(|| prev.segments[0].0.clone());
            }
        }
        prev = Some(p);
        std::thread::sleep(Duration::from_millis(50));
    }
    let client_out = client_done.join().map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    let progress = String::from_utf8_lossy(&client_out.stdout);
    let frames: u64 = progress
        .lines()
        .filter_map(|l| l.strip_prefix("frame="))
        .filter_map(|v| v.trim().parse().ok())
        .max()
        .unwrap_or(0);
    println!("ffmpeg HLS client: {frames} frames, stderr: {:?}", String::from_utf8_lossy(&client_out.stderr));
    ensure!(
        client_out.status.success(),
        "ffmpeg could not play {url}: {}",
        String::from_utf8_lossy(&client_out.stderr)
    );
    // 8 s at 25 fps; allow one segment's worth of slack.
    ensure!(frames >= 175, "ffmpeg decoded only {frames} frames of the 200 in 8 s");

    // §6.2.2: a segment that left the playlist is still fetchable.
    let left = left.context("no segment left the playlist while the test watched")?;
    let (st, h, body) = get(b.api, &format!("/live/{left}"))?;
    ensure!(st == 200, "segment {left} left the playlist and is gone: HTTP {st}");
    ensure!(h.get("content-type").map(String::as_str) == Some("video/mp2t"), "{h:?}");
    ensure!(!body.is_empty() && body.len() % 188 == 0 && body[0] == 0x47, "{left}: not whole TS packets");
    let (st, _, _) = get(b.api, &format!("/live/{channel}/999999.ts"))?;
    ensure!(st == 404, "a segment that does not exist: HTTP {st}");

    // The continuous stream starts with a TS sync byte.
    let mut s = TcpStream::connect(b.api)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /live/{channel}.ts HTTP/1.0\r\n\r\n")?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    while got.len() < 64 * 1024 {
        let n = s.read(&mut chunk)?;
        ensure!(n > 0, "the continuous stream ended");
        got.extend_from_slice(&chunk[..n]);
    }
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").context("no header end")? + 4;
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    ensure!(head.contains("content-type: video/mp2t"), "{head}");
    ensure!(got[end] == 0x47 && got[end + 188] == 0x47, "the continuous stream is not MPEG-TS");
    drop(s);

    // Playlist latency: publish (PDT + duration = the publisher's signing
    // time) → first listed at B, to the 50 ms reload interval.
    let mut lat: Vec<f64> = first_seen
        .iter()
        .filter(|(uri, _)| !at_join.contains(*uri))
        .map(|(_, (seen, pdt, d))| seen.saturating_sub(pdt + d) as f64)
        .collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "playlist latency (publish → listed at the viewer) over {} segments, {reloads} reloads: p50 {:.0} ms, p99 {:.0} ms, max window {max_window_ms} ms",
        lat.len(),
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
    );
    ensure!(lat.len() >= LIVE_SAMPLES, "only {} live segments listed", lat.len());

    let _ = ffmpeg.kill();
    let _ = publish.kill();
    let _ = ffmpeg.wait();
    let _ = publish.wait();
    Ok(())
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
