//! Client commands: find the daemon through its data dir (like kubo's `api`
//! file), then talk to its local API.

use std::{
    io::Write,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use shoal_core::ChannelId;
use shoal_node::{
    config::{DEFAULT_API, default_data_dir},
    identity::{API_FILE, TOKEN_FILE},
};
use tokio::io::AsyncRead;

use crate::ClientArgs;

struct Api {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn find(args: &ClientArgs) -> Result<Self> {
        let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
        let addr = match &args.api {
            Some(a) => a.clone(),
            None => std::fs::read_to_string(dir.join(API_FILE))
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| DEFAULT_API.to_owned()),
        };
        let token = args
            .token
            .clone()
            .or_else(|| std::fs::read_to_string(dir.join(TOKEN_FILE)).ok().map(|s| s.trim().to_owned()));
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
        let base = if addr.starts_with("http") { addr } else { format!("http://{addr}") };
        Ok(Self { base, token, http })
    }

    fn no_daemon(&self, e: &reqwest::Error) -> anyhow::Error {
        if e.is_connect() {
            anyhow::anyhow!(
                "no shoal node is answering at {}; start one with `shoal node` (or point at it with --data-dir / --api)",
                self.base
            )
        } else {
            anyhow::anyhow!("request to {} failed: {e}", self.base)
        }
    }

    async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let msg = body.get("error").and_then(|e| e.as_str()).unwrap_or("no details");
        bail!("{msg} (HTTP {status})")
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self.http.get(format!("{}{path}", self.base)).send().await.map_err(|e| self.no_daemon(&e))?;
        Ok(Self::check(resp).await?.json().await?)
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }
}

/// POSTs a JSON body to a token-protected route and prints the answer.
pub(crate) async fn post_json(args: &ClientArgs, path: &str, body: serde_json::Value) -> Result<()> {
    let api = Api::find(args)?;
    let req = api.authed(api.http.post(format!("{}{path}", api.base))).json(&body);
    let resp = tokio::time::timeout(Duration::from_secs(30), req.send())
        .await
        .context("the node did not answer within 30 s")?
        .map_err(|e| api.no_daemon(&e))?;
    let v: serde_json::Value = Api::check(resp).await?.json().await?;
    println!("{v}");
    Ok(())
}

pub(crate) async fn show(args: &ClientArgs, path: &str, json: bool) -> Result<()> {
    let api = Api::find(args)?;
    let v = api.get_json(path).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match path {
        "/api/v1/status" => {
            println!("peer id:  {}", v["peer_id"].as_str().unwrap_or("?"));
            println!("uptime:   {} s", v["uptime_s"]);
            println!("peers:    {}", v["peers"]);
            for a in v["listen_addrs"].as_array().into_iter().flatten() {
                println!("listen:   {}", a.as_str().unwrap_or("?"));
            }
            for c in v["channels"].as_array().into_iter().flatten() {
                println!(
                    "channel:  {} head={} complete={} skipped={}{}",
                    c["channel"].as_str().unwrap_or("?"),
                    c["head_seq"],
                    c["segments_complete"],
                    c["segments_skipped"],
                    if c["publishing"].as_bool() == Some(true) { " (publishing)" } else { "" }
                );
            }
        }
        "/api/v1/peers" => {
            for p in v["peers"].as_array().into_iter().flatten() {
                println!("{}", p.as_str().unwrap_or("?"));
            }
        }
        _ => {
            println!("joined:");
            for c in v["joined"].as_array().into_iter().flatten() {
                println!("  {} head={}", c["channel"].as_str().unwrap_or("?"), c["head_seq"]);
            }
            println!("directory:");
            for c in v["directory"].as_array().into_iter().flatten() {
                println!("  {}  {}", c["channel"].as_str().unwrap_or("?"), c["title"].as_str().unwrap_or(""));
            }
        }
    }
    Ok(())
}

/// What `shoal publish` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum InputFormat {
    /// MPEG-TS, cut at keyframes by the node.
    Ts,
    /// Opaque bytes, cut by wall-clock time.
    Bytes,
}

impl InputFormat {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ts => "ts",
            Self::Bytes => "bytes",
        }
    }
}

/// `shoal publish`'s options.
#[derive(Debug)]
pub(crate) struct PublishOpts {
    pub(crate) key: String,
    pub(crate) title: Option<String>,
    pub(crate) public: bool,
    pub(crate) segment_ms: u64,
    pub(crate) format: InputFormat,
    pub(crate) realtime: bool,
    pub(crate) keyframe_timeout_ms: Option<u64>,
    pub(crate) idle_timeout: Duration,
    pub(crate) json: bool,
    pub(crate) input: String,
}

/// Chunks between the input reader and the HTTP body: 16 × 64 KiB is 1 MiB
/// in flight at most, a fraction of a second of any live stream.
const BODY_CHANNEL_CAPACITY: usize = 16;
/// Read size for files and stdin.
const READ_CHUNK: usize = 64 * 1024;
/// Read size with `--realtime`: 28 packets (about 40 ms at 1 Mbit/s), so
/// pacing is smooth.
const REALTIME_CHUNK: usize = 28 * shoal_media::ts::PACKET_SIZE;
/// Largest UDP datagram.
const MAX_DATAGRAM: usize = 64 * 1024;
/// After the input ends, how long the node may take to cut, sign and store
/// the last segment and answer.
const SUMMARY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the live input comes from.
enum Input {
    Reader(Box<dyn AsyncRead + Send + Unpin>),
    Udp(tokio::net::UdpSocket, Duration),
}

impl Input {
    async fn open(spec: &str, idle: Duration) -> Result<Self> {
        if let Some(addr) = spec.strip_prefix("udp://") {
            // ffmpeg's options (`?pkt_size=1316`) are for the sender.
            let addr = addr.split('?').next().unwrap_or(addr);
            let sock_addr: std::net::SocketAddr = tokio::net::lookup_host(addr)
                .await
                .with_context(|| format!("cannot resolve {addr} (use udp://HOST:PORT)"))?
                .next()
                .with_context(|| format!("{addr} resolves to no address"))?;
            let sock = match sock_addr.ip() {
                std::net::IpAddr::V4(ip) if ip.is_multicast() => {
                    let s = tokio::net::UdpSocket::bind(("0.0.0.0", sock_addr.port())).await?;
                    s.join_multicast_v4(ip, std::net::Ipv4Addr::UNSPECIFIED)?;
                    s
                }
                _ => tokio::net::UdpSocket::bind(sock_addr)
                    .await
                    .with_context(|| format!("cannot listen on udp://{sock_addr}"))?,
            };
            eprintln!("listening for MPEG-TS on udp://{}", sock.local_addr()?);
            return Ok(Self::Udp(sock, idle));
        }
        if spec == "-" {
            return Ok(Self::Reader(Box::new(tokio::io::stdin())));
        }
        let f = tokio::fs::File::open(spec).await.with_context(|| format!("cannot open input {spec}"))?;
        Ok(Self::Reader(Box::new(f)))
    }

    /// The next chunk; `None` at the end (EOF, or UDP silent for the idle
    /// timeout).
    async fn next(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        use tokio::io::AsyncReadExt;
        match self {
            Self::Reader(r) => {
                let n = r.read(buf).await.context("reading the input failed")?;
                Ok((n > 0).then_some(n))
            }
            Self::Udp(sock, idle) => match tokio::time::timeout(*idle, sock.recv(buf)).await {
                Ok(r) => Ok(Some(r.context("receiving from the UDP socket failed")?)),
                Err(_) => {
                    eprintln!("\nno datagram for {} s: input ended", idle.as_secs());
                    Ok(None)
                }
            },
        }
    }
}

/// Reads the input's first bytes (enough to tell MPEG-TS from anything
/// else, or all of a shorter input).
async fn read_prefix(input: &mut Input) -> Result<Vec<u8>> {
    let mut prefix = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while prefix.len() < shoal_media::ts::SNIFF_BYTES {
        let want = match input {
            Input::Reader(_) => shoal_media::ts::SNIFF_BYTES - prefix.len(),
            Input::Udp(..) => MAX_DATAGRAM,
        };
        match input.next(&mut buf[..want]).await? {
            Some(n) => prefix.extend_from_slice(&buf[..n]),
            None => break,
        }
    }
    Ok(prefix)
}

/// Copies the input into the body channel, optionally at the stream's own
/// pace, until it ends or Ctrl-C. Returns the bytes sent.
async fn pump(
    mut input: Input,
    prefix: Vec<u8>,
    realtime: bool,
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
    sent: Arc<AtomicU64>,
) {
    let mut clock = shoal_media::ts::StreamClock::new();
    let start = tokio::time::Instant::now();
    let chunk = if realtime { REALTIME_CHUNK } else { READ_CHUNK };
    let mut buf = vec![0u8; chunk.max(MAX_DATAGRAM)];
    let mut pending = Some(prefix);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let data = match pending.take() {
            Some(p) => p,
            None => {
                let want = if matches!(input, Input::Udp(..)) { MAX_DATAGRAM } else { chunk };
                let next = tokio::select! {
                    r = input.next(&mut buf[..want]) => r,
                    _ = &mut ctrl_c => {
                        eprintln!("\ninterrupted: ending the stream");
                        break;
                    }
                };
                match next {
                    Ok(Some(n)) => buf[..n].to_vec(),
                    Ok(None) => break,
                    Err(e) => {
                        let _ = tx.send(Err(std::io::Error::other(format!("{e:#}")))).await;
                        break;
                    }
                }
            }
        };
        if data.is_empty() {
            continue;
        }
        if realtime {
            let due = start + Duration::from_millis(clock.push(&data));
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                _ = &mut ctrl_c => break,
            }
        }
        sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        if tx.send(Ok(bytes::Bytes::from(data))).await.is_err() {
            // The request ended (the node answered early, e.g. with an error).
            break;
        }
    }
}

pub(crate) async fn publish(args: &ClientArgs, o: PublishOpts) -> Result<()> {
    if o.realtime && (o.format == InputFormat::Bytes || o.input.starts_with("udp://")) {
        bail!(
            "--realtime paces MPEG-TS from a file or stdin by its timestamps; it needs --format ts and no udp:// input"
        );
    }
    let api = Api::find(args)?;
    let info = api.get_json(&format!("/api/v1/keys/{}", o.key)).await?;
    let channel = info["channel"].as_str().context("the node did not return a channel id")?.to_owned();
    // First line of stderr: the channel id, so scripts can pick it up.
    eprintln!("{channel}");
    let mut input = Input::open(&o.input, o.idle_timeout).await?;
    let prefix = read_prefix(&mut input).await?;
    if prefix.is_empty() {
        match input {
            Input::Udp(_, idle) => bail!("nothing arrived on {} within {} s", o.input, idle.as_secs()),
            Input::Reader(_) => bail!("input {} is empty", o.input),
        }
    }
    if o.format == InputFormat::Ts {
        // Refuse a wrong input here, before the node sees a byte of it.
        shoal_media::ts::sniff(&prefix).with_context(|| format!("input {}", o.input))?;
    }
    let sent = Arc::new(AtomicU64::new(0));
    let (tx, rx) = tokio::sync::mpsc::channel(BODY_CHANNEL_CAPACITY);
    let pump = tokio::spawn(pump(input, prefix, o.realtime, tx, sent.clone()));
    let chunks = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    let body = reqwest::Body::wrap_stream(chunks);
    let mut url = format!(
        "{}/api/v1/publish?key={}&segment_ms={}&public={}&format={}",
        api.base,
        percent_encode(&o.key),
        o.segment_ms,
        o.public,
        o.format.as_str()
    );
    if let Some(t) = o.keyframe_timeout_ms {
        url.push_str(&format!("&keyframe_timeout_ms={t}"));
    }
    if let Some(t) = &o.title {
        url.push_str("&title=");
        url.push_str(&percent_encode(t));
    }
    let req = api.authed(api.http.post(url)).body(body).send();
    let status_api = Api::find(args)?;
    let counter = sent.clone();
    let progress = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let peers =
                status_api.get_json("/api/v1/status").await.ok().map_or(0, |v| v["peers"].as_u64().unwrap_or(0));
            eprint!("\rsent {} KiB, peers {peers}   ", counter.load(Ordering::Relaxed) / 1024);
        }
    });
    let input_then_deadline = async {
        let _ = pump.await;
        tokio::time::sleep(SUMMARY_TIMEOUT).await;
    };
    let resp = tokio::select! {
        r = req => r,
        () = input_then_deadline => {
            progress.abort();
            bail!("the input ended but the node did not answer within {} s", SUMMARY_TIMEOUT.as_secs());
        }
    };
    progress.abort();
    let summary: serde_json::Value = Api::check(resp.map_err(|e| api.no_daemon(&e))?).await?.json().await?;
    eprintln!("\rpublished {} segments, {} bytes on {channel}", summary["segments"], summary["bytes"]);
    let ingest = &summary["ingest"];
    let count = |k: &str| ingest[k].as_u64().unwrap_or(0);
    if count("cuts_without_keyframe") > 0 {
        eprintln!(
            "warning: {} segments were cut without a keyframe (none came within the keyframe timeout), so players \
             cannot start on them; set the encoder's keyframe interval (ffmpeg -g, OBS 'Keyframe Interval') to about \
             the segment duration",
            count("cuts_without_keyframe")
        );
    }
    if count("skipped_packets") > 0 {
        eprintln!(
            "warning: {} truncated or damaged MPEG-TS packets ({} bytes) were skipped",
            count("skipped_packets"),
            count("skipped_bytes")
        );
    }
    if count("idr_without_parameter_sets") > 0 {
        eprintln!(
            "warning: {} keyframes came without SPS/PPS in the stream, so they cannot start playback; make the \
             encoder repeat its headers (x264: repeat-headers, ffmpeg: no -flags +global_header)",
            count("idr_without_parameter_sets")
        );
    }
    if o.json {
        println!("{summary}");
    }
    Ok(())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) async fn watch(args: &ClientArgs, channel: ChannelId, output: &str, from_start: bool) -> Result<()> {
    let api = Api::find(args)?;
    let url = format!("{}/api/v1/watch/{channel}?framed=true&from_start={from_start}", api.base);
    let resp = api.http.get(url).send().await.map_err(|e| api.no_daemon(&e))?;
    let mut body = Api::check(resp).await?.bytes_stream();
    let mut out: Box<dyn Write> = if output == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(std::fs::File::create(output).with_context(|| format!("cannot create {output}"))?)
    };
    let mut buf = BytesMut::new();
    let (mut segments, mut skipped) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.context("the node closed the stream")?);
        // Frames: seq u64 | kind u8 | len u32 | bytes.
        while buf.len() >= 13 {
            let len = u32::from_be_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize;
            if buf.len() < 13 + len {
                break;
            }
            let seq = buf.get_u64();
            let kind = buf.get_u8();
            buf.advance(4);
            let data = buf.split_to(len);
            if kind == 0 {
                out.write_all(&data)?;
                out.flush()?;
                segments += 1;
            } else {
                skipped += 1;
                eprintln!("warning: segment {seq} could not be fetched before its deadline; skipped");
            }
        }
    }
    eprintln!("stream ended: {segments} segments written, {skipped} skipped");
    Ok(())
}
