//! Keeps the attackers off the honest nodes' CPUs in the attack suite.
//!
//! In the wild a hostile peer floods from its own machine: what it costs
//! the victims is the work their defences do, not the attacker's own work
//! of building and encrypting its floods. All hostile peers of a test share
//! one runtime thread (`crate::hostile`), so they never take more than one
//! CPU's worth; with enough CPUs [`isolate_attackers`] also pins the honest
//! process to every CPU but the last and [`pin_attacker_thread`] puts the
//! attackers' thread on the last one, so the baseline and the attack phases
//! run the honest swarm on the same, attacker-free CPUs. With fewer CPUs
//! [`lower_attacker_priority`] runs the attackers' thread at SCHED_IDLE
//! instead (nice 19 if that fails): it floods with whatever CPU the honest
//! nodes leave idle, the closest a shared box comes to a machine of its own.

use std::sync::{
    Mutex, OnceLock,
    atomic::{AtomicU8, Ordering},
};

use nix::{
    sched::{CpuSet, sched_getaffinity, sched_setaffinity},
    unistd::Pid,
};

/// The CPU the attackers run on, once [`isolate_attackers`] has split them.
static ATTACKER_CPU: OnceLock<Option<usize>> = OnceLock::new();

/// The CPUs this process may run on now.
fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = sched_getaffinity(Pid::from_raw(0)) else { return Vec::new() };
    (0..CpuSet::count()).filter(|&c| set.is_set(c).unwrap_or(false)).collect()
}

/// Fewest CPUs at which the honest nodes give one up to the attackers:
/// with 2 or 3, one CPU less starves the honest swarm itself (a debug build
/// of 21 nodes on one core has a baseline p99 of 2–5 s and misses
/// deadlines), which would measure the box, not the defences.
pub const MIN_CPUS_TO_ISOLATE: usize = 4;

/// With at least [`MIN_CPUS_TO_ISOLATE`] CPUs, pins every thread of this
/// process to all allowed CPUs but the last and keeps the last for
/// [`pin_attacker_thread`]; threads started later inherit the honest set.
/// Returns `(how many honest CPUs, the attacker CPU)`, or `None` (nothing
/// pinned: too few CPUs, or the kernel refused). Idempotent: later calls
/// return the first answer.
pub fn isolate_attackers() -> Option<(usize, usize)> {
    let cpu = *ATTACKER_CPU.get_or_init(|| {
        let cpus = allowed_cpus();
        if cpus.len() < MIN_CPUS_TO_ISOLATE {
            return None;
        }
        let (&attacker, honest) = cpus.split_last()?;
        let mut set = CpuSet::new();
        for &c in honest {
            set.set(c).ok()?;
        }
        // Every thread that exists now (the test runtime's workers among
        // them); /proc/self/task lists them.
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                // A thread that exited meanwhile is fine to miss.
                let _ = sched_setaffinity(Pid::from_raw(tid), &set);
            }
        }
        Some(attacker)
    });
    cpu.map(|a| (allowed_cpus().len(), a))
}

/// Pins the calling thread to the attackers' CPU, if
/// [`isolate_attackers`] set one aside. Returns whether it did.
pub fn pin_attacker_thread() -> bool {
    let Some(Some(cpu)) = ATTACKER_CPU.get() else { return false };
    let mut set = CpuSet::new();
    set.set(*cpu).is_ok() && sched_setaffinity(Pid::from_raw(0), &set).is_ok()
}

/// How the attackers' thread was lowered: 0 not, 1 nice 19, 2 SCHED_IDLE.
static ATTACKER_LOWERED: AtomicU8 = AtomicU8::new(0);

/// `SHOAL_HOSTILE_ATTACKER_SCHED=nice` keeps the attackers' thread at nice
/// 19 instead of SCHED_IDLE, to compare the two.
pub const ATTACKER_SCHED_ENV: &str = "SHOAL_HOSTILE_ATTACKER_SCHED";

/// Runs `cmd args` quietly; whether it succeeded.
fn quietly(cmd: &str, args: &[&str]) -> bool {
    std::process::Command::new(cmd)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Lowers the calling thread, for the attackers' thread when it could not
/// be pinned to a CPU of its own: to SCHED_IDLE (`chrt --idle`), which
/// runs only on a CPU nothing else wants and yields it at once when an
/// honest thread wakes, or, if that fails or `SHOAL_HOSTILE_ATTACKER_SCHED`
/// is `nice`, to nice 19 (`renice`), which still holds a CPU for a
/// scheduler slice (milliseconds) after an honest thread wakes. The
/// workspace forbids unsafe code, hence the commands. Returns whether it
/// lowered the thread.
pub fn lower_attacker_priority() -> bool {
    let Some(tid) = thread_id() else { return false };
    let tid = tid.to_string();
    let nice_only = std::env::var(ATTACKER_SCHED_ENV).is_ok_and(|v| v == "nice");
    if !nice_only && quietly("chrt", &["--idle", "-p", "0", &tid]) {
        ATTACKER_LOWERED.store(2, Ordering::Relaxed);
        return true;
    }
    if quietly("renice", &["-n", "19", "-p", &tid]) {
        ATTACKER_LOWERED.store(1, Ordering::Relaxed);
        return true;
    }
    false
}

/// How [`lower_attacker_priority`] lowered the attackers' thread, in
/// words, or `None` if it did not.
pub fn attacker_priority() -> Option<&'static str> {
    match ATTACKER_LOWERED.load(Ordering::Relaxed) {
        1 => Some("nice 19"),
        2 => Some("SCHED_IDLE"),
        _ => None,
    }
}

/// Thread ids of the attackers' runtime threads, for [`attacker_cpu_secs`].
static ATTACKER_TIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// The calling thread's id (`/proc/thread-self` links to "PID/task/TID").
fn thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self").ok().and_then(|p| p.file_name()?.to_str()?.parse::<u32>().ok())
}

/// Records the calling thread as one of the attackers', so its CPU time
/// is counted by [`attacker_cpu_secs`].
pub fn register_attacker_thread() {
    if let (Some(tid), Ok(mut tids)) = (thread_id(), ATTACKER_TIDS.lock()) {
        tids.push(tid);
    }
}

/// Linux reports /proc times in USER_HZ, 100 a second on every
/// architecture shoal runs on (sysconf(_SC_CLK_TCK)).
const USER_HZ: f64 = 100.0;

/// utime + stime, in seconds, from a /proc `stat` line (fields 14 and 15,
/// counted after the parenthesised command name, which may hold spaces).
fn stat_cpu_secs(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// CPU seconds the attackers' threads have used so far (threads that
/// exited are missed), or `None` if none was registered.
pub fn attacker_cpu_secs() -> Option<f64> {
    let tids = ATTACKER_TIDS.lock().ok()?.clone();
    if tids.is_empty() {
        return None;
    }
    Some(
        tids.iter()
            .filter_map(|t| std::fs::read_to_string(format!("/proc/self/task/{t}/stat")).ok())
            .filter_map(|s| stat_cpu_secs(&s))
            .sum(),
    )
}

/// CPU seconds this whole process has used so far (every thread).
pub fn process_cpu_secs() -> Option<f64> {
    stat_cpu_secs(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_read_after_the_command_name() {
        // pid (comm with spaces) state ppid ... utime=250 stime=50 ...
        let line = "42 (tokio worker (1)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(stat_cpu_secs(line), Some(3.0));
        assert_eq!(stat_cpu_secs("garbage"), None);
        assert!(process_cpu_secs().is_some_and(|s| s >= 0.0));
    }
}
