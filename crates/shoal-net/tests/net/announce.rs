//! Announcements on real sockets (loopback TCP and QUIC), and node-side
//! validation: nothing is forwarded before the node's verdict.

use std::time::Duration;

use bytes::Bytes;
use shoal_core::ChannelKey;
use shoal_net::{Acceptance, ManifestValidation, TransportKind};

use crate::harness::{TestNet, manifest, now_ms, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_reach_every_node_over_tcp_and_quic() {
    // Every node bootstraps over TCP; odd nodes also dial their
    // predecessor over QUIC, so both transports carry traffic.
    let net = TestNet::spawn_with(6, TransportKind::TcpQuic, 3, |_, _| {}).await;
    for i in (1..net.nodes.len()).step_by(2) {
        let target = &net.nodes[i - 1];
        let quic = target.client.listen_addrs().await.unwrap().into_iter().find(|a| a.to_string().contains("quic"));
        let quic = quic.expect("listening on QUIC").with(libp2p::multiaddr::Protocol::P2p(target.peer_id));
        net.nodes[i].client.dial(quic).await.unwrap();
    }
    let key = ChannelKey::from_secret_bytes(&[9; 32]);
    let ch = key.channel_id();
    for n in &net.nodes {
        n.client.join_channel(ch).await.unwrap();
    }
    for (i, n) in net.nodes.iter().enumerate() {
        let c = n.client.clone();
        wait_for(&format!("node {i} mesh"), Duration::from_secs(20), || {
            let c = c.clone();
            async move { !c.mesh_peers(ch).await.unwrap().is_empty() }
        })
        .await;
    }
    let signed = manifest(&key, 1, None, now_ms());
    net.nodes[0].client.publish_manifest(ch, Bytes::from(signed.encode())).await.unwrap();
    for (i, n) in net.nodes.iter().enumerate().skip(1) {
        let log = n.log.clone();
        wait_for(&format!("manifest at node {i}"), Duration::from_secs(10), || {
            let log = log.clone();
            async move { log.lock().unwrap().manifests.iter().any(|(_, m, _)| m.seq() == 1) }
        })
        .await;
    }
    let total: f64 = net.nodes.iter().map(|n| n.metric_sum("libp2p_bandwidth_bytes_total", "quic")).sum();
    assert!(total > 0.0, "some traffic went over QUIC");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_validation_decides_before_forwarding() {
    let net = TestNet::spawn_with(2, TransportKind::Memory, 5, |_, c| {
        c.manifest_validation = ManifestValidation::Node;
    })
    .await;
    let key = ChannelKey::from_secret_bytes(&[4; 32]);
    let ch = key.channel_id();
    for n in &net.nodes {
        n.client.join_channel(ch).await.unwrap();
    }
    let c = net.nodes[0].client.clone();
    wait_for("mesh", Duration::from_secs(10), || {
        let c = c.clone();
        async move { !c.mesh_peers(ch).await.unwrap().is_empty() }
    })
    .await;
    let (publisher, node) = (&net.nodes[0], &net.nodes[1]);
    for seq in 1..=2 {
        publisher.client.publish_manifest(ch, Bytes::from(manifest(&key, seq, None, now_ms()).encode())).await.unwrap();
    }
    let log = node.log.clone();
    wait_for("two pending validations", Duration::from_secs(10), || {
        let log = log.clone();
        async move { log.lock().unwrap().pending.len() == 2 }
    })
    .await;
    let m = node.client.metrics();
    assert_eq!((m.manifests_accepted, m.manifests_rejected), (0, 0), "nothing decided before the node");
    let pending = node.log.lock().unwrap().pending.clone();
    for (id, source, seq) in pending {
        let verdict = if seq == 1 { Acceptance::Accept } else { Acceptance::Reject };
        node.client.report_validation(id, source, verdict).await.unwrap();
    }
    let c = node.client.clone();
    wait_for("verdicts counted", Duration::from_secs(5), || {
        let m = c.metrics();
        async move { m.manifests_accepted == 1 && m.manifests_rejected == 1 }
    })
    .await;
    net.shutdown().await;
}
