//! Liveness: a connection that goes silent (a partition, a dead NAT
//! mapping: no FIN, no RST, nothing) is closed by the event loop within
//! `ping_interval_ms + ping_timeout_ms`, not after libp2p's own ~10 s+
//! (its ping forgives the first failure and then waits out a stream
//! upgrade timeout).

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite};
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
use shoal_net::TransportKind;

use crate::harness::{TestNet, wait_for};

/// Per node: whether its link is cut. Two entries per test run.
static CUT: LazyLock<Mutex<HashMap<PeerId, Arc<AtomicBool>>>> = LazyLock::new(|| Mutex::new(HashMap::new()));

fn cut_flag(peer: PeerId) -> Arc<AtomicBool> {
    CUT.lock().unwrap().entry(peer).or_default().clone()
}

/// A memory connection that turns into a black hole when its node's flag is
/// set: reads never complete, writes are swallowed. Nothing is closed, so
/// only a liveness check can notice.
struct BlackHole {
    inner: Channel<Vec<u8>>,
    cut: Arc<AtomicBool>,
}

impl AsyncRead for BlackHole {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if self.cut.load(Ordering::Relaxed) {
            // Never woken: the bytes never come.
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for BlackHole {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.cut.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.cut.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

fn black_hole_transport(
    key: &Keypair,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let cut = cut_flag(key.public().to_peer_id());
    Ok(MemoryTransport::default()
        .map(move |inner, _| BlackHole { inner, cut: cut.clone() })
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .boxed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_connection_is_closed_within_the_ping_window() {
    const INTERVAL_MS: u64 = 500;
    const TIMEOUT_MS: u64 = 1_000;
    let net = TestNet::spawn_with(2, TransportKind::Custom(black_hole_transport), 0x11FE, |_, c| {
        c.ping_interval_ms = INTERVAL_MS;
        c.ping_timeout_ms = TIMEOUT_MS;
    })
    .await;
    let (a, b) = (net.nodes[0].client.clone(), net.nodes[1].peer_id);
    wait_for("the two nodes connected", Duration::from_secs(10), || {
        let a = a.clone();
        async move { a.status().await.unwrap().connected.contains(&b) }
    })
    .await;
    // Pings flow while the link is up: nothing is closed for silence.
    tokio::time::sleep(Duration::from_millis(3 * (INTERVAL_MS + TIMEOUT_MS))).await;
    assert!(a.status().await.unwrap().connected.contains(&b), "a healthy connection was closed");
    assert_eq!(a.metrics().ping_closed, 0, "a healthy connection counted as silent");

    cut_flag(b).store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    // libp2p alone takes over 10 s here (a forgiven first failure, then a
    // 10 s stream-upgrade timeout); the event loop's own check closes it
    // after the window plus one check interval (500 ms), plus scheduling.
    wait_for("the silent connection closed", Duration::from_secs(5), || {
        let a = a.clone();
        async move { !a.status().await.unwrap().connected.contains(&b) }
    })
    .await;
    let took = cut_at.elapsed();
    assert!(
        took >= Duration::from_millis(INTERVAL_MS),
        "closed {took:?} after the cut: before a single ping could have gone unanswered"
    );
    assert!(a.metrics().ping_closed >= 1, "closed, but not by the liveness check");
    net.shutdown().await;
}
