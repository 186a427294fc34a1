//! `Executor::converge` against the in-memory fake cloud: every test checks
//! its result against the cloud's own state (`cloud.console()`), not only
//! against what the executor says it did.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_api::{EniId, InstanceId, InstanceType, PoolKnobs, ReleaseState, SubnetId, VpcId, Zone};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider, Faults};
use eni_ipam_cloud::{
    Api, BucketId, BucketSpec, CallGuard, CloudProfile, CloudProvider, CreateEni, Eni, EniState, RetryPolicy,
    tag,
};
use eni_ipam_operator::executor::{ExecError, Executor, ExecutorConfig, NodeOutcome, NodeTarget};
use eni_ipam_operator::instances::InstancesCache;
use eni_ipam_operator::planner::{Shortfall, SubnetSelector};
use eni_ipam_operator::resync::Resyncer;
use futures::future::join_all;
use tokio::time::Instant;

const CLUSTER: &str = "test-cluster";
mod common;

use common::observed::Observed;

const VPC: &str = "vpc-test";

// ---------------------------------------------------------------------------
// The test bed.
// ---------------------------------------------------------------------------

/// How to build a [`Bed`].
struct Setup {
    profile: CloudProfile,
    /// Prefix length of the bed's main subnet.
    prefix: u8,
    /// Client limiter buckets (`None`: the profile's quotas, at 0.95).
    limiter: Option<BTreeMap<BucketId, BucketSpec>>,
    release_delay: Duration,
    seed: u64,
}

impl Setup {
    fn new(profile: CloudProfile) -> Self {
        Self { profile, prefix: 24, limiter: None, release_delay: Duration::from_secs(1), seed: 7 }
    }

    fn prefix(mut self, prefix: u8) -> Self {
        self.prefix = prefix;
        self
    }

    fn limiter(mut self, limits: BTreeMap<BucketId, BucketSpec>) -> Self {
        self.limiter = Some(limits);
        self
    }

    fn build(self) -> Bed {
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
        let provider: Arc<dyn CloudProvider> = Arc::new(Observed {
            inner: FakeProvider::new(cloud.clone(), Arc::new(guard)),
            on_create: Some(Box::new(move |request: &CreateEni| {
                seen.lock().unwrap().push(request.secondary_ips)
            })),
            on_unassign: None,
        });
        let cache = Arc::new(InstancesCache::new());
        let resync =
            Resyncer::spawn(provider.clone(), cache.clone(), vpc.clone(), Duration::from_millis(100));
        let config = ExecutorConfig {
            cluster: CLUSTER.into(),
            vpc,
            release_delay: self.release_delay,
            ..ExecutorConfig::default()
        };
        let executor = Executor::new(provider, cache, resync, config, self.seed);
        Bed { cloud, creates, executor, subnet, zone }
    }
}

struct Bed {
    cloud: Arc<FakeCloud>,
    /// Secondary IPs of every create, in order.
    creates: Arc<Mutex<Vec<u32>>>,
    executor: Executor,
    /// The main subnet: instances are launched in it.
    subnet: SubnetId,
    zone: Zone,
}

impl Bed {
    fn aws() -> Self {
        Setup::new(CloudProfile::aws()).build()
    }

    fn alibaba() -> Self {
        Setup::new(CloudProfile::alibaba()).build()
    }

    /// Another subnet of the bed's zone.
    fn add_subnet(&self, base: Ipv4Addr, prefix: u8) -> SubnetId {
        self.cloud.console().add_subnet(self.zone.clone(), base, prefix, BTreeMap::new())
    }

    /// A VM with its primary ENI in the main subnet.
    fn launch(&self, instance_type: &str) -> InstanceId {
        self.cloud.console().launch_instance(instance_type, &self.subnet).expect("launch")
    }

    /// The node of an instance, with `pre_allocate` and nothing used.
    fn node(&self, name: &str, instance: &InstanceId, ty: &str, first_index: u32, pre: u32) -> NodeTarget {
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
        }
    }

    /// Every ENI of the cloud.
    fn cloud_enis(&self) -> Vec<Eni> {
        self.cloud.console().all_enis().cloned().collect()
    }

    /// The cloud's ENIs of one instance, by device index.
    fn enis_of(&self, instance: &InstanceId) -> Vec<Eni> {
        let mut enis: Vec<Eni> =
            self.cloud_enis().into_iter().filter(|e| e.instance.as_ref() == Some(instance)).collect();
        enis.sort_by_key(|e| e.device_index);
        enis
    }

    /// ENIs the executor created (by their tags).
    fn ours(&self) -> Vec<Eni> {
        self.cloud_enis().into_iter().filter(|e| e.is_ours(CLUSTER)).collect()
    }

    /// Server-side calls per operation.
    fn calls(&self, api: Api) -> u64 {
        self.cloud.counts().get(&api).map_or(0, |c| c.calls)
    }

    /// Server-side calls of every mutating operation.
    fn mutating_calls(&self) -> BTreeMap<Api, u64> {
        self.cloud.counts().into_iter().filter(|(api, _)| !api.is_read()).map(|(a, c)| (a, c.calls)).collect()
    }

    /// Free addresses of a subnet, as the cloud counts them.
    fn free_ips(&self, subnet: &SubnetId) -> u32 {
        let subnets = self.cloud.console().list_subnets(&VpcId::from(VPC));
        subnets.into_iter().find(|s| &s.id == subnet).expect("subnet exists").free_ips
    }

    /// Secondary IPs the executor asked for in each create call.
    fn creates(&self) -> Vec<u32> {
        self.creates.lock().unwrap().clone()
    }

    /// Nothing leaked: no ENI is left detached, and every ENI we created is
    /// attached (in use) to some instance.
    fn assert_no_leak(&self) {
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
    fn assert_pool_matches_cloud(&self, node: &NodeTarget, outcome: &NodeOutcome) {
        let mut in_cloud = BTreeMap::new();
        for eni in self.enis_of(&node.instance) {
            let ours = eni.is_ours(CLUSTER) || eni.device_index == Some(0);
            if ours && eni.state == EniState::InUse && eni.device_index.unwrap_or(0) >= node.first_interface_index {
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

// ---------------------------------------------------------------------------
// 1, 2: a fresh node, then idempotence.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn fresh_aws_node_fills_its_primary_eni_with_one_assign() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let node = bed.node("node-a", &instance, "m5.large", 0, 8);

    let outcome = bed.executor.converge(&node).await.expect("converges");

    assert!(outcome.ready(), "{:?}", outcome.plan);
    assert_eq!(outcome.pool.len(), 8);
    assert_eq!(outcome.capacity, 3 * 9);
    let enis = bed.enis_of(&instance);
    assert_eq!(enis.len(), 1, "first index 0 needs no new ENI");
    let primary = &enis[0];
    assert_eq!(primary.device_index, Some(0));
    assert_eq!(primary.secondary_ips.len(), 8);
    for (ip, entry) in &outcome.pool {
        assert_eq!(entry.eni, primary.id);
        assert!(primary.secondary_ips.contains(ip), "{ip} is not on {} in the cloud", primary.id);
        assert_ne!(*ip, primary.primary_ip, "the ENI's own address is never a pod IP");
    }
    bed.assert_pool_matches_cloud(&node, &outcome);
    // The agent's subnet CIDR and gateway: AWS's VPC router is the network address + 1.
    let status = &outcome.enis[primary.id.as_str()];
    assert_eq!((status.subnet_cidr.as_str(), status.gateway.as_str()), ("10.0.0.0/24", "10.0.0.1"));
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), 1);
    assert_eq!(bed.calls(Api::CreateNetworkInterface), 0);
    assert_eq!(bed.calls(Api::AttachNetworkInterface), 0);
}

#[tokio::test(start_paused = true)]
async fn converging_a_ready_node_again_changes_nothing() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let node = bed.node("node-a", &instance, "m5.large", 0, 8);
    let first = bed.executor.converge(&node).await.expect("converges");
    let before = bed.mutating_calls();
    let enis_before = bed.cloud_enis();

    tokio::time::sleep(Duration::from_secs(600)).await;
    let second = bed.executor.converge(&node).await.expect("converges again");

    assert!(second.ready());
    assert!(second.plan.actions.is_empty());
    assert_eq!(bed.mutating_calls(), before, "a ready node costs no mutating call");
    assert_eq!(bed.cloud_enis(), enis_before);
    assert_eq!(second.pool, first.pool);
}

#[tokio::test(start_paused = true)]
async fn converging_a_ready_alibaba_node_again_changes_nothing() {
    let bed = Bed::alibaba();
    let instance = bed.launch("ecs.g7.xlarge");
    let node = bed.node("node-a", &instance, "ecs.g7.xlarge", 1, 12);
    bed.executor.converge(&node).await.expect("converges");
    let before = bed.mutating_calls();

    let again = bed.executor.converge(&node).await.expect("converges again");

    assert!(again.ready());
    assert_eq!(bed.mutating_calls(), before);
    assert_eq!(bed.ours().len(), 1);
}

// ---------------------------------------------------------------------------
// 3: a secondary ENI on Alibaba.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn alibaba_node_gets_a_tagged_secondary_eni_and_assigns_what_create_cannot_carry() {
    let bed = Bed::alibaba();
    let instance = bed.launch("ecs.g7.xlarge");
    let node = bed.node("node-ali", &instance, "ecs.g7.xlarge", 1, 12);

    let outcome = bed.executor.converge(&node).await.expect("converges");

    assert!(outcome.ready(), "{:?}", outcome.plan);
    assert_eq!(outcome.pool.len(), 12);
    let enis = bed.enis_of(&instance);
    assert_eq!(enis.len(), 2, "primary + one secondary ENI: {enis:?}");
    let primary = &enis[0];
    assert!(primary.secondary_ips.is_empty(), "first index 1: the primary ENI serves no pods");
    let eni = &enis[1];
    assert_eq!(eni.device_index, Some(1));
    assert_eq!(eni.state, EniState::InUse);
    assert_eq!(eni.secondary_ips.len(), 12);
    assert_eq!(eni.tags.get(tag::CLUSTER).map(String::as_str), Some(CLUSTER));
    assert_eq!(eni.tags.get(tag::NODE).map(String::as_str), Some("node-ali"));
    assert_eq!(eni.tags.get(tag::CREATED_BY).map(String::as_str), Some(tag::CREATOR));
    assert!(outcome.pool.values().all(|p| p.eni == eni.id && p.subnet == bed.subnet));
    bed.assert_pool_matches_cloud(&node, &outcome);
    // Alibaba's vSwitch gateway is the first of the three addresses it keeps at the top.
    let status = &outcome.enis[eni.id.as_str()];
    assert_eq!((status.subnet_cidr.as_str(), status.gateway.as_str()), ("10.0.0.0/24", "10.0.0.253"));
    assert!(
        enis.iter()
            .flat_map(|e| e.secondary_ips.iter().chain([&e.primary_ip]))
            .all(|ip| ip.octets()[3] < 253),
        "the fake Alibaba cloud never hands out the vSwitch's reserved top addresses"
    );

    let creates = bed.creates();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(creates[0] <= 10, "Alibaba's create carries at most 10 IPs: {creates:?}");
    assert_eq!(creates[0], 10);
    assert_eq!(bed.calls(Api::CreateNetworkInterface), 1);
    assert_eq!(bed.calls(Api::AttachNetworkInterface), 1);
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), 1, "the 2 left over in one assign");
    bed.assert_no_leak();
}

// ---------------------------------------------------------------------------
// 4: attach failures clean up after themselves.
// ---------------------------------------------------------------------------

/// An ENI made straight in the cloud (another writer) and attached at `index`.
fn attach_foreign(bed: &Bed, instance: &InstanceId, subnet: &SubnetId, index: u32, ips: u32) -> EniId {
    let mut console = bed.cloud.console();
    let eni = console
        .create_eni(&CreateEni {
            subnet: subnet.clone(),
            security_groups: vec![],
            secondary_ips: ips,
            tags: BTreeMap::new(),
            client_token: format!("foreign-{index}-{}", instance.as_str()),
        })
        .expect("console create");
    console.attach_eni(&eni.id, instance, index, Instant::now()).expect("console attach");
    eni.id
}

#[tokio::test(start_paused = true)]
async fn attach_to_a_taken_index_deletes_the_new_eni_and_uses_the_next_index() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    bed.executor.converge(&node).await.expect("converges");
    // Another writer takes index 1; the executor's cache does not know yet.
    let foreign = attach_foreign(&bed, &instance, &bed.subnet, 1, 0);

    // 9 pod IPs per ENI: the primary's and those of a new ENI (the foreign one gets none).
    node.knobs.pre_allocate = 18;
    let outcome = bed.executor.converge(&node).await.expect("re-plans after the failed attach");

    assert!(outcome.ready(), "{:?}", outcome.plan);
    assert_eq!(outcome.pool.len(), 18);
    assert!(bed.enis_of(&instance)[1].secondary_ips.is_empty(), "no IP assigned on the foreign ENI");
    assert_eq!(bed.calls(Api::CreateNetworkInterface), 2, "one at the taken index, one at the next");
    assert_eq!(bed.calls(Api::DeleteNetworkInterface), 1, "the unattachable ENI was deleted");
    let ours = bed.ours();
    assert_eq!(ours.len(), 1, "only the attached one of ours remains: {ours:?}");
    assert_eq!(ours[0].device_index, Some(2));
    let enis = bed.enis_of(&instance);
    assert_eq!(enis.iter().map(|e| e.device_index).collect::<Vec<_>>(), vec![Some(0), Some(1), Some(2)]);
    assert_eq!(enis[1].id, foreign);
    bed.assert_pool_matches_cloud(&node, &outcome);
    bed.assert_no_leak();
}

#[tokio::test(start_paused = true)]
async fn attach_to_a_full_instance_leaks_nothing() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    bed.executor.converge(&node).await.expect("converges");
    // The instance gets its maximum of 3 ENIs behind the executor's back.
    attach_foreign(&bed, &instance, &bed.subnet, 1, 0);
    attach_foreign(&bed, &instance, &bed.subnet, 2, 0);

    node.knobs.pre_allocate = 30; // the foreign ENIs leave only the primary's 9
    let result = bed.executor.converge(&node).await;

    if let Ok(outcome) = &result {
        assert_eq!(outcome.plan.shortfall, Some(Shortfall::InstanceLimit { missing: 21 }));
        assert_eq!(outcome.pool.len(), 9);
        assert_eq!(outcome.capacity, 9, "the foreign ENIs' slots are not this cluster's capacity");
        bed.assert_pool_matches_cloud(&node, outcome);
    }
    assert!(bed.calls(Api::CreateNetworkInterface) >= 1, "the stale plan did try to create");
    assert_eq!(bed.ours(), vec![], "every ENI the executor created is gone again");
    assert_eq!(bed.enis_of(&instance).len(), 3);
    bed.assert_no_leak();
    assert!(result.is_ok(), "{result:?}");
}

/// The subnet accounting of the cache must not keep the addresses of an ENI
/// that was deleted after a failed attach: else the node is told its subnets
/// are exhausted while the cloud has room.
#[tokio::test(start_paused = true)]
async fn a_failed_attach_gives_its_addresses_back_to_the_subnet_count() {
    let bed = Bed::aws();
    let pods = bed.add_subnet(Ipv4Addr::new(10, 1, 0, 0), 26); // 59 free
    let other = bed.add_subnet(Ipv4Addr::new(10, 2, 0, 0), 28); // 11 free
    let instance = bed.launch("m5.4xlarge"); // 8 ENIs x 30 IPs
    let mut node = bed.node("node-a", &instance, "m5.4xlarge", 1, 1);
    node.selector = SubnetSelector { ids: vec![pods.clone()], tags: BTreeMap::new() };
    bed.executor.converge(&node).await.expect("converges");
    assert_eq!(bed.free_ips(&pods), 57);
    // Another writer fills `other` with an ENI at index 2, unknown to the cache.
    attach_foreign(&bed, &instance, &other, 2, 10);
    assert_eq!(bed.free_ips(&other), 0);

    node.knobs.pre_allocate = 50;
    let outcome = bed.executor.converge(&node).await.expect("converges");

    assert_eq!(bed.calls(Api::DeleteNetworkInterface), 1, "the stale plan's ENI hit the taken index");
    assert!(
        outcome.ready(),
        "the cloud has {} free in the pods' subnet, yet: {:?}",
        bed.free_ips(&pods),
        outcome.plan
    );
    assert_eq!(outcome.pool.len(), 50);
    bed.assert_pool_matches_cloud(&node, &outcome);
    bed.assert_no_leak();
}

// ---------------------------------------------------------------------------
// 5: release.
// ---------------------------------------------------------------------------

/// Every pool IP free since the executor started.
fn free_since_start(outcome: &NodeOutcome) -> BTreeMap<Ipv4Addr, Duration> {
    outcome.pool.keys().map(|ip| (*ip, Duration::ZERO)).collect()
}

/// The IPs an outcome marks for release, answered `ready` as the node's agent would.
fn answered_ready(outcome: &NodeOutcome) -> BTreeMap<Ipv4Addr, ReleaseState> {
    outcome
        .release
        .iter()
        .filter(|(_, change)| **change == Some(ReleaseState::Marked))
        .map(|(ip, _)| (*ip, ReleaseState::Ready))
        .collect()
}

/// One release through the handshake: converge (marks), the agent answers, converge (releases).
async fn release_round(bed: &Bed, node: &mut NodeTarget) -> NodeOutcome {
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

#[tokio::test(start_paused = true)]
async fn free_ips_past_the_release_delay_go_back_to_the_cloud() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    let full = bed.executor.converge(&node).await.expect("converges");
    assert_eq!(bed.enis_of(&instance)[0].secondary_ips.len(), 8);

    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(bed.executor.now() >= Duration::from_secs(10));
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full);
    let outcome = release_round(&bed, &mut node).await;

    assert!(outcome.ready());
    let primary = &bed.enis_of(&instance)[0];
    assert_eq!(primary.secondary_ips.len(), 2, "{primary:?}");
    let dropped: Vec<_> = outcome.release.iter().filter(|(_, c)| c.is_none()).map(|(ip, _)| *ip).collect();
    assert_eq!(dropped.len(), 6, "the released IPs' entries go away with them: {:?}", outcome.release);
    assert_eq!(outcome.pool.len(), 2);
    bed.assert_pool_matches_cloud(&node, &outcome);
    assert_eq!(bed.calls(Api::UnassignPrivateIpAddresses), 1);
    assert_eq!(bed.free_ips(&bed.subnet), 251 - 1 - 2, "released addresses are back in the subnet");
}

#[tokio::test(start_paused = true)]
async fn used_ips_are_never_released() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    let full = bed.executor.converge(&node).await.expect("converges");
    // A pod holds the lowest IP: the planner releases the lowest addresses
    // first, so this is the one it would take if `used` were ignored.
    let held = *full.pool.keys().next().expect("pool not empty");

    tokio::time::sleep(Duration::from_secs(10)).await;
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full); // even listed as free since long ago
    node.used = BTreeSet::from([held]);
    let outcome = release_round(&bed, &mut node).await;

    assert!(outcome.ready());
    let primary = &bed.enis_of(&instance)[0];
    assert!(primary.secondary_ips.contains(&held), "the used IP {held} was released: {primary:?}");
    assert_eq!(primary.secondary_ips.len(), 3, "1 used + 2 free kept: {primary:?}");
    assert!(outcome.pool.contains_key(&held));
    bed.assert_pool_matches_cloud(&node, &outcome);
}

#[tokio::test(start_paused = true)]
async fn free_ips_within_the_release_delay_are_kept() {
    let bed = Setup { release_delay: Duration::from_secs(180), ..Setup::new(CloudProfile::aws()) }.build();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    let full = bed.executor.converge(&node).await.expect("converges");

    tokio::time::sleep(Duration::from_secs(60)).await;
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full);
    let outcome = bed.executor.converge(&node).await.expect("converges");

    assert_eq!(outcome.plan.release_waiting, 6);
    assert_eq!(bed.enis_of(&instance)[0].secondary_ips.len(), 8, "nothing released before the delay");
    assert_eq!(bed.calls(Api::UnassignPrivateIpAddresses), 0);

    tokio::time::sleep(Duration::from_secs(150)).await;
    release_round(&bed, &mut node).await;
    assert_eq!(bed.enis_of(&instance)[0].secondary_ips.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn alibaba_release_is_split_in_calls_of_ten() {
    let bed = Bed::alibaba();
    let instance = bed.launch("ecs.g7.4xlarge"); // 29 pod IPs per ENI
    let mut node = bed.node("node-a", &instance, "ecs.g7.4xlarge", 1, 25);
    let full = bed.executor.converge(&node).await.expect("converges");
    assert_eq!(full.pool.len(), 25);
    assert_eq!(bed.creates(), vec![10]);
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), 2, "15 more in calls of at most 10");

    tokio::time::sleep(Duration::from_secs(10)).await;
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full);
    let outcome = release_round(&bed, &mut node).await;

    assert!(outcome.ready());
    assert_eq!(bed.calls(Api::UnassignPrivateIpAddresses), 3, "23 in 10 + 10 + 3");
    let eni = &bed.enis_of(&instance)[1];
    assert_eq!(eni.secondary_ips.len(), 2);
    bed.assert_pool_matches_cloud(&node, &outcome);
}

// ---------------------------------------------------------------------------
// 6: subnet exhaustion.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_tiny_subnet_ends_in_a_subnets_exhausted_shortfall_without_leaks() {
    // /28: 16 addresses, 5 reserved, 1 for the primary ENI: 10 left.
    let bed = Setup::new(CloudProfile::aws()).prefix(28).build();
    let instance = bed.launch("m5.large");
    assert_eq!(bed.free_ips(&bed.subnet), 10);
    let node = bed.node("node-a", &instance, "m5.large", 1, 12);

    let outcome = bed.executor.converge(&node).await.expect("converges as far as the subnet allows");

    assert!(!outcome.ready());
    assert_eq!(outcome.plan.shortfall, Some(Shortfall::SubnetsExhausted { missing: 3 }));
    assert_eq!(outcome.pool.len(), 9, "one ENI: its own address + 9");
    assert_eq!(bed.free_ips(&bed.subnet), 0);
    assert_eq!(bed.ours().len(), 1);
    bed.assert_pool_matches_cloud(&node, &outcome);
    bed.assert_no_leak();

    // Asking again does not try (and fail) again.
    let before = bed.mutating_calls();
    let again = bed.executor.converge(&node).await.expect("converges");
    assert_eq!(again.plan.shortfall, Some(Shortfall::SubnetsExhausted { missing: 3 }));
    assert_eq!(bed.mutating_calls(), before);
}

#[tokio::test(start_paused = true)]
async fn a_subnet_filled_by_another_writer_is_believed_and_nothing_leaks() {
    let bed = Setup::new(CloudProfile::aws()).prefix(27).build(); // 27 free
    let a = bed.launch("m5.large");
    let b = bed.launch("m5.large");
    let mut node = bed.node("node-a", &a, "m5.large", 1, 1);
    bed.executor.converge(&node).await.expect("converges"); // cache: 25 - 2 = 23 free
    // Another writer takes 20 addresses (in the cache's back).
    attach_foreign(&bed, &b, &bed.subnet, 1, 9);
    attach_foreign(&bed, &b, &bed.subnet, 2, 9);
    assert_eq!(bed.free_ips(&bed.subnet), 3);

    node.knobs.pre_allocate = 18;
    let outcome = bed.executor.converge(&node).await.expect("converges as far as the cloud allows");

    assert!(!outcome.ready());
    assert!(matches!(outcome.plan.shortfall, Some(Shortfall::SubnetsExhausted { .. })), "{:?}", outcome.plan);
    bed.assert_pool_matches_cloud(&node, &outcome);
    assert_eq!(bed.ours().len(), 1, "no second ENI of ours: {:?}", bed.ours());
    bed.assert_no_leak();
}

// ---------------------------------------------------------------------------
// 7: throttling.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_limiter_faster_than_the_quota_is_saved_by_retries() {
    const NODES: usize = 320;
    let profile = CloudProfile::aws();
    // The client believes the cloud allows 1.5 times its real rate.
    let limits = profile.buckets.iter().map(|(id, spec)| (*id, spec.scaled(1.5))).collect();
    let bed = Setup::new(profile).prefix(20).limiter(limits).build();
    let nodes: Vec<NodeTarget> = (0..NODES)
        .map(|n| {
            let instance = bed.launch("m5.large");
            bed.node(&format!("node-{n:03}"), &instance, "m5.large", 0, 8)
        })
        .collect();

    let results = join_all(nodes.iter().map(|n| bed.executor.converge(n))).await;

    let counts = bed.cloud.counts();
    let throttled: u64 = counts.values().map(|c| c.throttled).sum();
    assert!(throttled > 0, "the cloud never throttled: {counts:?}");
    let failed: Vec<&ExecError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} nodes failed, e.g. {:?}", failed.len(), failed.first());
    for (node, result) in nodes.iter().zip(&results) {
        let outcome = result.as_ref().expect("checked");
        assert!(outcome.ready(), "{}: {:?}", node.name, outcome.plan);
        assert_eq!(outcome.pool.len(), 8);
        bed.assert_pool_matches_cloud(node, outcome);
    }
    assert_eq!(
        counts[&Api::AssignPrivateIpAddresses].calls - counts[&Api::AssignPrivateIpAddresses].throttled,
        NODES as u64,
        "one accepted assign per node"
    );
}

// ---------------------------------------------------------------------------
// 8: transient faults.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn transient_faults_end_in_consistent_pools_after_retries() {
    const NODES: usize = 8;
    let bed = Bed::alibaba();
    let nodes: Vec<NodeTarget> = (0..NODES)
        .map(|n| {
            let instance = bed.launch("ecs.g7.xlarge");
            bed.node(&format!("node-{n}"), &instance, "ecs.g7.xlarge", 1, 12)
        })
        .collect();
    bed.cloud.set_faults(Faults { transient_rate: 0.3, ..Faults::default() });

    let converge_until_ready = |node: &NodeTarget| {
        let executor = &bed.executor;
        let node = node.clone();
        async move {
            let mut errors: u32 = 0;
            for _ in 0..40 {
                match executor.converge(&node).await {
                    Ok(outcome) if outcome.ready() => return (outcome, errors),
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            panic!("{} never converged", node.name);
        }
    };
    let outcomes = join_all(nodes.iter().map(converge_until_ready)).await;
    bed.cloud.set_faults(Faults::default());

    let faulted: u64 = bed.cloud.counts().values().map(|c| c.faulted).sum();
    assert!(faulted > 0);
    let errors: u32 = outcomes.iter().map(|(_, e)| e).sum();
    assert!(errors > 0, "at 30% faults some converge should have failed");
    let mut seen = BTreeSet::new();
    for (node, (outcome, _)) in nodes.iter().zip(&outcomes) {
        assert_eq!(outcome.pool.len(), 12, "{}", node.name);
        bed.assert_pool_matches_cloud(node, outcome);
        for ip in outcome.pool.keys() {
            assert!(seen.insert(*ip), "{ip} is in two nodes' pools");
        }
    }
    bed.assert_no_leak();
    // Every address the cloud handed out is in exactly one place.
    let mut everywhere = BTreeSet::new();
    for eni in bed.cloud_enis() {
        for ip in std::iter::once(&eni.primary_ip).chain(&eni.secondary_ips) {
            assert!(everywhere.insert(*ip), "{ip} held twice in the cloud");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn instance_type_limits_are_fetched_once_and_refreshed_by_the_bulk_resync_only() {
    let bed = Bed::aws();
    for n in 0..3 {
        let instance = bed.launch("m5.large");
        let node = bed.node(&format!("node-{n}"), &instance, "m5.large", 0, 4);
        bed.executor.converge(&node).await.expect("converges");
    }
    assert_eq!(bed.calls(Api::DescribeInstanceTypes), 1, "one fetch for three nodes of one type");
    bed.executor.bulk_resync().await.expect("bulk resync");
    assert_eq!(bed.calls(Api::DescribeInstanceTypes), 2, "the bulk resync refreshes the cached types");
}
