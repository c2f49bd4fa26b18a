//! `/shoal/head/1.0.0`: a joining node gets the latest K verified manifests,
//! newest last; a peer serving a manifest that does not verify is struck.

use std::time::Duration;

use shoal_core::{ChannelKey, VerifiedManifest, VerifyPolicy};
use shoal_net::{Misbehaviour, NetError, TransportKind};

use crate::harness::{TestNet, manifest, now_ms, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_returns_verified_manifests_newest_last() {
    let net = TestNet::spawn(3, TransportKind::Memory, 11).await;
    let key = ChannelKey::from_secret_bytes(&[5; 32]);
    let ch = key.channel_id();
    // A chain of 6 manifests, linked by CID, an hour old (history has no age limit).
    let mut chain: Vec<VerifiedManifest> = Vec::new();
    for seq in 1..=6 {
        let prev = chain.last().map(|m| m.cid());
        let signed = manifest(&key, seq, prev, now_ms() - 3_600_000 + seq * 1000);
        chain.push(signed.verify(&VerifyPolicy::default(), now_ms()).unwrap());
    }
    let (server, asker, liar) = (&net.nodes[0], &net.nodes[1], &net.nodes[2]);
    server.source.heads.lock().unwrap().insert(ch, chain.iter().map(|m| m.signed().clone()).collect());

    let got = asker.client.request_head(server.peer_id, ch, 4).await.unwrap();
    let seqs: Vec<u64> = got.iter().map(|m| m.seq()).collect();
    assert_eq!(seqs, vec![3, 4, 5, 6], "the newest 4, newest last");
    assert_eq!(got, chain[2..].to_vec());
    for w in got.windows(2) {
        assert_eq!(w[1].manifest().prev, Some(w[0].cid()), "a linked chain");
    }
    let m = asker.client.metrics();
    assert!(m.head_bytes.0 > 0 && m.head_bytes.1 > 0, "{m:?}");

    // An unknown channel: empty, not an error.
    let other = ChannelKey::from_secret_bytes(&[6; 32]).channel_id();
    assert!(asker.client.request_head(server.peer_id, other, 4).await.unwrap().is_empty());

    // A liar serves another channel's manifest under this channel.
    let foreign = ChannelKey::from_secret_bytes(&[7; 32]);
    liar.source.heads.lock().unwrap().insert(ch, vec![manifest(&foreign, 1, None, now_ms())]);
    asker.client.dial(liar.addr.clone()).await.unwrap();
    let (c, liar_id) = (asker.client.clone(), liar.peer_id);
    wait_for("asker connects to the liar", Duration::from_secs(5), || {
        let c = c.clone();
        async move { c.status().await.unwrap().connected.contains(&liar_id) }
    })
    .await;
    let err = asker.client.request_head(liar.peer_id, ch, 4).await.unwrap_err();
    assert!(matches!(err, NetError::Request { protocol: "head", .. }), "{err}");
    assert!(err.to_string().contains("did not verify"), "{err}");
    let log = asker.log.clone();
    wait_for("liar penalised", Duration::from_secs(5), || {
        let log = log.clone();
        async move {
            log.lock().unwrap().penalties.iter().any(|p| p.0 == liar_id && p.1 == Misbehaviour::BadHeadManifest)
        }
    })
    .await;
    net.shutdown().await;
}
