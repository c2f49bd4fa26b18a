//! Harness health: how late a sleep of `PROBE_EVERY` wakes up, on each node's
//! own runtime and on the process-wide `futures-timer` thread.
//!
//! Why: in one process, every node's tasks share two cores with hundreds of
//! other threads, and every libp2p timer (ping intervals and timeouts,
//! request timeouts, gossipsub's heartbeat, idle timeouts) of every node
//! runs on one `futures-timer` helper thread. A node whose runtime is held
//! up (a synchronous store write blocked by the kernel's dirty-page
//! throttling, CPU starvation) misses pongs and deadlines that a real
//! deployment would not; a late timer thread delays every node at once. A
//! bench figure is only as good as the harness under it, so the run says
//! how late both were, next to the figures (`loop_late_max_ms`, per node,
//! and the `futures-timer` line on stderr).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The probe's sleep: short enough to see a stall of a few hundred ms,
/// long enough to cost nothing next to a node (10 wake-ups a second).
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(100);

/// A wake-up this late counts as a stall: ten probe periods, and a fifth
/// of the default 5 s liveness window.
pub(crate) const STALL: Duration = Duration::from_secs(1);

/// The worst lateness seen and how many wake-ups were `STALL` or later.
#[derive(Debug, Default)]
pub(crate) struct Lateness {
    max_ms: AtomicU64,
    stalls: AtomicU64,
}

impl Lateness {
    /// Records one wake-up `late` after its deadline; a stall is also
    /// logged (`RUST_LOG=shoal_bench=info`) with `who`, so it can be put
    /// next to the nodes' own lines (a ping close) by time.
    pub(crate) fn record(&self, who: &str, late: Duration) {
        self.max_ms.fetch_max(late.as_millis() as u64, Ordering::Relaxed);
        if late >= STALL {
            self.stalls.fetch_add(1, Ordering::Relaxed);
            tracing::info!(who, late_ms = late.as_millis() as u64, "woke up late");
        }
    }

    /// Worst lateness, milliseconds.
    pub(crate) fn max_ms(&self) -> u64 {
        self.max_ms.load(Ordering::Relaxed)
    }

    /// Wake-ups `STALL` or more late.
    pub(crate) fn stalls(&self) -> u64 {
        self.stalls.load(Ordering::Relaxed)
    }

    /// Sleeps `PROBE_EVERY` on the current tokio runtime forever, recording
    /// each wake-up's lateness. Run it in a `select!` with the task's end.
    pub(crate) async fn probe_tokio(&self, who: &str) {
        loop {
            // tokio's clock (the same as std's outside paused tests).
            let start = tokio::time::Instant::now();
            tokio::time::sleep(PROBE_EVERY).await;
            self.record(who, start.elapsed().saturating_sub(PROBE_EVERY));
        }
    }
}

/// The name `futures-timer` gives its one helper thread per process.
const TIMER_THREAD: &str = "futures-timer";

/// Sets the process's `futures-timer` thread to `nice` (`renice` on its
/// thread id: the workspace forbids the unsafe code `setpriority` needs).
/// The thread starts with the first timer, so call it after
/// [`TimerThreadProbe::start`]. A negative value needs CAP_SYS_NICE.
pub(crate) fn renice_timer_thread(nice: i32) -> Result<(), String> {
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| format!("reading /proc/self/task: {e}"))?;
    let tid = tasks
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == TIMER_THREAD))
        .map(|t| t.file_name().to_string_lossy().into_owned())
        .ok_or_else(|| format!("no thread named {TIMER_THREAD}"))?;
    let out = std::process::Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", &tid])
        .output()
        .map_err(|e| format!("running renice: {e}"))?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()) }
}

/// Probes the process-wide `futures-timer` thread from a thread of its own
/// until dropped.
#[derive(Debug)]
pub(crate) struct TimerThreadProbe {
    lateness: Arc<Lateness>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TimerThreadProbe {
    /// Starts the probe; `None` if no thread could be spawned (the run
    /// goes on without the figure).
    pub(crate) fn start() -> Option<Self> {
        // The first timer starts the helper thread, so that
        // `renice_timer_thread` finds it as soon as this returns.
        futures::executor::block_on(futures_timer::Delay::new(Duration::from_millis(1)));
        let lateness = Arc::new(Lateness::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (lateness.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bench-timer-probe".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    futures::executor::block_on(futures_timer::Delay::new(PROBE_EVERY));
                    l.record("futures-timer", start.elapsed().saturating_sub(PROBE_EVERY));
                }
            })
            .ok()?;
        Some(Self { lateness, stop, thread: Some(thread) })
    }

    /// What the probe saw so far.
    pub(crate) fn lateness(&self) -> &Lateness {
        &self.lateness
    }
}

impl Drop for TimerThreadProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // At most one `PROBE_EVERY` plus the timer's own lateness.
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_worst_lateness_and_counts_stalls() {
        let l = Lateness::default();
        l.record("t", Duration::from_millis(30));
        l.record("t", Duration::from_millis(1500));
        l.record("t", Duration::from_millis(200));
        l.record("t", STALL);
        assert_eq!((l.max_ms(), l.stalls()), (1500, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_runtime_shows_up_as_lateness() {
        let l = Arc::new(Lateness::default());
        let probe = {
            let l = l.clone();
            tokio::spawn(async move { l.probe_tokio("t").await })
        };
        // Let the probe start its sleep, then move the (paused) clock 2 s
        // at once, as a runtime held up for 2 s would see it.
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(2)).await;
        tokio::task::yield_now().await;
        probe.abort();
        assert!(l.max_ms() >= 1_800, "lateness {} ms", l.max_ms());
        assert_eq!(l.stalls(), 1);
    }
}
