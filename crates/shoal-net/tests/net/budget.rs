//! The peer budget: a node over `max_peers` closes the least useful
//! connections down to `target_peers`, and never its channel mesh.

use std::{collections::HashSet, time::Duration};

use libp2p::PeerId;
use shoal_core::ChannelKey;
use shoal_net::TransportKind;

use crate::harness::{TestNet, wait_for};

/// Leaves that all bootstrap from the hub, so every one connects to it.
const LEAVES: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_over_its_budget_trims_idle_peers_and_keeps_its_channel_mesh() {
    let net = TestNet::spawn_with(1 + LEAVES, TransportKind::Memory, 0xB0D6, |i, c| {
        if i == 0 {
            c.max_peers = 6;
            c.target_peers = 4;
            // Long enough for the channel leaves to join the hub's mesh
            // before the first trim can touch them.
            c.peer_grace_secs = 3;
        }
    })
    .await;
    // Every leaf knows the hub only (TestNet picks a random earlier node;
    // point them all at node 0 instead).
    let hub_addr = net.nodes[0].addr.clone();
    for n in &net.nodes[1..] {
        n.client.dial(hub_addr.clone()).await.unwrap();
    }
    let ch = ChannelKey::from_secret_bytes(&[7; 32]).channel_id();
    net.nodes[0].client.join_channel(ch).await.unwrap();
    // Two leaves watch the hub's channel: they must end up in its mesh.
    let watchers: HashSet<PeerId> = net.nodes[1..3].iter().map(|n| n.peer_id).collect();
    for n in &net.nodes[1..3] {
        n.client.join_channel(ch).await.unwrap();
    }
    let hub = net.nodes[0].client.clone();
    wait_for("both watchers in the hub's channel mesh", Duration::from_secs(10), || {
        let (hub, watchers) = (hub.clone(), watchers.clone());
        async move {
            let mesh = hub.mesh_peers(ch).await.unwrap();
            watchers.iter().all(|w| mesh.contains(w))
        }
    })
    .await;

    // The hub had every leaf connected (12 > 6) and trims down to 4; leaves
    // may dial it again through the DHT, so the bound is the high mark.
    wait_for("the hub trims peers", Duration::from_secs(20), || {
        let hub = hub.clone();
        async move { hub.metrics().peers_trimmed >= (LEAVES - 6) as u64 }
    })
    .await;
    wait_for("the hub within its budget", Duration::from_secs(20), || {
        let hub = hub.clone();
        async move { hub.status().await.unwrap().connected.len() <= 6 }
    })
    .await;
    let connected: HashSet<PeerId> = hub.status().await.unwrap().connected.into_iter().collect();
    assert!(watchers.is_subset(&connected), "the channel mesh was trimmed: connected {connected:?}");
    let mesh: HashSet<PeerId> = hub.mesh_peers(ch).await.unwrap().into_iter().collect();
    assert!(watchers.is_subset(&mesh), "watchers left the mesh: {mesh:?}");
    net.shutdown().await;
}
