//! Crash safety in a real child process: a writer stores segments in a loop
//! (both the one-shot and the block-by-block paths, with eviction running)
//! and prints each acknowledged seq; the parent SIGKILLs it at random
//! moments, 20 times, and after each kill reopens the store and checks:
//!
//! - every stored manifest's blocks exist and hash to their CIDs (and every
//!   other invariant of `verify_integrity`);
//! - the head is the highest fully stored seq, and the chain links hold;
//! - nothing acknowledged before the kill is missing.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::{Publisher, content, test_config};
use rand::{Rng, SeedableRng, rngs::StdRng};
use shoal_store::{Store, StoreConfig};

/// Names the store directory for the child; absent in a normal test run.
const CHILD_ENV: &str = "SHOAL_STORE_CRASH_DIR";
/// "1" makes the child fsync every write.
const SYNC_ENV: &str = "SHOAL_STORE_CRASH_SYNC";
const KILLS: usize = 20;
/// Seeds the kill moments; printed with the figures so a failure replays.
const SEED: u64 = 0x5EED_0005_4A01;
const WINDOW_SECS: u64 = 20;

fn config(sync: bool) -> StoreConfig {
    StoreConfig { live_window_secs: WINDOW_SECS, sync_writes: sync, ..test_config() }
}

/// The segment for `seq`: deterministic, so a writer restarted after a kill
/// re-creates exactly what it may have half-written.
fn segment_contents(seq: u64) -> Vec<bytes::Bytes> {
    let mut rng = StdRng::seed_from_u64(seq);
    vec![
        content(seq * 4, rng.random_range(1_000..60_000)),
        content(seq * 4 + 1, rng.random_range(1_000..60_000)),
        // Shared by four consecutive segments (refcounts under eviction).
        content((1 << 40) | (seq / 4), 20_000),
    ]
}

#[test]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let sync = std::env::var(SYNC_ENV).is_ok_and(|v| v == "1");
    let store = Store::open(Path::new(&dir), &config(sync)).expect("child opens the store");
    let mut p = Publisher::new(42);
    if let Some(h) = store.head(&p.channel()) {
        p.seq = h.seq + 1;
        p.prev = Some(h.cid);
    }
    let mut out = std::io::stdout().lock();
    for _ in 0..1_000_000 {
        let seq = p.seq;
        let (m, blocks) = p.next(&segment_contents(seq), 1000);
        if seq.is_multiple_of(2) {
            store.store_segment(&m, &blocks).expect("store_segment");
        } else {
            for b in &blocks {
                store.put_block(&m, b).expect("put_block");
            }
            store.commit_segment(&m).expect("commit_segment");
        }
        writeln!(out, "ack {seq}").expect("stdout");
        out.flush().expect("stdout");
        if seq.is_multiple_of(5) {
            store.evict_once().expect("evict");
        }
    }
}

#[derive(Default)]
struct Figures {
    kills: usize,
    acked: usize,
    invariants: u64,
    violations: Vec<String>,
}

impl Figures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        self.invariants += 1;
        if !ok {
            self.violations.push(what());
        }
    }
}

#[test]
fn crash_safety_under_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut f = Figures::default();
    let mut all_acked: Vec<u64> = Vec::new();
    let channel = Publisher::new(42).channel();
    let started = Instant::now();

    for round in 0..KILLS {
        let sync = round % 2 == 1;
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_writer_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env(SYNC_ENV, if sync { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
        let reader = {
            let acked = Arc::clone(&acked);
            let stdout = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(seq) = line.strip_prefix("ack ").and_then(|s| s.parse().ok()) {
                        acked.lock().unwrap().push(seq);
                    }
                }
            })
        };
        // Kill at a random moment after the writer is under way (sometimes
        // right after its first write, sometimes hundreds of writes later).
        let deadline = Instant::now() + Duration::from_secs(30);
        while acked.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "round {round}: the writer acknowledged nothing");
            assert!(child.try_wait().unwrap().is_none(), "round {round}: the writer exited early");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..250)));
        assert!(child.try_wait().unwrap().is_none(), "round {round}: the writer must be running when killed");
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        f.kills += 1;
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        f.acked += acked.len();
        all_acked.extend(acked);

        let store = Store::open(dir.path(), &config(false)).unwrap();
        let report = store.verify_integrity().unwrap();
        f.invariants += report.invariants_checked;
        f.violations.extend(report.violations.iter().map(|v| format!("round {round}: {v}")));
        f.check(report.awaiting_refetch.is_empty(), || format!("round {round}: blocks awaiting refetch"));

        let Some(head) = store.head(&channel) else {
            f.check(false, || format!("round {round}: no head after acknowledged writes"));
            continue;
        };
        let stats = store.channel_stats(&channel).unwrap();
        let stored = store.manifest_range(&channel, 0..=u64::MAX, usize::MAX).unwrap();
        let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
        // The head is the highest fully stored seq.
        f.check(seqs.last() == Some(&head.seq), || format!("round {round}: head {} vs stored {seqs:?}", head.seq));
        let head_manifest = store.manifest(&channel, head.seq).unwrap().map(|m| m.cid());
        f.check(head_manifest == Some(head.cid), || format!("round {round}: head CID is not the stored manifest's"));
        // Stored seqs are contiguous from first_seq (eviction takes the low
        // end only), and each links to the one before.
        f.check(seqs == (stats.first_seq..=head.seq).collect::<Vec<_>>(), || format!("round {round}: holes {seqs:?}"));
        for pair in stored.windows(2) {
            let a = store.manifest(&channel, pair[0].seq).unwrap().unwrap();
            let b = store.manifest(&channel, pair[1].seq).unwrap().unwrap();
            f.check(b.manifest().prev == Some(a.cid()), || format!("round {round}: broken link at {}", pair[1].seq));
        }
        // Nothing acknowledged is missing: every acked seq is at or below
        // the head, and the ones inside the window are stored with blocks
        // that read back and hash right.
        for &seq in &all_acked {
            f.check(seq <= head.seq, || format!("round {round}: acked seq {seq} above head {}", head.seq));
            if seq >= stats.first_seq {
                match store.manifest(&channel, seq).unwrap() {
                    None => f.check(false, || format!("round {round}: acked seq {seq} missing")),
                    Some(m) => {
                        for b in &m.manifest().segment.blocks {
                            let ok = store.block(&b.cid).ok().flatten().is_some_and(|d| d.len() == b.size as usize);
                            f.check(ok, || format!("round {round}: seq {seq} block {} unreadable", b.cid));
                        }
                    }
                }
            }
        }
        // Eviction after recovery brings the channel back to its window
        // exactly, and leaves the store consistent.
        store.evict_once().unwrap();
        let after = store.channel_stats(&channel).unwrap();
        let want = WINDOW_SECS.min(head.seq + 1);
        f.check(after.segments == want, || format!("round {round}: window not restored: {after:?}"));
        let report = store.verify_integrity().unwrap();
        f.invariants += report.invariants_checked;
        f.violations.extend(report.violations.iter().map(|v| format!("round {round}, after eviction: {v}")));
        drop(store);
    }

    let max = all_acked.iter().max().copied().unwrap_or(0);
    println!(
        "crash test: kills={}, acknowledged writes={}, highest seq={max}, invariants checked={}, violations={}, \
         seed={SEED:#x}, {:.1}s",
        f.kills,
        f.acked,
        f.invariants,
        f.violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(f.kills, KILLS);
    assert!(f.violations.is_empty(), "{:#?}", f.violations);
    assert!(max >= KILLS as u64, "the writer made progress across restarts (highest seq {max})");
}
