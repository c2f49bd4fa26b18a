//! How far one latency p99 can be read against another when the samples
//! are few and clumped.
//!
//! A hostile-suite run yields 20 viewers × 10 segments of publish → ready
//! latencies. They are not 200 independent draws: the viewers of one
//! segment share its fate (a scheduler hiccup or a compaction in that
//! second delays most of them), so the p99 of a run is set by one or two
//! segments. The honest way to read a ratio of two such p99s is with the
//! spread a resampling of *segments* gives it: a cluster bootstrap. It is
//! sans-IO and deterministic (seeded), so the same samples always print
//! the same interval.

use rand::{Rng, SeedableRng, rngs::StdRng};

/// Resamples per interval: enough that the 5th and 95th percentiles of
/// the ratio move by under 1 % between seeds, cheap next to a run.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// A ratio of two p99s with its 90 % cluster-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioInterval {
    /// p99(numerator) ÷ p99(denominator) on the samples as measured.
    pub ratio: f64,
    /// 5th percentile of the resampled ratios.
    pub low: f64,
    /// 95th percentile of the resampled ratios.
    pub high: f64,
}

impl std::fmt::Display for RatioInterval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2} (90 % interval {:.2}–{:.2})", self.ratio, self.low, self.high)
    }
}

/// p99 over every sample of every cluster.
pub fn pooled_p99(clusters: &[Vec<f64>]) -> f64 {
    let mut all: Vec<f64> = clusters.iter().flatten().copied().collect();
    all.sort_by(f64::total_cmp);
    crate::percentile(&all, 99.0)
}

/// `crate::percentile(sorted, 99.0)` without the sort: the same rank,
/// found by selection (reorders `xs`).
fn p99_in_place(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let rank = ((0.99 * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    *xs.select_nth_unstable_by(rank - 1, f64::total_cmp).1
}

/// p99(`num`) ÷ p99(`den`), where each inner vector is one cluster (one
/// segment's latencies over the viewers), with the 5th–95th percentile
/// range of the same ratio over `BOOTSTRAP_RESAMPLES` resamplings: each
/// side's clusters drawn with replacement, as many as it has. `None` when
/// either side has no samples.
pub fn p99_ratio_interval(num: &[Vec<f64>], den: &[Vec<f64>], seed: u64) -> Option<RatioInterval> {
    let nonempty = |c: &[Vec<f64>]| c.iter().any(|v| !v.is_empty());
    if !nonempty(num) || !nonempty(den) {
        return None;
    }
    let ratio = pooled_p99(num) / pooled_p99(den);
    let mut rng = StdRng::seed_from_u64(seed);
    // One buffer per side, reused: thousands of resamples of a few
    // thousand samples each, and the p99 needs a selection, not a sort.
    let mut buf = Vec::new();
    let mut draw = |side: &[Vec<f64>], rng: &mut StdRng| -> f64 {
        buf.clear();
        for _ in 0..side.len() {
            buf.extend_from_slice(&side[rng.random_range(0..side.len())]);
        }
        p99_in_place(&mut buf)
    };
    let mut ratios: Vec<f64> = (0..BOOTSTRAP_RESAMPLES)
        .map(|_| {
            let n = draw(num, &mut rng);
            let d = draw(den, &mut rng);
            n / d
        })
        // A resample made only of empty clusters has no p99: leave it out.
        .filter(|r| r.is_finite())
        .collect();
    ratios.sort_by(f64::total_cmp);
    Some(RatioInterval { ratio, low: crate::percentile(&ratios, 5.0), high: crate::percentile(&ratios, 95.0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clusters(n: usize, per: usize, f: impl Fn(usize, usize) -> f64) -> Vec<Vec<f64>> {
        (0..n).map(|i| (0..per).map(|j| f(i, j)).collect()).collect()
    }

    #[test]
    fn identical_sides_give_ratio_one_and_an_interval_around_it() {
        let a = clusters(10, 20, |i, j| 100.0 + (i * 7 + j * 3) as f64 % 50.0);
        let r = p99_ratio_interval(&a, &a, 1).expect("samples");
        assert_eq!(r.ratio, 1.0);
        assert!(r.low <= 1.0 && r.high >= 1.0, "{r}");
    }

    #[test]
    fn one_slow_segment_widens_the_interval_a_uniform_slowdown_does_not() {
        let base = clusters(10, 20, |_, j| 100.0 + j as f64);
        // One segment of ten 60 % slower for every viewer: the p99 moves
        // with it, but resamples without that segment say 1.0.
        let mut one_slow = base.clone();
        one_slow[3].iter_mut().for_each(|x| *x *= 1.6);
        let r = p99_ratio_interval(&one_slow, &base, 2).expect("samples");
        assert!(r.ratio > 1.5, "{r}");
        assert!(r.low <= 1.01, "a resample without the slow segment is not slower: {r}");
        // Every segment 60 % slower: the whole interval is above 1.5.
        let all_slow: Vec<Vec<f64>> = base.iter().map(|c| c.iter().map(|x| x * 1.6).collect()).collect();
        let r = p99_ratio_interval(&all_slow, &base, 2).expect("samples");
        assert!(r.low > 1.5 && r.high < 1.7, "{r}");
    }

    #[test]
    fn selection_finds_the_same_p99_as_the_sorted_percentile() {
        for n in [1usize, 2, 99, 100, 101, 257] {
            let mut xs: Vec<f64> = (0..n).map(|i| ((i * 7919) % 1009) as f64).collect();
            let mut sorted = xs.clone();
            sorted.sort_by(f64::total_cmp);
            assert_eq!(p99_in_place(&mut xs), crate::percentile(&sorted, 99.0), "n = {n}");
        }
        assert!(p99_in_place(&mut []).is_nan());
    }

    #[test]
    fn empty_sides_have_no_ratio_and_the_seed_fixes_the_interval() {
        let a = clusters(5, 4, |i, j| (i + j) as f64 + 1.0);
        assert!(p99_ratio_interval(&a, &[], 1).is_none());
        assert!(p99_ratio_interval(&[vec![]], &a, 1).is_none());
        assert_eq!(p99_ratio_interval(&a, &a, 9), p99_ratio_interval(&a, &a, 9));
    }
}
