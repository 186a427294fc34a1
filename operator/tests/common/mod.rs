//! What the controller tests share: a fake cloud fast enough for real time,
//! and `run`'s settings for it.

#![allow(dead_code)] // each test binary uses its own part

use std::time::Duration;

use eni_ipam_api::VpcId;
use eni_ipam_cloud::CloudProfile;
use eni_ipam_cloud::token_bucket::BucketSpec;
use eni_ipam_operator::controller::ControllerConfig;
use eni_ipam_operator::run::RunConfig;

/// An AWS-shaped profile whose quotas and delays do not slow a real-time test.
pub fn fast_profile() -> CloudProfile {
    let mut profile = CloudProfile::aws();
    for spec in profile.buckets.values_mut() {
        *spec = BucketSpec { burst: 100_000, per_second: 100_000.0 };
    }
    profile.attach_delay = Duration::from_millis(5);
    profile.read_latency = Duration::ZERO;
    profile.write_latency = Duration::ZERO;
    profile
}

/// `run`'s settings for a test: first device index 1, no leader election, no Events.
pub fn run_config(cluster: &str, vpc: &str, workers: usize, seed: u64) -> RunConfig {
    RunConfig {
        controller: ControllerConfig {
            default_first_interface_index: 1,
            ..ControllerConfig::new(cluster, VpcId::from(vpc), workers, seed)
        },
        resync_interval: Duration::from_secs(60),
        gc_interval: Duration::from_secs(600),
        gc_grace: Duration::from_secs(600),
        leader: None,
        node_events: false,
    }
}

/// A kube client for the stand-in at `url`.
pub fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().expect("the stand-in's URL"))).expect("a client")
}
