//! Token buckets: bytes per second served (per peer and in total) and
//! requests per second (per peer). Time is passed in, so the buckets are
//! plain values that tests drive with a fake clock.

use std::{collections::HashMap, hash::Hash, time::Instant};

/// A token bucket that may go into debt: a response is charged after it is
/// sent (its size is known only then), and nothing more is served until the
/// debt is paid back. The long-run rate never exceeds `rate`.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` tokens per second, holding at most
    /// `burst` tokens.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Self { rate, burst, tokens: burst, last: now }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }

    /// Whether there is anything left to spend now.
    pub fn ready(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens > 0.0
    }

    /// Takes `n` tokens if there are that many.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes as many whole tokens as there are, up to `n`, never going
    /// into debt; returns how many it took.
    pub fn take_up_to(&mut self, n: u32, now: Instant) -> u32 {
        self.refill(now);
        let whole = self.tokens.max(0.0).floor().min(f64::from(n));
        self.tokens -= whole;
        whole as u32
    }

    /// Takes `n` tokens, going into debt if needed.
    pub fn charge(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens -= n;
    }

    /// Gives back `n` tokens charged for something that was then not done
    /// (a block shed after it was charged); never past `burst`.
    pub fn refund(&mut self, n: f64, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + n).min(self.burst);
    }

    /// Whether the bucket is full (nothing to remember about it).
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// One bucket per key, bounded: when `max` keys are tracked, full buckets
/// (keys that have been quiet) are forgotten first; if none is full the
/// map is cleared, which favours a flooder for one refill at worst.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    rate: f64,
    burst: f64,
    max: usize,
    map: HashMap<K, TokenBucket>,
}

impl<K: Eq + Hash + Copy> KeyedBuckets<K> {
    /// `rate` per second per key, `burst` tokens, at most `max` keys.
    pub fn new(rate: f64, burst: f64, max: usize) -> Self {
        Self { rate, burst, max, map: HashMap::new() }
    }

    /// The key's bucket (created full).
    pub fn get(&mut self, key: K, now: Instant) -> &mut TokenBucket {
        if self.map.len() >= self.max && !self.map.contains_key(&key) {
            self.map.retain(|_, b| !b.is_full(now));
            if self.map.len() >= self.max {
                self.map.clear();
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.map.entry(key).or_insert_with(|| TokenBucket::new(rate, burst, now))
    }

    /// Forgets a key (the peer disconnected).
    pub fn remove(&mut self, key: &K) {
        self.map.remove(key);
    }
}

/// How far ahead of its rate an upload cap lets this node send: 250 ms of
/// its line. Whatever is sent beyond the line's rate waits in a queue
/// (the kernel's, the link's) in front of every later block, so a bigger
/// burst is latency for every viewer behind it; a quarter second is a
/// small share of a 3 s playback deadline. The bucket may go into debt,
/// so a block larger than the burst is still served whole.
const UPLOAD_BURST_SECS: f64 = 0.25;

/// The burst a bytes-per-second cap allows (see [`UPLOAD_BURST_SECS`]).
pub(crate) fn byte_burst(rate: u64) -> f64 {
    rate as f64 * UPLOAD_BURST_SECS
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn long_run_rate_is_capped_even_with_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, 1000.0, t0);
        let mut served = 0.0;
        // Ten seconds, a 400-byte response whenever the bucket is not in debt.
        for ms in 0..10_000u64 {
            let now = t0 + Duration::from_millis(ms);
            if b.ready(now) {
                b.charge(400.0, now);
                served += 400.0;
            }
        }
        // 1000 burst + 10 s × 1000/s, plus at most one response of debt.
        assert!(served <= 11_400.0, "{served}");
        assert!(served >= 10_000.0, "{served}");
    }

    #[test]
    fn try_take_refuses_without_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t0);
        let n = (0..100).filter(|_| b.try_take(1.0, t0)).count();
        assert_eq!(n, 20);
        assert!(!b.try_take(1.0, t0 + Duration::from_millis(50)));
        assert!(b.try_take(1.0, t0 + Duration::from_millis(150)));
    }

    #[test]
    fn take_up_to_takes_what_there_is() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t0);
        assert_eq!(b.take_up_to(15, t0), 15);
        assert_eq!(b.take_up_to(15, t0), 5);
        assert_eq!(b.take_up_to(15, t0), 0);
        assert_eq!(b.take_up_to(15, t0 + Duration::from_millis(350)), 3);
    }

    #[test]
    fn keyed_buckets_stay_bounded() {
        let t0 = Instant::now();
        let mut k = KeyedBuckets::new(1.0, 1.0, 8);
        for i in 0..100u32 {
            k.get(i, t0).charge(5.0, t0);
            assert!(k.map.len() <= 8);
        }
    }
}
