//! `shoal-bench`: shoal's measuring instrument. N nodes in one process over
//! emulated links (latency and bandwidth caps applied below noise and
//! yamux), one publisher streaming synthetic segments, and the same
//! scenario run in each mode:
//!
//! - `shoal`: full shoal nodes (store, engine, fetch scheduler);
//! - `origin`: the same nodes, every viewer fetching from the publisher
//!   only (the CDN picture);
//! - `push`: blocks inside gossipsub messages (v1.2, IDONTWANT).
//!
//! Each mode runs in a child process of its own, so CPU time and peak RSS
//! belong to that mode alone. Output: a table on stdout, `--json`, and an
//! SVG plot. Scenarios live in `config/bench/*.toml`.

mod driver;
mod lateness;
mod plot;
mod procs;
mod push;
mod report;
mod scenario;
mod shaping;
mod shoal_mode;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use indicatif::ProgressBar;
use report::{ModeResult, ModeRun};
use scenario::Scenario;
use serde::Serialize;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "shoal-bench", about = "Swarm bench: shoal against the origin and push baselines")]
struct Args {
    /// Scenario: a file, or a name in config/bench (small, medium, large,
    /// churn, constrained).
    scenario: String,
    /// Modes to run, one after another, each in its own process.
    #[arg(long, value_delimiter = ',', default_value = "shoal,origin,push")]
    modes: Vec<String>,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the SVG plot here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Write every latency sample as `DIR/MODE.csv` (viewer, joined late,
    /// seq, latency ms; empty when never verified): the raw data behind the
    /// percentiles, for finding where a tail comes from.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Override the scenario's node count.
    #[arg(long)]
    nodes: Option<usize>,
    /// Override the scenario's stream length, seconds.
    #[arg(long)]
    seconds: Option<u64>,
    /// CI gate: fail unless every viewer verified every segment in shoal
    /// mode, shoal's origin_factor is below 3, and the JSON has every field.
    #[arg(long)]
    check: bool,
    /// The part of `--check` that does not depend on delivery: every mode
    /// ran, its JSON has every field (a percentile may be null when
    /// nothing was verified) and no played segment differs from the
    /// publisher's. CI's processes smoke runs it; delivery misses are
    /// printed.
    #[arg(long, conflicts_with = "check")]
    check_fields: bool,
    /// Run every node as a real `shoal node` process on loopback TCP,
    /// driven through its config file and local API (modes shoal and
    /// origin). Links are not shaped: see `--unshaped`.
    #[arg(long)]
    processes: bool,
    /// With `--processes`: run a scenario that asks for link shaping (RTT,
    /// upload or download caps, slow viewers) on plain loopback anyway. The
    /// report says the links were unshaped.
    #[arg(long, requires = "processes")]
    unshaped: bool,
    /// With `--processes`: the `shoal` binary (default: `shoal` beside
    /// this executable, i.e. the same cargo profile).
    #[arg(long, requires = "processes")]
    shoal_bin: Option<PathBuf>,
    /// In-process shoal and origin modes: run every node's tasks on one
    /// shared runtime of `worker_threads` workers (the scenario key
    /// `thread_per_node = false`) instead of each node on its own thread
    /// and runtime. The harness of the figures before 2026-12-07.
    #[arg(long, conflicts_with = "processes")]
    shared_runtime: bool,
    /// In-process modes: leave the process's `futures-timer` thread (every
    /// node's libp2p timers) at its default priority (the scenario key
    /// `timer_thread_nice = 0`). The harness of the figures before
    /// 2026-12-07's second change.
    #[arg(long, conflicts_with = "processes")]
    plain_timer_thread: bool,
    /// Internal: run one mode and write its figures to `--child-out`.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: where the child writes.
    #[arg(long, hide = true)]
    child_out: Option<PathBuf>,
}

const MODES: [&str; 3] = ["shoal", "origin", "push"];

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report<'a> {
    scenario: &'a Scenario,
    /// How the nodes ran and whether the scenario's links were applied.
    harness: String,
    machine: Machine,
    command: String,
    modes: Vec<ModeResult>,
}

/// Facts about the machine the figures come from.
#[derive(Debug, Serialize)]
struct Machine {
    nproc: usize,
    mem_total_mb: u64,
    kernel: String,
    load_before: String,
    load_after: String,
}

fn read_proc(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn proc_kb(field: &str) -> u64 {
    read_proc("/proc/self/status")
        .lines()
        .chain(read_proc("/proc/meminfo").lines())
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of this whole process (every thread), from
/// /proc rather than getrusage, which is `unsafe` to call and the
/// workspace forbids unsafe code.
fn cpu_seconds() -> f64 {
    let stat = read_proc("/proc/self/stat");
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after ")".
    let ticks: f64 = [11usize, 12].iter().filter_map(|i| f.get(*i)?.parse::<f64>().ok()).sum();
    let hz = 100.0; // USER_HZ is 100 on every Linux ABI Rust supports.
    ticks / hz
}

fn resolve(scenario: &str) -> Result<PathBuf> {
    let p = PathBuf::from(scenario);
    if p.exists() {
        return Ok(p);
    }
    for base in [PathBuf::from("config/bench"), Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/bench")] {
        let c = base.join(format!("{scenario}.toml"));
        if c.exists() {
            return Ok(c);
        }
    }
    bail!("no scenario {scenario:?}: give a file or one of small, medium, large, churn, constrained")
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "error".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut s = Scenario::load(&resolve(&args.scenario)?)?;
    if let Some(n) = args.nodes {
        s.nodes = n;
    }
    if let Some(t) = args.seconds {
        s.seconds = t;
    }
    if args.shared_runtime {
        s.thread_per_node = false;
    }
    if args.plain_timer_thread {
        s.timer_thread_nice = 0;
    }
    s.validate()?;
    for m in &args.modes {
        ensure!(MODES.contains(&m.as_str()), "unknown mode {m:?}: use shoal, origin or push");
        ensure!(
            !(args.processes && m == "push"),
            "mode push has no `shoal node` form (blocks inside gossip is the baseline, not a node setting); with --processes use --modes shoal,origin"
        );
    }
    if args.processes && s.shapes_links() && !args.unshaped {
        bail!(
            "scenario {} shapes its links (RTT {} ms, caps or slow viewers), and --processes cannot shape links between processes yet; add --unshaped to run it on plain loopback anyway",
            s.name,
            s.rtt_ms
        );
    }
    if let Some(mode) = &args.child {
        let out = args.child_out.as_ref().context("--child needs --child-out")?;
        return child(&args, &s, mode, out);
    }
    parent(&args, &s)
}

/// What the report says about the harness.
fn harness(args: &Args, s: &Scenario) -> String {
    let timers = match s.timer_thread_nice {
        0 => "; libp2p's timer thread at its default priority".to_owned(),
        n => format!("; libp2p's timer thread asked for nice {n} (stderr says whether it took)"),
    };
    match (args.processes, s.shapes_links()) {
        (false, _) => in_process_harness(s) + &timers,
        (true, false) => "one `shoal node` process per node, loopback TCP".to_owned(),
        (true, true) => {
            "one `shoal node` process per node, loopback TCP, links NOT shaped (the scenario's RTT and caps were not applied)"
                .to_owned()
        }
    }
}

/// The in-process part of [`harness`].
fn in_process_harness(s: &Scenario) -> String {
    if s.thread_per_node {
        "nodes in one process per mode, shoal and origin nodes each on its own thread and runtime, memory transport, links shaped as the scenario says".to_owned()
    } else {
        "nodes in one process per mode, all on one shared runtime, memory transport, links shaped as the scenario says"
            .to_owned()
    }
}

/// The `shoal` binary `--processes` runs.
fn shoal_bin(args: &Args) -> Result<PathBuf> {
    if let Some(b) = &args.shoal_bin {
        return Ok(b.clone());
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("executable has no directory")?.join("shoal"))
}

/// Runs one mode in this process and writes its figures.
fn child(args: &Args, s: &Scenario, mode: &str, out: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(s.worker_threads).enable_all().build()?;
    let bar = ProgressBar::new(0).with_prefix(mode.to_owned());
    let started = Instant::now();
    // With --processes, CPU and RSS are the node processes' own.
    let mut node_processes = None;
    // In-process modes: every node's libp2p timers share one thread.
    let timer_probe = (!args.processes).then(lateness::TimerThreadProbe::start).flatten();
    let timer_nice = match (&timer_probe, s.timer_thread_nice) {
        (None, _) => None,
        (Some(_), 0) => Some("at its default priority".to_owned()),
        (Some(_), nice) => Some(match lateness::renice_timer_thread(nice) {
            Ok(()) => format!("at nice {nice}"),
            Err(e) => format!("at its default priority (nice {nice} failed: {e})"),
        }),
    };
    let log = rt.block_on(async {
        match (mode, args.processes) {
            ("shoal" | "origin", true) => {
                let mut m = procs::ProcessMode::new(s, mode == "origin", shoal_bin(args)?)?;
                node_processes = Some(m.totals());
                driver::run(&mut m, s, &bar).await
            }
            ("shoal", false) => driver::run(&mut shoal_mode::ShoalMode::new(s, false)?, s, &bar).await,
            ("origin", false) => driver::run(&mut shoal_mode::ShoalMode::new(s, true)?, s, &bar).await,
            ("push", false) => driver::run(&mut push::PushMode::new(s), s, &bar).await,
            (other, _) => bail!("mode {other:?} cannot run here"),
        }
    })?;
    bar.finish_and_clear();
    if let Some(line) = log.diagnostics_line(mode) {
        eprintln!("{line}");
    }
    if let (Some(p), Some(nice)) = (timer_probe, timer_nice) {
        let l = p.lateness();
        eprintln!(
            "{mode}: the process's futures-timer thread (every libp2p timer of every node), {nice}, woke up to {} ms late, {} times {} s or more",
            l.max_ms(),
            l.stalls(),
            lateness::STALL.as_secs()
        );
    }
    let mut run = log.summarise(mode, s);
    if let Some(dir) = &args.samples {
        let path = dir.join(format!("{mode}.csv"));
        std::fs::write(&path, log.samples_csv(s)).with_context(|| format!("writing {}", path.display()))?;
    }
    run.result.wall_s = started.elapsed().as_secs_f64();
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    if let Some(t) = node_processes {
        eprintln!(
            "{mode}: the bench process itself used {:.1} CPU s (not in cpu_s_per_node); node processes held {:.1} MB private memory each at the end",
            cpu_seconds(),
            t.private_mb_per_node()
        );
        run.result.cpu_s_per_node = t.cpu_seconds() / s.nodes as f64;
        run.result.rss_mb_per_node = t.rss_mb_per_node();
        run.result.private_mb_per_node = Some(t.private_mb_per_node());
    } else {
        run.result.cpu_s_per_node = cpu_seconds() / s.nodes as f64;
        run.result.rss_mb_per_node = proc_kb("VmHWM:") as f64 / 1024.0 / s.nodes as f64;
    }
    std::fs::write(out, serde_json::to_vec(&run)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn parent(args: &Args, s: &Scenario) -> Result<()> {
    let load_before = read_proc("/proc/loadavg").trim().to_owned();
    let exe = std::env::current_exe()?;
    let tmp = tempfile::tempdir()?;
    let mut runs: Vec<ModeRun> = Vec::new();
    for mode in &args.modes {
        let out = tmp.path().join(format!("{mode}.json"));
        let mut cmd = Command::new(&exe);
        cmd.arg(&args.scenario).args(["--modes", mode, "--child", mode]).arg("--child-out").arg(&out);
        if let Some(n) = args.nodes {
            cmd.args(["--nodes", &n.to_string()]);
        }
        if let Some(t) = args.seconds {
            cmd.args(["--seconds", &t.to_string()]);
        }
        if args.processes {
            cmd.arg("--processes").arg("--shoal-bin").arg(shoal_bin(args)?);
        }
        if args.unshaped {
            cmd.arg("--unshaped");
        }
        if args.shared_runtime {
            cmd.arg("--shared-runtime");
        }
        if args.plain_timer_thread {
            cmd.arg("--plain-timer-thread");
        }
        if let Some(dir) = &args.samples {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            cmd.arg("--samples").arg(dir);
        }
        let status = cmd.status().with_context(|| format!("running mode {mode}"))?;
        ensure!(status.success(), "mode {mode} failed: {status}");
        let run: ModeRun = serde_json::from_slice(&std::fs::read(&out)?)?;
        eprintln!("{}", report::table(s, std::slice::from_ref(&run.result)).lines().last().unwrap_or(""));
        runs.push(run);
    }
    let results: Vec<ModeResult> = runs.iter().map(|r| r.result.clone()).collect();
    println!("{}", report::table(s, &results));
    let report = Report {
        scenario: s,
        harness: harness(args, s),
        machine: Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem_total_mb: proc_kb("MemTotal:") / 1024,
            kernel: read_proc("/proc/sys/kernel/osrelease").trim().to_owned(),
            load_before,
            load_after: read_proc("/proc/loadavg").trim().to_owned(),
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        modes: results,
    };
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &args.json {
        std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.plot {
        let modes: Vec<(String, report::Samples)> =
            runs.iter().map(|r| (r.result.mode.clone(), r.samples.clone())).collect();
        plot::draw(p, &s.name, &modes)?;
    }
    if args.check || args.check_fields {
        ci_check(&serde_json::from_str(&json)?, args.check)?;
        eprintln!("CI check passed{}", if args.check { "" } else { " (fields only; the delivery gate is off)" });
    }
    Ok(())
}

/// The CI gate of issue 7: wrong in kind, not slow.
fn ci_check(report: &serde_json::Value, delivery: bool) -> Result<()> {
    let modes = report["modes"].as_array().context("JSON has no modes")?;
    for m in modes {
        let name = m["mode"].as_str().unwrap_or("?");
        for f in ["origin_factor", "continuity", "cpu_s_per_node", "rss_mb_per_node"] {
            ensure!(m[f].is_number(), "mode {name}: JSON field {f} missing");
        }
        for f in ["total", "payload", "duplicate", "control"] {
            ensure!(m["wire_factor"][f].is_number(), "mode {name}: JSON field wire_factor.{f} missing");
        }
        // A percentile of nothing is null; with the delivery gate off that
        // is a reported miss, not a malformed report.
        let present = |v: &serde_json::Value| v.is_number() || (!delivery && v.is_null());
        for f in ["p50", "p95", "p99", "max"] {
            ensure!(present(&m["latency_ms"][f]), "mode {name}: JSON field latency_ms.{f} missing or NaN");
        }
        for f in ["p50", "p95"] {
            ensure!(present(&m["join_ms"][f]), "mode {name}: JSON field join_ms.{f} missing or NaN");
        }
        // Played bytes that differ from the publisher's are wrong in kind,
        // whatever the delivery gate (checked with --processes only).
        let corrupt = m["corrupt_segments"].as_u64().unwrap_or(0);
        ensure!(corrupt == 0, "mode {name}: {corrupt} played segments differ from the publisher's bytes");
        if name == "shoal" {
            let missing = m["unverified_pairs"].as_u64().context("unverified_pairs missing")?;
            let of = m["origin_factor"].as_f64().unwrap_or(f64::INFINITY);
            if !delivery {
                if missing > 0 || of >= 3.0 {
                    eprintln!(
                        "DELIVERY GATE MISSED (not enforced by --check-fields): shoal left {missing} (viewer, segment) pairs unverified, origin_factor {of:.2}"
                    );
                }
                continue;
            }
            ensure!(missing == 0, "shoal: {missing} (viewer, segment) pairs never verified");
            ensure!(of < 3.0, "shoal: origin_factor {of:.2} ≥ 3");
        }
    }
    ensure!(modes.iter().any(|m| m["mode"] == "shoal"), "the CI gate needs the shoal mode");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(name: &str) -> serde_json::Value {
        serde_json::json!({
            "mode": name, "origin_factor": 1.2, "continuity": 1.0, "cpu_s_per_node": 0.5, "rss_mb_per_node": 20.0,
            "wire_factor": {"total": 1.2, "payload": 1.0, "duplicate": 0.1, "control": 0.1},
            "latency_ms": {"p50": 100.0, "p95": 200.0, "p99": 300.0, "max": 400.0},
            "join_ms": {"p50": 100.0, "p95": 200.0},
            "unverified_pairs": 0
        })
    }

    #[test]
    fn the_gate_fails_on_missing_fields_and_corrupt_bytes() {
        let ok = serde_json::json!({ "modes": [mode("shoal"), mode("origin")] });
        ci_check(&ok, true).unwrap();
        let mut no_field = ok.clone();
        no_field["modes"][1].as_object_mut().unwrap().remove("origin_factor");
        assert!(ci_check(&no_field, false).unwrap_err().to_string().contains("origin_factor"));
        let mut corrupt = ok.clone();
        corrupt["modes"][0]["corrupt_segments"] = 2.into();
        assert!(ci_check(&corrupt, false).unwrap_err().to_string().contains("2 played segments"));
        let mut missed = ok;
        missed["modes"][0]["unverified_pairs"] = 3.into();
        ci_check(&missed, false).unwrap();
        assert!(ci_check(&missed, true).unwrap_err().to_string().contains("never verified"));
    }
}
