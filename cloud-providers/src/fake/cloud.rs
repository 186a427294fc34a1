//! The fake cloud as a service: quotas enforced per bucket like the real
//! clouds (an over-quota call is answered "throttled" and does nothing),
//! injected faults, server-side counters. The state lives in [`CloudState`].

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use eni_ipam_api::VpcId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

use super::state::CloudState;
use crate::Api;
use crate::error::{CloudError, CloudResult, ErrorClass};
use crate::profile::{BucketId, CloudProfile};
use crate::token_bucket::TokenBucket;

/// What the cloud saw of one operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ServerCounts {
    /// Calls that reached the cloud.
    pub calls: u64,
    /// Calls answered "throttled".
    pub throttled: u64,
    /// Calls answered with an injected fault.
    pub faulted: u64,
}

/// Faults to inject.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// Share of calls (0..=1) answered with a 5xx before doing anything.
    pub transient_rate: f64,
    /// Share of calls (0..=1) answered "throttled" although the quota has room
    /// (a region under load elsewhere).
    pub throttle_rate: f64,
}

/// An in-memory cloud with one VPC.
#[derive(Debug)]
pub struct FakeCloud {
    profile: CloudProfile,
    state: Mutex<CloudState>,
    buckets: BTreeMap<BucketId, TokenBucket>,
    counts: Mutex<BTreeMap<Api, ServerCounts>>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
}

impl FakeCloud {
    /// A cloud with the profile's quotas and an empty VPC.
    pub fn new(profile: CloudProfile, vpc: VpcId, seed: u64) -> Self {
        let buckets = profile.buckets.iter().map(|(id, spec)| (*id, TokenBucket::new(*spec))).collect();
        Self {
            state: Mutex::new(CloudState::new(profile.clone(), vpc)),
            profile,
            buckets,
            counts: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Faults::default()),
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed_c10d)),
        }
    }

    /// The profile.
    pub fn profile(&self) -> &CloudProfile {
        &self.profile
    }

    /// Sets the faults to inject from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().expect("faults lock") = faults;
    }

    /// Direct access to the state: the cloud console, for setting up a
    /// scenario and checking invariants. Not quota'd, not counted.
    pub fn console(&self) -> MutexGuard<'_, CloudState> {
        let mut state = self.state.lock().expect("cloud state lock");
        state.settle(Instant::now());
        state
    }

    /// What the cloud saw, per operation.
    pub fn counts(&self) -> BTreeMap<Api, ServerCounts> {
        self.counts.lock().expect("counts lock").clone()
    }

    /// A random factor in `0.75..1.25` for latencies.
    pub fn jitter(&self) -> f64 {
        self.rng.lock().expect("rng lock").random_range(0.75..1.25)
    }

    /// Serves one API call: quota, then faults, then the state change.
    pub fn serve<T>(
        &self,
        api: Api,
        object: &str,
        apply: impl FnOnce(&mut CloudState) -> CloudResult<T>,
    ) -> CloudResult<T> {
        let mut counts = self.counts.lock().expect("counts lock");
        let entry = counts.entry(api).or_default();
        entry.calls += 1;
        let faults = *self.faults.lock().expect("faults lock");
        let draw = |rate: f64| rate > 0.0 && self.rng.lock().expect("rng lock").random_bool(rate.min(1.0));
        let bucket = self.buckets.get(&self.profile.bucket_of(api));
        let over_quota = bucket.is_some_and(|b| !b.try_acquire());
        if over_quota || draw(faults.throttle_rate) {
            entry.throttled += 1;
            let why = if over_quota { "request rate exceeded" } else { "request rate exceeded (injected)" };
            return Err(CloudError::new(api, ErrorClass::Throttled, self.profile.throttle_code, object, why));
        }
        if draw(faults.transient_rate) {
            entry.faulted += 1;
            return Err(CloudError::new(
                api,
                ErrorClass::Transient,
                "InternalError",
                object,
                "injected fault",
            ));
        }
        drop(counts);
        let mut state = self.state.lock().expect("cloud state lock");
        state.settle(Instant::now());
        apply(&mut state)
    }
}
