//! Every cloud call of every provider goes through a [`CallGuard`]: the
//! client-side limiter (a token bucket per quota bucket of the cloud), then
//! the call, then the retry policy for what may be retried. It also counts.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backon::Retryable;
use serde::Serialize;

use crate::Api;
use crate::error::{CloudError, CloudResult, ErrorClass};
use crate::profile::{BucketId, CloudProfile};
use crate::retry::RetryPolicy;
use crate::token_bucket::{BucketSpec, TokenBucket};

/// Client-side counts for one operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    /// Calls sent, retries included.
    pub sent: u64,
    /// Answers "throttled".
    pub throttled: u64,
    /// Retries made.
    pub retried: u64,
    /// Operations that failed in the end.
    pub failed: u64,
}

/// How one attempt of a cloud call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The cloud answered with success.
    Ok,
    /// The cloud said "slow down".
    Throttled,
    /// Any other error.
    Error,
}

impl AttemptResult {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Ok => "ok",
            AttemptResult::Throttled => "throttled",
            AttemptResult::Error => "error",
        }
    }
}

/// Told about every attempt (metrics): which API, how it ended, how long the
/// cloud took, and how long the client-side limiter held it back first.
pub trait CallObserver: Send + Sync {
    /// One attempt finished.
    fn attempt(&self, api: Api, result: AttemptResult, latency: Duration, limiter_wait: Duration);
}

/// Limiter + retry + counters.
pub struct CallGuard {
    profile: CloudProfile,
    buckets: BTreeMap<BucketId, TokenBucket>,
    retry: RetryPolicy,
    counts: Mutex<BTreeMap<Api, CallCounts>>,
    observer: OnceLock<Arc<dyn CallObserver>>,
}

impl std::fmt::Debug for CallGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGuard").field("profile", &self.profile.kind).field("retry", &self.retry).finish()
    }
}

impl CallGuard {
    /// A guard whose limiter buckets are the given specs (normally the cloud
    /// profile's quotas at a safety margin, or what the admin configured).
    pub fn new(profile: CloudProfile, limits: BTreeMap<BucketId, BucketSpec>, retry: RetryPolicy) -> Self {
        let buckets = limits.into_iter().map(|(id, spec)| (id, TokenBucket::new(spec))).collect();
        Self { profile, buckets, retry, counts: Mutex::new(BTreeMap::new()), observer: OnceLock::new() }
    }

    /// Reports every attempt to `observer` from now on (once; later calls are ignored).
    pub fn observe(&self, observer: Arc<dyn CallObserver>) {
        let _ = self.observer.set(observer);
    }

    /// Waits for the limiter, runs one attempt, reports it.
    async fn attempt<T>(&self, api: Api, call: impl Future<Output = CloudResult<T>>) -> CloudResult<T> {
        let queued = tokio::time::Instant::now();
        if let Some(bucket) = self.buckets.get(&self.profile.bucket_of(api)) {
            bucket.acquire().await;
        }
        let sent = tokio::time::Instant::now();
        self.count(api, |c| c.sent += 1);
        let result = call.await;
        if let Some(observer) = self.observer.get() {
            let outcome = match &result {
                Ok(_) => AttemptResult::Ok,
                Err(e) if e.class == ErrorClass::Throttled => AttemptResult::Throttled,
                Err(_) => AttemptResult::Error,
            };
            observer.attempt(api, outcome, sent.elapsed(), sent - queued);
        }
        result
    }

    /// The profile's quotas at `margin` of their rate (e.g. 0.95): the client
    /// stays just under what the cloud allows.
    pub fn for_profile(profile: CloudProfile, margin: f64, retry: RetryPolicy) -> Self {
        let limits = profile.buckets.iter().map(|(id, spec)| (*id, spec.scaled(margin))).collect();
        Self::new(profile, limits, retry)
    }

    /// The cloud profile.
    pub fn profile(&self) -> &CloudProfile {
        &self.profile
    }

    /// Counts so far, per operation.
    pub fn counts(&self) -> BTreeMap<Api, CallCounts> {
        self.counts.lock().expect("counts lock").clone()
    }

    fn count(&self, api: Api, update: impl FnOnce(&mut CallCounts)) {
        update(self.counts.lock().expect("counts lock").entry(api).or_default());
    }

    /// One attempt, limiter included, no retry: for probes where a fast,
    /// clear failure beats waiting out the backoff.
    pub async fn call_once<T, F, Fut>(&self, api: Api, op: F) -> CloudResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = CloudResult<T>>,
    {
        let result = self.attempt(api, op()).await;
        self.count_outcome(api, &result);
        result
    }

    /// Counts an operation that failed in the end (and whether it was throttled).
    fn count_outcome<T>(&self, api: Api, result: &CloudResult<T>) {
        if let Err(err) = result {
            self.count(api, |c| {
                c.failed += 1;
                if err.class == ErrorClass::Throttled {
                    c.throttled += 1;
                }
            });
        }
    }

    /// Runs one cloud operation: waits for the limiter before every attempt,
    /// retries throttling and (for idempotent calls) transient faults with
    /// full-jitter backoff, and gives up after the policy's attempts.
    pub async fn call<T, F, Fut>(&self, api: Api, op: F) -> CloudResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = CloudResult<T>>,
    {
        let mut op = op;
        // Futures are lazy: nothing of the call runs before the limiter's token.
        let attempt = || self.attempt(api, op());
        let result = attempt
            .retry(self.retry.backoff())
            .sleep(tokio::time::sleep)
            .when(CloudError::is_retryable)
            .notify(|err: &CloudError, wait| {
                self.count(api, |c| {
                    c.retried += 1;
                    if err.class == ErrorClass::Throttled {
                        c.throttled += 1;
                    }
                });
                tracing::debug!(op = api.aws_name(), error = %err, wait_ms = wait.as_millis() as u64, "retrying cloud call");
            })
            .await;
        self.count_outcome(api, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    fn guard(attempts: u32) -> CallGuard {
        let retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), attempts, 5);
        CallGuard::for_profile(CloudProfile::aws(), 1.0, retry)
    }

    fn fail(api: Api, class: ErrorClass) -> CloudError {
        CloudError::new(api, class, "X", "eni-1", "injected")
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_until_it_succeeds() {
        let g = guard(5);
        let tries = AtomicU32::new(0);
        let out = g
            .call(Api::AssignPrivateIpAddresses, || async {
                if tries.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(fail(Api::AssignPrivateIpAddresses, ErrorClass::Throttled))
                } else {
                    Ok(7)
                }
            })
            .await;
        assert_eq!(out, Ok(7));
        let c = g.counts()[&Api::AssignPrivateIpAddresses];
        assert_eq!((c.sent, c.throttled, c.retried, c.failed), (3, 2, 2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_fault_on_non_idempotent_call_is_not_repeated() {
        let g = guard(5);
        let tries = AtomicU32::new(0);
        let out: CloudResult<()> = g
            .call(Api::AssignPrivateIpAddresses, || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(fail(Api::AssignPrivateIpAddresses, ErrorClass::Transient))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1, "assign-by-count must not be blindly repeated");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_fault_on_idempotent_call_is_retried_and_bounded() {
        let g = guard(4);
        let tries = AtomicU32::new(0);
        let out: CloudResult<()> = g
            .call(Api::DescribeNetworkInterfaces, || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(fail(Api::DescribeNetworkInterfaces, ErrorClass::Transient))
            })
            .await;
        assert!(out.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        assert_eq!(g.counts()[&Api::DescribeNetworkInterfaces].failed, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_never_retried() {
        let g = guard(5);
        let tries = AtomicU32::new(0);
        let _: CloudResult<()> = g
            .call(Api::DeleteNetworkInterface, || async {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(fail(Api::DeleteNetworkInterface, ErrorClass::InvalidRequest))
            })
            .await;
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_paces_calls_at_the_bucket_rate() {
        let profile = CloudProfile::aws();
        let limits = BTreeMap::from([
            (BucketId::Mutating, BucketSpec { burst: 2, per_second: 10.0 }),
            (BucketId::NonMutating, BucketSpec { burst: 2, per_second: 10.0 }),
        ]);
        let g = CallGuard::new(profile, limits, RetryPolicy::cloud_default(1));
        let start = tokio::time::Instant::now();
        for _ in 0..12 {
            g.call(Api::CreateTags, || async { Ok(()) }).await.unwrap();
        }
        // 2 from the burst, 10 more at 10/s.
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[derive(Default)]
    struct Seen(Mutex<Vec<(Api, AttemptResult, Duration, Duration)>>);

    impl CallObserver for Seen {
        fn attempt(&self, api: Api, result: AttemptResult, latency: Duration, limiter_wait: Duration) {
            self.0.lock().unwrap().push((api, result, latency, limiter_wait));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_sees_every_attempt_with_its_latency_and_limiter_wait() {
        let mut limits = BTreeMap::new();
        let profile = CloudProfile::aws();
        let bucket = profile.bucket_of(Api::AssignPrivateIpAddresses);
        limits.insert(bucket, BucketSpec { burst: 1, per_second: 1.0 });
        let retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 5, 5);
        let g = CallGuard::new(profile, limits, retry);
        let seen = Arc::new(Seen::default());
        g.observe(seen.clone());
        let tries = AtomicU32::new(0);
        let out = g
            .call(Api::AssignPrivateIpAddresses, || async {
                tokio::time::sleep(Duration::from_millis(30)).await;
                if tries.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(fail(Api::AssignPrivateIpAddresses, ErrorClass::Throttled))
                } else {
                    Ok(())
                }
            })
            .await;
        assert_eq!(out, Ok(()));
        let seen = seen.0.lock().unwrap().clone();
        assert_eq!(seen.len(), 2);
        assert_eq!((seen[0].1, seen[1].1), (AttemptResult::Throttled, AttemptResult::Ok));
        assert_eq!(seen[0].2, Duration::from_millis(30), "latency of the call itself");
        assert_eq!(seen[0].3, Duration::ZERO, "the first token was in the bucket");
        assert!(seen[1].3 > Duration::ZERO, "the retry waited for a token of a 1/s bucket: {:?}", seen[1]);
    }
}
