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
    net.wait_for_routing_tables(5).await;

    // The publisher provides the channel first; then every other node joins
    // and must find a provider through the DHT and connect to it.
    let publisher = net.rng.random_range(0..NODES);
    net.nodes[publisher].client.join_channel(ch).await.unwrap();
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
    // Each of those finished a provider lookup, and the DHT counter says
    // so (the bench reads it to tell what a join costs the DHT).
    for (i, n) in net.nodes.iter().enumerate().filter(|(i, _)| *i != publisher) {
        let lookups = n.client.metrics().dht_provider_lookups;
        assert!(lookups >= 1, "node {i} found providers but counted {lookups} finished lookups");
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
            wait_for(&format!("manifest {seq} at node {i}"), Duration::from_secs(30), || {
                let log = log.clone();
                async move { log.lock().unwrap().manifests.iter().any(|(_, m, _)| m.seq() == seq) }
            })
            .await;
            let at = log.lock().unwrap().manifests.iter().find(|(_, m, _)| m.seq() == seq).unwrap().0;
            arrivals.push(at.duration_since(start));
        }
        let mut sorted = arrivals.clone();
        sorted.sort();
        if std::env::var("SHOAL_NET_DEBUG").is_ok() {
            println!("manifest {seq}: arrivals {:?}", sorted.iter().map(|d| d.as_millis()).collect::<Vec<_>>());
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

    println!("{}", bytes_report("discovery + 10 manifests + 1 directory entry", &net.nodes));

    // Adversary: a node that is not the publisher sends a forged manifest
    // (bad signature), a replay (valid signature, 5 minutes old) and an
    // oversized one. Each must be refused by the attacker's mesh peers and
    // reach nobody else.
    let attacker = (publisher + 1) % NODES;
    let attacker_mesh: HashSet<_> = net.nodes[attacker].client.mesh_peers(ch).await.unwrap().into_iter().collect();
    let attacker_neighbours: HashSet<_> =
        net.nodes[attacker].client.status().await.unwrap().connected.into_iter().collect();
    let before: Vec<_> = net.nodes.iter().map(|n| n.client.metrics()).collect();
    // Copies of channel messages each node has received, duplicates
    // included (gossipsub's unfiltered counter). If no honest node forwards,
    // every copy a node receives during the attack came straight from the
    // attacker and is refused exactly once: copies == refusals.
    let topic = ch.topic();
    let copies = |n: &crate::harness::TestNode| n.metric_sum("topic_msg_recv_counts_unfiltered_total", &topic);
    let copies_before: Vec<f64> = net.nodes.iter().map(copies).collect();
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
    // Every copy received is judged (duplicates never are: gossipsub drops
    // them before validation). Give a forwarded copy time to show up if
    // there were one, then require copies == verdicts everywhere.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let copies_and_verdicts = |i: usize| {
        let n = &nodes[i];
        let (a, b) = (&before[i], n.client.metrics());
        let verdicts = (b.manifests_rejected + b.manifests_ignored + b.manifests_accepted)
            - (a.manifests_rejected + a.manifests_ignored + a.manifests_accepted);
        (copies(n) - copies_before[i], verdicts as f64)
    };
    wait_for("every copy judged", Duration::from_secs(10), || {
        let done = (0..NODES).all(|i| {
            let (c, v) = copies_and_verdicts(i);
            c == v
        });
        async move { done }
    })
    .await;
    let mut totals = (0, 0, 0);
    for (i, n) in nodes.iter().enumerate() {
        let r = refused_now(i);
        totals = (totals.0 + r.0, totals.1 + r.1, totals.2 + r.2);
        println!("node {i:2}: refused forged {} replay {} oversized {}", r.0, r.1, r.2);
        assert!(r.0 <= 1 && r.1 <= 1 && r.2 <= 1, "node {i} saw an adversarial manifest twice: {r:?}");
        if r != (0, 0, 0) {
            assert!(
                attacker_neighbours.contains(&n.peer_id),
                "node {i} is not connected to the attacker, so it got a forwarded copy: {r:?}"
            );
        }
        let log = n.log.lock().unwrap();
        assert!(
            log.manifests.iter().all(|(_, m, _)| m.seq() <= MANIFESTS),
            "node {i} delivered an adversarial manifest"
        );
        let (got, judged) = copies_and_verdicts(i);
        assert!(got <= 3.0 && got == judged, "node {i}: {got} copies, {judged} verdicts: a duplicate (forwarded) copy");
        assert_eq!(n.client.metrics().manifests_accepted, before[i].manifests_accepted, "node {i} accepted one");
    }
    println!(
        "adversarial manifests refused at the first hop: forged {} replay {} oversized {} \
         (attacker mesh {}, connected {}, nodes not connected to it {})",
        totals.0,
        totals.1,
        totals.2,
        attacker_mesh.len(),
        attacker_neighbours.len(),
        NODES - 1 - attacker_neighbours.len()
    );

    if std::env::var("SHOAL_NET_DEBUG").is_ok() {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &nodes[publisher].registry).unwrap();
        for l in text.lines().filter(|l| !l.starts_with('#') && !l.ends_with(" 0")) {
            println!("{l}");
        }
    }
    println!("{}", bytes_report("after the attack (oversized copies included)", nodes));
    net.shutdown().await;
}

/// Bytes per protocol summed over all nodes, from the metrics.
fn bytes_report(phase: &str, nodes: &[crate::harness::TestNode]) -> String {
    let mut sums = [0u64; 8];
    let (mut transport, mut gossip_sent, mut gossip_recv) = (0.0, 0.0, 0.0);
    for n in nodes {
        let m = n.client.metrics();
        let pairs = [m.manifest_bytes, m.directory_bytes, m.exchange_bytes, m.head_bytes];
        for (k, (i, o)) in pairs.into_iter().enumerate() {
            sums[2 * k] += i;
            sums[2 * k + 1] += o;
        }
        transport += n.metric_sum("libp2p_bandwidth_bytes_total", "");
        gossip_sent += n.metric_sum("topic_msg_sent_bytes_total", "");
        gossip_recv += n.metric_sum("topic_msg_recv_bytes_unfiltered_total", "");
    }
    format!(
        "bytes over {NODES} nodes, {phase}: manifest payloads in {} / published {}; directory in {} / published {}; \
         gossipsub message bytes sent (publish + relay) {gossip_sent} / received incl. duplicates {gossip_recv}; \
         /shoal/xchg in {} out {}; /shoal/head in {} out {}; \
         all transport bytes in+out (gossip incl. control, kad, identify, ping, noise, yamux) {transport}",
        sums[0], sums[1], sums[2], sums[3], sums[4], sums[5], sums[6], sums[7]
    )
}
