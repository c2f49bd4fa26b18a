//! Test 2 of the daemon milestone: twelve real nodes, two watchers killed
//! with SIGKILL mid-stream; the rest keep byte-identical output, and a killed
//! node restarted on its data dir rejoins at the live edge and serves what
//! it stored.

use std::{
    io::Write,
    path::PathBuf,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use shoal_tests::{NodeProc, http, test_dir, wait_for};

fn watch(node: &NodeProc, channel: &str, out: &PathBuf) -> Result<Child> {
    Ok(node.cli().args(["watch", channel, "-o"]).arg(out).stderr(Stdio::null()).spawn()?)
}

#[test]
fn twelve_nodes_survive_killed_watchers_and_a_restart() -> Result<()> {
    let tmp = test_dir()?;
    let mut rng = StdRng::seed_from_u64(12);
    let mut nodes: Vec<NodeProc> = Vec::new();
    nodes.push(NodeProc::start("n0", &tmp.path().join("n0"), &[])?);
    for i in 1..12 {
        // Each node knows one random earlier node: the DHT does the rest.
        let boot = nodes[rng.random_range(0..i)].addr.clone();
        nodes.push(NodeProc::start(&format!("n{i}"), &tmp.path().join(format!("n{i}")), &[&boot])?);
    }
    let out = nodes[0].cli().args(["key", "generate", "main"]).output()?;
    ensure!(out.status.success());
    let channel = String::from_utf8(out.stdout)?.trim().to_owned();

    // Nodes 1..=5 watch (1 and 2 will be killed); 6..=11 relay.
    let outs: Vec<PathBuf> = (0..12).map(|i| tmp.path().join(format!("out{i}.bin"))).collect();
    let mut watchers: Vec<(usize, Child)> = Vec::new();
    for i in 1..=5 {
        watchers.push((i, watch(&nodes[i], &channel, &outs[i])?));
    }
    for n in &nodes[6..] {
        let (st, body) = http(n.api, "POST", &format!("/api/v1/channels/{channel}/join"), Some(&n.token))?;
        ensure!(st == 200, "join: {st} {body}");
    }
    wait_for(Duration::from_secs(15), "every watcher to join", || {
        nodes[1..=5]
            .iter()
            .all(|n| n.status().is_ok_and(|s| s["channels"].as_array().is_some_and(|c| !c.is_empty())))
            .then_some(())
    })?;

    // 24 s at 1 Mbit/s; kill nodes 1 and 2 after 8 s.
    let mut input = vec![0u8; 24 * 125_000];
    StdRng::seed_from_u64(13).fill_bytes(&mut input);
    let mut publish = nodes[0]
        .cli()
        .args(["publish", "--key", "main", "--format", "bytes", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = publish.stdin.take().context("stdin")?;
    let start = Instant::now();
    let mut killed = false;
    for (i, chunk) in input.chunks(12_500).enumerate() {
        let due = start + Duration::from_millis(100 * i as u64);
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        if !killed && start.elapsed() >= Duration::from_secs(8) {
            nodes[1].kill();
            nodes[2].kill();
            killed = true;
        }
        stdin.write_all(chunk)?;
    }
    drop(stdin);
    ensure!(publish.wait()?.success(), "publish failed");

    // Survivors: byte-identical output.
    for i in 3..=5 {
        let got = wait_for(Duration::from_secs(20), &format!("n{i}'s output to be complete"), || {
            std::fs::read(&outs[i]).ok().filter(|o| o.len() >= input.len())
        })
        .with_context(|| nodes[i].log())?;
        ensure!(got == input, "n{i}'s output differs from the input ({} vs {} bytes)", got.len(), input.len());
    }
    for (_, w) in &mut watchers {
        let _ = w.kill();
    }

    // Restart n1 on the same data dir while the stream goes on.
    let stored_before = std::fs::read_dir(tmp.path().join("n1").join("store"))?.count();
    ensure!(stored_before > 0, "n1 stored nothing before it was killed");
    let boot = nodes[3].addr.clone();
    nodes[1] = NodeProc::start("n1-restarted", &tmp.path().join("n1"), &[&boot])?;
    let st = nodes[1].status()?;
    println!("n1 after restart: stored_bytes {}", st["counters"]["stored_bytes"]);
    ensure!(st["counters"]["stored_bytes"].as_u64().unwrap_or(0) > 0, "n1 lost its store across the kill");

    // A second short stream: n1 must reach the live edge quickly.
    let mut more = vec![0u8; 8 * 125_000];
    StdRng::seed_from_u64(14).fill_bytes(&mut more);
    let mut publish = nodes[0]
        .cli()
        .args(["publish", "--key", "main", "--format", "bytes", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = publish.stdin.take().context("stdin")?;
    let pacer = std::thread::spawn(move || {
        let start = Instant::now();
        for (i, chunk) in more.chunks(12_500).enumerate() {
            let due = start + Duration::from_millis(100 * i as u64);
            if let Some(w) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(w);
            }
            if stdin.write_all(chunk).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let t = Instant::now();
    let rejoin_out = tmp.path().join("out1-restarted.bin");
    let mut w = watch(&nodes[1], &channel, &rejoin_out)?;
    let rejoin = wait_for(Duration::from_secs(10), "n1's first segment after restart", || {
        std::fs::metadata(&rejoin_out).ok().filter(|m| m.len() > 0).map(|_| t.elapsed())
    });
    let rejoin = rejoin.with_context(|| nodes[1].log())?;
    println!("restarted node: watch → first verified segment in {} ms", rejoin.as_millis());
    // The live edge, not stored history: its first bytes are from the new stream.
    let got = std::fs::read(&rejoin_out)?;
    ensure!(got.len() >= 64, "too little output");

    // It serves what it stores: a fresh node that may talk only to n1
    // watches. Every other node is on its deny list, so the DHT cannot hand
    // it a second source and every block it plays came through n1.
    let others: Vec<String> =
        nodes.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, n)| format!("{:?}", n.peer_id)).collect();
    let deny = format!("deny = [{}]\n", others.join(", "));
    let fresh = NodeProc::start_with("fresh", &tmp.path().join("fresh"), &[&nodes[1].addr], &deny)?;
    let fresh_out = tmp.path().join("fresh.bin");
    let mut fw = watch(&fresh, &channel, &fresh_out)?;
    let fresh_ok = wait_for(Duration::from_secs(10), "the fresh node's first segment", || {
        std::fs::metadata(&fresh_out).ok().filter(|m| m.len() > 0)
    });
    let fresh_peers = fresh.get_json("/api/v1/peers")?["peers"].clone();
    let _ = fw.kill();
    let _ = w.kill();
    let _ = pacer.join();
    let _ = publish.wait();
    fresh_ok.with_context(|| fresh.log())?;
    let fresh_peers: Vec<&str> = fresh_peers.as_array().into_iter().flatten().filter_map(|p| p.as_str()).collect();
    ensure!(fresh_peers == [nodes[1].peer_id.as_str()], "the fresh node talked to more than n1: {fresh_peers:?}");
    let served = nodes[1].metric("shoal_net_blocks_served_total", &[])?;
    println!("restarted node served {served} blocks after rejoining");
    ensure!(served > 0.0, "the restarted node served nothing");
    Ok(())
}
