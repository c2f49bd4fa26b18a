//! 30 nodes on the memory transport, each knowing one bootstrap node:
//! DHT discovery of channel providers, manifest propagation to all (timed),
//! adversarial manifests stopped at the first hop, the directory, and the
//! bytes each protocol used.

use std::{collections::HashSet, time::Duration};

use bytes::Bytes;
use rand::Rng;
use shoal_core::{ChannelKey, DirectoryEntry, limits::MAX_SIGNED_MANIFEST_BYTES};
use shoal_net::{MAX_GOSSIP_TRANSMIT_BYTES, TransportKind};

use crate::harness::{TestNet, manifest, now_ms, percentile, wait_for};

const NODES: usize = 30;
const MANIFESTS: u64 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_discover_propagate_and_stop_forgeries() {
    let mut net = TestNet::spawn(NODES, TransportKind::Memory, 0x50A1).await;
    let key = ChannelKey::from_secret_bytes(&[42; 32]);
    let ch = key.channel_id();

    // Discovery: everyone's routing table fills through the DHT even though
    // each node was told about one peer only.
    for (i, n) in net.nodes.iter().enumerate() {
        let c = n.client.clone();
        wait_for(&format!("node {i} routing table"), Duration::from_secs(30), || {
            let c = c.clone();
            async move { c.status().await.unwrap().routing_table >= 5 }
        })
        .await;
    }

    // The publisher provides the channel first; then every other node joins
    // and must find a provider through the DHT and connect to it.
    let publisher = net.rng.random_range(0..NODES);
    net.nodes[publisher].client.join_channel(ch).await.unwrap();
    wait_for("publisher's provider record", Duration::from_secs(10), || {
        let c = net.nodes[publisher].client.clone();
        async move { c.metrics().peers > 0 }
    })
    .await;
    for (i, n) in net.nodes.iter().enumerate() {
        if i != publisher {
            n.client.join_channel(ch).await.unwrap();
        }
    }
    for (i, n) in net.nodes.iter().enumerate().filter(|(i, _)| *i != publisher) {
        let (log, c) = (n.log.clone(), n.client.clone());
        wait_for(&format!("node {i} finds a provider and connects"), Duration::from_secs(30), || {
            let (log, c) = (log.clone(), c.clone());
            async move {
                let found: HashSet<_> = log
                    .lock()
                    .unwrap()
                    .providers
                    .iter()
                    .filter(|(c, _)| *c == ch)
                    .flat_map(|(_, p)| p.clone())
                    .collect();
                let connected = c.status().await.unwrap().connected;
                !found.is_empty() && connected.iter().any(|p| found.contains(p))
            }
        })
        .await;
    }
    for (i, n) in net.nodes.iter().enumerate() {
        let c = n.client.clone();
        wait_for(&format!("node {i} gossip mesh"), Duration::from_secs(20), || {
            let c = c.clone();
            async move { !c.mesh_peers(ch).await.unwrap().is_empty() }
        })
        .await;
    }

    // Propagation, timed: a manifest every 250 ms, each must reach all 29.
    let mut to_all = Vec::new();
    let mut per_node = Vec::new();
    for seq in 1..=MANIFESTS {
        let signed = manifest(&key, seq, None, now_ms());
        let start = std::time::Instant::now();
        net.nodes[publisher].client.publish_manifest(ch, Bytes::from(signed.encode())).await.unwrap();
        let mut arrivals = Vec::new();
        for (i, n) in net.nodes.iter().enumerate().filter(|(i, _)| *i != publisher) {
            let log = n.log.clone();
            wait_for(&format!("manifest {seq} at node {i}"), Duration::from_secs(10), || {
                let log = log.clone();
                async move { log.lock().unwrap().manifests.iter().any(|(_, m, _)| m.seq() == seq) }
            })
            .await;
            let at = log.lock().unwrap().manifests.iter().find(|(_, m, _)| m.seq() == seq).unwrap().0;
            arrivals.push(at.duration_since(start));
        }
        per_node.extend(arrivals.iter().copied());
        to_all.push(*arrivals.iter().max().unwrap());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for (i, n) in net.nodes.iter().enumerate().filter(|(i, _)| *i != publisher) {
        let log = n.log.lock().unwrap();
        let seqs: Vec<u64> = log.manifests.iter().map(|(_, m, _)| m.seq()).collect();
        assert_eq!(seqs.len() as u64, MANIFESTS, "node {i} got each manifest exactly once: {seqs:?}");
        assert!(log.manifests.iter().all(|(_, m, _)| m.channel() == ch));
    }
    to_all.sort();
    per_node.sort();
    println!(
        "manifest propagation over {NODES} nodes, {MANIFESTS} manifests: time to reach all p50 {:?} p99 {:?}; \
         per-node delivery p50 {:?} p99 {:?}",
        percentile(&to_all, 50),
        percentile(&to_all, 99),
        percentile(&per_node, 50),
        percentile(&per_node, 99),
    );

    // Directory: one announcement reaches every node's list.
    let entry = DirectoryEntry {
        channel: ch,
        title: "Lighthouse cam".into(),
        description: "24/7".into(),
        renditions: vec![],
        started_at_ms: now_ms() - 60_000,
        announced_at_ms: now_ms(),
        head_seq: MANIFESTS,
    };
    let signed_entry = key.sign_directory_entry(&entry).unwrap();
    net.nodes[publisher].client.publish_directory(Bytes::from(signed_entry.encode())).await.unwrap();
    for (i, n) in net.nodes.iter().enumerate().filter(|(i, _)| *i != publisher) {
        let c = n.client.clone();
        wait_for(&format!("directory at node {i}"), Duration::from_secs(10), || {
            let c = c.clone();
            async move { c.directory().await.unwrap().iter().any(|e| e.entry().channel == ch) }
        })
        .await;
    }

    // Adversary: a node that is not the publisher sends a forged manifest
    // (bad signature), a replay (valid signature, 5 minutes old) and an
    // oversized one. Each must be refused by the attacker's mesh peers and
    // reach nobody else.
    let attacker = (publisher + 1) % NODES;
    let attacker_mesh: HashSet<_> = net.nodes[attacker].client.mesh_peers(ch).await.unwrap().into_iter().collect();
    let before: Vec<_> = net.nodes.iter().map(|n| n.client.metrics()).collect();
    let mut forged = manifest(&key, 100, None, now_ms()).encode();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    let replay = manifest(&key, 101, None, now_ms() - 5 * 60_000).encode();
    let oversized = vec![0x0a; MAX_SIGNED_MANIFEST_BYTES + 512];
    assert!(oversized.len() < MAX_GOSSIP_TRANSMIT_BYTES, "must pass the gossip frame cap to test the manifest cap");
    let c = net.nodes[attacker].client.clone();
    for bytes in [forged, replay, oversized] {
        c.publish_manifest(ch, Bytes::from(bytes)).await.unwrap();
    }
    let nodes = &net.nodes;
    let refused_now = |i: usize| {
        let (a, b) = (&before[i], nodes[i].client.metrics());
        (
            b.manifests_bad_signature - a.manifests_bad_signature,
            b.manifests_too_old - a.manifests_too_old,
            b.manifests_too_large - a.manifests_too_large,
        )
    };
    wait_for("first hop refuses all three", Duration::from_secs(10), || {
        let total = (0..NODES).map(refused_now).fold((0, 0, 0), |s, r| (s.0 + r.0, s.1 + r.1, s.2 + r.2));
        async move { total.0 >= 1 && total.1 >= 1 && total.2 >= 1 }
    })
    .await;
    // Give a forwarded copy time to show up if there were one: two gossip
    // heartbeats past the first refusals.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut totals = (0, 0, 0);
    for (i, n) in nodes.iter().enumerate() {
        let r = refused_now(i);
        totals = (totals.0 + r.0, totals.1 + r.1, totals.2 + r.2);
        println!("node {i:2}: refused forged {} replay {} oversized {}", r.0, r.1, r.2);
        assert!(r.0 <= 1 && r.1 <= 1 && r.2 <= 1, "node {i} saw an adversarial manifest twice: {r:?}");
        if r != (0, 0, 0) {
            assert!(attacker_mesh.contains(&n.peer_id), "node {i} is not a first hop of the attacker but saw {r:?}");
        }
        let log = n.log.lock().unwrap();
        assert!(log.manifests.iter().all(|(_, m, _)| m.seq() <= MANIFESTS), "node {i} delivered an adversarial manifest");
    }
    assert!(totals.0 <= attacker_mesh.len() as u64 && totals.1 <= attacker_mesh.len() as u64);
    println!("adversarial manifests refused at the first hop: forged {} replay {} oversized {} (attacker mesh {})",
        totals.0, totals.1, totals.2, attacker_mesh.len());

    // Bytes per protocol, summed over all nodes.
    let mut sums = [0u64; 8];
    let mut transport = 0.0;
    let mut gossip_topic = 0.0;
    for n in nodes {
        let m = n.client.metrics();
        for (k, v) in [m.manifest_bytes.0, m.manifest_bytes.1, m.directory_bytes.0, m.directory_bytes.1,
            m.exchange_bytes.0, m.exchange_bytes.1, m.head_bytes.0, m.head_bytes.1].into_iter().enumerate() {
            sums[k] += v;
        }
        transport += n.metric_sum("libp2p_bandwidth_bytes_total", "");
        gossip_topic += n.metric_sum("topic_msg_sent_bytes", "") ;
    }
    println!(
        "bytes over {NODES} nodes: manifests in {} / published {}; directory in {} / published {}; \
         gossipsub topic bytes sent (incl. relays) {gossip_topic}; xchg {}+{}; head {}+{}; \
         all transport bytes (gossip incl. control, kad, identify, ping, noise, yamux) {transport}",
        sums[0], sums[1], sums[2], sums[3], sums[4], sums[5], sums[6], sums[7]
    );
    assert!(sums[0] > 0 && sums[1] > 0 && transport > sums[0] as f64);
    net.shutdown().await;
}
