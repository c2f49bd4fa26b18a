//! `--processes`: the `shoal` and `origin` modes with every node a real
//! `shoal node` process on loopback TCP, driven the way a user drives one:
//! a config file, the local API, `POST /api/v1/publish?format=bytes` for
//! the stream and `GET /api/v1/watch/CHANNEL?framed=true` for playback.
//!
//! What it measures, and how that differs from the in-process harness:
//! - a segment counts as played when the viewer's watch stream delivers it,
//!   in seq order as a player gets it, and only if its bytes hash the same
//!   as the publisher's copy (`corrupt_segments` counts the others);
//! - publish time is when the publisher's own watch stream delivers the
//!   segment: the publisher node cuts segments by its own clock;
//! - wire bytes are libp2p's per-connection counts from each node's
//!   `/metrics` (`libp2p_bandwidth_bytes_total`, outbound), which leave out
//!   yamux and noise framing and TCP/IP headers;
//! - CPU and peak RSS are each node process's own (`/proc/PID`), summed.
//!
//! Links are plain loopback: the in-process link shaper cannot reach into
//! another process, so a scenario's RTT and caps are not applied (`main`
//! refuses such a scenario unless `--unshaped` says this is understood).

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hasher},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use bytes::{Buf, Bytes, BytesMut};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use libp2p::{Multiaddr, PeerId, identity::Keypair, multiaddr::Protocol};
use shoal_net::NetConfig;
use shoal_node::{NodeConfig, identity};
use tokio::{sync::mpsc, task::JoinHandle};

use crate::{
    driver::{BenchNode, Mode, NodeCounters, Publisher},
    report::{RunLog, Verified},
    scenario::Scenario,
    shoal_mode::{BENCH_MAX_CONNECTIONS, bench_node_config, make_origin, viewer_settings},
};

/// How long a node process may take from spawn to an answering API with a
/// listen address (RocksDB open plus libp2p start; ~0.2 s on a quiet box).
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping node may take for its ordered shutdown before it is
/// killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of each API call other than the two long-lived streams.
const API_TIMEOUT: Duration = Duration::from_secs(5);
/// Stream chunks queued towards the publisher's request body: one segment
/// is sent as `CHUNKS_PER_SEGMENT` chunks, so this is four segments.
const PUBLISH_QUEUE: usize = 4 * CHUNKS_PER_SEGMENT;
/// A segment goes to the publisher in this many evenly paced chunks, as an
/// encoder's output would, so the node's clock (not the bench's) cuts it.
const CHUNKS_PER_SEGMENT: usize = 10;
/// Largest watch frame accepted from a node: the node's own cap on a
/// segment (8 MiB) with room to spare. A larger length is a broken stream.
const MAX_FRAME: usize = 16 << 20;
/// Pause before a viewer's watch stream is opened again after it ended.
const REWATCH_AFTER: Duration = Duration::from_millis(200);
/// The channel key's name in the publisher's keystore.
const KEY_NAME: &str = "bench";
/// Set to a log filter (`debug`, `shoal_node=trace`…) to give every node
/// process that `SHOAL_LOG` and keep their directories, logs included,
/// after the run; unset, nodes log warnings only and everything is removed.
const NODE_LOG_ENV: &str = "SHOAL_BENCH_NODE_LOG";

/// Seq → hash and length of each played segment.
type Played = Arc<Mutex<HashMap<u64, (u64, usize)>>>;

/// CPU and peak RSS over every node process that stopped.
#[derive(Debug, Default)]
pub(crate) struct ProcTotals {
    cpu_ticks: AtomicU64,
    peak_rss_kb: AtomicU64,
    private_kb: AtomicU64,
    processes: AtomicU64,
}

impl ProcTotals {
    /// CPU seconds of every node process, summed.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        self.cpu_ticks.load(Ordering::Relaxed) as f64 / CLOCK_TICKS_PER_SEC
    }

    /// Mean peak RSS of a node process, MB. It counts the pages every
    /// process shares (the `shoal` binary's text, ~20 MB) in each.
    pub(crate) fn rss_mb_per_node(&self) -> f64 {
        let n = self.processes.load(Ordering::Relaxed).max(1);
        self.peak_rss_kb.load(Ordering::Relaxed) as f64 / 1024.0 / n as f64
    }

    /// Mean private memory of a node process just before it stopped, MB:
    /// what one more node costs the machine.
    pub(crate) fn private_mb_per_node(&self) -> f64 {
        let n = self.processes.load(Ordering::Relaxed).max(1);
        self.private_kb.load(Ordering::Relaxed) as f64 / 1024.0 / n as f64
    }
}

/// USER_HZ, the unit of /proc/PID/stat's CPU times: 100 on every Linux ABI
/// Rust supports.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// `shoal` or `origin`, over real processes.
#[derive(Debug)]
pub(crate) struct ProcessMode {
    dir: tempfile::TempDir,
    scenario: Scenario,
    bin: PathBuf,
    origin_mode: bool,
    origin: Option<(PeerId, Multiaddr)>,
    channel: Option<String>,
    next_dir: usize,
    http: reqwest::Client,
    /// The publisher's own playback: publish instants and bytes.
    publisher_times: Verified,
    publisher_played: Played,
    /// Every viewer's playback, to check against the publisher's.
    viewers: Vec<(Verified, Played)>,
    totals: Arc<ProcTotals>,
}

/// A running `shoal node` process.
#[derive(Debug)]
pub(crate) struct ProcNode {
    child: tokio::process::Child,
    addr: Multiaddr,
    api: SocketAddr,
    data_dir: PathBuf,
    http: reqwest::Client,
    watcher: Option<JoinHandle<()>>,
    /// Publisher only: the stream's sender and the publish request.
    publish: Option<(mpsc::Sender<Bytes>, JoinHandle<()>)>,
    totals: Arc<ProcTotals>,
}

impl ProcessMode {
    pub(crate) fn new(scenario: &Scenario, origin_mode: bool, bin: PathBuf) -> Result<Self> {
        ensure!(bin.exists(), "{} does not exist: build it with `cargo build --release -p shoal-cli`", bin.display());
        let mut dir = tempfile::Builder::new().prefix("shoal-bench-procs-").tempdir()?;
        if std::env::var_os(NODE_LOG_ENV).is_some() {
            // Logs are wanted: keep every node's directory (and log) after
            // the run.
            dir.disable_cleanup(true);
            eprintln!("{NODE_LOG_ENV} is set: node logs are kept under {}", dir.path().display());
        }
        let http = reqwest::Client::builder().connect_timeout(API_TIMEOUT).build()?;
        Ok(Self {
            dir,
            scenario: scenario.clone(),
            bin,
            origin_mode,
            origin: None,
            channel: None,
            next_dir: 0,
            http,
            publisher_times: Arc::default(),
            publisher_played: Arc::default(),
            viewers: Vec::new(),
            totals: Arc::default(),
        })
    }

    /// CPU and RSS of the node processes (the bench's own are not in them).
    pub(crate) fn totals(&self) -> Arc<ProcTotals> {
        self.totals.clone()
    }

    fn config(&mut self) -> NodeConfig {
        self.next_dir += 1;
        let net = NetConfig {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap_or_else(|_| unreachable!("literal"))],
            mdns: false,
            kad_server_mode: true,
            // Every process dials from 127.0.0.1, so the per-IP cap (a
            // guard against many identities on one host) would cap the
            // whole swarm at 8 inbound connections per node.
            max_connections_per_ip: BENCH_MAX_CONNECTIONS,
            ..NetConfig::default()
        };
        bench_node_config(&self.scenario, self.dir.path().join(format!("p{}", self.next_dir)), net)
    }

    async fn spawn(&self, cfg: NodeConfig, key: &Keypair) -> Result<ProcNode> {
        let dir = cfg.data_dir.clone();
        std::fs::create_dir_all(&dir)?;
        let secret = key.to_protobuf_encoding().context("encoding a bench identity")?;
        identity::write_secret(&dir.join(identity::IDENTITY_FILE), &secret)?;
        let config = dir.join("config.toml");
        std::fs::write(&config, toml::to_string(&cfg).context("writing a node config")?)?;
        let log = std::fs::File::create(dir.join("node.log"))?;
        let mut child = tokio::process::Command::new(&self.bin)
            .arg("node")
            .arg("--data-dir")
            .arg(&dir)
            .arg("--config")
            .arg(&config)
            .env("SHOAL_LOG", std::env::var(NODE_LOG_ENV).unwrap_or_else(|_| "warn".to_owned()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let peer = key.public().to_peer_id();
        let started = Instant::now();
        let (api, addr) = loop {
            if let Some(st) = child.try_wait()? {
                bail!("a node exited at start ({st}); its log:\n{}", tail(&dir.join("node.log")));
            }
            if started.elapsed() > START_TIMEOUT {
                bail!("a node did not answer within {START_TIMEOUT:?}; its log:\n{}", tail(&dir.join("node.log")));
            }
            if let Some(found) = self.listening(&dir).await {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok(ProcNode {
            child,
            addr: addr.with(Protocol::P2p(peer)),
            api,
            data_dir: dir,
            http: self.http.clone(),
            watcher: None,
            publish: None,
            totals: self.totals.clone(),
        })
    }

    /// The node's API address (from DATA_DIR/api) and its TCP listen
    /// address (from its status), once both are there.
    async fn listening(&self, dir: &Path) -> Option<(SocketAddr, Multiaddr)> {
        let api: SocketAddr = std::fs::read_to_string(dir.join(identity::API_FILE)).ok()?.trim().parse().ok()?;
        let status: serde_json::Value = self
            .http
            .get(format!("http://{api}/api/v1/status"))
            .timeout(API_TIMEOUT)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let addr = status["listen_addrs"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str()?.parse::<Multiaddr>().ok())
            .find(|a| a.to_string().starts_with("/ip4/127.0.0.1/tcp/"))?;
        Some((api, addr))
    }
}

/// The last lines of a node's log, for an error message.
fn tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

impl Mode for ProcessMode {
    type Node = ProcNode;

    async fn start_publisher(&mut self, key: Keypair) -> Result<ProcNode> {
        let mut cfg = self.config();
        if self.origin_mode {
            make_origin(&mut cfg);
        }
        let mut node = self.spawn(cfg, &key).await?;
        if self.origin_mode {
            self.origin = Some((key.public().to_peer_id(), node.addr.clone()));
        }
        let token = std::fs::read_to_string(node.data_dir.join(identity::TOKEN_FILE))?.trim().to_owned();
        let created: serde_json::Value = self
            .http
            .post(format!("http://{}/api/v1/keys/{KEY_NAME}", node.api))
            .bearer_auth(&token)
            .timeout(API_TIMEOUT)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let channel = created["channel"].as_str().context("key generation answered no channel id")?.to_owned();
        // The publisher's own playback marks when each segment was
        // published, and with what bytes.
        node.watcher = Some(tokio::spawn(watch(
            self.http.clone(),
            node.api,
            channel.clone(),
            self.publisher_times.clone(),
            self.publisher_played.clone(),
        )));
        let (tx, rx) = mpsc::channel::<Bytes>(PUBLISH_QUEUE);
        let body =
            futures::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx)) },
            );
        let request = self
            .http
            .post(format!(
                "http://{}/api/v1/publish?key={KEY_NAME}&format=bytes&segment_ms={}&block_size={}",
                node.api, self.scenario.segment_ms, self.scenario.block_bytes
            ))
            .bearer_auth(&token)
            .body(reqwest::Body::wrap_stream(body));
        let task = tokio::spawn(async move {
            match request.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    tracing::error!(%status, %body, "publish refused");
                }
                Err(e) => tracing::error!(error = %e, "publish request failed"),
            }
        });
        node.publish = Some((tx, task));
        self.channel = Some(channel);
        Ok(node)
    }

    async fn start_viewer(
        &mut self,
        key: Keypair,
        bootstrap: Vec<Multiaddr>,
        verified: Verified,
        upload_kbps: Option<u64>,
    ) -> Result<ProcNode> {
        let channel = self.channel.clone().context("the publisher starts before any viewer")?;
        let mut cfg = self.config();
        viewer_settings(&mut cfg, &self.scenario, bootstrap, upload_kbps, self.origin.as_ref());
        let mut node = self.spawn(cfg, &key).await?;
        let played: Played = Arc::default();
        self.viewers.push((verified.clone(), played.clone()));
        // Watching joins the channel, as `shoal watch` does.
        node.watcher = Some(tokio::spawn(watch(self.http.clone(), node.api, channel, verified, played)));
        Ok(node)
    }

    fn publisher(&self, node: &ProcNode) -> Arc<dyn Publisher> {
        let tx = node.publish.as_ref().map(|(tx, _)| tx.clone());
        Arc::new(StreamPublisher { tx, segment: Duration::from_millis(self.scenario.segment_ms) })
    }

    fn finish(&mut self, log: &mut RunLog) {
        let times = self.publisher_times.lock().map(|m| m.clone()).unwrap_or_default();
        let published = self.publisher_played.lock().map(|m| m.clone()).unwrap_or_default();
        // The channel is new, so its seqs run from 0; stop at the first one
        // the publisher's playback did not see (none, unless it failed).
        log.published = (0u64..).map_while(|seq| times.get(&seq).copied()).collect();
        if log.published.len() < times.len() {
            tracing::warn!(seen = times.len(), counted = log.published.len(), "publisher playback has a gap");
        }
        let n = log.published.len().max(1);
        let bytes: usize = (0..log.published.len() as u64).filter_map(|s| published.get(&s)).map(|(_, len)| len).sum();
        log.segment_bytes = Some(bytes as f64 / n as f64);
        let mut corrupt = 0u64;
        for (verified, played) in &self.viewers {
            let played = played.lock().map(|m| m.clone()).unwrap_or_default();
            let Ok(mut verified) = verified.lock() else { continue };
            for (seq, got) in played {
                if published.get(&seq) != Some(&got) {
                    corrupt += 1;
                    verified.remove(&seq);
                }
            }
        }
        log.corrupt_segments = Some(corrupt);
    }
}

impl BenchNode for ProcNode {
    fn addr(&self) -> Multiaddr {
        self.addr.clone()
    }

    async fn stop(mut self) -> NodeCounters {
        if let Some((tx, task)) = self.publish.take() {
            // The body ends; the node cuts the last segment and answers.
            drop(tx);
            let _ = tokio::time::timeout(API_TIMEOUT, task).await;
        }
        if let Some(w) = self.watcher.take() {
            w.abort();
        }
        let metrics = self.metrics().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "no metrics from a stopping node");
            String::new()
        });
        let m = |name: &str| metric(&metrics, name, "") as u64;
        let counters = NodeCounters {
            payload: m("shoal_node_block_bytes_received_total"),
            duplicate: m("shoal_node_duplicate_bytes_total"),
            upload: Some(metric(&metrics, "libp2p_bandwidth_bytes_total", "outbound") as u64),
            diagnostics: vec![
                ("peers_at_end", m("shoal_net_peers")),
                ("connections", m("shoal_net_connections_established_total")),
                ("trimmed", m("shoal_net_peers_trimmed_total")),
                ("redials", m("shoal_net_provider_redials_total")),
                ("dht_bootstraps", m("shoal_net_dht_bootstraps_total")),
                ("dht_lookups", m("shoal_net_dht_provider_lookups_total")),
                ("dht_announces", m("shoal_net_dht_provider_announcements_total")),
                ("ping_closed", m("shoal_net_ping_closed_total")),
                ("ping_timeouts", m("shoal_net_ping_timeouts_total")),
                ("ping_errors", m("shoal_net_ping_errors_total")),
                ("ping_slow", m("shoal_net_ping_slow_total")),
                ("banned", m("shoal_net_peers_banned_total")),
                ("wants_unanswered", m("shoal_net_wants_unanswered_total")),
                ("junk_wants", m("shoal_net_junk_wants_total")),
                ("haves_sent", m("shoal_net_haves_announced_total")),
                ("haves_skipped", m("shoal_net_haves_suppressed_total")),
                ("blocks_served", m("shoal_net_blocks_served_total")),
                ("held_answered", m("shoal_net_held_wants_answered_total")),
                ("held_expired", m("shoal_net_held_wants_expired_total")),
                ("shed_or_capped", m("shoal_net_rate_limited_total")),
                ("shed_named", m("shoal_net_shed_redirects_total")),
                ("upload_waits", m("shoal_net_upload_waits_total")),
                ("wait_sheds", m("shoal_net_upload_wait_sheds_total")),
                ("skipped", m("shoal_node_segments_skipped_total")),
            ],
        };
        if let Some(pid) = self.child.id() {
            let (ticks, rss, private) = (proc_cpu_ticks(pid), proc_peak_rss_kb(pid), proc_private_kb(pid));
            self.totals.cpu_ticks.fetch_add(ticks, Ordering::Relaxed);
            self.totals.peak_rss_kb.fetch_add(rss, Ordering::Relaxed);
            self.totals.private_kb.fetch_add(private, Ordering::Relaxed);
            self.totals.processes.fetch_add(1, Ordering::Relaxed);
            terminate(pid).await;
        }
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await.is_err() {
            tracing::warn!(dir = %self.data_dir.display(), "a node did not stop within {STOP_TIMEOUT:?}; killed");
            let _ = self.child.kill().await;
        }
        if std::env::var_os(NODE_LOG_ENV).is_none() {
            // Hundreds of RocksDB directories add up: free each as it goes.
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
        counters
    }
}

impl ProcNode {
    async fn metrics(&self) -> Result<String> {
        let r = self.http.get(format!("http://{}/metrics", self.api)).timeout(API_TIMEOUT).send().await?;
        Ok(r.error_for_status()?.text().await?)
    }
}

/// The sum of a metric's samples whose line contains `label` (any case),
/// from the Prometheus text format. Absent: 0.
fn metric(text: &str, name: &str, label: &str) -> f64 {
    let label = label.to_ascii_lowercase();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter(|l| l.to_ascii_lowercase().contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// utime + stime of a process, in clock ticks (0 if it is gone).
fn proc_cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after ")" do not.
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    [11usize, 12].iter().filter_map(|i| f.get(*i)?.parse::<u64>().ok()).sum()
}

/// A process's peak resident set (VmHWM), kB (0 if it is gone).
fn proc_peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A process's private memory (Private_Clean + Private_Dirty of
/// smaps_rollup), kB (0 if it is gone).
fn proc_private_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("Private_"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// SIGTERM, for the node's ordered shutdown. Through `kill(1)`: the
/// workspace forbids the unsafe code `libc::kill` needs.
async fn terminate(pid: u32) {
    let sent = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    if let Err(e) = sent {
        tracing::warn!(error = %e, pid, "could not send SIGTERM");
    }
}

/// Plays a channel through a node's watch stream, recording when each
/// segment arrived and a hash of its bytes. Opens the stream again if it
/// ends; runs until aborted.
async fn watch(http: reqwest::Client, api: SocketAddr, channel: String, times: Verified, played: Played) {
    let url = format!("http://{api}/api/v1/watch/{channel}?framed=true");
    loop {
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => {
                if let Err(e) = read_frames(r, &times, &played).await {
                    tracing::warn!(error = %e, %api, "watch stream broke");
                }
            }
            Ok(r) => tracing::warn!(status = %r.status(), %api, "watch refused"),
            Err(e) => tracing::warn!(error = %e, %api, "watch request failed"),
        }
        tokio::time::sleep(REWATCH_AFTER).await;
    }
}

/// Reads `seq: u64 BE | kind: u8 | len: u32 BE | bytes` frames (the watch
/// API's framed format) until the stream ends.
async fn read_frames(r: reqwest::Response, times: &Verified, played: &Played) -> Result<()> {
    let mut stream = r.bytes_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(frame) = next_frame(&mut buf)? {
            let (seq, kind, data) = frame;
            if kind != 0 {
                continue; // skipped: the node gave up on it
            }
            let at = Instant::now();
            let mut h = DefaultHasher::new();
            h.write(&data);
            if let Ok(mut t) = times.lock() {
                t.entry(seq).or_insert(at);
            }
            if let Ok(mut p) = played.lock() {
                p.entry(seq).or_insert((h.finish(), data.len()));
            }
        }
    }
    Ok(())
}

/// One whole frame off the front of `buf`, if it holds one.
fn next_frame(buf: &mut BytesMut) -> Result<Option<(u64, u8, Bytes)>> {
    const HEADER: usize = 8 + 1 + 4;
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[9], buf[10], buf[11], buf[12]]) as usize;
    ensure!(len <= MAX_FRAME, "a watch frame of {len} bytes is over {MAX_FRAME}");
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let seq = buf.get_u64();
    let kind = buf.get_u8();
    buf.advance(4);
    Ok(Some((seq, kind, buf.split_to(len).freeze())))
}

/// Feeds the stream into the publisher's request body, paced.
struct StreamPublisher {
    tx: Option<mpsc::Sender<Bytes>>,
    segment: Duration,
}

impl Publisher for StreamPublisher {
    fn publish(&self, _seq: u64, data: Bytes) -> BoxFuture<'_, Result<()>> {
        async move {
            let tx = self.tx.as_ref().context("not the publisher")?;
            let step = data.len().div_ceil(CHUNKS_PER_SEGMENT).max(1);
            let pause = self.segment / CHUNKS_PER_SEGMENT as u32;
            let mut rest = data;
            while !rest.is_empty() {
                let chunk = rest.split_to(step.min(rest.len()));
                tokio::time::timeout(self.segment, tx.send(chunk))
                    .await
                    .context("the publisher node stopped reading the stream")?
                    .map_err(|_| anyhow::anyhow!("the publish request ended"))?;
                if !rest.is_empty() {
                    tokio::time::sleep(pause).await;
                }
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_wait_for_whole_frames() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&7u64.to_be_bytes());
        buf.extend_from_slice(&[0]);
        buf.extend_from_slice(&3u32.to_be_bytes());
        buf.extend_from_slice(b"ab");
        assert!(next_frame(&mut buf).unwrap().is_none(), "one byte short");
        buf.extend_from_slice(b"c");
        buf.extend_from_slice(&8u64.to_be_bytes());
        buf.extend_from_slice(&[1]);
        buf.extend_from_slice(&0u32.to_be_bytes());
        assert_eq!(next_frame(&mut buf).unwrap(), Some((7, 0, Bytes::from_static(b"abc"))));
        assert_eq!(next_frame(&mut buf).unwrap(), Some((8, 1, Bytes::new())));
        assert!(buf.is_empty());
    }

    /// Publish times come from the publisher's playback, and a viewer's
    /// segment whose bytes differ from the publisher's is not verified.
    #[test]
    fn finish_checks_every_played_segment_against_the_publisher() {
        let mut m = ProcessMode::new(&Scenario::default(), false, PathBuf::from("/bin/sh")).unwrap();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        *m.publisher_times.lock().unwrap() = HashMap::from([(0, at(0)), (1, at(1000)), (3, at(3000))]);
        *m.publisher_played.lock().unwrap() = HashMap::from([(0, (11, 100)), (1, (12, 300)), (3, (14, 100))]);
        let verified: Verified = Arc::new(Mutex::new(HashMap::from([(0, at(50)), (1, at(1050))])));
        let played: Played = Arc::new(Mutex::new(HashMap::from([(0, (11, 100)), (1, (99, 300))])));
        m.viewers.push((verified.clone(), played));
        let mut log = RunLog::default();
        m.finish(&mut log);
        assert_eq!(log.published, vec![at(0), at(1000)], "seqs stop at the publisher's first gap");
        assert_eq!(log.segment_bytes, Some(200.0));
        assert_eq!(log.corrupt_segments, Some(1));
        let v = verified.lock().unwrap();
        assert!(v.contains_key(&0) && !v.contains_key(&1), "the corrupt segment is no longer verified");
    }

    #[test]
    fn oversized_frames_are_refused() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&0u64.to_be_bytes());
        buf.extend_from_slice(&[0]);
        buf.extend_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(next_frame(&mut buf).is_err());
    }

    #[test]
    fn metrics_sum_the_matching_samples() {
        let text = "# HELP x\nlibp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Outbound\"} 100\n\
                    libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Inbound\"} 7\n\
                    libp2p_bandwidth_bytes_total{protocols=\"/ip6/tcp\",direction=\"Outbound\"} 20\n\
                    shoal_net_peers 4\nshoal_net_peers_trimmed_total 2\n";
        assert_eq!(metric(text, "libp2p_bandwidth_bytes_total", "outbound"), 120.0);
        assert_eq!(metric(text, "shoal_net_peers", ""), 4.0, "a longer name with the same prefix is not summed");
        assert_eq!(metric(text, "shoal_net_missing", ""), 0.0);
    }
}
