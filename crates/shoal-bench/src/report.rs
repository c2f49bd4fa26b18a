//! What a run recorded, and the figures computed from it: the per-mode
//! measures with the exact field names of issue 7, the table and the JSON.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

/// When each segment became verified at one viewer (one entry per segment
/// of the run, so bounded by `Scenario::segments`).
pub(crate) type Verified = Arc<Mutex<HashMap<u64, Instant>>>;

/// One viewer's life in the run.
#[derive(Debug)]
pub(crate) struct ViewerLog {
    /// When it started (node start, then join).
    pub(crate) joined: Instant,
    /// When it left (churn), if it did.
    pub(crate) left: Option<Instant>,
    /// Verified segments.
    pub(crate) verified: Verified,
    /// Bytes it wrote to the wire.
    pub(crate) upload: u64,
    /// Needed payload bytes it received (first copies).
    pub(crate) payload: u64,
    /// Payload bytes it received again (duplicates).
    pub(crate) duplicate: u64,
}

/// Everything the driver records; the figures come from here.
#[derive(Debug, Default)]
pub(crate) struct RunLog {
    /// Publish instant of each segment (by seq).
    pub(crate) published: Vec<Instant>,
    /// Every viewer that ever ran.
    pub(crate) viewers: Vec<ViewerLog>,
    /// Bytes the publisher wrote to the wire.
    pub(crate) publisher_upload: u64,
    /// When the run (stream and drain) ended.
    pub(crate) ended: Option<Instant>,
    /// Diagnostic counters summed over the viewers that reported them, and
    /// how many did.
    pub(crate) diagnostics: BTreeMap<&'static str, u64>,
    pub(crate) diagnosed: u64,
    /// Mean bytes per published segment, when measured (`--processes`:
    /// the publisher node cuts segments by its own clock); otherwise the
    /// scenario's nominal size.
    pub(crate) segment_bytes: Option<f64>,
    /// Segments a viewer played whose bytes differ from the publisher's,
    /// when checked (`--processes` compares every one); they do not count
    /// as verified.
    pub(crate) corrupt_segments: Option<u64>,
}

impl RunLog {
    /// Adds one stopped viewer's diagnostic counters.
    pub(crate) fn add_diagnostics(&mut self, counters: &[(&'static str, u64)]) {
        if counters.is_empty() {
            return;
        }
        self.diagnosed += 1;
        for (name, v) in counters {
            *self.diagnostics.entry(name).or_default() += v;
        }
    }

    /// One line: each diagnostic counter's mean per viewer, or `None` when
    /// the mode reports none.
    pub(crate) fn diagnostics_line(&self, mode: &str) -> Option<String> {
        (self.diagnosed > 0).then(|| {
            let n = self.diagnosed as f64;
            let parts: Vec<String> =
                self.diagnostics.iter().map(|(k, v)| format!("{k}={:.1}", *v as f64 / n)).collect();
            format!("{mode}: per viewer (mean of {}): {}", self.diagnosed, parts.join(" "))
        })
    }
}

/// `wire_factor`, split.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WireFactor {
    /// All bytes sent by every node ÷ (viewer-stream bytes).
    pub(crate) total: f64,
    /// Needed payload (first copies).
    pub(crate) payload: f64,
    /// Duplicate payload.
    pub(crate) duplicate: f64,
    /// Everything else: protocol framing, encryption, DHT, gossip, wants.
    pub(crate) control: f64,
}

/// Latency percentiles, ms (NaN, written as null, when nothing arrived).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Latency {
    #[serde(deserialize_with = "nullable")]
    pub(crate) p50: f64,
    #[serde(deserialize_with = "nullable")]
    pub(crate) p95: f64,
    #[serde(deserialize_with = "nullable")]
    pub(crate) p99: f64,
    #[serde(deserialize_with = "nullable")]
    pub(crate) max: f64,
}

/// Join percentiles, ms (NaN, written as null, when nobody joined).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Join {
    #[serde(deserialize_with = "nullable")]
    pub(crate) p50: f64,
    #[serde(deserialize_with = "nullable")]
    pub(crate) p95: f64,
}

/// serde_json writes NaN as null; read it back as NaN.
fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The figures for one mode: the field names issue 7 fixes, then counts
/// that say what they rest on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ModeResult {
    pub(crate) mode: String,
    /// Publisher upload (all bytes on its wire) ÷ stream bytes.
    pub(crate) origin_factor: f64,
    pub(crate) wire_factor: WireFactor,
    /// Publish → verified at a viewer.
    pub(crate) latency_ms: Latency,
    /// Join → first verified segment.
    pub(crate) join_ms: Join,
    /// Share of (viewer, segment) pairs verified before publish + target.
    pub(crate) continuity: f64,
    pub(crate) cpu_s_per_node: f64,
    pub(crate) rss_mb_per_node: f64,
    /// Viewers that ever ran.
    pub(crate) viewers: usize,
    /// Segments published.
    pub(crate) segments: u64,
    /// (viewer, segment) pairs counted for continuity.
    pub(crate) pairs: u64,
    /// Of those, pairs never verified by the end of the run.
    pub(crate) unverified_pairs: u64,
    /// Wall time of the run, s.
    pub(crate) wall_s: f64,
    /// Played segments whose bytes differed from the publisher's (checked
    /// with `--processes` only; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) corrupt_segments: Option<u64>,
    /// Mean private memory per node process at its stop, MB (with
    /// `--processes` only: `rss_mb_per_node` counts the shared binary in
    /// every process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) private_mb_per_node: Option<f64>,
}

/// Raw samples for the plots (not in the JSON report).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Samples {
    /// Every latency sample, ms, sorted.
    pub(crate) latency_ms: Vec<f64>,
    /// Each node's upload ÷ stream bytes, sorted (publisher included).
    pub(crate) upload_factor: Vec<f64>,
}

/// What a child process hands back for one mode.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ModeRun {
    pub(crate) result: ModeResult,
    pub(crate) samples: Samples,
}

/// Nearest-rank percentile of sorted values (NaN when empty).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl RunLog {
    /// Computes the figures (CPU and RSS are filled in by the caller).
    /// The (viewer, segment) pairs a run is judged on: published after the
    /// viewer started and due while it was still there. Each comes with
    /// its publish-to-verified time, or `None` if the viewer never
    /// verified it.
    fn counted_pairs(
        &self,
        v: &ViewerLog,
        verified: &HashMap<u64, Instant>,
        end: Instant,
        target: Duration,
    ) -> Vec<(u64, Option<Duration>)> {
        let until = v.left.unwrap_or(end);
        (0u64..)
            .zip(&self.published)
            .filter(|(_, at)| **at >= v.joined && **at + target <= until)
            .map(|(seq, at)| (seq, verified.get(&seq).map(|t| t.saturating_duration_since(*at))))
            .collect()
    }

    /// Every counted pair as CSV (`viewer,joined_ms,seq,latency_ms`, the
    /// latency empty when never verified; `joined_ms` is the viewer's
    /// start relative to the first publish): the raw samples behind the
    /// percentiles of [`Self::summarise`].
    pub(crate) fn samples_csv(&self, s: &Scenario) -> String {
        let target = Duration::from_millis(s.target_latency_ms);
        let end = self.ended.unwrap_or_else(Instant::now);
        let mut out = String::from("viewer,joined_ms,seq,latency_ms\n");
        let Some(first) = self.published.first().copied() else { return out };
        for (i, v) in self.viewers.iter().enumerate() {
            let verified = v.verified.lock().map(|m| m.clone()).unwrap_or_default();
            let joined = v.joined.saturating_duration_since(first).as_millis() as i128
                - first.saturating_duration_since(v.joined).as_millis() as i128;
            for (seq, took) in self.counted_pairs(v, &verified, end, target) {
                let ms = took.map(|t| format!("{:.1}", t.as_secs_f64() * 1000.0)).unwrap_or_default();
                out.push_str(&format!("{i},{joined},{seq},{ms}\n"));
            }
        }
        out
    }

    pub(crate) fn summarise(&self, mode: &str, s: &Scenario) -> ModeRun {
        let seg_bytes = self.segment_bytes.unwrap_or(s.segment_bytes() as f64);
        let stream_bytes = self.published.len() as f64 * seg_bytes;
        let target = Duration::from_millis(s.target_latency_ms);
        let end = self.ended.unwrap_or_else(Instant::now);
        let first_publish = self.published.first().copied();
        let (mut pairs, mut on_time, mut unverified) = (0u64, 0u64, 0u64);
        let mut latency = Vec::new();
        let mut join = Vec::new();
        let (mut payload, mut duplicate, mut sent) = (0u64, 0u64, self.publisher_upload);
        let mut uploads = vec![self.publisher_upload as f64 / stream_bytes.max(1.0)];
        for v in &self.viewers {
            let verified = v.verified.lock().map(|m| m.clone()).unwrap_or_default();
            for (_, took) in self.counted_pairs(v, &verified, end, target) {
                pairs += 1;
                match took {
                    Some(took) => {
                        latency.push(took.as_secs_f64() * 1000.0);
                        if took <= target {
                            on_time += 1;
                        }
                    }
                    None => unverified += 1,
                }
            }
            if let (Some(first), Some(fp)) = (verified.values().min(), first_publish) {
                let from = v.joined.max(fp);
                join.push(first.saturating_duration_since(from).as_secs_f64() * 1000.0);
            }
            payload += v.payload;
            duplicate += v.duplicate;
            sent += v.upload;
            uploads.push(v.upload as f64 / stream_bytes.max(1.0));
        }
        latency.sort_by(f64::total_cmp);
        join.sort_by(f64::total_cmp);
        uploads.sort_by(f64::total_cmp);
        let viewer_stream = (pairs as f64 * seg_bytes).max(1.0);
        let control = sent.saturating_sub(payload + duplicate);
        let result = ModeResult {
            mode: mode.to_owned(),
            origin_factor: self.publisher_upload as f64 / stream_bytes.max(1.0),
            wire_factor: WireFactor {
                total: sent as f64 / viewer_stream,
                payload: payload as f64 / viewer_stream,
                duplicate: duplicate as f64 / viewer_stream,
                control: control as f64 / viewer_stream,
            },
            latency_ms: Latency {
                p50: percentile(&latency, 50.0),
                p95: percentile(&latency, 95.0),
                p99: percentile(&latency, 99.0),
                max: latency.last().copied().unwrap_or(f64::NAN),
            },
            join_ms: Join { p50: percentile(&join, 50.0), p95: percentile(&join, 95.0) },
            continuity: if pairs == 0 { 0.0 } else { on_time as f64 / pairs as f64 },
            cpu_s_per_node: 0.0,
            rss_mb_per_node: 0.0,
            viewers: self.viewers.len(),
            segments: self.published.len() as u64,
            pairs,
            unverified_pairs: unverified,
            wall_s: 0.0,
            corrupt_segments: self.corrupt_segments,
            private_mb_per_node: None,
        };
        ModeRun { result, samples: Samples { latency_ms: latency, upload_factor: uploads } }
    }
}

/// The table printed on stdout.
pub(crate) fn table(s: &Scenario, results: &[ModeResult]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "scenario {}: {} nodes, {} s at {} kbit/s, RTT {} ms, viewer upload cap {}, slow share {:.0} %, late {:.0} %, churn {} %/min",
        s.name,
        s.nodes,
        s.seconds,
        s.bitrate_kbps,
        s.rtt_ms,
        s.upload_kbps.map_or("none".to_owned(), |k| format!("{k} kbit/s")),
        s.slow_share * 100.0,
        s.late_share * 100.0,
        s.churn_pct_per_min
    );
    let _ = writeln!(
        out,
        "| mode | origin_factor | wire total (payload/dup/control) | latency p50/p95/p99/max ms | join p50/p95 ms | continuity | unverified | cpu s/node | rss MB/node |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for r in results {
        let w = &r.wire_factor;
        let l = &r.latency_ms;
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} ({:.2}/{:.2}/{:.2}) | {:.0}/{:.0}/{:.0}/{:.0} | {:.0}/{:.0} | {:.2} % | {}/{} | {:.2} | {:.1} |",
            r.mode,
            r.origin_factor,
            w.total,
            w.payload,
            w.duplicate,
            w.control,
            l.p50,
            l.p95,
            l.p99,
            l.max,
            r.join_ms.p50,
            r.join_ms.p95,
            r.continuity * 100.0,
            r.unverified_pairs,
            r.pairs,
            r.cpu_s_per_node,
            r.rss_mb_per_node
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    /// Continuity counts a pair only while the viewer is there, and a late
    /// segment counts as verified but not on time.
    #[test]
    fn diagnostics_are_a_mean_per_reporting_viewer() {
        let mut log = RunLog::default();
        log.add_diagnostics(&[("connections", 10), ("trimmed", 1)]);
        log.add_diagnostics(&[("connections", 30), ("trimmed", 0)]);
        // A viewer of a mode without counters does not count.
        log.add_diagnostics(&[]);
        assert_eq!(
            log.diagnostics_line("shoal").as_deref(),
            Some("shoal: per viewer (mean of 2): connections=20.0 trimmed=0.5")
        );
    }

    #[test]
    fn continuity_counts_pairs_in_the_viewers_life() {
        let s = Scenario { segment_ms: 1000, bitrate_kbps: 8, target_latency_ms: 1000, ..Scenario::default() };
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let verified: Verified = Arc::new(Mutex::new(HashMap::from([(0, at(500)), (1, at(3500))])));
        let log = RunLog {
            published: vec![at(0), at(1000), at(2000), at(3000)],
            viewers: vec![ViewerLog {
                joined: at(0),
                left: Some(at(3500)),
                verified,
                upload: 2000,
                payload: 2000,
                duplicate: 0,
            }],
            publisher_upload: 3000,
            ended: Some(at(10_000)),
            ..RunLog::default()
        };
        let r = log.summarise("shoal", &s).result;
        assert_eq!(log.diagnostics_line("shoal"), None, "no viewer reported counters");
        // Segments 0..=2 are due by 3000 ms (< 3500 left); 3 is not counted.
        assert_eq!(r.pairs, 3);
        assert_eq!(r.unverified_pairs, 1); // seq 2
        assert!((r.continuity - 1.0 / 3.0).abs() < 1e-9); // seq 1 was late
        assert_eq!(r.latency_ms.max, 2500.0);
        // 4 segments of 1000 B: the publisher sent 3000 B.
        assert!((r.origin_factor - 0.75).abs() < 1e-9);
    }
}
