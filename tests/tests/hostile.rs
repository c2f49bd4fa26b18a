//! The attack suite: 20 honest viewers and a publisher (full shoal nodes on
//! the memory transport) against hostile peers running the attacks
//! 1–9, grouped three to a swarm to keep CI time down, plus a chaos run
//! that kills 30 % of the viewers at once. Two controls: the same swarm
//! with no attacker, and with four idle strangers (connected, relaying
//! gossip, refusing every want, never attacking), which separates what an
//! attacker costs by being there from what its attack costs.
//!
//! Each run streams 3 warm-up segments (counted for continuity, left out
//! of the latency figures: meshes and seeds are still forming), 5 more
//! before the attack (the baseline for the latency ratio) and 10 during
//! it. Asserted: continuity ≥ 99.9 % on every
//! live viewer, no forged or corrupted byte in any viewer's store (every
//! stored block is compared with the publisher's bytes), and the hostile
//! peers that commit provable offences disconnected by every honest node
//! (waited for, while they keep attacking, up to `BAN_DEADLINE` from the
//! start of the attack), each in the ban list of every honest node it was
//! connected to when the attack started.
//! Timings (time to ban, latency p99 ratio with its interval) are printed,
//! not asserted here: two shared cores make one run's figures noisy. With
//! `SHOAL_HOSTILE_RECORD` set each group writes its latencies, and
//! `hostile-report` reads every attack group against the control group
//! (CI fails a group over twice the control's p99 with 90 % confidence;
//! pooled soak runs judge the 1.2× goal). The hostile peers run on one runtime
//! thread of their own (at most one CPU's worth, never queued ahead of
//! honest tasks); with 4+ CPUs that thread is pinned to the last CPU and
//! the honest nodes to the others (`shoal_tests::cpu`), the way an attacker
//! floods from its own machine.

use std::{collections::HashSet, time::Instant};

use anyhow::{Result, ensure};
use shoal_core::ChannelKey;
use shoal_tests::{
    hostile::{Attack, Fixture, Hostile, Outcome},
    percentile,
};

const VIEWERS: usize = 20;
/// Segments streamed first and left out of the latency figures: in CI the
/// first segments of a fresh swarm reached p99 600-900 ms, slower than the
/// attacks made anything later, so a baseline that held them said nothing.
const WARMUP: u64 = 3;
/// Baseline segments, after the warm-up and before the attack.
const BEFORE: u64 = 5;
const DURING: u64 = 10;
/// Soak runs on your machine: segments streamed during the attack
/// instead of `DURING` (more samples per run), and a folder each group
/// writes its latencies to, for `hostile-report` to pool over runs and
/// read against the control group (docs/security.md, "Reading the p99
/// ratio").
const DURING_ENV: &str = "SHOAL_HOSTILE_DURING";
const RECORD_ENV: &str = "SHOAL_HOSTILE_RECORD";
const MIN_CONTINUITY: f64 = 0.999;
/// Longest a hostile peer that must be banned may stay connected to an
/// honest node, from the start of the attack.
const BAN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(40);

/// How long after the attack starts the staller's wants are judged: the
/// request timeout (20 s) the silence must outlast, counted from wants its
/// neighbours send at segment boundaries through the attack, so bans come
/// in steps 20 s after them (with 25 s here, CI saw only the first step:
/// three nodes at 25.05 s).
const STALL_JUDGED: std::time::Duration = std::time::Duration::from_secs(30);

/// One line of the report table.
struct Row {
    name: String,
    tries: u64,
    still_connected: usize,
    /// Disconnections by honest nodes after the attack started, ms.
    ban_ms: Vec<f64>,
    /// Honest nodes connected to the attacker when the attack started.
    connected_at_start: u64,
    /// Honest nodes whose ban list holds it at the end.
    banned_by: usize,
}

fn must_be_banned(a: Attack) -> bool {
    matches!(a, Attack::WrongKey | Attack::Malformed | Attack::FloodWants | Attack::ManyConnections)
}

/// Segments during the attack: `DURING` unless `SHOAL_HOSTILE_DURING` says.
fn during() -> Result<u64> {
    match std::env::var(DURING_ENV) {
        Err(_) => Ok(DURING),
        Ok(v) => match v.parse::<u64>() {
            Ok(n) if (1..=600).contains(&n) => Ok(n),
            _ => anyhow::bail!("{DURING_ENV}={v:?}: expected a number of segments from 1 to 600"),
        },
    }
}

/// Prints the p99 ratio's interval and, with `SHOAL_HOSTILE_RECORD` set,
/// writes the run's latencies for `hostile-report`.
fn report_latency(out: &Outcome, group: &str) -> Result<()> {
    match out.p99_ratio_interval() {
        Some(r) => println!(
            "  p99 during ÷ before {r}, resampling the {} + {} segments (hostile-report reads the run against the control group)",
            out.before_segments.len(),
            out.after_segments.len()
        ),
        None => println!("  p99 ratio: no latency samples"),
    }
    if let Some(dir) = std::env::var_os(RECORD_ENV) {
        let path = out.record(std::path::Path::new(&dir), group, WARMUP)?;
        println!("  latencies written to {}", path.display());
    }
    Ok(())
}

/// Runs `attacks` (one hostile peer each) against a fresh swarm and checks
/// the shared invariants. Returns the per-attack rows, for the caller's
/// attack-specific checks.
async fn run(label: &str, attacks: &[(Attack, &str)], key_seed: u8) -> Result<(Vec<Row>, Vec<Hostile>, Fixture)> {
    let during = during()?;
    // RUST_LOG (e.g. `shoal_net=debug`) shows the honest nodes' logs: who
    // struck and banned whom, and when.
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
    // Before any node starts, so every honest thread inherits the split.
    let isolated = shoal_tests::cpu::isolate_attackers();
    let mut fx = Fixture::start(VIEWERS, key_seed).await?;
    let channel = fx.key.channel_id();
    let addrs = fx.addrs().await?;
    let mut hostiles = Vec::new();
    for (i, (a, _)) in attacks.iter().enumerate() {
        let stolen = (*a == Attack::Equivocate).then(|| ChannelKey::from_secret_bytes(&[key_seed; 32]));
        let h = Hostile::spawn(*a, channel, stolen, u64::from(key_seed) * 100 + i as u64)?;
        h.dial(addrs.clone()).await?;
        hostiles.push(h);
    }
    fx.publish(WARMUP + BEFORE).await?;
    let started = Instant::now();
    if std::env::var_os("RUST_LOG").is_some() {
        let ids: Vec<String> = hostiles.iter().map(|h| h.peer_id.to_string()).collect();
        let unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        println!("attack starts at unix ms {unix_ms}; hostile peers {}", ids.join(" "));
    }
    let cpu_at_start = (shoal_tests::cpu::attacker_cpu_secs(), shoal_tests::cpu::process_cpu_secs());
    for h in &hostiles {
        h.start().await?;
    }
    fx.publish(during).await?;
    let attack_secs = started.elapsed().as_secs_f64();
    let cpu_now = (shoal_tests::cpu::attacker_cpu_secs(), shoal_tests::cpu::process_cpu_secs());
    let attackers_cpu = cpu_at_start.0.zip(cpu_now.0).map(|(a0, a1)| a1 - a0);
    let process_cpu = cpu_at_start.1.zip(cpu_now.1).map(|(p0, p1)| p1 - p0);
    fx.settle().await;
    // Bans come from strikes, and strikes from what the attackers manage to
    // send: on a slow or crowded machine (two cores, a debug build, the
    // other suites alongside) that took 12-16 s, past the stream. The
    // attackers go on while we wait, bounded, for the ones that must be
    // banned; the table reports the times, and a peer still connected at
    // the deadline fails the run below.
    let deadline = started + BAN_DEADLINE;
    for (h, (a, _)) in hostiles.iter().zip(attacks) {
        // A staller is judged when our requests to it time out (20 s), and
        // only by the nodes that asked it: wait for that, not for all.
        let until = if *a == Attack::HaveThenStall { started + STALL_JUDGED } else { deadline };
        while (must_be_banned(*a) || *a == Attack::HaveThenStall)
            && fx.connected_to(&h.peer_id).await > 0
            && Instant::now() < until
        {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    let mut forged = HashSet::new();
    let mut rows = Vec::new();
    for (h, (_, name)) in hostiles.iter().zip(attacks) {
        forged.extend(h.stats.forged_cids.lock().map(|f| f.clone()).unwrap_or_default());
        let mut ban_ms: Vec<f64> = h
            .stats
            .cut_off
            .lock()
            .map(|c| {
                c.values()
                    .filter(|t| **t >= started)
                    .map(|t| t.duration_since(started).as_secs_f64() * 1000.0)
                    .collect()
            })
            .unwrap_or_default();
        ban_ms.sort_by(f64::total_cmp);
        rows.push(Row {
            name: (*name).to_owned(),
            tries: h.tries(),
            still_connected: fx.connected_to(&h.peer_id).await,
            ban_ms,
            connected_at_start: h.stats.connected_at_start.load(std::sync::atomic::Ordering::Relaxed),
            banned_by: fx.banned_by(&h.peer_id).await?,
        });
    }
    let out = fx.outcome(WARMUP, WARMUP + BEFORE);
    let checked = fx.check_stores(&forged)?;
    // Asked only now: the attackers' thread lowers itself when it starts.
    let cpus = match (isolated, shoal_tests::cpu::attacker_priority()) {
        _ if hostiles.is_empty() => "no attackers".to_owned(),
        (Some((honest, attacker)), _) => format!("honest nodes on {honest} CPU(s), attackers on CPU {attacker}"),
        (None, Some(how)) => format!(
            "attackers on one thread of their own at {how}, sharing the CPUs (pinned apart only with {}+ CPUs)",
            shoal_tests::cpu::MIN_CPUS_TO_ISOLATE
        ),
        (None, None) => format!(
            "attackers on one thread of their own, sharing the CPUs at the same priority (chrt and renice failed; pinned apart only with {}+ CPUs)",
            shoal_tests::cpu::MIN_CPUS_TO_ISOLATE
        ),
    };
    println!("== {label}: {VIEWERS} honest viewers + publisher, {} hostile; {cpus}", hostiles.len());
    println!(
        "| attack | tries | bad items accepted | time to ban p50 / max (ms) | banned by (of connected at start) | honest nodes still connected | honest continuity | honest p99 ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let ban = if r.ban_ms.is_empty() {
            "not banned".to_owned()
        } else {
            format!(
                "{:.0} / {:.0} ({} nodes)",
                percentile(&r.ban_ms, 50.0),
                r.ban_ms.last().copied().unwrap_or(f64::NAN),
                r.ban_ms.len()
            )
        };
        println!(
            "| {} | {} | 0 | {ban} | {} of {} | {} of {} | {:.4} | {:.2} |",
            r.name,
            r.tries,
            r.banned_by,
            r.connected_at_start,
            r.still_connected,
            VIEWERS + 1,
            out.continuity(),
            out.p99_ratio()
        );
    }
    // The slowest viewer per segment, warm-up included: where a tail is.
    let worst: Vec<String> = (0..WARMUP + BEFORE + during)
        .map(|seq| format!("{:.0}", fx.seq_latencies(seq).into_iter().fold(0.0, f64::max)))
        .collect();
    println!(
        "  slowest viewer per segment (ms; {WARMUP} warm-up, {BEFORE} before, {during} during): {}",
        worst.join(" ")
    );
    report_latency(&out, group_name(label).as_str())?;
    if !hostiles.is_empty() {
        let dials: Vec<String> = hostiles
            .iter()
            .map(|h| h.stats.dials_during.load(std::sync::atomic::Ordering::Relaxed).to_string())
            .collect();
        println!("  dials the attackers started during the attack, each: {}", dials.join(", "));
        // Block wants honest nodes sent them, the whole run: a stranger
        // that relays manifests first becomes some viewers' upstream.
        let wants: Vec<String> = hostiles
            .iter()
            .map(|h| h.stats.wants_received.load(std::sync::atomic::Ordering::Relaxed).to_string())
            .collect();
        println!("  block wants honest nodes sent the attackers, each: {}", wants.join(", "));
    }
    if let Some(process) = process_cpu {
        // The attackers' own work is what an attacker on a machine of its
        // own would not take from the victims on this box's shared cores.
        let attackers = attackers_cpu.map_or_else(
            || "no attackers' thread".to_owned(),
            |a| format!("attackers' thread {a:.1} s ({:.0} % of one core)", 100.0 * a / attack_secs),
        );
        println!(
            "  CPU while the attack streamed ({attack_secs:.1} s): whole process {process:.1} s ({:.0} % of one core), {attackers}",
            100.0 * process / attack_secs
        );
    }
    let st = fx.honest_scheduler();
    println!(
        "  honest schedulers: {} wants, {} hedges ({} early), {} timeouts, {} switches, {} stalls, trials {} ({} failed, {} duplicate copies), {} duplicates; {} held wants refused by their upstream without a redirect",
        st.wants_sent,
        st.hedges,
        st.early_hedges,
        st.timeouts,
        st.switches,
        st.stalls,
        st.trials,
        st.trials_failed,
        st.duplicates_trial,
        st.duplicate_blocks,
        st.upstream_refusals
    );
    let metrics = fx.honest_metrics();
    // How the honest nodes ended the held wants they were asked (attackers'
    // included): each way but an answer is a DONT_HAVE to the asker, and
    // an honest upstream's DONT_HAVE is what a rule against strangers that
    // refuse held wants must tell apart (docs/security.md, "An attacker's
    // presence against its attack").
    let sum = |f: fn(&shoal_net::MetricsSnapshot) -> u64| -> u64 { metrics.iter().map(f).sum() };
    println!(
        "  honest held wants: {} answered, {} expired, {} refused at the cap, {} cycles broken, {} cancelled; {} junk wants; {} sheds with redirects, {} upload-wait sheds",
        sum(|m| m.held_wants_answered),
        sum(|m| m.held_wants_expired),
        sum(|m| m.held_wants_refused),
        sum(|m| m.held_wants_cycles),
        sum(|m| m.held_wants_cancelled),
        sum(|m| m.junk_wants),
        sum(|m| m.shed_redirects),
        sum(|m| m.upload_wait_sheds)
    );
    let rate_limited: u64 = metrics.iter().map(|m| m.rate_limited).sum();
    let streams_refused: u64 = metrics.iter().map(|m| m.streams_refused).sum();
    let over_limit: u64 = metrics.iter().map(|m| m.connections_over_limit).sum();
    println!(
        "  latency p99 before / during: {:.0} / {:.0} ms (ratio {:.2}); {} stored blocks compared byte for byte; {} bans; {} requests rate-limited; {} streams dropped by the guard; {} connections over the limits; {} of {} viewers flagged the channel",
        percentile(&out.before_ms, 99.0),
        percentile(&out.after_ms, 99.0),
        out.p99_ratio(),
        checked,
        fx.bans(),
        rate_limited,
        streams_refused,
        over_limit,
        fx.flagged().await,
        VIEWERS
    );
    ensure!(
        out.continuity() >= MIN_CONTINUITY,
        "{label}: continuity {:.4} ({} of {} viewer-segments)",
        out.continuity(),
        out.ready,
        out.expected
    );
    ensure!(checked > 0, "{label}: no stored block was checked");
    let friendly_fire = fx.honest_bans_of_honest().await?;
    ensure!(friendly_fire.is_empty(), "{label}: honest nodes banned honest nodes: {friendly_fire:?}");
    for (r, (a, _)) in rows.iter().zip(attacks) {
        if must_be_banned(*a) {
            ensure!(
                r.still_connected == 0,
                "{label}: {} still connected to {} honest nodes",
                r.name,
                r.still_connected
            );
            ensure!(r.tries > 0, "{label}: {} never attacked", r.name);
            // Disconnected is not enough: an attacker whose connections
            // closed for another reason (an attacker thread starved of CPU
            // stops answering pings) never reached the defences, and
            // the run proves nothing about them. Every node it reached
            // must have banned it (measured: 21 of 21 in every run since
            // the count was added: ~44 flood runs and 5 full suites over
            // two sessions).
            ensure!(
                r.connected_at_start > 0 && r.banned_by > 0,
                "{label}: {} was banned by {} honest nodes ({} connected when the attack started): its attack never reached the defences",
                r.name,
                r.banned_by,
                r.connected_at_start
            );
            ensure!(
                r.banned_by as u64 >= r.connected_at_start,
                "{label}: {} was banned by {} of the {} honest nodes connected to it when the attack started",
                r.name,
                r.banned_by,
                r.connected_at_start
            );
        }
    }
    Ok((rows, hostiles, fx))
}

/// A label as a file-name stem: "control (no attacker)" → "control-no-attacker".
fn group_name(label: &str) -> String {
    let words: Vec<String> = label
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    words.join("-")
}

async fn finish(hostiles: Vec<Hostile>, fx: Fixture) {
    for h in hostiles {
        h.stop().await;
    }
    fx.shutdown().await;
}

/// The control: the same swarm, stream and measurement with no attacker
/// at all. Its p99 ratio is what the others' ratios are read against: on a
/// 2-core box one slow segment (a scheduler hiccup, a compaction) moves the
/// p99 of 20 viewers × 10 segments on its own, attack or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_no_attacker() -> Result<()> {
    let (rows, hostiles, fx) = run("control (no attacker)", &[], 96).await?;
    ensure!(rows.is_empty() && hostiles.is_empty());
    finish(hostiles, fx).await;
    Ok(())
}

/// Attacks 1–3: gossip. Wrong-key and bit-flipped manifests are rejected
/// and their sender banned; replays are dropped as duplicates (not
/// punished: a late honest relay looks the same); an equivocating stolen
/// key is detected and the publisher's segments are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_attacks_wrong_key_replay_equivocation() -> Result<()> {
    let attacks =
        [(Attack::WrongKey, "1 wrong key"), (Attack::Replay, "2 replay"), (Attack::Equivocate, "3 equivocation")];
    let (rows, hostiles, fx) = run("gossip attacks", &attacks, 91).await?;
    ensure!(rows[1].tries > 0 && rows[2].tries > 0, "replay or equivocation never ran");
    let flagged = fx.flagged().await;
    ensure!(flagged > 0, "no viewer detected the equivocation");
    let channel = fx.key.channel_id();
    let evidence: usize =
        fx.viewers.iter().flatten().map(|v| v.handle().store().equivocations(&channel).map_or(0, |e| e.len())).sum();
    println!("  equivocation evidence records stored: {evidence}");
    ensure!(evidence > 0, "equivocation detected but no evidence stored");
    finish(hostiles, fx).await;
    Ok(())
}

/// Attacks 4–6: the exchange. Malformed frames and corrupted blocks are
/// struck and banned; a peer that claims HAVE and stalls loses rank, and
/// each node whose want-blocks it left unanswered for 20 s bans it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_attacks_malformed_corrupt_stall() -> Result<()> {
    let attacks = [
        (Attack::Malformed, "4 malformed frames"),
        (Attack::CorruptBlocks, "5 corrupted blocks"),
        (Attack::HaveThenStall, "6 HAVE then stall"),
    ];
    let (rows, hostiles, fx) = run("exchange attacks", &attacks, 92).await?;
    // The corrupter is asked only by nodes that pick it; each one that got
    // bad bytes from it struck it. Nobody stored them (checked above).
    println!("  corrupted-block sender: {} bad blocks sent, banned by {} nodes", rows[1].tries, rows[1].ban_ms.len());
    let staller = &hostiles[2];
    let started = staller.stats.started.lock().ok().and_then(|s| *s);
    let timeline: Vec<u64> = staller
        .stats
        .wants_timeline
        .lock()
        .map(|t| t.iter().filter(|(at, _)| started.is_some_and(|s| *at >= s)).map(|(_, n)| *n).collect())
        .unwrap_or_default();
    // Ten ticks a second: the first and the last three seconds of the attack.
    let first: u64 = timeline.iter().take(30).sum();
    let last: u64 = timeline.iter().rev().take(30).sum();
    println!("  staller: want-blocks received in the first 3 s of the attack {first}, in the last 3 s {last}");
    finish(hostiles, fx).await;
    Ok(())
}

/// Attacks 7 and 9: want floods hit the per-peer request cap, turn into
/// strikes and get banned; three Sybil identities are each banned on their
/// own (the per-IP cap itself needs real IPs: shoal-net tests/net/deny.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_attacks_wants_and_sybil() -> Result<()> {
    let attacks = [
        (Attack::FloodWants, "7 want flood"),
        (Attack::FloodWants, "9 Sybil identity 1/3"),
        (Attack::FloodWants, "9 Sybil identity 2/3"),
        (Attack::FloodWants, "9 Sybil identity 3/3"),
    ];
    let (_, hostiles, fx) = run("flood attacks", &attacks, 93).await?;
    finish(hostiles, fx).await;
    Ok(())
}

/// Four strangers that join, relay gossip and refuse every want, and never
/// attack: what the flood group's four peers cost by being there. Read
/// against the control like the attack groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_strangers() -> Result<()> {
    let attacks = [
        (Attack::Idle, "idle stranger 1/4"),
        (Attack::Idle, "idle stranger 2/4"),
        (Attack::Idle, "idle stranger 3/4"),
        (Attack::Idle, "idle stranger 4/4"),
    ];
    let (rows, hostiles, fx) = run("idle strangers", &attacks, 97).await?;
    // Refusing wants and relaying gossip is what honest peers do too: the
    // defences must not ban these peers (measured: none banned, all still
    // connected to 21 of 21, in 36 rows this session).
    for r in &rows {
        // A stranger that never got in measures nothing.
        ensure!(r.connected_at_start > 0, "{} was connected to no honest node when the stream began", r.name);
        ensure!(
            r.banned_by == 0,
            "{} was banned by {} honest nodes: the defences struck a peer that never attacked",
            r.name,
            r.banned_by
        );
    }
    finish(hostiles, fx).await;
    Ok(())
}

/// Attack 8: many connections per peer and many concurrent streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_stream_flood() -> Result<()> {
    let attacks = [(Attack::ManyConnections, "8 connections + streams")];
    let (_, hostiles, fx) = run("connection flood", &attacks, 95).await?;
    finish(hostiles, fx).await;
    Ok(())
}

/// Chaos: 30 % of the viewers (the first to join, so the publisher's seeds
/// among them) are shut down at once mid-stream; the others keep playing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_thirty_percent() -> Result<()> {
    let mut fx = Fixture::start(VIEWERS, 94).await?;
    fx.publish(WARMUP + BEFORE).await?;
    let killed: Vec<usize> = (0..VIEWERS * 3 / 10).collect();
    let t = Instant::now();
    fx.kill(&killed).await;
    let kill_ms = t.elapsed().as_millis();
    fx.publish(during()?).await?;
    fx.settle().await;
    let out = fx.outcome(WARMUP, WARMUP + BEFORE);
    let checked = fx.check_stores(&HashSet::new())?;
    let p50_before = percentile(&out.before_ms, 50.0);
    // Recovery: how much later than usual the first segment after the kill
    // became ready on the slowest survivor.
    let worst_first = fx.seq_latencies(WARMUP + BEFORE).into_iter().fold(0.0, f64::max);
    println!("== chaos: killed {} of {VIEWERS} viewers in {kill_ms} ms", killed.len());
    println!(
        "  continuity {:.4} ({} of {}), p99 before / after {:.0} / {:.0} ms (ratio {:.2}), first segment after the kill: worst {:.0} ms vs p50 {:.0} ms before (recovery {:.0} ms); {} blocks compared",
        out.continuity(),
        out.ready,
        out.expected,
        percentile(&out.before_ms, 99.0),
        percentile(&out.after_ms, 99.0),
        out.p99_ratio(),
        worst_first,
        p50_before,
        (worst_first - p50_before).max(0.0),
        checked
    );
    report_latency(&out, "chaos")?;
    ensure!(out.continuity() >= MIN_CONTINUITY, "chaos: continuity {:.4}", out.continuity());
    let friendly_fire = fx.honest_bans_of_honest().await?;
    ensure!(friendly_fire.is_empty(), "chaos: survivors banned honest nodes: {friendly_fire:?}");
    fx.shutdown().await;
    Ok(())
}
