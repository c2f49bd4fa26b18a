//! Real `shoal node` processes: a publisher restarted mid-stream continues
//! its seq and hash chain from its store, and the exclusion list changes at
//! run time through the CLI, the reload command and SIGHUP.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rand::{RngCore, SeedableRng, rngs::StdRng};
use shoal_tests::{NodeProc, wait_for};

/// Publishes `secs` seconds of random bytes at 100 kB/s and waits for the
/// publish command to finish.
fn publish_for(node: &NodeProc, key: &str, secs: u64, seed: u64) -> Result<()> {
    let mut data = vec![0u8; 100_000 * secs as usize];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let out = node.publish_paced(key, &data, 100_000)?.wait_with_output()?;
    ensure!(out.status.success(), "publish failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

fn head_seq(node: &NodeProc) -> Result<Option<u64>> {
    Ok(node.status()?["channels"].as_array().and_then(|c| c.first()).and_then(|c| c["head_seq"].as_u64()))
}

#[test]
fn restarted_publisher_continues_seq_and_chain() -> Result<()> {
    let tmp = shoal_tests::test_dir()?;
    let dir = tmp.path().join("pub");
    let mut node = NodeProc::start("pub", &dir, &[])?;
    let out = node.cli().args(["key", "generate", "live"]).output()?;
    ensure!(out.status.success(), "key generate: {}", String::from_utf8_lossy(&out.stderr));
    let channel: shoal_core::ChannelId = String::from_utf8(out.stdout)?.trim().parse()?;
    publish_for(&node, "live", 3, 1)?;
    let first = head_seq(&node)?.context("no head after the first run")?;
    ensure!(node.terminate()?, "node did not stop cleanly:\n{}", node.log());
    let node = NodeProc::start("pub", &dir, &[])?;
    publish_for(&node, "live", 3, 2)?;
    let second = head_seq(&node)?.context("no head after the restart")?;
    ensure!(second > first, "head went from {first} to {second}");
    let mut node = node;
    ensure!(node.terminate()?, "node did not stop cleanly:\n{}", node.log());

    // The store, read directly: seqs 0..=second, each linked to the one before.
    let store = shoal_store::Store::open(dir.join("store"), &shoal_store::StoreConfig::default())?;
    let mut prev = None;
    for seq in 0..=second {
        let m = store.manifest(&channel, seq)?.with_context(|| format!("seq {seq} missing: a gap or a reuse"))?;
        ensure!(m.manifest().prev == prev, "seq {seq}: prev does not link to seq {}", seq.saturating_sub(1));
        prev = Some(m.cid());
    }
    ensure!(store.equivocations(&channel)?.is_empty(), "the publisher equivocated with itself");
    println!("publisher: heads {first} then {second} across a restart, {} manifests linked", second + 1);
    Ok(())
}

fn peers_of(node: &NodeProc) -> Result<Vec<String>> {
    Ok(node.get_json("/api/v1/peers")?["peers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
        .unwrap_or_default())
}

#[test]
fn exclusion_list_changes_at_run_time() -> Result<()> {
    let tmp = shoal_tests::test_dir()?;
    let a = NodeProc::start("a", &tmp.path().join("a"), &[])?;
    let bdir = tmp.path().join("b");
    let mut b = NodeProc::start("b", &bdir, &[&a.addr])?;
    let t = Duration::from_secs(10);
    wait_for(t, "b connected", || peers_of(&a).ok()?.contains(&b.peer_id).then_some(()))?;

    // CLI block: b is dropped and stays out (it keeps redialing).
    let out = a.cli().args(["peers", "block", &b.peer_id]).output()?;
    ensure!(out.status.success(), "block: {}", String::from_utf8_lossy(&out.stderr));
    wait_for(t, "b dropped", || (!peers_of(&a).ok()?.contains(&b.peer_id)).then_some(()))?;
    let listed = a.cli().args(["peers", "--json", "blocked"]).output()?;
    ensure!(
        String::from_utf8_lossy(&listed.stdout).contains(&b.peer_id),
        "blocked list lacks b: {} {}",
        String::from_utf8_lossy(&listed.stdout),
        String::from_utf8_lossy(&listed.stderr)
    );
    std::thread::sleep(Duration::from_secs(3));
    ensure!(!peers_of(&a)?.contains(&b.peer_id), "b got back in while blocked");
    let bad = a.cli().args(["peers", "block", "10.0.0.0/33"]).output()?;
    ensure!(!bad.status.success(), "an invalid range was accepted");

    // Unblock: the same identity may connect again (b restarts, so it
    // dials at once instead of waiting for its DHT to retry).
    let out = a.cli().args(["peers", "unblock", &b.peer_id]).output()?;
    ensure!(out.status.success(), "unblock: {}", String::from_utf8_lossy(&out.stderr));
    b.terminate()?;
    b = NodeProc::start("b", &bdir, &[&a.addr])?;
    wait_for(t, "b back", || peers_of(&a).ok()?.contains(&b.peer_id).then_some(()))?;

    // The config file: add b's range (loopback) and send SIGHUP.
    let cfg = a.data_dir.join("test-config.toml");
    let base = std::fs::read_to_string(&cfg)?;
    std::fs::write(&cfg, format!("{base}deny = [\"127.0.0.0/8\"]\n"))?;
    std::process::Command::new("kill").args(["-HUP", &a.pid().to_string()]).status()?;
    wait_for(t, "b dropped on SIGHUP", || (!peers_of(&a).ok()?.contains(&b.peer_id)).then_some(()))?;
    // A broken file changes nothing and says why.
    std::fs::write(&cfg, format!("{base}deny = [\"127.0.0.0/8\"]\nmax_conections = 1\n"))?;
    let out = a.cli().arg("reload").output()?;
    ensure!(!out.status.success(), "a broken config reloaded");
    ensure!(String::from_utf8_lossy(&out.stderr).contains("max_conections"), "the error does not name the key");
    // Back to the original file through the reload command: b returns.
    std::fs::write(&cfg, &base)?;
    let out = a.cli().arg("reload").output()?;
    ensure!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    b.terminate()?;
    b = NodeProc::start("b", &bdir, &[&a.addr])?;
    wait_for(t, "b back after reload", || peers_of(&a).ok()?.contains(&b.peer_id).then_some(()))?;
    Ok(())
}
