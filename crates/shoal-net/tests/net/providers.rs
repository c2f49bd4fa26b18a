//! Carrier announcements are rationed: a node announces itself in the DHT
//! only when its lookup found fewer than `ENOUGH_PROVIDERS` carriers, and
//! a lookup that finds that many ends there.

use std::time::Duration;

use shoal_core::ChannelKey;
use shoal_net::{ENOUGH_PROVIDERS, TransportKind};

use crate::harness::{TestNet, wait_for_value};

const NODES: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_carriers_announce_themselves() {
    let net = TestNet::spawn(NODES, TransportKind::Memory, 0x9207).await;
    let ch = ChannelKey::from_secret_bytes(&[9; 32]).channel_id();
    net.wait_for_routing_tables(5).await;

    // The first ENOUGH_PROVIDERS joiners, one after another: each lookup
    // finds fewer than that many others, so each announces itself.
    for i in 0..ENOUGH_PROVIDERS {
        net.nodes[i].client.join_channel(ch).await.unwrap();
        let log = net.nodes[i].log.clone();
        let found = wait_for_value(&format!("early node {i}'s lookup"), Duration::from_secs(30), || {
            let log = log.clone();
            async move { log.lock().unwrap().providers.iter().find(|(c, _)| *c == ch).map(|(_, p)| p.len()) }
        })
        .await;
        // The announcement is made when the lookup ends, before its event.
        assert_eq!(net.nodes[i].client.metrics().dht_provider_announcements, 1, "early node {i} did not announce");
        assert!(found < ENOUGH_PROVIDERS, "early node {i} found {found} carriers and still announced");
    }

    // A probe joins and leaves until its lookup sees them all: the
    // announcements (a walk and ADD_PROVIDERs each) have then landed.
    let probe = ENOUGH_PROVIDERS;
    let found = wait_for_value("a lookup finds every early carrier", Duration::from_secs(60), || {
        let (c, log) = (net.nodes[probe].client.clone(), net.nodes[probe].log.clone());
        async move {
            log.lock().unwrap().providers.clear();
            c.join_channel(ch).await.unwrap();
            let got = wait_for_value("the probe's lookup", Duration::from_secs(30), || {
                let log = log.clone();
                async move { log.lock().unwrap().providers.iter().find(|(c, _)| *c == ch).map(|(_, p)| p.len()) }
            })
            .await;
            c.leave_channel(ch).await.unwrap();
            (got >= ENOUGH_PROVIDERS).then_some(got)
        }
    })
    .await;
    assert!(found >= ENOUGH_PROVIDERS);

    // Everyone after that finds enough carriers and stays quiet in the DHT.
    for i in probe + 1..NODES {
        net.nodes[i].client.join_channel(ch).await.unwrap();
    }
    for i in probe + 1..NODES {
        let log = net.nodes[i].log.clone();
        let found = wait_for_value(&format!("late node {i}'s lookup"), Duration::from_secs(30), || {
            let log = log.clone();
            async move { log.lock().unwrap().providers.iter().find(|(c, _)| *c == ch).map(|(_, p)| p.len()) }
        })
        .await;
        assert!(found >= ENOUGH_PROVIDERS, "late node {i} found only {found} carriers");
        let m = net.nodes[i].client.metrics();
        assert_eq!(m.dht_provider_announcements, 0, "late node {i} announced itself with {found} carriers known");
        assert!(m.dht_provider_lookups >= 1, "late node {i} counted no finished lookup");
    }
    let total: u64 = net.nodes.iter().map(|n| n.client.metrics().dht_provider_announcements).sum();
    assert!(
        total <= ENOUGH_PROVIDERS as u64 + 1,
        "{total} announcements for {NODES} carriers: only the first ones (and the probe) should announce"
    );
}
