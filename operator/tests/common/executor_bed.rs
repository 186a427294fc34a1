//! The executor's test bed: one executor over the in-memory fake cloud (watched
//! through [`Observed`]), with helpers that read the cloud's own state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_api::{EniId, InstanceId, InstanceType, PoolKnobs, ReleaseState, SubnetId, VpcId, Zone};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{
    Api, BucketId, BucketSpec, CallGuard, CloudProfile, CloudProvider, CreateEni, Eni, EniState, RetryPolicy,
};
use eni_ipam_operator::executor::{Executor, ExecutorConfig, NodeOutcome, NodeTarget};
use eni_ipam_operator::instances::InstancesCache;
use eni_ipam_operator::planner::SubnetSelector;
use eni_ipam_operator::resync::Resyncer;

use super::observed::{Lag, Observed};

/// The cluster the bed's executor works for.
pub const CLUSTER: &str = "test-cluster";
/// The bed's VPC.
pub const VPC: &str = "vpc-test";

// ---------------------------------------------------------------------------
// The test bed.
// ---------------------------------------------------------------------------

/// How to build a [`Bed`].
pub struct Setup {
    pub profile: CloudProfile,
    /// Prefix length of the bed's main subnet.
    pub prefix: u8,
    /// Client limiter buckets (`None`: the profile's quotas, at 0.95).
    pub limiter: Option<BTreeMap<BucketId, BucketSpec>>,
    pub release_delay: Duration,
    pub seed: u64,
}

impl Setup {
    pub fn new(profile: CloudProfile) -> Self {
        Self { profile, prefix: 24, limiter: None, release_delay: Duration::from_secs(1), seed: 7 }
    }

    pub fn prefix(mut self, prefix: u8) -> Self {
        self.prefix = prefix;
        self
    }

    pub fn limiter(mut self, limits: BTreeMap<BucketId, BucketSpec>) -> Self {
        self.limiter = Some(limits);
        self
    }

    pub fn build(self) -> Bed {
        let vpc = VpcId::from(VPC);
        let zone = Zone::from("zone-a");
        let cloud = Arc::new(FakeCloud::new(self.profile.clone(), vpc.clone(), self.seed));
        let subnet = cloud.console().add_subnet(
            zone.clone(),
            Ipv4Addr::new(10, 0, 0, 0),
            self.prefix,
            BTreeMap::new(),
        );
        let retry = RetryPolicy::cloud_default(self.seed);
        let guard = match self.limiter {
            Some(limits) => CallGuard::new(self.profile.clone(), limits, retry),
            None => CallGuard::for_profile(self.profile.clone(), 0.95, retry),
        };
        let creates = Arc::new(Mutex::new(Vec::new()));
        let seen = creates.clone();
        let lag = Arc::new(Mutex::new(Lag::default()));
        let provider: Arc<dyn CloudProvider> = Arc::new(Observed {
            inner: FakeProvider::new(cloud.clone(), Arc::new(guard)),
            on_create: Some(Box::new(move |request: &CreateEni| {
                seen.lock().unwrap().push(request.secondary_ips)
            })),
            on_unassign: None,
            lag: lag.clone(),
        });
        let config = ExecutorConfig {
            cluster: CLUSTER.into(),
            vpc,
            release_delay: self.release_delay,
            ..ExecutorConfig::default()
        };
        let executor = executor(&provider, &config, self.seed);
        Bed { cloud, creates, executor, subnet, zone, lag, provider, config, seed: self.seed }
    }
}

fn executor(provider: &Arc<dyn CloudProvider>, config: &ExecutorConfig, seed: u64) -> Executor {
    let cache = Arc::new(InstancesCache::new());
    let resync =
        Resyncer::spawn(provider.clone(), cache.clone(), config.vpc.clone(), Duration::from_millis(100));
    Executor::new(provider.clone(), cache, resync, config.clone(), seed)
}

pub struct Bed {
    pub cloud: Arc<FakeCloud>,
    /// Secondary IPs of every create, in order.
    pub creates: Arc<Mutex<Vec<u32>>>,
    pub executor: Executor,
    /// The main subnet: instances are launched in it.
    pub subnet: SubnetId,
    pub zone: Zone,
    /// What the cloud does that the fake does not (listings that lag, EC2's errors).
    pub lag: Arc<Mutex<Lag>>,
    provider: Arc<dyn CloudProvider>,
    config: ExecutorConfig,
    seed: u64,
}

impl Bed {
    /// The operator restarts: a new executor with an empty cache and memory.
    pub fn restart(&mut self) {
        self.executor = executor(&self.provider, &self.config, self.seed + 1);
    }

    pub fn aws() -> Self {
        Setup::new(CloudProfile::aws()).build()
    }

    pub fn alibaba() -> Self {
        Setup::new(CloudProfile::alibaba()).build()
    }

    /// Another subnet of the bed's zone.
    pub fn add_subnet(&self, base: Ipv4Addr, prefix: u8) -> SubnetId {
        self.cloud.console().add_subnet(self.zone.clone(), base, prefix, BTreeMap::new())
    }

    /// A VM with its primary ENI in the main subnet.
    pub fn launch(&self, instance_type: &str) -> InstanceId {
        self.cloud.console().launch_instance(instance_type, &self.subnet).expect("launch")
    }

    /// The node of an instance, with `pre_allocate` and nothing used.
    pub fn node(
        &self,
        name: &str,
        instance: &InstanceId,
        ty: &str,
        first_index: u32,
        pre: u32,
    ) -> NodeTarget {
        NodeTarget {
            name: name.into(),
            instance: instance.clone(),
            instance_type: InstanceType::from(ty),
            zone: self.zone.clone(),
            knobs: PoolKnobs { pre_allocate: pre, ..PoolKnobs::default() },
            first_interface_index: first_index,
            selector: SubnetSelector::default(),
            security_groups: vec![],
            used: BTreeSet::new(),
            free_since: BTreeMap::new(),
            release: BTreeMap::new(),
            published: BTreeMap::new(),
            primary_eni_ips: None,
        }
    }

    /// Every ENI of the cloud.
    pub fn cloud_enis(&self) -> Vec<Eni> {
        self.cloud.console().all_enis().cloned().collect()
    }

    /// The cloud's ENIs of one instance, by device index.
    pub fn enis_of(&self, instance: &InstanceId) -> Vec<Eni> {
        let mut enis: Vec<Eni> =
            self.cloud_enis().into_iter().filter(|e| e.instance.as_ref() == Some(instance)).collect();
        enis.sort_by_key(|e| e.device_index);
        enis
    }

    /// ENIs the executor created (by their tags).
    pub fn ours(&self) -> Vec<Eni> {
        self.cloud_enis().into_iter().filter(|e| e.is_ours(CLUSTER)).collect()
    }

    /// Server-side calls per operation.
    pub fn calls(&self, api: Api) -> u64 {
        self.cloud.counts().get(&api).map_or(0, |c| c.calls)
    }

    /// Server-side calls of every mutating operation.
    pub fn mutating_calls(&self) -> BTreeMap<Api, u64> {
        self.cloud.counts().into_iter().filter(|(api, _)| !api.is_read()).map(|(a, c)| (a, c.calls)).collect()
    }

    /// Free addresses of a subnet, as the cloud counts them.
    pub fn free_ips(&self, subnet: &SubnetId) -> u32 {
        let subnets = self.cloud.console().list_subnets(&VpcId::from(VPC));
        subnets.into_iter().find(|s| &s.id == subnet).expect("subnet exists").free_ips
    }

    /// Secondary IPs the executor asked for in each create call.
    pub fn creates(&self) -> Vec<u32> {
        self.creates.lock().unwrap().clone()
    }

    /// Nothing leaked: no ENI is left detached, and every ENI we created is
    /// attached (in use) to some instance.
    pub fn assert_no_leak(&self) {
        for eni in self.cloud_enis() {
            assert_ne!(eni.state, EniState::Detached, "ENI left detached (leak): {eni:?}");
        }
        for eni in self.ours() {
            assert!(eni.instance.is_some() && eni.state == EniState::InUse, "our ENI not in use: {eni:?}");
        }
    }

    /// The published pool is exactly the secondary IPs of the node's usable
    /// ENIs in the cloud that are ours (our tags, or the primary ENI, where these
    /// tests put no other writer's IP), each on the ENI it names.
    pub fn assert_pool_matches_cloud(&self, node: &NodeTarget, outcome: &NodeOutcome) {
        let mut in_cloud = BTreeMap::new();
        for eni in self.enis_of(&node.instance) {
            let ours = eni.is_ours(CLUSTER) || eni.device_index == Some(0);
            if ours
                && eni.state == EniState::InUse
                && eni.device_index.unwrap_or(0) >= node.first_interface_index
            {
                for ip in &eni.secondary_ips {
                    in_cloud.insert(*ip, eni.id.clone());
                }
            }
        }
        let published: BTreeMap<Ipv4Addr, EniId> =
            outcome.pool.iter().map(|(ip, entry)| (*ip, entry.eni.clone())).collect();
        assert_eq!(published, in_cloud, "node {}: pool differs from the cloud", node.name);
    }
}

/// Since when each pool IP is free: all of them from the start.
pub fn free_since_start(outcome: &NodeOutcome) -> BTreeMap<Ipv4Addr, Duration> {
    outcome.pool.keys().map(|ip| (*ip, Duration::ZERO)).collect()
}

/// The IPs an outcome marks for release, answered `ready` as the node's agent would.
pub fn answered_ready(outcome: &NodeOutcome) -> BTreeMap<Ipv4Addr, ReleaseState> {
    outcome
        .release
        .iter()
        .filter(|(_, change)| **change == Some(ReleaseState::Marked))
        .map(|(ip, _)| (*ip, ReleaseState::Ready))
        .collect()
}

/// One release through the handshake: converge (marks), the agent answers, converge (releases).
pub async fn release_round(bed: &Bed, node: &mut NodeTarget) -> NodeOutcome {
    let unassigns = bed.calls(Api::UnassignPrivateIpAddresses);
    let marked = bed.executor.converge(node).await.expect("marks");
    assert_eq!(
        bed.calls(Api::UnassignPrivateIpAddresses),
        unassigns,
        "nothing leaves before the agent answers"
    );
    assert!(!marked.plan.mark.is_empty(), "the excess is marked: {:?}", marked.plan);
    node.release = answered_ready(&marked);
    bed.executor.converge(node).await.expect("releases")
}
