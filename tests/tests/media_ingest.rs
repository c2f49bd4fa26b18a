//! End-to-end MPEG-TS ingest with real ffmpeg and ffprobe: an encoder's
//! output goes through `shoal publish` on one node and comes out of
//! `shoal watch` two nodes away, playable.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use shoal_tests::{NodeProc, http, wait_for};

/// Frames ffmpeg encodes: 20 s at 25 fps.
const SECONDS: u64 = 20;
const FPS: u64 = 25;
/// Keyframe interval, in frames: one segment of the default 1 s.
const GOP: u64 = 25;

fn tool(name: &str) -> Result<()> {
    match Command::new(name).arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(()),
        _ => bail!("{name} is needed by the media suites: install it with .ci/install-deps (apt-get install ffmpeg)"),
    }
}

fn run(tool: &str, args: &[&str]) -> Result<std::process::Output> {
    let out = Command::new(tool).args(args).output().with_context(|| format!("run {tool}"))?;
    ensure!(out.status.success(), "{tool} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(out)
}

fn generate_key(node: &NodeProc, name: &str) -> Result<String> {
    let out = node.cli().args(["key", "generate", name]).output()?;
    ensure!(out.status.success(), "key generate: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn join(node: &NodeProc, channel: &str) -> Result<()> {
    let (status, body) = http(node.api, "POST", &format!("/api/v1/channels/{channel}/join"), Some(&node.token))?;
    ensure!(status == 200, "join on {}: HTTP {status} {body}", node.name);
    Ok(())
}

/// One segment as the watch API delivered it: (seq, skipped, bytes).
type Delivered = Arc<Mutex<Vec<(u64, bool, Vec<u8>)>>>;

/// Reads `GET /api/v1/watch/CHANNEL?framed=true` on a thread, collecting
/// every frame, until `stop`.
fn framed_watcher(node: &NodeProc, channel: &str, stop: Arc<AtomicBool>) -> Result<Delivered> {
    let mut s = TcpStream::connect_timeout(&node.api, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    // HTTP/1.0: the body is the rest of the connection, no chunked coding.
    write!(s, "GET /api/v1/watch/{channel}?framed=true HTTP/1.0\r\nHost: {}\r\n\r\n", node.api)?;
    let got: Delivered = Arc::default();
    let out = got.clone();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut header_done = false;
        let mut chunk = [0u8; 64 * 1024];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    continue;
                }
                Err(_) => break,
            }
            if !header_done {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                buf.drain(..end + 4);
                header_done = true;
            }
            while buf.len() >= 13 {
                let len = u32::from_be_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize;
                if buf.len() < 13 + len {
                    break;
                }
                let seq = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default());
                let skipped = buf[8] != 0;
                let data = buf[13..13 + len].to_vec();
                buf.drain(..13 + len);
                out.lock().unwrap_or_else(|e| e.into_inner()).push((seq, skipped, data));
            }
        }
    });
    Ok(got)
}

fn pid(p: &[u8]) -> u16 {
    (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2])
}

/// ffprobe on one segment file: the first video packet's flags and the
/// first decoded picture's `key_frame,pict_type`.
fn first_picture(path: &Path) -> Result<(String, String)> {
    let p = path.to_str().context("utf-8 path")?;
    let first = |entries: &str| -> Result<String> {
        let out = run(
            "ffprobe",
            &[
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-show_entries",
                entries,
                "-of",
                "csv=p=0",
                "-read_intervals",
                "%+#1",
                p,
            ],
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").trim().to_owned())
    };
    Ok((first("packet=flags")?, first("frame=key_frame,pict_type")?))
}

/// Waits for a child with a deadline; kills it if it overstays.
fn wait_child(child: &mut std::process::Child, timeout: Duration, what: &str) -> Result<std::process::ExitStatus> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() >= end {
            let _ = child.kill();
            bail!("{what} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Test 1 of the media issue: ffmpeg → `shoal publish` on A; C, which only
/// knows B, runs `shoal watch -o out.ts`. The file decodes without a single
/// error, holds (within one segment) every frame sent, and every segment C
/// delivered starts with PAT, PMT and a keyframe ffprobe agrees is one.
#[test]
fn ffmpeg_to_watch_through_three_nodes() -> Result<()> {
    tool("ffmpeg")?;
    tool("ffprobe")?;
    let tmp = shoal_tests::test_dir()?;
    let a = NodeProc::start("A", &tmp.path().join("a"), &[])?;
    let b = NodeProc::start("B", &tmp.path().join("b"), &[&a.addr])?;
    let c = NodeProc::start("C", &tmp.path().join("c"), &[&b.addr])?;
    let channel = generate_key(&a, "live")?;
    join(&b, &channel)?;

    let out_path = tmp.path().join("out.ts");
    let mut watch = c
        .cli()
        .args(["watch", &channel, "-o"])
        .arg(&out_path)
        .stderr(std::fs::File::create(tmp.path().join("watch.log"))?)
        .spawn()?;
    let stop = Arc::new(AtomicBool::new(false));
    let delivered = framed_watcher(&c, &channel, stop.clone())?;
    wait_for(Duration::from_secs(10), "C to join the channel", || {
        c.status().ok().filter(|s| s["channels"].as_array().is_some_and(|c| !c.is_empty()))
    })?;

    let started = Instant::now();
    let (t, g) = (SECONDS.to_string(), GOP.to_string());
    let mut ffmpeg = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", &format!("testsrc=size=320x240:rate={FPS}")])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", &g, "-sc_threshold", "0", "-pix_fmt", "yuv420p"])
        .args(["-c:a", "aac", "-t", &t, "-f", "mpegts", "-"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("ffmpeg.log"))?)
        .spawn()
        .context("spawn ffmpeg")?;
    let encoded = ffmpeg.stdout.take().context("ffmpeg stdout")?;
    // `--realtime`: shoal paces the encoder's output by its PCR, as a live
    // encoder would send it.
    let mut publish = a
        .cli()
        .args(["publish", "--key", "live", "--realtime", "--json", "-"])
        .stdin(encoded)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("publish.log"))?)
        .spawn()?;
    let st = wait_child(&mut publish, Duration::from_secs(SECONDS + 30), "shoal publish")?;
    let publish_log = std::fs::read_to_string(tmp.path().join("publish.log"))?;
    ensure!(st.success(), "shoal publish failed:\n{publish_log}");
    ensure!(wait_child(&mut ffmpeg, Duration::from_secs(5), "ffmpeg")?.success(), "ffmpeg failed");
    let elapsed = started.elapsed();
    let mut summary = String::new();
    publish.stdout.take().context("stdout")?.read_to_string(&mut summary)?;
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).context("publish --json summary")?;
    println!("publish summary: {summary}");
    println!("published in {elapsed:?} (paced by --realtime)");
    ensure!(elapsed >= Duration::from_secs(SECONDS - 2), "--realtime sent 20 s of stream in {elapsed:?}");
    let segments = summary["segments"].as_u64().context("segments")?;
    let ingest = &summary["ingest"];
    ensure!(ingest["cuts_without_keyframe"] == 0 && ingest["skipped_packets"] == 0, "ingest problems: {ingest}");
    ensure!(ingest["keyframes"].as_u64() == Some(SECONDS * FPS / GOP), "keyframes: {ingest}");
    ensure!((SECONDS - 1..=SECONDS + 1).contains(&segments), "{segments} segments for {SECONDS} s");

    // C delivers every segment (none skipped), then out.ts holds them all.
    let got = wait_for(Duration::from_secs(30), "C to deliver every segment", || {
        let d = delivered.lock().unwrap_or_else(|e| e.into_inner());
        (d.len() as u64 >= segments).then(|| d.clone())
    });
    let got = got.with_context(|| {
        format!(
            "watch log:\n{}\nC log tail:\n{}",
            std::fs::read_to_string(tmp.path().join("watch.log")).unwrap_or_default(),
            c.log().lines().rev().take(30).collect::<Vec<_>>().join("\n")
        )
    })?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seqs: Vec<u64> = got.iter().map(|(s, _, _)| *s).collect();
    ensure!(seqs == (0..segments).collect::<Vec<_>>(), "C delivered seqs {seqs:?}");
    ensure!(got.iter().all(|(_, skipped, _)| !skipped), "C skipped segments");
    let total: usize = got.iter().map(|(_, _, d)| d.len()).sum();
    wait_for(Duration::from_secs(10), "shoal watch to write every segment", || {
        std::fs::metadata(&out_path).ok().filter(|m| m.len() as usize >= total)
    })?;
    let _ = watch.kill();
    let _ = watch.wait();
    let written = std::fs::read(&out_path)?;
    let joined: Vec<u8> = got.iter().flat_map(|(_, _, d)| d.iter().copied()).collect();
    ensure!(written == joined, "out.ts is not the delivered segments in order");

    // Every segment C stored and served starts with PAT, PMT and a keyframe.
    for (seq, _, data) in &got {
        ensure!(data.len() % 188 == 0 && data.len() >= 3 * 188, "segment {seq}: {} bytes", data.len());
        ensure!(pid(&data[..188]) == 0 && pid(&data[188..376]) == 0x1000, "segment {seq} does not start with PAT, PMT");
        let path = tmp.path().join(format!("seg{seq}.ts"));
        std::fs::write(&path, data)?;
        let (flags, frame) = first_picture(&path)?;
        ensure!(flags.starts_with('K'), "segment {seq}: first video packet flags {flags:?}");
        ensure!(frame.trim_end_matches(',') == "1,I", "segment {seq}: first decoded picture {frame:?}, not a keyframe");
    }

    // The file a user gets plays: no decoder complaint at all, and the
    // frames sent, within one segment.
    let p = out_path.to_str().context("utf-8 path")?;
    let decode = run("ffmpeg", &["-v", "error", "-i", p, "-f", "null", "-"])?;
    let complaints = String::from_utf8_lossy(&decode.stderr);
    ensure!(complaints.trim().is_empty(), "ffmpeg -v error complained about out.ts:\n{complaints}");
    let probe = run(
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
            p,
        ],
    )?;
    // csv prints the stream once under its program and once on its own.
    let text = String::from_utf8_lossy(&probe.stdout);
    let frames: u64 =
        text.lines().next().unwrap_or("").trim().trim_end_matches(',').parse().context("ffprobe frame count")?;
    let sent = SECONDS * FPS;
    println!("frames sent {sent}, decoded from C's out.ts {frames}, segments {segments}");
    ensure!(frames <= sent && sent - frames <= GOP, "decoded {frames} frames of {sent} sent");
    Ok(())
}

/// Not MPEG-TS: the CLI refuses it before sending anything and says what it
/// is; the API refuses it with 400 and the same words.
#[test]
fn non_ts_input_is_refused_with_what_it_is() -> Result<()> {
    tool("ffmpeg")?;
    let tmp = shoal_tests::test_dir()?;
    let n = NodeProc::start("N", &tmp.path().join("n"), &[])?;
    generate_key(&n, "live")?;
    let mp4 = tmp.path().join("clip.mp4");
    let mp4_arg = mp4.to_str().context("utf-8 path")?;
    run(
        "ffmpeg",
        &["-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=25", "-t", "1", "-c:v", "libx264", mp4_arg],
    )?;
    let out = n.cli().args(["publish", "--key", "live"]).arg(&mp4).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "publishing an MP4 as MPEG-TS must fail");
    ensure!(stderr.contains("not MPEG-TS") && stderr.contains("MP4 'ftyp' box"), "stderr: {stderr}");
    ensure!(n.status()?["counters"]["segments_published"] == 0, "something was published");
    // --format bytes publishes it as opaque bytes.
    let out = n.cli().args(["publish", "--key", "live", "--format", "bytes"]).arg(&mp4).output()?;
    ensure!(out.status.success(), "--format bytes: {}", String::from_utf8_lossy(&out.stderr));

    // The API, with a text body.
    let body = "this is not a video stream, just a line of text repeated. ".repeat(20);
    let mut s = TcpStream::connect_timeout(&n.api, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "POST /api/v1/publish?key=live HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
        n.api,
        n.token,
        body.len()
    )?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    ensure!(resp.starts_with("HTTP/1.0 400") || resp.starts_with("HTTP/1.1 400"), "API answer: {resp}");
    ensure!(resp.contains("not MPEG-TS") && resp.contains("text (\\\"this is not a video"), "API answer: {resp}");
    Ok(())
}

/// `shoal publish udp://…` receives what `ffmpeg … -f mpegts udp://…` sends,
/// and ends when the datagrams stop.
#[test]
fn udp_input_from_ffmpeg() -> Result<()> {
    tool("ffmpeg")?;
    let tmp = shoal_tests::test_dir()?;
    let n = NodeProc::start("N", &tmp.path().join("n"), &[])?;
    generate_key(&n, "live")?;
    let port = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut publish = n
        .cli()
        .args(["publish", "--key", "live", "--idle-timeout", "2s", "--json", &format!("udp://127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(tmp.path().join("publish.log"))?)
        .spawn()?;
    wait_for(Duration::from_secs(10), "shoal publish to listen on UDP", || {
        std::fs::read_to_string(tmp.path().join("publish.log")).ok().filter(|l| l.contains("listening for MPEG-TS"))
    })?;
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-re", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-g", "25", "-sc_threshold", "0", "-t", "5"])
        .args(["-f", "mpegts", &format!("udp://127.0.0.1:{port}?pkt_size=1316")])
        .status()?;
    ensure!(st.success(), "ffmpeg failed");
    let st = wait_child(&mut publish, Duration::from_secs(20), "shoal publish udp://")?;
    let log = std::fs::read_to_string(tmp.path().join("publish.log"))?;
    ensure!(st.success(), "shoal publish failed:\n{log}");
    let mut summary = String::new();
    publish.stdout.take().context("stdout")?.read_to_string(&mut summary)?;
    let summary: serde_json::Value = serde_json::from_str(summary.trim()).context("summary")?;
    println!("udp publish summary: {summary}");
    let ingest = &summary["ingest"];
    ensure!(ingest["keyframes"] == 5, "keyframes: {ingest}");
    ensure!((4..=6).contains(&summary["segments"].as_u64().unwrap_or(0)), "segments: {summary}");
    ensure!(ingest["cuts_without_keyframe"] == 0 && ingest["skipped_packets"] == 0, "ingest problems: {ingest}");
    Ok(())
}
