//! `shoal demo`: a local swarm you can watch. One publisher and N viewers,
//! real nodes over loopback TCP that find each other through the DHT.
//! ffmpeg encodes a test pattern with a burnt-in clock and a sine tone
//! (H.264/AAC in MPEG-TS); the segmenter cuts it at keyframes and the
//! publisher node signs and announces each segment. A status line shows the
//! swarm; any viewer's HLS gateway and page play the stream.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use shoal_core::{ChannelKey, DirectoryEntry, StreamInfo};
use shoal_media::segment::{Segmenter, SegmenterConfig, TsSegment};
use shoal_node::{Node, NodeConfig, PublishSegment};
use tokio::{
    io::{AsyncReadExt, BufReader},
    process::{Child, Command},
};

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Viewer nodes besides the publisher.
    #[arg(long, default_value_t = 6)]
    viewers: usize,
    /// Video bitrate in kbit/s.
    #[arg(long, default_value_t = 2000)]
    bitrate_kbps: u64,
    /// Picture size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x720")]
    size: String,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
}

/// Frames per second of the test pattern; one keyframe a second, so the
/// segmenter cuts 1 s segments.
const FPS: u32 = 25;
/// Block size: several peers can serve one segment at once.
const BLOCK_SIZE: usize = 256 * 1024;
/// How much of ffmpeg's output one read takes.
const READ_CHUNK: usize = 64 * 1024;
/// How often the demo's channel re-announces itself in the directory: often
/// enough that a page opened seconds after start lists it.
const DIRECTORY_INTERVAL: Duration = Duration::from_secs(5);
/// How long ffmpeg gets to exit after it is killed.
const FFMPEG_EXIT_WAIT: Duration = Duration::from_secs(5);
/// Fonts tried for the burnt-in clock (Debian's fonts-dejavu-core).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono-Bold.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
];

fn node_config(dir: &std::path::Path, bootstrap: Vec<shoal_node::config::Multiaddr>) -> Result<NodeConfig> {
    let mut net = shoal_net::NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap,
        mdns: false,
        kad_server_mode: true,
        ..shoal_net::NetConfig::default()
    };
    net.gossip_heartbeat_ms = 500;
    Ok(NodeConfig { data_dir: dir.to_owned(), api: "127.0.0.1:0".parse()?, net, ..NodeConfig::default() })
}

async fn dial_addr(node: &Node) -> Result<shoal_node::config::Multiaddr> {
    let h = node.handle();
    for _ in 0..100 {
        if let Some(a) = h.listen_addrs().await.into_iter().next() {
            return Ok(a.with(shoal_node::config::Protocol::P2p(h.peer_id())));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("a demo node did not start listening")
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The font for the clock, if ffmpeg has drawtext and a font is installed.
async fn clock_font() -> Option<PathBuf> {
    let filters = Command::new("ffmpeg").args(["-hide_banner", "-filters"]).output().await.ok()?;
    if !String::from_utf8_lossy(&filters.stdout).contains(" drawtext ") {
        return None;
    }
    FONTS.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Starts ffmpeg: testsrc (+ clock) and a sine tone, H.264/AAC in MPEG-TS on
/// stdout, paced at real time.
async fn spawn_ffmpeg(args: &DemoArgs) -> Result<(Child, bool)> {
    match Command::new("ffmpeg").arg("-version").stdout(Stdio::null()).stderr(Stdio::null()).status().await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "ffmpeg is not installed; the demo encodes its test pattern with it.\n\
             Install it with `sudo apt-get install -y ffmpeg` (Debian/Ubuntu), \
             or run ./.ci/install-deps, which installs everything shoal needs"
        ),
        Err(e) => bail!("cannot run ffmpeg: {e}"),
    }
    let font = clock_font().await;
    let mut video = format!("testsrc=size={}:rate={FPS}", args.size);
    if let Some(font) = &font {
        video.push_str(&format!(
            ",drawtext=fontfile={}:text='%{{localtime\\:%T}}':fontsize=h/10:fontcolor=white:\
             box=1:boxcolor=black@0.6:boxborderw=12:x=(w-tw)/2:y=h-th-h/12",
            font.display()
        ));
    }
    let gop = FPS.to_string();
    let bitrate = format!("{}k", args.bitrate_kbps);
    let bufsize = format!("{}k", args.bitrate_kbps);
    let child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", &video])
        .args(["-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-pix_fmt", "yuv420p"])
        .args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"])
        .args(["-b:v", &bitrate, "-maxrate", &bitrate, "-bufsize", &bufsize])
        .args(["-c:a", "aac", "-b:a", "128k", "-f", "mpegts", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start ffmpeg")?;
    Ok((child, font.is_some()))
}

/// Announces the channel in the public directory now and every
/// [`DIRECTORY_INTERVAL`] until aborted.
fn spawn_directory(node: shoal_node::NodeHandle, key: Arc<ChannelKey>, title: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started_at_ms = now_ms();
        let mut tick = tokio::time::interval(DIRECTORY_INTERVAL);
        loop {
            tick.tick().await;
            let channel = key.channel_id();
            let entry = DirectoryEntry {
                channel,
                title: title.clone(),
                description: "ffmpeg testsrc with a clock and a 440 Hz tone".into(),
                renditions: Vec::new(),
                started_at_ms,
                announced_at_ms: now_ms(),
                head_seq: node.store().head(&channel).map_or(0, |h| h.seq),
            };
            if let Ok(signed) = key.sign_directory_entry(&entry) {
                // No peer in the directory's mesh yet is normal at start.
                let _ = node.net().publish_directory(Bytes::from(signed.encode())).await;
            }
        }
    })
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    let (mut ffmpeg, clock) = spawn_ffmpeg(&args).await?;
    if !clock {
        eprintln!(
            "note: ffmpeg's drawtext filter or a font (Debian: fonts-dejavu-core) is missing, so the picture \
             shows testsrc's own frame counter instead of a clock"
        );
    }
    let dir = tempfile::Builder::new().prefix("shoal-demo-").tempdir()?;
    eprintln!("starting 1 publisher and {} viewers on loopback (data in {})", args.viewers, dir.path().display());
    let publisher = Node::start(node_config(&dir.path().join("publisher"), vec![])?).await?;
    let publisher_id = publisher.handle().peer_id();
    let mut addrs = vec![dial_addr(&publisher).await?];
    let key = Arc::new(ChannelKey::generate());
    let channel = key.channel_id();
    let mut viewers = Vec::new();
    for i in 0..args.viewers {
        // Each viewer knows one earlier node; the DHT finds the rest.
        let boot = addrs[i % addrs.len()].clone();
        let n = Node::start(node_config(&dir.path().join(format!("viewer{i}")), vec![boot])?).await?;
        addrs.push(dial_addr(&n).await?);
        n.handle().join(channel).await.context("viewer could not join")?;
        viewers.push(n);
    }
    let title = "shoal demo: test pattern".to_owned();
    let directory = spawn_directory(publisher.handle(), key.clone(), title.clone());
    println!("channel: {channel}");
    if let Some(v) = viewers.first() {
        let api = v.api_addr();
        let hls = format!("http://{api}/live/{channel}.m3u8");
        println!("watch it through viewer 0:");
        println!("  browser: http://{api}/watch/{channel}   (node page: http://{api}/)");
        println!("  vlc {hls}");
        println!("  mpv {hls}");
        println!("  ffplay {hls}");
        println!("  curl -s http://{api}/live/{channel}.ts | mpv -");
    }
    let result = stream(&args, &mut ffmpeg, &publisher, &viewers, key, publisher_id, &title).await;
    eprintln!("\nstopping");
    directory.abort();
    // Kill ffmpeg first: nothing more to publish.
    let _ = ffmpeg.start_kill();
    let _ = tokio::time::timeout(FFMPEG_EXIT_WAIT, ffmpeg.wait()).await;
    for v in viewers {
        v.shutdown().await;
    }
    publisher.shutdown().await;
    result
}

/// Feeds ffmpeg's output through the segmenter into the publisher until
/// Ctrl-C, `--seconds`, or ffmpeg's exit; prints the status line.
async fn stream(
    args: &DemoArgs,
    ffmpeg: &mut Child,
    publisher: &Node,
    viewers: &[Node],
    key: Arc<ChannelKey>,
    publisher_id: shoal_net::PeerId,
    title: &str,
) -> Result<()> {
    let mut out = BufReader::new(ffmpeg.stdout.take().context("ffmpeg stdout")?);
    let mut segmenter = Segmenter::new(SegmenterConfig::default());
    let info = StreamInfo {
        video_codec: "h264".into(),
        audio_codec: "aac".into(),
        bitrate_kbps: u32::try_from(args.bitrate_kbps + 128).unwrap_or(u32::MAX),
        title: title.to_owned(),
    };
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut published = 0u64;
    let mut published_bytes = 0u64;
    loop {
        let n = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            _ = tick.tick() => {
                if args.seconds.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
                    return Ok(());
                }
                status_line(published, published_bytes, viewers, publisher_id).await;
                continue;
            }
            // Cancel-safe: a read that loses the race consumed nothing.
            n = out.read(&mut buf) => n.context("reading ffmpeg's output")?,
        };
        if n == 0 {
            let mut err = String::new();
            if let Some(mut e) = ffmpeg.stderr.take() {
                let _ = tokio::time::timeout(FFMPEG_EXIT_WAIT, e.read_to_string(&mut err)).await;
            }
            bail!("ffmpeg stopped: {}", err.trim());
        }
        let segments = segmenter.push(&buf[..n]).context("segmenting ffmpeg's output")?;
        for seg in segments {
            published_bytes += seg.data.len() as u64;
            publish(publisher, &key, seg, &info).await?;
            published += 1;
        }
    }
}

async fn publish(publisher: &Node, key: &Arc<ChannelKey>, seg: TsSegment, info: &StreamInfo) -> Result<()> {
    let seg = PublishSegment {
        data: seg.data,
        duration_ms: u32::try_from(seg.duration_ms.max(1)).unwrap_or(u32::MAX),
        keyframe: seg.keyframe,
        block_size: BLOCK_SIZE,
        info: Some(info.clone()),
    };
    publisher.handle().publish(key.clone(), seg).await?;
    Ok(())
}

/// Segments, peers, where viewers' bytes came from, and latency.
async fn status_line(published: u64, published_bytes: u64, viewers: &[Node], publisher: shoal_net::PeerId) {
    let mut complete = Vec::new();
    let mut lat = Vec::new();
    let (mut from_publisher, mut total) = (0u64, 0u64);
    let mut peers = 0usize;
    for v in viewers {
        let h = v.handle();
        complete.push(h.metrics().segments_complete.get());
        lat.extend(h.metrics().latency_samples());
        for (p, b) in h.metrics().received_from() {
            total += b;
            if p == publisher {
                from_publisher += b;
            }
        }
        peers += h.net().status().await.map_or(0, |s| s.connected.len());
    }
    let share = |x: u64| x as f64 * 100.0 / total.max(1) as f64;
    eprint!(
        "\rsegments {published:>4} ({:.1} MB) | viewers complete min {} max {} | peers/viewer {:.1} | bytes from peers {:.0}%, from publisher {:.0}% | latency p50 {} ms p99 {} ms   ",
        published_bytes as f64 / 1e6,
        complete.iter().min().copied().unwrap_or(0),
        complete.iter().max().copied().unwrap_or(0),
        peers as f64 / viewers.len().max(1) as f64,
        share(total - from_publisher),
        share(from_publisher),
        pct(&mut lat.clone(), 50.0),
        pct(&mut lat, 99.0),
    );
}
