//! `simulate`: a fleet of nodes joins at once in the fake cloud, and the real
//! planner, executor, limiter and retry policy bring every node to its
//! pre-allocation. Time is virtual by default (tokio's paused clock), so a
//! ten-minute cloud scenario runs in seconds.

pub mod autoscaler;
pub mod bench;
pub mod capacity_model;
mod chart;
pub mod cloud_setup;
pub mod footprint;
pub mod invariants;
pub mod pod_args;
pub mod pod_report;
mod pod_run;
pub mod pods;
pub mod quota_bound;
pub mod report;
pub mod restart;
pub mod scheduler;
pub mod strategy;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{
    ENINode, ENINodeSpec, EniId, InstanceId, InstanceType, KnobError, PoolKnobs, SecurityGroupId, VpcId, Zone,
};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider, Faults};
use eni_ipam_cloud::{
    Api, CallGuard, CloudKind, CloudProfile, CloudProvider, Eni, EniQuery, Subnet, list_all_enis,
};
use tokio::time::Instant;

use crate::controller::{Controller, ControllerConfig};
use crate::fleet::NodeEvent;
use crate::node_store::MemoryNodeStore;
use crate::planner::{EniOwner, EniView, NodeSnapshot, SubnetSelector};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use report::{SimReport, percentile};
pub use strategy::Strategy;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Which cloud profile the fake cloud follows.
    pub cloud: CloudKind,
    /// Nodes joining at once.
    pub nodes: u32,
    /// Instance type of every node (`None`: the profile's default).
    pub instance_type: Option<String>,
    /// Pool knobs of every node.
    pub knobs: PoolKnobs,
    /// First usable device index (`None`: the profile's default).
    pub first_interface_index: Option<u32>,
    /// Nodes worked at once.
    pub workers: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// Share of cloud calls answered with a 5xx.
    pub fault_rate: f64,
    /// Client limiter rate as a share of the cloud's quota.
    pub limiter_margin: f64,
    /// Give up after this long (simulated).
    pub deadline: Duration,
    /// Period of the bulk resync (all ENIs of the VPC, and the subnets).
    pub resync_interval: Duration,
    /// Security groups of new ENIs (Alibaba requires one).
    pub security_groups: Vec<String>,
    /// Ours, or a strategy to compare with.
    pub strategy: Strategy,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            cloud: CloudKind::Aws,
            nodes: 1000,
            instance_type: None,
            knobs: PoolKnobs::default(),
            first_interface_index: None,
            workers: 128,
            seed: 1,
            fault_rate: 0.0,
            limiter_margin: 0.95,
            deadline: Duration::from_secs(3600),
            resync_interval: Duration::from_secs(60),
            security_groups: Vec::new(),
            strategy: Strategy::Ours,
        }
    }
}

/// A configuration no run could satisfy, in words that say what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--nodes 0`.
    #[error("--nodes must be at least 1")]
    NoNodes,
    /// Unknown instance type.
    #[error("--instance-type {0} is not in the {1} profile; use one of: {2}")]
    UnknownInstanceType(String, CloudKind, String),
    /// Pool knobs that contradict each other or the instance.
    #[error("{0}")]
    Knobs(#[from] KnobError),
    /// First interface index beyond the instance's ENIs.
    #[error(
        "--first-interface-index {index} leaves no ENI for pods on {instance_type} (it has {max_enis}); use a lower index"
    )]
    FirstIndex {
        /// The index.
        index: u32,
        /// The type.
        instance_type: String,
        /// Its ENI limit.
        max_enis: u32,
    },
    /// A share outside its range.
    #[error("{flag} must be {range} (got {value})")]
    OutOfRange {
        /// The flag.
        flag: &'static str,
        /// The allowed range in words.
        range: &'static str,
        /// The value given.
        value: f64,
    },
    /// No workers.
    #[error("--parallel-alloc-workers must be at least 1")]
    NoWorkers,
    /// A bulk resync more often than once a second would spend the describe quota on itself.
    #[error("--resync-interval {0:?} is below 1s: bulk resyncs would eat the describe quota; use 1s or more")]
    ResyncTooOften(Duration),
}

impl SimConfig {
    /// The instance type in effect.
    pub fn instance_type(&self, profile: &CloudProfile) -> String {
        self.instance_type.clone().unwrap_or_else(|| profile.default_instance_type.to_owned())
    }

    /// The first usable index in effect.
    pub fn first_index(&self, profile: &CloudProfile) -> u32 {
        self.first_interface_index.unwrap_or(profile.default_first_interface_index)
    }

    /// Rejects what no run could satisfy.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes == 0 {
            return Err(ConfigError::NoNodes);
        }
        if self.workers == 0 {
            return Err(ConfigError::NoWorkers);
        }
        if self.resync_interval < Duration::from_secs(1) {
            return Err(ConfigError::ResyncTooOften(self.resync_interval));
        }
        if !(0.0..1.0).contains(&self.fault_rate) {
            return Err(ConfigError::OutOfRange {
                flag: "--fault-rate",
                range: "in [0, 1)",
                value: self.fault_rate,
            });
        }
        if !(self.limiter_margin > 0.0 && self.limiter_margin <= 1.0) {
            return Err(ConfigError::OutOfRange {
                flag: "--limiter-margin",
                range: "in (0, 1]",
                value: self.limiter_margin,
            });
        }
        let profile = CloudProfile::of(self.cloud);
        let ty = self.instance_type(&profile);
        let Some(limits) = profile.instance_types.get(&ty) else {
            let known: Vec<&str> = profile.instance_types.keys().map(String::as_str).collect();
            return Err(ConfigError::UnknownInstanceType(ty, self.cloud, known.join(", ")));
        };
        let first = self.first_index(&profile);
        if first >= limits.max_enis {
            return Err(ConfigError::FirstIndex {
                index: first,
                instance_type: ty,
                max_enis: limits.max_enis,
            });
        }
        self.knobs.validate_for_capacity(&ty, limits.pod_capacity(first))?;
        Ok(())
    }
}

/// Where the simulated fleet's cloud is.
pub enum Backend {
    /// The built-in fake cloud with the config's profile (virtual time welcome).
    Fake,
    /// A real API endpoint (moto, the Alibaba emulator) reached through
    /// `provider`, whose calls all go through `guard`. The fleet is the
    /// instances the VPC already holds (their primary ENIs tell them), all
    /// taken to be of the config's instance type. Real time only.
    Endpoint {
        /// The provider client.
        provider: Arc<dyn CloudProvider>,
        /// Its call guard (for the counts).
        guard: Arc<CallGuard>,
        /// The VPC holding the fleet.
        vpc: VpcId,
    },
}

/// Runs the simulation on the fake cloud; `progress` hears the count of ready nodes.
pub async fn run(
    config: &SimConfig,
    virtual_time: bool,
    progress: &dyn Fn(u64),
) -> anyhow::Result<SimReport> {
    run_on(config, Backend::Fake, virtual_time, progress).await
}

/// Runs the simulation on a backend.
pub async fn run_on(
    config: &SimConfig,
    backend: Backend,
    virtual_time: bool,
    progress: &dyn Fn(u64),
) -> anyhow::Result<SimReport> {
    config.validate()?;
    let wall = std::time::Instant::now();
    let profile = CloudProfile::of(config.cloud);
    let instance_type = config.instance_type(&profile);
    let target_ips =
        config.knobs.pre_allocate.max(config.knobs.min_allocate) + config.knobs.max_above_watermark;
    let (provider, guard, vpc, fake, instances) = match backend {
        Backend::Fake => {
            let fake = FakeFleet::launch(config, &profile, &instance_type, target_ips)?;
            (fake.provider, fake.guard, fake.vpc, Some(fake.cloud), fake.instances)
        }
        Backend::Endpoint { provider, guard, vpc } => {
            let (enis, _) = list_all_enis(provider.as_ref(), &EniQuery::Vpc(vpc.clone())).await?;
            let mut instances: Vec<(InstanceId, Zone)> = enis
                .iter()
                .filter(|e| e.device_index == Some(0))
                .filter_map(|e| Some((e.instance.clone()?, e.zone.clone())))
                .collect();
            instances.sort();
            instances.truncate(config.nodes as usize);
            anyhow::ensure!(
                !instances.is_empty(),
                "no instance found in VPC {vpc}: launch the fleet first (the simulator adopts what the VPC holds)"
            );
            (provider, guard, vpc, None, instances)
        }
    };
    let drove = drive(config, &profile, provider.clone(), &vpc, &instances, &instance_type, progress).await;
    let after_run = guard.counts();
    let (api_calls, throttled_calls, faulted_calls, cloud_enis, subnets): Counted = match &fake {
        Some(cloud) => {
            let server = cloud.counts();
            let calls = server.iter().map(|(api, c)| (*api, c.calls)).collect::<BTreeMap<_, _>>();
            let console = cloud.console();
            (
                calls,
                server.values().map(|c| c.throttled).sum(),
                server.values().map(|c| c.faulted).sum(),
                console.all_enis().cloned().collect(),
                console.list_subnets(&vpc),
            )
        }
        None => {
            // What the endpoint saw is what the client sent (its own counts).
            let calls = after_run.iter().map(|(api, c)| (*api, c.sent)).collect::<BTreeMap<_, _>>();
            let throttled = after_run.values().map(|c| c.throttled).sum();
            let (enis, _) = list_all_enis(provider.as_ref(), &EniQuery::Vpc(vpc.clone())).await?;
            (calls, throttled, 0, enis, provider.list_subnets(&vpc).await?)
        }
    };
    let nodes = instances.len() as u32;
    let mut times: Vec<Duration> = drove.ready_at.values().copied().collect();
    times.sort();
    let ready_curve = times.iter().map(Duration::as_secs_f64).collect();
    let all_ready = drove.ready_at.len() == instances.len();
    let time_to_all_ready = all_ready.then(|| times.last().copied().unwrap_or_default().as_secs_f64());
    let first_index = config.first_index(&profile);
    let cost = quota_bound::fresh_node_cost(
        &fresh_node(&profile, &instance_type, first_index, config, subnets),
        &profile,
    );
    let bound = quota_bound::quota_bound(&profile, u64::from(nodes), &cost);
    let mutating: u64 = api_calls.iter().filter(|(api, _)| !api.is_read()).map(|(_, n)| n).sum();
    let invariants = invariants::check("sim", &cloud_enis, &drove.store.all());
    let quota_bound_s = bound.bound.as_secs_f64();
    let report = SimReport {
        cloud: config.cloud.to_string(),
        instance_type,
        knobs: config.knobs,
        first_interface_index: first_index,
        seed: config.seed,
        virtual_time,
        nodes,
        ready_nodes: drove.ready_at.len() as u32,
        time_to_all_ready_s: time_to_all_ready,
        quota_bound_s,
        ratio_to_quota_bound: time_to_all_ready.filter(|_| quota_bound_s > 0.0).map(|t| t / quota_bound_s),
        node_ready_p50_s: percentile(&times, 50.0),
        node_ready_p99_s: percentile(&times, 99.0),
        api_calls_total: api_calls.values().sum(),
        api_calls: api_calls.iter().map(|(api, n)| (profile.kind.api_name(*api).to_owned(), *n)).collect(),
        throttled_calls,
        faulted_calls,
        client_retries: after_run.values().map(|c| c.retried).sum(),
        mutating_calls_per_node: mutating as f64 / f64::from(nodes),
        quota_bound_calls: bound.calls_per_bucket,
        resync: drove.resync,
        node_store_writes: drove.store.writes(),
        node_failures: drove.failures,
        shortfall_nodes: drove.short,
        leaked_enis: 0,
        duplicate_ips: 0,
        pool_mismatches: 0,
        wall_clock_s: wall.elapsed().as_secs_f64(),
        strategy: config.strategy,
        peak_rss_mib: bench::peak_rss_mib(),
        ready_curve,
    };
    Ok(report.with_invariants(invariants))
}

/// Calls per API, throttled, faulted, the cloud's ENIs and subnets after the run.
type Counted = (BTreeMap<Api, u64>, u64, u64, Vec<Eni>, Vec<Subnet>);

/// What happened to the fleet.
struct Drove {
    ready_at: BTreeMap<String, Duration>,
    short: u64,
    failures: u64,
    resync: crate::resync::ResyncCounts,
    store: Arc<MemoryNodeStore>,
}

/// The operator's part: ENINodes for every instance (as the agents would
/// create them), the fleet loop, and the wait for every node to be at target
/// or short for a stated reason.
async fn drive(
    config: &SimConfig,
    profile: &CloudProfile,
    provider: Arc<dyn CloudProvider>,
    vpc: &VpcId,
    instances: &[(InstanceId, Zone)],
    instance_type: &str,
    progress: &dyn Fn(u64),
) -> Drove {
    let strategy = config.strategy;
    let controller_config = controller_config(config, profile, vpc, instances.len());
    let store = Arc::new(MemoryNodeStore::new());
    let names: Vec<String> = (0..instances.len()).map(node_name).collect();
    for (name, (instance, zone)) in names.iter().zip(instances) {
        store.insert(eninode(config, profile, vpc, name, instance, zone, instance_type));
    }
    let Controller { fleet, mut events, resync, .. } =
        Controller::build(provider, store.clone(), &controller_config);

    // The nodes' ENINodes appear all at once: every node has the same deficit.
    let start = Instant::now();
    let mut workers = fleet.spawn_workers();
    workers.push(fleet.spawn_bulk_resync(config.resync_interval));
    for name in &names {
        fleet.enqueue(name, config.knobs.pre_allocate.max(config.knobs.min_allocate));
    }
    let deadline = start + config.deadline;
    let mut ready_at: BTreeMap<String, Duration> = BTreeMap::new();
    // Nodes that cannot get more without a change of config or cloud.
    let mut short: HashSet<String> = HashSet::new();
    let mut failures = 0u64;
    while ready_at.len() + short.len() < names.len() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(NodeEvent::Converged { node, ready: true, .. })) => {
                short.remove(&node);
                ready_at.entry(node).or_insert_with(|| start.elapsed());
                progress(ready_at.len() as u64);
            }
            Ok(Some(NodeEvent::Converged { node, shortfall: Some(_), .. })) => {
                short.insert(node);
            }
            Ok(Some(NodeEvent::Converged { .. })) => {}
            Ok(Some(NodeEvent::Failed { .. })) => failures += 1,
            // `simulate` checks no Node (`Unchecked`): never sent here.
            Ok(Some(NodeEvent::Refused { node, .. })) => {
                unreachable!("node {node} refused without a Node check")
            }
            Ok(None) | Err(_) => break,
        }
    }
    fleet.close();
    for w in workers {
        w.abort();
    }
    // An agent on a timer sees its pool at its next tick, not when it is there.
    if let Some(interval) = strategy.node_update_interval() {
        let mut rng = StdRng::seed_from_u64(config.seed ^ 0x7157);
        for at in ready_at.values_mut() {
            let phase = interval.mul_f64(rng.random::<f64>());
            *at = strategy::seen_at(*at, phase, interval);
        }
    }
    Drove { ready_at, short: short.len() as u64, failures, resync: resync.counts(), store }
}

/// The fake cloud of a run, its fleet launched, and the client that reaches it.
pub(crate) struct FakeFleet {
    pub(crate) cloud: Arc<FakeCloud>,
    pub(crate) provider: Arc<dyn CloudProvider>,
    pub(crate) guard: Arc<CallGuard>,
    pub(crate) vpc: VpcId,
    pub(crate) instances: Vec<(InstanceId, Zone)>,
}

impl FakeFleet {
    /// A fake cloud with the config's profile, faults and strategy, and
    /// `config.nodes` instances launched in subnets sized for `ips_per_node` each.
    pub(crate) fn launch(
        config: &SimConfig,
        profile: &CloudProfile,
        instance_type: &str,
        ips_per_node: u32,
    ) -> anyhow::Result<Self> {
        let vpc = VpcId::from("vpc-sim");
        let cloud = Arc::new(FakeCloud::new(profile.clone(), vpc.clone(), config.seed));
        let launched = cloud_setup::launch(&cloud, config.nodes, instance_type, ips_per_node)?;
        cloud.set_faults(Faults { transient_rate: config.fault_rate, ..Faults::default() });
        let retry = config.strategy.retry(config.seed);
        let guard = Arc::new(if config.strategy.shared_limiter() {
            CallGuard::for_profile(profile.clone(), config.limiter_margin, retry)
        } else {
            CallGuard::new(profile.clone(), BTreeMap::new(), retry)
        });
        let provider: Arc<dyn CloudProvider> = Arc::new(FakeProvider::new(cloud.clone(), guard.clone()));
        Ok(Self { cloud, provider, guard, vpc, instances: launched.instances })
    }
}

/// The name of the `n`th node.
pub(crate) fn node_name(n: usize) -> String {
    format!("node-{n:05}")
}

/// The operator's settings for a run of `nodes` nodes under the config's strategy.
pub(crate) fn controller_config(
    config: &SimConfig,
    profile: &CloudProfile,
    vpc: &VpcId,
    nodes: usize,
) -> ControllerConfig {
    let strategy = config.strategy;
    let (max_actions_per_pass, pass_pause) = strategy.pacing();
    ControllerConfig {
        release_delay: Duration::from_secs(180),
        default_first_interface_index: profile.default_first_interface_index,
        requeue: strategy.requeue(config.seed ^ 0xf1ee7),
        listing: strategy.listing(),
        max_actions_per_pass,
        pass_pause,
        // Daemons on every node work their node at once, all of them.
        workers: if strategy.shared_limiter() { config.workers } else { nodes },
        ..ControllerConfig::new("sim", vpc.clone(), config.workers, config.seed)
    }
}

/// The ENINode a node's agent registers when it starts.
pub(crate) fn eninode(
    config: &SimConfig,
    profile: &CloudProfile,
    vpc: &VpcId,
    name: &str,
    instance: &InstanceId,
    zone: &Zone,
    instance_type: &str,
) -> ENINode {
    let spec = ENINodeSpec {
        instance_id: instance.clone(),
        instance_type: InstanceType::from(instance_type),
        zone: zone.clone(),
        vpc_id: vpc.clone(),
        ipam: eni_ipam_api::PoolOverrides::all(config.knobs),
        first_interface_index: Some(config.first_index(profile)),
        security_groups: config.security_groups.iter().map(|g| SecurityGroupId::from(g.as_str())).collect(),
        ..ENINodeSpec::default()
    };
    ENINode::new(name, spec)
}

/// A node as it joins: its primary ENI and nothing else.
fn fresh_node(
    profile: &CloudProfile,
    instance_type: &str,
    first_index: u32,
    config: &SimConfig,
    subnets: Vec<Subnet>,
) -> NodeSnapshot {
    let zone = subnets.first().map(|s| s.zone.clone()).unwrap_or_default();
    let subnet = subnets.first().map(|s| s.id.clone()).unwrap_or_default();
    NodeSnapshot {
        zone,
        limits: profile.instance_types[instance_type].clone(),
        first_interface_index: first_index,
        knobs: config.knobs,
        enis: vec![EniView {
            id: EniId::from("eni-primary"),
            device_index: 0,
            subnet,
            secondary_ips: 0,
            in_use: true,
            owner: EniOwner::Primary,
        }],
        pool: vec![],
        subnets,
        selector: SubnetSelector::default(),
        batch: profile.batch,
        release_delay: Duration::ZERO,
    }
}
