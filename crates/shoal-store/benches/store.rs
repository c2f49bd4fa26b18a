//! Store throughput and latency for 256 KiB blocks against plain std::fs
//! write+fsync of the same bytes in the same run, plus steady-state RSS.
//!
//! `cargo bench -p shoal-store` (release). Set `SHOAL_BENCH_BLOCKS` to
//! change the number of blocks per phase (default 256 = 64 MiB).
#![allow(missing_docs, clippy::unwrap_used)]

use std::{
    fs,
    io::Write,
    path::Path,
    time::{Duration, Instant},
};

use bytes::Bytes;
use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};
use shoal_core::{BlockRef, ChannelKey, Manifest, ManifestCid, Segment, VerifiedBlock, VerifiedManifest, VerifyPolicy};
use shoal_store::{Store, StoreConfig};

const BLOCK: usize = 256 * 1024;

type SegmentData = (VerifiedManifest, Vec<VerifiedBlock>);

/// A channel publishing one random 256 KiB block per 1 s segment.
struct Segments {
    key: ChannelKey,
    rng: StdRng,
    seq: u64,
    prev: Option<ManifestCid>,
}

impl Segments {
    fn new(secret: u8, seed: u64) -> Self {
        Self { key: ChannelKey::from_secret_bytes(&[secret; 32]), rng: StdRng::seed_from_u64(seed), seq: 0, prev: None }
    }

    fn next_segment(&mut self) -> SegmentData {
        let mut data = vec![0u8; BLOCK];
        self.rng.fill_bytes(&mut data);
        let block = VerifiedBlock::from_content(Bytes::from(data));
        let seq = self.seq;
        let m = Manifest {
            channel: self.key.channel_id(),
            seq,
            published_at_ms: 1_700_000_000_000 + seq * 1000,
            prev: self.prev,
            segment: Segment {
                number: seq,
                duration_ms: 1000,
                rendition: 0,
                keyframe: true,
                blocks: vec![BlockRef { cid: block.cid(), size: BLOCK as u32 }],
            },
            info: None,
        };
        let v = self.key.sign_manifest(&m).unwrap().verify(&VerifyPolicy::default(), u64::MAX / 2).unwrap();
        self.prev = Some(v.cid());
        self.seq += 1;
        (v, vec![block])
    }
}

fn segments(n: usize, secret: u8, seed: u64) -> Vec<SegmentData> {
    let mut g = Segments::new(secret, seed);
    (0..n).map(|_| g.next_segment()).collect()
}

struct Timing {
    total: Duration,
    lat: Vec<Duration>,
}

impl Timing {
    fn mbps(&self, bytes: usize) -> f64 {
        bytes as f64 / (1024.0 * 1024.0) / self.total.as_secs_f64()
    }
    fn pct(&mut self, p: f64) -> Duration {
        self.lat.sort();
        let i = ((self.lat.len() as f64 * p).ceil() as usize).clamp(1, self.lat.len()) - 1;
        self.lat[i]
    }
}

fn time<F: FnMut(usize)>(n: usize, mut f: F) -> Timing {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        f(i);
        lat.push(t.elapsed());
    }
    Timing { total: start.elapsed(), lat }
}

fn rss_kib(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn fs_put(dir: &Path, segs: &[SegmentData]) -> Timing {
    time(segs.len(), |i| {
        let b = &segs[i].1[0];
        let mut f = fs::File::create(dir.join(b.cid().to_string())).unwrap();
        f.write_all(b.data()).unwrap();
        f.sync_all().unwrap();
    })
}

fn store_put(store: &Store, segs: &[SegmentData]) -> Timing {
    time(segs.len(), |i| {
        store.store_segment(&segs[i].0, &segs[i].1).unwrap();
    })
}

fn row(name: &str, t: &mut Timing, bytes: usize, base: Option<f64>) {
    let mbps = t.mbps(bytes);
    let ratio = base.map_or("1.00 (baseline)".to_string(), |b| format!("{:.2}", mbps / b));
    println!(
        "| {name:<40} | {mbps:>9.1} | {:>9.3} | {:>9.3} | {ratio} |",
        t.pct(0.5).as_secs_f64() * 1e3,
        t.pct(0.99).as_secs_f64() * 1e3
    );
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let n: usize = std::env::var("SHOAL_BENCH_BLOCKS").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let base_dir: std::path::PathBuf = std::env::var_os("SHOAL_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let rss_start = rss_kib("VmRSS:");
    // SHOAL_BENCH_STEADY_ONLY=1: only the steady-state phase, in a fresh
    // process, so its RSS is the store's and not the earlier phases' heap.
    let rss_after =
        if std::env::var_os("SHOAL_BENCH_STEADY_ONLY").is_some() { rss_start } else { phases(n, &base_dir) };
    steady(n, &base_dir, rss_start, rss_after);
}

/// Put and get against std::fs; returns RSS afterwards.
fn phases(n: usize, base_dir: &Path) -> u64 {
    let bytes = n * BLOCK;
    let rss_start = rss_kib("VmRSS:");
    let segs_a = segments(n, 1, 1);
    let segs_b = segments(n, 2, 2);
    let rss_data = rss_kib("VmRSS:");
    println!("shoal-store bench: {n} blocks of 256 KiB ({} MiB) per phase, in {}", bytes >> 20, base_dir.display());
    println!(
        "RSS before the store opens: {} MiB (of which ~{} MiB is the test data held in memory)",
        rss_data >> 10,
        (rss_data - rss_start) >> 10
    );
    println!();
    println!("| operation                                | MB/s      | p50 ms    | p99 ms    | ratio vs fs |");
    println!("|------------------------------------------|-----------|-----------|-----------|-------------|");

    let fs_dir = tempfile::tempdir_in(base_dir).unwrap();
    let mut fs_w = fs_put(fs_dir.path(), &segs_a);
    let fs_mbps = fs_w.mbps(bytes);
    row("std::fs write + fsync (1 file/block)", &mut fs_w, bytes, None);

    let config = StoreConfig::default();
    let dir_nosync = tempfile::tempdir_in(base_dir).unwrap();
    let store = Store::open(dir_nosync.path(), &config).unwrap();
    let mut w = store_put(&store, &segs_a);
    let slow: Vec<(usize, u128)> =
        w.lat.iter().enumerate().filter(|(_, d)| d.as_millis() >= 5).map(|(i, d)| (i, d.as_millis())).collect();
    row("store put, sync_writes=false (default)", &mut w, bytes, Some(fs_mbps));

    let dir_sync = tempfile::tempdir_in(base_dir).unwrap();
    let store_sync = Store::open(dir_sync.path(), &StoreConfig { sync_writes: true, ..config.clone() }).unwrap();
    let mut ws = store_put(&store_sync, &segs_b);
    row("store put, sync_writes=true", &mut ws, bytes, Some(fs_mbps));

    println!("| (slow store puts, sync_writes=false: (index, ms) {slow:?}) |");

    // Paced: 100 puts/s (25 MiB/s, ten times a 20 Mbit/s channel) instead
    // of flat out, so latency is not dominated by the disk's backlog.
    let pace = Duration::from_millis(10);
    let paced_dir = tempfile::tempdir_in(base_dir).unwrap();
    let paced_segs = segments(n.min(256), 3, 3);
    for sync in [false, true] {
        let d = tempfile::tempdir_in(paced_dir.path()).unwrap();
        let st = Store::open(d.path(), &StoreConfig { sync_writes: sync, ..StoreConfig::default() }).unwrap();
        let mut lat = Vec::with_capacity(paced_segs.len());
        let mut next = Instant::now();
        for (m, b) in &paced_segs {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += pace;
            let s = Instant::now();
            st.store_segment(m, b).unwrap();
            lat.push(s.elapsed());
        }
        // MB/s here is over time spent in puts only (not the pacing sleeps).
        let mut paced = Timing { total: lat.iter().sum(), lat };
        let name = format!("store put paced 100/s, sync_writes={sync}");
        row(&name, &mut paced, paced_segs.len() * BLOCK, Some(fs_mbps));
    }
    drop(paced_segs);
    // Reads in random order, all blocks once per round, 3 rounds.
    let mut rng = StdRng::seed_from_u64(7);
    let mut order: Vec<usize> = (0..n).collect();
    let mut read_order = Vec::new();
    for _ in 0..3 {
        for i in (1..n).rev() {
            order.swap(i, rng.random_range(0..=i));
        }
        read_order.extend_from_slice(&order);
    }
    let mut sink = 0u64;
    let mut fs_r = time(read_order.len(), |k| {
        let b = &segs_a[read_order[k]].1[0];
        let d = fs::read(fs_dir.path().join(b.cid().to_string())).unwrap();
        sink += u64::from(d[7]);
    });
    let fs_r_mbps = fs_r.mbps(bytes * 3);
    row("std::fs read (page cache)", &mut fs_r, bytes * 3, None);
    let mut r = time(read_order.len(), |k| {
        let cid = segs_a[read_order[k]].1[0].cid();
        let d = store.block(&cid).unwrap().unwrap();
        sink += u64::from(d[7]);
    });
    row("store get, pinned, CID verified (default)", &mut r, bytes * 3, Some(fs_r_mbps));
    drop(store_sync);
    let store_nv = Store::open(dir_sync.path(), &StoreConfig { verify_reads: false, ..config.clone() }).unwrap();
    let mut rn = time(read_order.len(), |k| {
        let cid = segs_b[read_order[k]].1[0].cid();
        let d = store_nv.block(&cid).unwrap().unwrap();
        sink += u64::from(d[7]);
    });
    row("store get, pinned, verify_reads=false", &mut rn, bytes * 3, Some(fs_r_mbps));
    // Hot reads: the newest 32 blocks (8 MiB), what peers of a live
    // channel ask for, served from the block/blob cache.
    let hot: Vec<usize> = (n.saturating_sub(32)..n).collect();
    let hot_reads = 32 * 24;
    let mut rh = time(hot_reads, |k| {
        let cid = segs_a[hot[k % hot.len()]].1[0].cid();
        let d = store.block(&cid).unwrap().unwrap();
        sink += u64::from(d[7]);
    });
    row("store get, newest 32 blocks (hot), verified", &mut rh, hot_reads * BLOCK, Some(fs_r_mbps));
    drop(store_nv);
    drop(store);
    drop(segs_a);
    drop(segs_b);
    let rss_after = rss_kib("VmRSS:");
    std::hint::black_box(sink);
    rss_after
}

/// A live stream through a small budget with eviction and reads of the
/// newest blocks, as a relaying node does; prints RSS.
fn steady(n: usize, base_dir: &Path, rss_start: u64, rss_after: u64) {
    let bytes = n * BLOCK;
    let config = StoreConfig::default();
    let mut sink = 0u64;
    let steady_dir = tempfile::tempdir_in(base_dir).unwrap();
    let budget = 64 * 1024 * 1024;
    let steady = Store::open(steady_dir.path(), &StoreConfig { disk_budget_bytes: budget, ..config.clone() }).unwrap();
    let rounds = 4;
    let t = Instant::now();
    let mut samples = Vec::new();
    for round in 0..rounds {
        // Eight segments at a time, so the bench itself holds only 2 MiB.
        let mut source = Segments::new(10 + round as u8, 100 + round);
        for _ in 0..n / 8 {
            let segs: Vec<_> = (0..8).map(|_| source.next_segment()).collect();
            for (m, b) in &segs {
                steady.store_segment(m, b).unwrap();
            }
            while steady.evict_once().unwrap().more {}
            for (_, rb) in &segs {
                sink += steady.block(&rb[0].cid()).unwrap().map_or(0, |d| u64::from(d[0]));
            }
        }
        samples.push(rss_kib("VmRSS:"));
    }
    let steady_secs = t.elapsed().as_secs_f64();
    let (cache, memtables, readers) = steady.memory_usage();
    println!();
    println!(
        "steady state: {} MiB streamed through a {} MiB budget in {steady_secs:.1}s; stored {} MiB, on disk {} MiB",
        (rounds as usize * bytes) >> 20,
        budget >> 20,
        steady.stored_bytes() >> 20,
        steady.disk_usage() >> 20
    );
    println!(
        "RSS: start {} MiB, after put/get phases {} MiB, steady-state samples {:?} MiB, peak (VmHWM) {} MiB",
        rss_start >> 10,
        rss_after >> 10,
        samples.iter().map(|s| s >> 10).collect::<Vec<_>>(),
        rss_kib("VmHWM:") >> 10
    );
    println!(
        "RocksDB memory: block cache {} MiB (cap {} MiB), memtables {} MiB (cap {} MiB), table readers {} KiB",
        cache >> 20,
        config.block_cache_bytes >> 20,
        memtables >> 20,
        config.write_buffer_bytes >> 20,
        readers >> 10
    );
    println!("(the steady-state phase holds only ~2 MiB of bench data; earlier phases' data was dropped)");
    std::hint::black_box(sink);
}
