//! `shoal demo`: a local swarm you can watch. One publisher and N viewers,
//! real nodes over loopback TCP that find each other through the DHT, a
//! synthetic stream, and a live status line. Media ingest (an ffmpeg test
//! pattern and HLS) arrives with the media milestone; until then the stream
//! is random bytes at the chosen bitrate.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use shoal_core::ChannelKey;
use shoal_node::{Node, NodeConfig, PublishSegment};

/// Demo options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct DemoArgs {
    /// Viewer nodes besides the publisher.
    #[arg(long, default_value_t = 6)]
    viewers: usize,
    /// Stream bitrate in kbit/s.
    #[arg(long, default_value_t = 2000)]
    bitrate_kbps: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    seconds: Option<u64>,
}

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

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("shoal-demo-").tempdir()?;
    eprintln!("starting 1 publisher and {} viewers on loopback (data in {})", args.viewers, dir.path().display());
    let publisher = Node::start(node_config(&dir.path().join("publisher"), vec![])?).await?;
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
    println!("channel: {channel}");
    if let Some(v) = viewers.first() {
        let api = v.api_addr();
        println!("watch it from viewer 0:  shoal watch {channel} --api {api} -o stream.bin");
        println!("viewer 0 status:         curl http://{api}/api/v1/status");
    }
    let seg_bytes = (args.bitrate_kbps * 1000 / 8) as usize;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut published = 0u64;
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tick.tick() => {}
        }
        if args.seconds.is_some_and(|s| started.elapsed() >= Duration::from_secs(s)) {
            break;
        }
        let mut data = vec![0u8; seg_bytes.max(1)];
        rand::fill(&mut data[..]);
        let seg = PublishSegment {
            data: Bytes::from(data),
            duration_ms: 1000,
            keyframe: true,
            block_size: 256 * 1024,
            info: None,
        };
        publisher.handle().publish(key.clone(), seg).await?;
        published += 1;
        // Status: segments, peers, where the bytes came from, latency.
        let mut complete = Vec::new();
        let mut lat = Vec::new();
        let mut from_peers = 0u64;
        let mut peers = 0usize;
        for v in &viewers {
            let h = v.handle();
            complete.push(h.metrics().segments_complete.get());
            lat.extend(h.metrics().latency_samples());
            from_peers += h.metrics().block_bytes_received.get();
            peers += h.net().status().await.map_or(0, |s| s.connected.len());
        }
        let origin_out = publisher.handle().net().metrics().exchange_bytes.1;
        let stream = published * seg_bytes as u64;
        let origin_share = origin_out as f64 / from_peers.max(1) as f64 * 100.0;
        eprint!(
            "\rsegments {published:>4} | viewers complete min {} max {} | peers/viewer {:.1} | publisher upload {:.2}x stream, {:.0}% of viewer bytes | latency p50 {} ms p99 {} ms   ",
            complete.iter().min().copied().unwrap_or(0),
            complete.iter().max().copied().unwrap_or(0),
            peers as f64 / viewers.len().max(1) as f64,
            origin_out as f64 / stream.max(1) as f64,
            origin_share,
            pct(&mut lat.clone(), 50.0),
            pct(&mut lat, 99.0),
        );
    }
    eprintln!("\nstopping");
    for v in viewers {
        v.shutdown().await;
    }
    publisher.shutdown().await;
    Ok(())
}
