//! One pod run under one capacity meaning: the fleet comes up in the fake
//! cloud, then every 100 ms (virtual) pods arrive, kube-scheduler's model binds
//! what fits, nodes an autoscaler launched finish booting, and the autoscaler
//! looks; between ticks the operator's events hand fresh pool IPs to the pods
//! waiting on their node, as the agent would.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{InstanceId, Zone};
use eni_ipam_cloud::CloudProfile;
use tokio::time::Instant;

use super::autoscaler::{Autoscaler, ClusterView, nodes_needed};
use super::capacity_model::{CapacityMode, advertised_ips};
use super::pod_report::{PodRun, Waits};
use super::pods::PodSimConfig;
use super::scheduler::{SchedNode, schedule};
use super::{FakeFleet, controller_config, eninode, node_name};
use crate::controller::Controller;
use crate::fleet::NodeEvent;
use crate::node_store::{MemoryNodeStore, NodeStore};

/// Period of the scheduler, the agents' hand-out and the autoscaler's look.
const TICK: Duration = Duration::from_millis(100);
/// Least time between two `status.used` writes of one agent (its default `--ipam-node-update-rate`).
const USED_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// A pod's life.
#[derive(Clone, Copy, Debug, Default)]
struct Pod {
    created: Duration,
    /// Node and time of binding.
    bound: Option<(usize, Duration)>,
    /// When its node's agent gave it an IP.
    ip_at: Option<Duration>,
}

/// A node and its agent.
struct SimNode {
    name: String,
    instance: InstanceId,
    zone: Zone,
    /// When the node registers (the agent creates its ENINode).
    boots_at: Duration,
    up: bool,
    /// The agent has its pool: no startup taint, the scheduler may place pods.
    schedulable: bool,
    pool: BTreeSet<String>,
    /// IP -> the pod holding it.
    holders: BTreeMap<String, usize>,
    /// Bound pods without an IP yet, in binding order.
    waiting: VecDeque<usize>,
    pods: u32,
    ip_requested: u32,
    /// What the operator reported obtainable on a shortfall.
    obtainable: Option<u32>,
    used_changed: bool,
    used_written_at: Option<Duration>,
    launched_by_autoscaler: bool,
}

impl SimNode {
    fn new(name: String, (instance, zone): (InstanceId, Zone), boots_at: Duration, added: bool) -> Self {
        Self {
            name,
            instance,
            zone,
            boots_at,
            up: false,
            schedulable: false,
            pool: BTreeSet::new(),
            holders: BTreeMap::new(),
            waiting: VecDeque::new(),
            pods: 0,
            ip_requested: 0,
            obtainable: None,
            used_changed: false,
            used_written_at: None,
            launched_by_autoscaler: added,
        }
    }

    /// Gives free pool IPs to the pods waiting, first bound first served.
    fn hand_out(&mut self, pods: &mut [Pod], now: Duration) {
        let mut free =
            self.pool.iter().filter(|ip| !self.holders.contains_key(*ip)).cloned().collect::<Vec<_>>();
        free.reverse();
        while !self.waiting.is_empty() {
            let Some(ip) = free.pop() else { break };
            let pod = self.waiting.pop_front().expect("a pod waits");
            pods[pod].ip_at = Some(now);
            self.holders.insert(ip, pod);
            self.used_changed = true;
        }
    }
}

/// The model's view of what the cluster has.
struct Cluster<'a> {
    config: &'a PodSimConfig,
    mode: CapacityMode,
    ip_limit: u32,
    max_pods: u32,
    requests_ip: bool,
    nodes: Vec<SimNode>,
    index: HashMap<String, usize>,
    pods: Vec<Pod>,
}

impl Cluster<'_> {
    fn sched_node(&self, n: &SimNode) -> SchedNode {
        let max_allocate = Some(self.config.fleet.knobs.max_allocate).filter(|m| *m > 0);
        let ip_limit = n.schedulable.then_some(self.ip_limit);
        SchedNode {
            schedulable: n.schedulable,
            max_pods: self.max_pods,
            ip_allocatable: advertised_ips(
                ip_limit,
                n.obtainable,
                n.pool.len() as u32,
                max_allocate,
                self.mode,
            ),
            pods: n.pods,
            ip_requested: n.ip_requested,
        }
    }

    /// Pods a node can ever take: by `maxPods` and, for pods with the request, by
    /// the IPs its pool can grow to: the instance IP limit, lowered to what is
    /// obtainable on a shortfall and to `max-allocate`.
    fn slots(&self, obtainable: Option<u32>) -> u32 {
        if !self.requests_ip {
            return self.max_pods;
        }
        let max_allocate = Some(self.config.fleet.knobs.max_allocate).filter(|m| *m > 0);
        let ips = obtainable.unwrap_or(self.ip_limit).min(max_allocate.unwrap_or(u32::MAX));
        self.max_pods.min(ips)
    }

    /// The operator worked a node: its pool as published, the pods waiting served.
    async fn on_event(&mut self, event: NodeEvent, store: &MemoryNodeStore, now: Duration) {
        let NodeEvent::Converged { node, shortfall, .. } = event else { return };
        let Some(&i) = self.index.get(&node) else { return };
        let Ok(Some(stored)) = store.get(&node).await else { return };
        let n = &mut self.nodes[i];
        n.pool = stored.spec.pool.keys().cloned().collect();
        n.obtainable = shortfall.map(|_| n.pool.len() as u32);
        n.schedulable = true;
        n.hand_out(&mut self.pods, now);
    }
}

/// Plays the pods under one capacity meaning.
pub(crate) async fn play(config: &PodSimConfig, mode: CapacityMode) -> anyhow::Result<PodRun> {
    let sim = &config.fleet;
    let profile = CloudProfile::of(sim.cloud);
    let instance_type = sim.instance_type(&profile);
    let ip_limit = config.ip_limit();
    let ceiling = config.max_nodes.max(sim.nodes);
    // Subnets with room for every node the autoscaler may add, at its instance limit.
    let ips_per_node = ip_limit.saturating_mul(ceiling).div_ceil(sim.nodes.max(1));
    let fake = FakeFleet::launch(sim, &profile, &instance_type, ips_per_node)?;
    let mut subnet_of_zone = BTreeMap::new();
    for subnet in fake.cloud.console().list_subnets(&fake.vpc) {
        subnet_of_zone.entry(subnet.zone.clone()).or_insert(subnet.id);
    }
    let zones: Vec<Zone> = subnet_of_zone.keys().cloned().collect();
    let store = Arc::new(MemoryNodeStore::new());
    let controller = controller_config(sim, &profile, &fake.vpc, ceiling as usize);
    let Controller { fleet, mut events, .. } =
        Controller::build(fake.provider.clone(), store.clone(), &controller);
    let mut workers = fleet.spawn_workers();
    workers.push(fleet.spawn_bulk_resync(sim.resync_interval));
    let mut cluster = Cluster {
        config,
        mode,
        ip_limit,
        max_pods: config.max_pods(),
        requests_ip: config.pods_request_ip(),
        nodes: Vec::new(),
        index: HashMap::new(),
        pods: Vec::new(),
    };
    let register = |cluster: &mut Cluster, i: usize| {
        let n = &mut cluster.nodes[i];
        n.up = true;
        store.insert(eninode(sim, &profile, &fake.vpc, &n.name, &n.instance, &n.zone, &instance_type));
        fleet.enqueue(&n.name, sim.knobs.pre_allocate.max(sim.knobs.min_allocate));
    };
    for (i, launched) in fake.instances.iter().cloned().enumerate() {
        cluster.index.insert(node_name(i), i);
        cluster.nodes.push(SimNode::new(node_name(i), launched, Duration::ZERO, false));
        register(&mut cluster, i);
    }

    // The fleet comes up: every node has its pool before the first pod.
    let begin = Instant::now();
    let fleet_deadline = begin + sim.deadline;
    while cluster.nodes.iter().any(|n| !n.schedulable) {
        match tokio::time::timeout_at(fleet_deadline, events.recv()).await {
            Ok(Some(event)) => cluster.on_event(event, &store, Duration::ZERO).await,
            Ok(None) | Err(_) => anyhow::bail!(
                "the fleet of {} nodes did not get its pools within --deadline {:?}; raise it",
                sim.nodes,
                sim.deadline
            ),
        }
    }
    let fleet_ready_s = begin.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let total = config.arrival.pods();
    let mut pending: VecDeque<usize> = VecDeque::new();
    let mut autoscaler =
        Autoscaler::new(config.autoscaler, config.karpenter_setup, config.template, config.max_nodes);
    let mut unneeded = 0u32;
    let mut scale_ups = 0u32;
    let mut next_tick = t0;
    let mut last_running = None;
    loop {
        match tokio::time::timeout_at(next_tick, events.recv()).await {
            Ok(Some(event)) => {
                cluster.on_event(event, &store, t0.elapsed()).await;
                continue;
            }
            Ok(None) => anyhow::bail!("the operator stopped during the pod run"),
            Err(_) => next_tick += TICK,
        }
        let now = t0.elapsed();
        // Pods arrive.
        while (cluster.pods.len() as u32) < total
            && config.arrival.created_at(cluster.pods.len() as u32) <= now
        {
            pending.push_back(cluster.pods.len());
            cluster.pods.push(Pod { created: now, ..Pod::default() });
        }
        // Nodes finish booting: their agents register them.
        for i in 0..cluster.nodes.len() {
            if !cluster.nodes[i].up && cluster.nodes[i].boots_at <= now {
                register(&mut cluster, i);
            }
        }
        // kube-scheduler binds what fits; the agents serve the pods at once if they can.
        let up: Vec<usize> = (0..cluster.nodes.len()).filter(|i| cluster.nodes[*i].up).collect();
        let mut view: Vec<SchedNode> = up.iter().map(|i| cluster.sched_node(&cluster.nodes[*i])).collect();
        for slot in schedule(&mut view, pending.len(), cluster.requests_ip) {
            let pod = pending.pop_front().expect("a pod was pending");
            let node = &mut cluster.nodes[up[slot]];
            cluster.pods[pod].bound = Some((up[slot], now));
            node.pods += 1;
            node.ip_requested += u32::from(cluster.requests_ip);
            node.waiting.push_back(pod);
            node.hand_out(&mut cluster.pods, now);
        }
        // Agents report their usage (at most once a second each); the operator hears it.
        for node in cluster.nodes.iter_mut().filter(|n| n.up && n.used_changed) {
            if node.used_written_at.is_some_and(|at| now < at + USED_REPORT_INTERVAL) {
                continue;
            }
            let used =
                node.holders.iter().map(|(ip, pod)| (ip.clone(), format!("default/pod-{pod:05}"))).collect();
            if let Some(stored) = store.report_used(&node.name, used) {
                fleet.consider(&stored);
            }
            node.used_changed = false;
            node.used_written_at = Some(now);
        }
        // The autoscaler looks.
        let upcoming = cluster.nodes.iter().filter(|n| !n.schedulable).count() as u32;
        let scan = ClusterView {
            now,
            pending: pending.len() as u32,
            newest_pending_at: pending.back().map_or(Duration::ZERO, |p| cluster.pods[*p].created),
            requests_ip: cluster.requests_ip,
            nodes: &view,
            upcoming,
            template_ip: view.first().map_or(0, |n| n.ip_allocatable),
            ip_limit,
            max_pods: cluster.max_pods,
        };
        let launch = autoscaler.tick(&scan, cluster.nodes.len() as u32);
        if launch > 0 {
            scale_ups += 1;
            let room: u32 =
                cluster.nodes.iter().map(|n| cluster.slots(n.obtainable).saturating_sub(n.pods)).sum();
            let needed = nodes_needed(pending.len() as u32, room, cluster.slots(None));
            unneeded += launch.saturating_sub(needed);
            launch_nodes(&mut cluster, &fake, &instance_type, &zones, &subnet_of_zone, launch, now)?;
        }
        let running = cluster.pods.iter().filter(|p| p.ip_at.is_some()).count() as u32;
        if running == total {
            last_running = Some(now);
            break;
        }
        if now >= config.horizon {
            break;
        }
    }
    fleet.close();
    for w in workers {
        w.abort();
    }
    let tally = Tally { unneeded, scale_ups, fleet_ready_s, last_running, simulated: t0.elapsed() };
    Ok(summarize(&cluster, &fake, &store, mode, tally))
}

/// Launches `count` instances now (round-robin over the zones); their agents register them after the boot time.
fn launch_nodes(
    cluster: &mut Cluster,
    fake: &FakeFleet,
    instance_type: &str,
    zones: &[Zone],
    subnet_of_zone: &BTreeMap<Zone, eni_ipam_api::SubnetId>,
    count: u32,
    now: Duration,
) -> anyhow::Result<()> {
    let mut console = fake.cloud.console();
    for _ in 0..count {
        let n = cluster.nodes.len();
        let zone = zones[n % zones.len()].clone();
        let instance = console.launch_instance(instance_type, &subnet_of_zone[&zone])?;
        cluster.index.insert(node_name(n), n);
        cluster.nodes.push(SimNode::new(
            node_name(n),
            (instance, zone),
            now + cluster.config.boot_time,
            true,
        ));
    }
    Ok(())
}

/// What the loop counted, besides the pods and the nodes.
struct Tally {
    unneeded: u32,
    scale_ups: u32,
    fleet_ready_s: f64,
    last_running: Option<Duration>,
    simulated: Duration,
}

/// The run's figures, with the checks that no IP went to two pods and every
/// pod's IP is on an ENI of its node's instance in the cloud.
fn summarize(
    cluster: &Cluster,
    fake: &FakeFleet,
    store: &MemoryNodeStore,
    mode: CapacityMode,
    tally: Tally,
) -> PodRun {
    let console = fake.cloud.console();
    let enis: Vec<_> = console.all_enis().cloned().collect();
    drop(console);
    let instance_of_ip: HashMap<Ipv4Addr, &InstanceId> = enis
        .iter()
        .filter_map(|e| Some((e.instance.as_ref()?, e)))
        .flat_map(|(i, e)| e.secondary_ips.iter().map(move |ip| (*ip, i)))
        .collect();
    let mut pod_ips = BTreeSet::new();
    let mut duplicate_pod_ips = 0u64;
    let mut pod_ips_not_on_node = 0u64;
    for node in &cluster.nodes {
        for ip in node.holders.keys() {
            if !pod_ips.insert(ip.clone()) {
                duplicate_pod_ips += 1;
            }
            let on_node =
                ip.parse::<Ipv4Addr>().ok().and_then(|ip| instance_of_ip.get(&ip)) == Some(&&node.instance);
            if !on_node {
                pod_ips_not_on_node += 1;
            }
        }
    }
    let invariants = super::invariants::check("sim", &enis, &store.all());
    let pending: Vec<Duration> = cluster.pods.iter().filter_map(|p| Some(p.bound?.1 - p.created)).collect();
    let waiting: Vec<Duration> = cluster.pods.iter().filter_map(|p| Some(p.ip_at? - p.bound?.1)).collect();
    PodRun {
        capacity: mode,
        pods: cluster.pods.len() as u32,
        pods_scheduled: pending.len() as u32,
        pods_running: waiting.len() as u32,
        pod_pending: Waits::of(pending),
        pod_waiting_for_ip: Waits::of(waiting),
        nodes_added: cluster.nodes.iter().filter(|n| n.launched_by_autoscaler).count() as u32,
        nodes_added_unneeded: tally.unneeded,
        scale_ups: tally.scale_ups,
        pods_never_scheduled: cluster.pods.iter().filter(|p| p.bound.is_none()).count() as u32,
        fleet_ready_s: tally.fleet_ready_s,
        all_pods_running_s: tally.last_running.map(|d| d.as_secs_f64()),
        simulated_s: tally.simulated.as_secs_f64(),
        duplicate_pod_ips,
        pod_ips_not_on_node,
        duplicate_pool_ips: invariants.duplicate_ips,
    }
}
