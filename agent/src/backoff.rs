//! Full-jitter backoff: a random wait in `0..=min(cap, base * 2^attempt)`, so
//! a fleet of agents that failed together does not retry together.

use std::time::Duration;

use rand::Rng;

/// The retry policy for ENINode writes and registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FullJitter {
    /// Ceiling of the first wait.
    pub base: Duration,
    /// Ceiling of every wait.
    pub cap: Duration,
}

impl FullJitter {
    /// The upper bound of the wait before retry number `attempt` (0-based).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.base.saturating_mul(2u32.saturating_pow(attempt.min(31))).min(self.cap)
    }

    /// A random wait for retry number `attempt`.
    pub fn wait(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

/// A generator seeded from the clock and the pid: agents on different nodes draw different waits.
pub fn jitter_rng() -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    rand::rngs::StdRng::seed_from_u64(nanos ^ (u64::from(std::process::id()) << 32))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn ceilings_double_up_to_the_cap_and_waits_stay_below() {
        let policy = FullJitter { base: Duration::from_millis(200), cap: Duration::from_secs(10) };
        let ceilings: Vec<u64> = (0..8).map(|n| policy.ceiling(n).as_millis() as u64).collect();
        assert_eq!(ceilings, [200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]);
        assert_eq!(policy.ceiling(u32::MAX), Duration::from_secs(10));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let waits: Vec<Duration> = (0..200).map(|_| policy.wait(6, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w <= policy.cap));
        let below_half = waits.iter().filter(|w| **w < Duration::from_secs(5)).count();
        assert!(
            (60..140).contains(&below_half),
            "full jitter spreads over the whole range: {below_half}/200"
        );
    }
}
