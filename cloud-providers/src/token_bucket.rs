//! A token bucket on tokio's clock. The same bucket serves both sides: the
//! client limiter waits for a token (`acquire`), the fake cloud answers
//! "throttled" when none is left (`try_acquire`). Being on tokio's clock, it
//! follows the simulator's paused virtual time exactly.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Capacity and refill of one bucket.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct BucketSpec {
    /// Tokens the bucket holds when full (the burst).
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl BucketSpec {
    /// A quota stated per minute (Alibaba's style): the full minute's worth
    /// may be spent at once, then it refills evenly.
    pub fn per_minute(count: u32) -> Self {
        Self { burst: count, per_second: f64::from(count) / 60.0 }
    }

    /// The same bucket at a fraction of the rate (client-side safety margin).
    pub fn scaled(self, factor: f64) -> Self {
        Self { burst: self.burst, per_second: self.per_second * factor }
    }

    /// Least time to serve `calls` calls starting from a full bucket.
    pub fn time_for(self, calls: u64) -> Duration {
        let over = calls.saturating_sub(u64::from(self.burst));
        Duration::from_secs_f64(over as f64 / self.per_second)
    }
}

#[derive(Debug)]
struct Level {
    /// May go negative: callers that reserved a future token.
    tokens: f64,
    at: Instant,
}

/// One bucket.
#[derive(Debug)]
pub struct TokenBucket {
    spec: BucketSpec,
    level: Mutex<Level>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(spec: BucketSpec) -> Self {
        Self { spec, level: Mutex::new(Level { tokens: f64::from(spec.burst), at: Instant::now() }) }
    }

    /// The bucket's spec.
    pub fn spec(&self) -> BucketSpec {
        self.spec
    }

    fn refill(&self, level: &mut Level, now: Instant) {
        let elapsed = now.saturating_duration_since(level.at).as_secs_f64();
        level.tokens = (level.tokens + elapsed * self.spec.per_second).min(f64::from(self.spec.burst));
        level.at = now;
    }

    /// Takes a token if one is there now.
    pub fn try_acquire(&self) -> bool {
        let mut level = self.level.lock().expect("token bucket lock");
        self.refill(&mut level, Instant::now());
        if level.tokens >= 1.0 {
            level.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Reserves the next token and waits until it is due. Reservations are
    /// served in call order, so waiters never race each other.
    pub async fn acquire(&self) {
        let wait = {
            let mut level = self.level.lock().expect("token bucket lock");
            self.refill(&mut level, Instant::now());
            level.tokens -= 1.0;
            if level.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-level.tokens / self.spec.per_second)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let bucket = TokenBucket::new(BucketSpec { burst: 3, per_second: 2.0 });
        assert!(bucket.try_acquire() && bucket.try_acquire() && bucket.try_acquire());
        assert!(!bucket.try_acquire(), "a 4th call in the same instant is throttled");
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(bucket.try_acquire(), "one token back after 1/rate");
        assert!(!bucket.try_acquire());
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_spaces_waiters_at_the_rate() {
        let bucket = TokenBucket::new(BucketSpec { burst: 1, per_second: 4.0 });
        let start = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        // 1 from the burst, 4 more at 4/s.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[test]
    fn time_for_counts_only_calls_beyond_the_burst() {
        let spec = BucketSpec { burst: 200, per_second: 5.0 };
        assert_eq!(spec.time_for(100), Duration::ZERO);
        assert_eq!(spec.time_for(1200), Duration::from_secs(200));
        assert_eq!(BucketSpec::per_minute(500).time_for(1000), Duration::from_secs(60));
    }
}
