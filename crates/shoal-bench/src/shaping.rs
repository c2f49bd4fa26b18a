//! Emulated links: the in-process memory transport with a per-connection
//! one-way delay and per-node upload and download caps, applied to the raw
//! bytes below noise and yamux, so "40 ms RTT, 10 Mbit/s up" constrains
//! every protocol (Kademlia, gossip, the chunk exchange) the way a real link
//! would, and every byte a node writes is counted.
//!
//! Each side shapes what it writes (its upload cap, then half the RTT in a
//! delay line) and what it reads (its download cap), so a round trip costs
//! the full RTT. Nodes are found by peer id in a process-wide table because
//! `shoal_net::TransportKind::Custom` takes a plain `fn`.

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::{
    AsyncRead, AsyncWrite, AsyncWriteExt, FutureExt,
    io::{AsyncReadExt as _, ReadHalf, WriteHalf},
};
use libp2p::{
    PeerId, Transport,
    core::{
        muxing::StreamMuxerBox,
        transport::{Boxed, MemoryTransport, memory::Channel},
        upgrade::Version,
    },
    identity::Keypair,
    noise, yamux,
};
use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};
use tokio_util::sync::PollSender;

/// Largest chunk one write puts on the delay line. Small enough that a cap
/// interleaves connections fairly, large enough to keep the per-chunk cost
/// low (a 64 KiB block is 4 chunks).
const MAX_CHUNK: usize = 16 * 1024;
/// Chunks queued on one connection's delay line: 256 × 16 KiB = 4 MiB, more
/// than a 100 Mbit/s × 200 ms bandwidth-delay product, so the delay line
/// never throttles below the cap; beyond it the writer waits (backpressure).
const DELAY_LINE_CHUNKS: usize = 256;
/// Bucket depth in time at the cap rate: short, so a capped node cannot
/// burst far above its rate, but at least one chunk.
const BURST: Duration = Duration::from_millis(20);

/// A token bucket in bytes, shared by all connections of one node.
#[derive(Debug)]
struct Bucket {
    rate_bps: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(bits_per_sec: u64) -> Self {
        let rate_bps = bits_per_sec as f64 / 8.0;
        let burst = (rate_bps * BURST.as_secs_f64()).max(MAX_CHUNK as f64);
        Self { rate_bps, burst, state: Mutex::new((burst, Instant::now())) }
    }

    /// Takes up to `want` bytes: the grant, or how long to wait for any.
    fn take(&self, want: usize) -> Result<usize, Duration> {
        let Ok(mut s) = self.state.lock() else { return Ok(want) };
        let now = Instant::now();
        let (tokens, last) = *s;
        let tokens = (tokens + now.duration_since(last).as_secs_f64() * self.rate_bps).min(self.burst);
        // Wait for a reasonable piece rather than trickling single bytes.
        let min = want.min(1500) as f64;
        if tokens >= min {
            let grant = want.min(tokens as usize).max(1);
            *s = (tokens - grant as f64, now);
            Ok(grant)
        } else {
            *s = (tokens, now);
            Err(Duration::from_secs_f64((min - tokens) / self.rate_bps))
        }
    }

    fn refund(&self, bytes: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = (s.0 + bytes as f64).min(self.burst);
        }
    }
}

/// One node's link: caps, delay, and byte counters.
#[derive(Debug)]
pub(crate) struct Shaper {
    up: Option<Bucket>,
    down: Option<Bucket>,
    one_way: Duration,
    sent: AtomicU64,
    /// Bytes read from the wire (kept for debugging a run; not reported).
    received: AtomicU64,
}

impl Shaper {
    /// A link with round-trip time `rtt` and optional caps in kbit/s.
    pub(crate) fn new(rtt: Duration, up_kbps: Option<u64>, down_kbps: Option<u64>) -> Arc<Self> {
        Arc::new(Self {
            up: up_kbps.map(|k| Bucket::new(k * 1000)),
            down: down_kbps.map(|k| Bucket::new(k * 1000)),
            one_way: rtt / 2,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        })
    }

    /// Bytes this node wrote to the wire (all protocols, with framing).
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

/// Shapers by peer id; one entry per live bench node (the bench removes
/// each at shutdown, so the table is bounded by the scenario's node count).
static SHAPERS: LazyLock<Mutex<HashMap<PeerId, Arc<Shaper>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// Registers the link of the node with this identity (before it starts).
pub(crate) fn register(peer: PeerId, shaper: Arc<Shaper>) {
    if let Ok(mut m) = SHAPERS.lock() {
        m.insert(peer, shaper);
    }
}

/// Forgets a stopped node's link.
pub(crate) fn unregister(peer: &PeerId) {
    if let Ok(mut m) = SHAPERS.lock() {
        m.remove(peer);
    }
}

/// The shaped memory transport for the registered node with `key`: a
/// [`shoal_net::TransportFn`].
pub(crate) fn shaped_memory_transport(
    key: &Keypair,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let peer = key.public().to_peer_id();
    let shaper = SHAPERS
        .lock()
        .ok()
        .and_then(|m| m.get(&peer).cloned())
        .ok_or_else(|| format!("no emulated link registered for {peer}; call shaping::register first"))?;
    Ok(MemoryTransport::default()
        .map(move |conn, _| ShapedConn::new(conn, shaper.clone()))
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .boxed())
}

type Raw = Channel<Vec<u8>>;
type Chunk = (Instant, Vec<u8>);

/// A connection with the node's caps and delay applied.
pub(crate) struct ShapedConn {
    reader: ReadHalf<Raw>,
    tx: PollSender<Chunk>,
    shaper: Arc<Shaper>,
    up_wait: Option<Pin<Box<Sleep>>>,
    down_wait: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for ShapedConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShapedConn").finish_non_exhaustive()
    }
}

impl ShapedConn {
    fn new(conn: Raw, shaper: Arc<Shaper>) -> Self {
        let (reader, writer) = conn.split();
        let (tx, rx) = mpsc::channel(DELAY_LINE_CHUNKS);
        tokio::spawn(delay_line(rx, writer));
        Self { reader, tx: PollSender::new(tx), shaper, up_wait: None, down_wait: None }
    }
}

/// Delivers each chunk at its due time, in order (so pipelined writes keep
/// the link busy: the delay is latency, not a throughput limit).
async fn delay_line(mut rx: mpsc::Receiver<Chunk>, mut writer: WriteHalf<Raw>) {
    while let Some((due, data)) = rx.recv().await {
        tokio::time::sleep_until(due).await;
        if writer.write_all(&data).await.is_err() {
            return;
        }
        // Write whatever else is already due before flushing.
        while let Some(Some((due, data))) = rx.recv().now_or_never() {
            tokio::time::sleep_until(due).await;
            if writer.write_all(&data).await.is_err() {
                return;
            }
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.close().await;
}

fn wait(slot: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    if let Some(s) = slot {
        ready!(s.as_mut().poll(cx));
        *slot = None;
    }
    Poll::Ready(())
}

impl AsyncWrite for ShapedConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            ready!(wait(&mut this.up_wait, cx));
            ready!(this.tx.poll_reserve(cx)).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            let want = buf.len().min(MAX_CHUNK);
            let n = match this.shaper.up.as_ref().map_or(Ok(want), |b| b.take(want)) {
                Ok(n) => n,
                Err(d) => {
                    this.up_wait = Some(Box::pin(tokio::time::sleep(d)));
                    continue;
                }
            };
            let due = Instant::now() + this.shaper.one_way;
            this.tx.send_item((due, buf[..n].to_vec())).map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))?;
            this.shaper.sent.fetch_add(n as u64, Ordering::Relaxed);
            return Poll::Ready(Ok(n));
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are on the wire (the delay line): nothing to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_close(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The delay line delivers what is queued, then closes the writer.
        self.tx.close();
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ShapedConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            ready!(wait(&mut this.down_wait, cx));
            let want = buf.len().min(MAX_CHUNK);
            let grant = match this.shaper.down.as_ref().map_or(Ok(want), |b| b.take(want)) {
                Ok(n) => n,
                Err(d) => {
                    this.down_wait = Some(Box::pin(tokio::time::sleep(d)));
                    continue;
                }
            };
            let r = Pin::new(&mut this.reader).poll_read(cx, &mut buf[..grant]);
            let got = match &r {
                Poll::Ready(Ok(n)) => *n,
                _ => 0,
            };
            if let Some(b) = &this.shaper.down {
                b.refund(grant - got);
            }
            this.shaper.received.fetch_add(got as u64, Ordering::Relaxed);
            return r;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_paces_to_its_rate() {
        // 8 Mbit/s = 1 MB/s: 1 MB takes ~1 s after the initial burst.
        let b = Bucket::new(8_000_000);
        let start = Instant::now();
        let mut sent = 0usize;
        while sent < 1_000_000 {
            match b.take(MAX_CHUNK) {
                Ok(n) => sent += n,
                Err(d) => tokio::time::sleep(d).await,
            }
        }
        let t = start.elapsed().as_secs_f64();
        assert!((0.95..1.05).contains(&t), "1 MB at 1 MB/s took {t} s");
    }
}
