//! The one retry policy: exponential backoff with FULL jitter (a random wait
//! in `0..=min(cap, base * 2^attempt)`), so thousands of clients that failed
//! together do not come back together. Bounded in attempts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Backoff settings.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// No wait is ever longer.
    pub cap: Duration,
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Full jitter (ours); `false` waits exactly the ceiling, the way some
    /// peers do (kept only so the simulator can compare the two).
    pub jitter: bool,
    rng: Arc<Mutex<StdRng>>,
}

impl RetryPolicy {
    /// A policy whose jitter comes from a seeded generator (reproducible runs).
    pub fn new(base: Duration, cap: Duration, max_attempts: u32, seed: u64) -> Self {
        Self { base, cap, max_attempts, jitter: true, rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))) }
    }

    /// The defaults for cloud calls: 250 ms base, 30 s cap, 8 attempts.
    pub fn cloud_default(seed: u64) -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(30), 8, seed)
    }

    /// The ceiling of the wait before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The same backoff without jitter: every client that failed together
    /// comes back together (the baseline the simulator measures ours against).
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// A full-jitter wait for retry number `attempt`.
    pub fn jittered(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if !self.jitter {
            return ceiling;
        }
        let mut rng = self.rng.lock().expect("retry rng lock");
        ceiling.mul_f64(rng.random::<f64>())
    }

    /// The waits of one retried operation, as backon wants them.
    pub fn backoff(&self) -> FullJitter {
        FullJitter { policy: self.clone(), attempt: 0 }
    }
}

/// Iterator of full-jitter waits; ends after `max_attempts - 1` retries.
#[derive(Debug)]
pub struct FullJitter {
    policy: RetryPolicy,
    attempt: u32,
}

impl Iterator for FullJitter {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        if self.attempt + 1 >= self.policy.max_attempts {
            return None;
        }
        let wait = self.policy.jittered(self.attempt);
        self.attempt += 1;
        Some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 8, 1);
        let ceilings: Vec<_> = (0..6).map(|a| p.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn waits_are_spread_over_the_whole_range_not_clustered() {
        let p = RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(1), 2, 7);
        let waits: Vec<f64> = (0..1000).map(|_| p.jittered(0).as_secs_f64()).collect();
        assert!(waits.iter().all(|w| (0.0..=1.0).contains(w)));
        let low = waits.iter().filter(|w| **w < 0.25).count();
        let high = waits.iter().filter(|w| **w > 0.75).count();
        // Full jitter: each quarter holds about a quarter of the waits.
        assert!((180..320).contains(&low), "low quarter {low}");
        assert!((180..320).contains(&high), "high quarter {high}");
    }

    #[test]
    fn without_jitter_every_client_waits_the_same() {
        let p = RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(300), 8, 1).without_jitter();
        let waits: Vec<_> = p.backoff().map(|d| d.as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn backoff_is_bounded_by_max_attempts() {
        let p = RetryPolicy::new(Duration::from_millis(10), Duration::from_secs(1), 4, 3);
        assert_eq!(p.backoff().count(), 3);
    }

    #[test]
    fn same_seed_same_waits() {
        let a = RetryPolicy::cloud_default(42);
        let b = RetryPolicy::cloud_default(42);
        let wa: Vec<_> = a.backoff().collect();
        let wb: Vec<_> = b.backoff().collect();
        assert_eq!(wa, wb);
    }
}
