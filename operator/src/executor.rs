//! The executor: runs the planner's actions for one node through the cloud
//! provider, refreshes that instance after every change, waits for
//! attachments, and re-plans until the node is at its target. It decides
//! nothing itself: every choice comes from `planner::plan`.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_api::{
    EniId, EniStatus, InstanceId, InstanceType, PoolEntry, PoolKnobs, ReleaseState, SecurityGroupId,
    SubnetId, VpcId, Zone,
};
use eni_ipam_cloud::{
    CloudError, CloudProvider, CreateEni, Eni, EniQuery, EniState, ErrorClass, InstanceLimits, RetryPolicy,
    list_all_enis, subnet_gateway, tag,
};
use tokio::time::Instant;

use crate::instances::InstancesCache;
use crate::ip_ledger::IpLedger;
use crate::ownership::{self, EniOwner, IpRecord};
use crate::planner::{self, Action, EniView, NodeSnapshot, Plan, PoolIp, SubnetSelector};
use crate::reaction::{
    AfterAttachFailure, Reaction, SeenAfterCreate, after_attach_failure, look_before_undoing, reaction,
    replan_once,
};
use crate::resync::Resyncer;
use crate::shortfall::{Growth, planned_growth};

/// A node as the executor needs it: its ENINode spec plus what pods use.
#[derive(Clone, Debug)]
pub struct NodeTarget {
    /// Node (and ENINode) name.
    pub name: String,
    /// Its VM.
    pub instance: InstanceId,
    /// Its instance type.
    pub instance_type: InstanceType,
    /// Its zone.
    pub zone: Zone,
    /// Pool knobs.
    pub knobs: PoolKnobs,
    /// ENIs from this device index on serve pods.
    pub first_interface_index: u32,
    /// Which subnets new ENIs may use.
    pub selector: SubnetSelector,
    /// Security groups for new ENIs.
    pub security_groups: Vec<SecurityGroupId>,
    /// IPs pods hold (from the agent's `status.used`).
    pub used: BTreeSet<Ipv4Addr>,
    /// Since when each free pool IP is free, on the operator's clock.
    pub free_since: BTreeMap<Ipv4Addr, Duration>,
    /// The release handshake (`status.release`): IP -> state.
    pub release: BTreeMap<Ipv4Addr, ReleaseState>,
    /// The pool this cluster last published (`spec.pool`): IP -> its ENI. The
    /// record of which IPs on the primary ENI this cluster assigned.
    pub published: BTreeMap<Ipv4Addr, EniId>,
    /// `spec.primaryEniIps`: every secondary IP of the primary ENI at the last publish
    /// (`None`: never published with it).
    pub primary_eni_ips: Option<BTreeSet<Ipv4Addr>>,
}

/// Where a node ended up after converging.
#[derive(Clone, Debug)]
pub struct NodeOutcome {
    /// The pool to publish in `spec.pool`.
    pub pool: BTreeMap<Ipv4Addr, PoolEntry>,
    /// The ENIs to publish in `status.enis`.
    pub enis: BTreeMap<String, EniStatus>,
    /// The last plan (needed 0 means the node is at its target).
    pub plan: Plan,
    /// Pod IPs the instance can hold at most (`status.ipLimit`).
    pub capacity: u32,
    /// How far the pool can grow towards `capacity` (capped by maxAllocate), by the cache.
    pub growth: Growth,
    /// Changes to `status.release`: `Some(marked)` to mark an IP, `None` to
    /// drop its entry (unmarked, or released and gone from the pool).
    pub release: BTreeMap<Ipv4Addr, Option<ReleaseState>>,
    /// Every secondary IP of the primary ENI, where pods use it: `spec.primaryEniIps`.
    pub primary_eni_ips: Option<BTreeSet<Ipv4Addr>>,
}

impl NodeOutcome {
    /// The pool holds what the knobs ask for.
    pub fn ready(&self) -> bool {
        self.plan.needed == 0
    }
}

/// Why converging a node stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The cloud said no in a way re-planning does not fix.
    #[error("node {node}: {source}")]
    Cloud {
        /// The node.
        node: String,
        /// The cloud's answer.
        source: CloudError,
    },
    /// The cloud does not describe the node's instance type.
    #[error(
        "node {node}: the cloud does not describe instance type {instance_type}; add it to the limits override table"
    )]
    UnknownInstanceType {
        /// The node.
        node: String,
        /// The type.
        instance_type: String,
    },
    /// The node's instance has no ENI in the VPC.
    #[error(
        "node {node}: instance {instance} has no ENI in the VPC; check the node's providerID and the VPC id"
    )]
    InstanceNotFound {
        /// The node.
        node: String,
        /// The instance.
        instance: InstanceId,
    },
    /// An ENI stayed in `attaching`.
    #[error("node {node}: ENI {eni} is still attaching after {waited:?}; the cloud may be degraded")]
    AttachTimeout {
        /// The node.
        node: String,
        /// The ENI.
        eni: EniId,
        /// How long we waited.
        waited: Duration,
    },
    /// Re-planning did not converge.
    #[error("node {node}: still short of IPs after {passes} passes; will retry")]
    NotConverged {
        /// The node.
        node: String,
        /// Passes made.
        passes: u32,
        /// The class of the last cloud refusal the passes met, if any.
        last_failure: Option<ErrorClass>,
    },
}

impl ExecError {
    fn cloud(node: &str, source: CloudError) -> Self {
        ExecError::Cloud { node: node.to_owned(), source }
    }
}

/// Settings of the executor.
#[derive(Clone, Debug)]
pub struct ExecutorConfig {
    /// Cluster id, written in every tag.
    pub cluster: String,
    /// The kube-system namespace's UID, written in every tag when known.
    pub cluster_uid: Option<String>,
    /// The VPC the cluster's nodes live in.
    pub vpc: VpcId,
    /// A free IP is released only after this long.
    pub release_delay: Duration,
    /// Mean wait between looks at an attaching ENI (jittered).
    pub attach_poll: Duration,
    /// Give up on an attachment after this long.
    pub attach_timeout: Duration,
    /// Plan / act / resync rounds before giving up for now.
    pub max_passes: u32,
    /// Act on at most this many planned actions per pass (`None`: all). Only
    /// the simulator's node-side-daemon strategy limits it.
    pub max_actions_per_pass: Option<usize>,
    /// Pause between passes (zero for us; the node-side-daemon strategy's tick).
    pub pass_pause: Duration,
    /// An IP this cluster released is not taken back into a pool for this long, even
    /// when a listing still shows it (the cloud's listings lag its writes).
    pub released_cooldown: Duration,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        Self {
            cluster: "eni-ipam".into(),
            cluster_uid: None,
            vpc: VpcId::default(),
            release_delay: Duration::from_secs(180),
            attach_poll: Duration::from_secs(1),
            attach_timeout: Duration::from_secs(120),
            max_passes: 6,
            max_actions_per_pass: None,
            pass_pause: Duration::ZERO,
            released_cooldown: Duration::from_secs(60),
        }
    }
}

/// Runs plans.
pub struct Executor {
    provider: Arc<dyn CloudProvider>,
    cache: Arc<InstancesCache>,
    resync: Resyncer,
    config: ExecutorConfig,
    jitter: RetryPolicy,
    started: Instant,
    nonce: u64,
    serial: AtomicU64,
    /// One fetch of instance-type limits at a time: the first worker asks, the
    /// others wait and read the cache (no stampede when a fleet joins).
    fetching_limits: tokio::sync::Mutex<()>,
    /// The same for the subnets (a fetch of its own, sent beside the limits').
    fetching_subnets: tokio::sync::Mutex<()>,
    /// What this executor assigned on primary ENIs and released, for ownership.
    ips: Mutex<IpLedger>,
}

impl Executor {
    /// An executor; `seed` makes its jitter and client tokens reproducible.
    pub fn new(
        provider: Arc<dyn CloudProvider>,
        cache: Arc<InstancesCache>,
        resync: Resyncer,
        config: ExecutorConfig,
        seed: u64,
    ) -> Self {
        let jitter = RetryPolicy::new(config.attach_poll, config.attach_poll, u32::MAX, seed);
        Self {
            provider,
            cache,
            resync,
            config,
            jitter,
            started: Instant::now(),
            nonce: seed,
            serial: AtomicU64::new(0),
            fetching_limits: tokio::sync::Mutex::new(()),
            fetching_subnets: tokio::sync::Mutex::new(()),
            ips: Mutex::new(IpLedger::default()),
        }
    }

    /// The operator's clock: time since the executor started.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Brings one node to its target, or as close as the cloud allows.
    pub async fn converge(&self, node: &NodeTarget) -> Result<NodeOutcome, ExecError> {
        let err = |e| ExecError::cloud(&node.name, e);
        // A node seen for the first time needs its ENIs, its type's limits and the
        // subnets: three independent reads, sent side by side.
        let instance = async {
            if self.cache.knows(&node.instance) {
                return Ok(());
            }
            self.resync.instance(&node.instance).await.map_err(err)
        };
        let ((), limits, ()) = tokio::try_join!(instance, self.limits(node), self.ensure_subnets(node))?;
        let mut replanned_transient = false;
        let mut last_failure = None;
        for _ in 0..self.config.max_passes {
            let snapshot = self.snapshot(node, &limits)?;
            let plan = planner::plan(&snapshot, self.now());
            if plan.actions.is_empty() {
                return Ok(self.outcome(node, &limits, &snapshot, plan));
            }
            let mut failure = None;
            // Whether the cache shows every action's result already (assigns whose answer was
            // applied): then no listing stands between the node and its next plan.
            let mut answered = true;
            let allowed = self.config.max_actions_per_pass.unwrap_or(usize::MAX);
            for action in plan.actions.iter().take(allowed) {
                match self.act(node, action).await {
                    Ok(applied) => answered &= applied,
                    Err(e) => {
                        // Before the resync: the ENI's subnet as the cache knew it.
                        let eni_subnet = match action {
                            Action::Assign { eni, .. } | Action::Release { eni, .. } => {
                                self.subnet_of(node, eni)
                            }
                            Action::CreateEni { .. } => None,
                        };
                        failure = Some((reaction(e.class, action, eni_subnet.as_ref()), e));
                        answered = false;
                        break;
                    }
                }
            }
            if !answered {
                self.resync.instance(&node.instance).await.map_err(err)?;
                self.wait_attached(node).await?;
            }
            if !self.config.pass_pause.is_zero() {
                tokio::time::sleep(self.config.pass_pause).await;
            }
            if let Some((reaction, e)) = failure {
                tracing::info!(node = %node.name, op = e.api.aws_name(), class = e.class.as_str(), error = %e, "cloud call failed");
                last_failure = Some(e.class);
                match reaction {
                    Reaction::Replan => {}
                    Reaction::SubnetFull(subnet) => self.cache.mark_subnet_full(&subnet),
                    Reaction::Stop if replan_once(e.class, replanned_transient) => replanned_transient = true,
                    Reaction::Stop => return Err(err(e)),
                }
            }
        }
        Err(ExecError::NotConverged { node: node.name.clone(), passes: self.config.max_passes, last_failure })
    }

    async fn limits(&self, node: &NodeTarget) -> Result<InstanceLimits, ExecError> {
        if let Some(l) = self.cache.limits(node.instance_type.as_str()) {
            return Ok(l);
        }
        let _one_at_a_time = self.fetching_limits.lock().await;
        if let Some(l) = self.cache.limits(node.instance_type.as_str()) {
            return Ok(l);
        }
        let found = self
            .provider
            .instance_limits(std::slice::from_ref(&node.instance_type))
            .await
            .map_err(|e| ExecError::cloud(&node.name, e))?;
        self.cache.set_limits(found);
        self.cache.limits(node.instance_type.as_str()).ok_or_else(|| ExecError::UnknownInstanceType {
            node: node.name.clone(),
            instance_type: node.instance_type.to_string(),
        })
    }

    async fn ensure_subnets(&self, node: &NodeTarget) -> Result<(), ExecError> {
        if !self.cache.subnets().is_empty() {
            return Ok(());
        }
        let _one_at_a_time = self.fetching_subnets.lock().await;
        if self.cache.subnets().is_empty() {
            let subnets = self
                .provider
                .list_subnets(&self.config.vpc)
                .await
                .map_err(|e| ExecError::cloud(&node.name, e))?;
            self.cache.set_subnets(subnets);
        }
        Ok(())
    }

    /// Refreshes every ENI of the VPC and the subnets (the periodic bulk
    /// resync), and the limits of the instance types in use: limits are
    /// refreshed here only, never per node.
    pub async fn bulk_resync(&self) -> Result<(), CloudError> {
        self.resync.bulk().await?;
        let types = self.cache.limit_types();
        if !types.is_empty() {
            self.cache.set_limits(self.provider.instance_limits(&types).await?);
        }
        Ok(())
    }

    /// The release delay: how long an IP must have been free before it may go.
    pub fn release_delay(&self) -> Duration {
        self.config.release_delay
    }

    /// Whether the node has excess IPs that wait only for the release delay (by the cache):
    /// nothing else will bring the node back to work when the delay is over.
    pub fn release_pending(&self, node: &NodeTarget) -> bool {
        let Some(limits) = self.cache.limits(node.instance_type.as_str()) else { return false };
        self.snapshot(node, &limits).is_ok_and(|s| planner::plan(&s, self.now()).release_waiting > 0)
    }

    /// How urgently a node needs work according to the cache: `None` when the
    /// planner has nothing to do, else its deficit (at least 1). Nodes the
    /// cache does not know yet need work.
    pub fn needs_work(&self, node: &NodeTarget) -> Option<u32> {
        let Some(limits) = self.cache.limits(node.instance_type.as_str()) else {
            return Some(node.knobs.pre_allocate.max(1));
        };
        let Ok(snapshot) = self.snapshot(node, &limits) else {
            return Some(node.knobs.pre_allocate.max(1));
        };
        let plan = planner::plan(&snapshot, self.now());
        plan.has_work().then_some(plan.needed.max(1))
    }

    /// The node's `ipLimit` and how far its pool can grow, by the cache (`None`: the cache does
    /// not know the node or its type yet).
    pub fn growth_view(&self, node: &NodeTarget) -> Option<(u32, Growth)> {
        let limits = self.cache.limits(node.instance_type.as_str())?;
        // One read of the ENIs and the record serves the snapshot and the limit.
        let (enis, record) = (self.cache.enis_of(&node.instance), self.ip_record(node));
        let snapshot = self.snapshot_of(node, &limits, &enis, &record).ok()?;
        Some(self.limit_and_growth(node, &limits, &snapshot, &enis, &record))
    }

    /// `ipLimit` (what the instance can hold for this cluster's pods) and the growth towards
    /// it, capped by maxAllocate.
    fn limit_and_growth(
        &self,
        node: &NodeTarget,
        limits: &InstanceLimits,
        snapshot: &NodeSnapshot,
        enis: &[Eni],
        record: &IpRecord,
    ) -> (u32, Growth) {
        let first = node.first_interface_index;
        let limit = ownership::pod_capacity(enis, limits, first, &self.config.cluster, record);
        let target = match node.knobs.max_allocate {
            0 => limit,
            max => limit.min(max),
        };
        let (reachable, short) = planner::reachable(snapshot, target);
        (limit, planned_growth(reachable, target, short.as_ref()))
    }

    /// The planner's view of a node, from the cache.
    pub fn snapshot(&self, node: &NodeTarget, limits: &InstanceLimits) -> Result<NodeSnapshot, ExecError> {
        let enis = self.cache.enis_of(&node.instance);
        self.snapshot_of(node, limits, &enis, &self.ip_record(node))
    }

    /// The planner's view of a node from its ENIs and IP record as read.
    fn snapshot_of(
        &self,
        node: &NodeTarget,
        limits: &InstanceLimits,
        enis: &[Eni],
        record: &IpRecord,
    ) -> Result<NodeSnapshot, ExecError> {
        if enis.is_empty() {
            return Err(ExecError::InstanceNotFound {
                node: node.name.clone(),
                instance: node.instance.clone(),
            });
        }
        let now = self.now();
        let pool = ownership::owned_pool(enis, node.first_interface_index, &self.config.cluster, record)
            .into_iter()
            .map(|owned| PoolIp {
                free_since: if node.used.contains(&owned.ip) {
                    None
                } else {
                    Some(node.free_since.get(&owned.ip).copied().unwrap_or(now))
                },
                release: node.release.get(&owned.ip).copied(),
                ip: owned.ip,
                eni: owned.eni,
            })
            .collect();
        Ok(NodeSnapshot {
            zone: node.zone.clone(),
            limits: limits.clone(),
            first_interface_index: node.first_interface_index,
            knobs: node.knobs,
            enis: enis
                .iter()
                .map(|e| EniView {
                    id: e.id.clone(),
                    device_index: e.device_index.unwrap_or(0),
                    subnet: e.subnet.clone(),
                    secondary_ips: e.secondary_ips.len() as u32,
                    in_use: e.state == EniState::InUse,
                    owner: EniOwner::of(e, &self.config.cluster),
                })
                .collect(),
            pool,
            subnets: self.cache.subnets(),
            selector: node.selector.clone(),
            batch: self.provider.batch_limits(),
            release_delay: self.config.release_delay,
        })
    }

    fn outcome(
        &self,
        node: &NodeTarget,
        limits: &InstanceLimits,
        snapshot: &NodeSnapshot,
        plan: Plan,
    ) -> NodeOutcome {
        let enis = self.cache.enis_of(&node.instance);
        let record = self.ip_record(node);
        let first = node.first_interface_index;
        let primary_eni_ips = ownership::primary_eni_ips(&enis, first, &self.config.cluster);
        // What is published from here on is this process's own record.
        self.ips.lock().expect("ip ledger lock").published_here(&node.instance);
        let pool: BTreeMap<Ipv4Addr, PoolEntry> =
            ownership::owned_pool(&enis, first, &self.config.cluster, &record)
                .into_iter()
                .map(|owned| (owned.ip, PoolEntry { eni: owned.eni, subnet: owned.subnet }))
                .collect();
        let (capacity, growth) = self.limit_and_growth(node, limits, snapshot, &enis, &record);
        let enis = enis
            .iter()
            .map(|e| {
                // The agent routes the ENI's pods through its subnet's gateway; a subnet not
                // listed yet leaves both empty until the next outcome.
                let subnet_cidr = self.cache.subnet_cidr(&e.subnet).unwrap_or_default();
                let gateway = subnet_gateway(self.provider.kind(), &subnet_cidr)
                    .map(|g| g.to_string())
                    .unwrap_or_default();
                let status = EniStatus {
                    mac: e.mac.clone(),
                    device_index: e.device_index.unwrap_or(0),
                    subnet: e.subnet.clone(),
                    subnet_cidr,
                    gateway,
                    ips: e.secondary_ips.iter().map(|ip| ip.to_string()).collect(),
                };
                (e.id.to_string(), status)
            })
            .collect();
        let mut release: BTreeMap<Ipv4Addr, Option<ReleaseState>> =
            node.release.keys().filter(|ip| !pool.contains_key(ip)).map(|ip| (*ip, None)).collect();
        release.extend(plan.unmark.iter().map(|ip| (*ip, None)));
        release.extend(plan.mark.iter().map(|ip| (*ip, Some(ReleaseState::Marked))));
        NodeOutcome { pool, enis, plan, capacity, growth, release, primary_eni_ips }
    }

    /// Runs one action; `Ok(true)` when the cache already shows its result.
    async fn act(&self, node: &NodeTarget, action: &Action) -> Result<bool, CloudError> {
        match action {
            Action::Assign { eni, count } => {
                // The cloud assigns exactly `count` or fails, and answers with the addresses
                // it assigned (the EC2 test bed's proxy makes moto answer so too).
                let assigned = self.provider.assign_ips(eni, *count).await?;
                let on = self.cache.enis_of(&node.instance).into_iter().find(|e| &e.id == eni);
                let primary =
                    on.as_ref().is_some_and(|e| EniOwner::of(e, &self.config.cluster) == EniOwner::Primary);
                tracing::debug!(node = %node.name, %eni, primary, ips = ?assigned, "assigned IPs");
                self.record_assigned(node, eni, &assigned, primary);
                if let Some(subnet) = on.map(|e| e.subnet) {
                    self.cache.adjust_subnet_free(&subnet, i64::from(*count));
                }
                // The answer is the truth about these addresses, fresher than a listing
                // (which may lag the write): applied, it spares the node a listing.
                Ok(assigned.len() == *count as usize
                    && self.cache.apply_assigned(&node.instance, eni, &assigned))
            }
            Action::CreateEni { subnet, device_index, ips } => {
                let mut tags = BTreeMap::from([
                    (tag::CLUSTER.to_owned(), self.config.cluster.clone()),
                    (tag::NODE.to_owned(), node.name.clone()),
                    (tag::CREATED_BY.to_owned(), tag::CREATOR.to_owned()),
                ]);
                if let Some(uid) = &self.config.cluster_uid {
                    tags.insert(tag::CLUSTER_UID.to_owned(), uid.clone());
                }
                let request = CreateEni {
                    subnet: subnet.clone(),
                    security_groups: node.security_groups.clone(),
                    secondary_ips: *ips,
                    tags,
                    client_token: self.client_token(node, *device_index),
                };
                let eni = self.provider.create_eni(&request).await?;
                self.cache.adjust_subnet_free(subnet, i64::from(*ips) + 1);
                self.attach_or_clean_up(node, &eni, *device_index).await.map(|()| false)
            }
            Action::Release { eni, ips } => {
                // Cooling before the call: once the cloud has them back it can hand them to
                // another node's assign, whose answer must find them released already
                // (recorded after, the release would drop that node's fresh assign).
                self.record_released(ips);
                tracing::debug!(node = %node.name, %eni, ?ips, "releasing IPs");
                if let Err(e) = self.provider.unassign_ips(eni, ips).await {
                    // Kept on the ENI (a throttle, a refusal): back in the pool at once.
                    self.ips.lock().expect("ip ledger lock").release_failed(ips);
                    return Err(e);
                }
                if let Some(subnet) = self.subnet_of(node, eni) {
                    self.cache.adjust_subnet_free(&subnet, -(ips.len() as i64));
                }
                Ok(false)
            }
        }
    }

    /// An ENI we created but could not attach is deleted at once, so nothing
    /// leaks; if even that fails, its tags let GC find it.
    async fn attach_or_clean_up(&self, node: &NodeTarget, eni: &Eni, index: u32) -> Result<(), CloudError> {
        let Err(attach_error) = self.provider.attach_eni(&eni.id, &node.instance, index).await else {
            return Ok(());
        };
        // A timeout may have attached it; a not-found may be a listing that lags the
        // create: look before undoing.
        let seen = if look_before_undoing(attach_error.class) {
            self.seen_after_create(node, eni).await
        } else {
            SeenAfterCreate::Detached
        };
        match after_attach_failure(attach_error.class, seen) {
            AfterAttachFailure::Keep => return Ok(()),
            AfterAttachFailure::LeaveToGc => {
                tracing::warn!(node = %node.name, eni = %eni.id, error = %attach_error, "a new ENI could not be attached and is not listed yet; left to GC (it carries our tags)");
                return Err(attach_error);
            }
            AfterAttachFailure::Delete => {}
        }
        match self.provider.delete_eni(&eni.id).await {
            // Its addresses are free again: undo what `act` counted for the create.
            Ok(()) => self.cache.adjust_subnet_free(&eni.subnet, -(eni.secondary_ips.len() as i64 + 1)),
            Err(e) => {
                tracing::warn!(node = %node.name, eni = %eni.id, error = %e, "could not delete an unattached ENI; GC will")
            }
        }
        Err(attach_error)
    }

    async fn wait_attached(&self, node: &NodeTarget) -> Result<(), ExecError> {
        let start = Instant::now();
        loop {
            let attaching = self
                .cache
                .enis_of(&node.instance)
                .into_iter()
                .find(|e| matches!(e.state, EniState::Attaching));
            let Some(eni) = attaching else { return Ok(()) };
            let waited = start.elapsed();
            if waited > self.config.attach_timeout {
                return Err(ExecError::AttachTimeout { node: node.name.clone(), eni: eni.id, waited });
            }
            // Half fixed, half jittered: polls of many nodes spread out.
            tokio::time::sleep(self.config.attach_poll / 2 + self.jitter.jittered(0) / 2).await;
            self.resync.instance(&node.instance).await.map_err(|e| ExecError::cloud(&node.name, e))?;
        }
    }

    /// Where a fresh listing finds an ENI created a moment ago: on the instance (a
    /// per-instance resync), else in its subnet's listing.
    async fn seen_after_create(&self, node: &NodeTarget, eni: &Eni) -> SeenAfterCreate {
        if self.resync.instance(&node.instance).await.is_ok()
            && self.cache.enis_of(&node.instance).iter().any(|e| e.id == eni.id)
        {
            return SeenAfterCreate::OnTheInstance;
        }
        match list_all_enis(self.provider.as_ref(), &EniQuery::Subnet(eni.subnet.clone())).await {
            Ok((listed, _)) => match listed.iter().find(|e| e.id == eni.id) {
                Some(e) if e.instance.as_ref() == Some(&node.instance) => SeenAfterCreate::OnTheInstance,
                Some(_) => SeenAfterCreate::Detached,
                None => SeenAfterCreate::NotListed,
            },
            // Cannot look: never delete blind.
            Err(_) => SeenAfterCreate::NotListed,
        }
    }

    /// What this cluster knows of the IPs it handled on the node.
    fn ip_record(&self, node: &NodeTarget) -> IpRecord {
        let (now, cooldown) = (self.now(), self.config.released_cooldown);
        let mut ledger = self.ips.lock().expect("ip ledger lock");
        let mut record = ledger.record(&node.instance, &node.published, now, cooldown);
        if !ledger.was_published_here(&node.instance)
            && let Some(seen) = &node.primary_eni_ips
        {
            let enis = self.cache.enis_of(&node.instance);
            ownership::recover_failover_assigns(
                &mut record,
                &enis,
                node.first_interface_index,
                &self.config.cluster,
                seen,
            );
        }
        record
    }

    fn record_assigned(&self, node: &NodeTarget, eni: &EniId, ips: &[Ipv4Addr], on_primary: bool) {
        let now = self.now();
        self.ips.lock().expect("ip ledger lock").assigned(&node.instance, eni, ips, on_primary, now);
    }

    fn record_released(&self, ips: &[Ipv4Addr]) {
        let now = self.now();
        self.ips.lock().expect("ip ledger lock").released(ips, now);
    }

    fn subnet_of(&self, node: &NodeTarget, eni: &EniId) -> Option<SubnetId> {
        self.cache.enis_of(&node.instance).into_iter().find(|e| &e.id == eni).map(|e| e.subnet)
    }

    /// Unique per creation intent, the same across retries of that intent.
    fn client_token(&self, node: &NodeTarget, device_index: u32) -> String {
        let mut h = DefaultHasher::new();
        (
            &self.config.cluster,
            &node.name,
            device_index,
            self.nonce,
            self.serial.fetch_add(1, Ordering::Relaxed),
        )
            .hash(&mut h);
        format!("eni-ipam-{:016x}", h.finish())
    }
}
