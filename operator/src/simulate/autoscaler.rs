//! Cluster Autoscaler and Karpenter, played after their documented loops, as
//! pure state machines: each tick sees the cluster (pending pods, nodes, nodes
//! on their way) and answers how many nodes to launch now.
//!
//! - Cluster Autoscaler scans every `--scan-interval` (10 s by default). Pods
//!   the scheduler marked unschedulable that fit neither an existing node nor
//!   a node already on its way (both as CA sees them) get new nodes, each
//!   taken to be like the node group's template: a copy of an existing node's
//!   allocatable, or (scaling from zero) the `node-template/resources` tag that
//!   `capacity` prints.
//! - Karpenter batches pending pods (a batch closes after 1 s without a new pod,
//!   or 10 s after it opened), then launches nodes for the pods that fit neither
//!   an existing node nor one in flight, packing them by kubelet `maxPods`. A pod
//!   that requests an extended resource Karpenter does not know is left out
//!   (kubernetes-sigs/karpenter#751): no node is ever launched for it.

use std::time::Duration;

use serde::Serialize;

use super::scheduler::SchedNode;

/// Which autoscaler adds nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AutoscalerKind {
    /// No node is ever added.
    None,
    /// Cluster Autoscaler.
    ClusterAutoscaler,
    /// Karpenter.
    Karpenter,
}

/// How a Karpenter cluster runs eni-ipam.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KarpenterSetup {
    /// The webhook leaves the pods unmutated (no `eni-ipam.io/ip` request); kubelet
    /// `maxPods` comes from `capacity`, so no node takes more pods than it has IPs.
    Supported,
    /// The webhook adds the `eni-ipam.io/ip` request to every pod, which Karpenter
    /// does not know: it launches no node for them.
    Naive,
}

/// Where Cluster Autoscaler's node template comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateSource {
    /// A copy of an existing node of the group (its allocatable as advertised now).
    ExistingNode,
    /// The node-template tag from the capacity table (scale from zero).
    CapacityTable,
}

/// The cluster at one instant, as an autoscaler reads it.
#[derive(Clone, Copy, Debug)]
pub struct ClusterView<'a> {
    /// Time since the run began.
    pub now: Duration,
    /// Pods the scheduler could not place.
    pub pending: u32,
    /// When the newest of them was created.
    pub newest_pending_at: Duration,
    /// Whether the pods request `eni-ipam.io/ip`.
    pub requests_ip: bool,
    /// Every node that is up, as the scheduler sees it.
    pub nodes: &'a [SchedNode],
    /// Nodes launched and not schedulable yet.
    pub upcoming: u32,
    /// `eni-ipam.io/ip` allocatable of the node CA copies as its template.
    pub template_ip: u32,
    /// The instance type's pod IPs (the capacity table).
    pub ip_limit: u32,
    /// kubelet `maxPods` of a new node.
    pub max_pods: u32,
}

impl ClusterView<'_> {
    /// Pods that fit nowhere, neither on a node that is up nor on one on its way
    /// (`per_node` pods each); and whether one node could take any.
    fn beyond(&self, per_node: u32) -> u32 {
        let room: u32 = self.nodes.iter().map(|n| n.room(self.requests_ip)).sum();
        self.pending.saturating_sub(room).saturating_sub(self.upcoming.saturating_mul(per_node))
    }
}

/// One autoscaler and its clock.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    kind: AutoscalerKind,
    setup: KarpenterSetup,
    template: TemplateSource,
    scan_interval: Duration,
    batch_idle: Duration,
    batch_max: Duration,
    max_nodes: u32,
    next_scan: Duration,
    batch_opened: Option<Duration>,
}

/// Cluster Autoscaler's default `--scan-interval`.
pub const CA_SCAN_INTERVAL: Duration = Duration::from_secs(10);
/// Karpenter's default `BATCH_IDLE_DURATION`.
pub const KARPENTER_BATCH_IDLE: Duration = Duration::from_secs(1);
/// Karpenter's default `BATCH_MAX_DURATION`.
pub const KARPENTER_BATCH_MAX: Duration = Duration::from_secs(10);

impl Autoscaler {
    /// An autoscaler of `kind` that keeps the cluster at `max_nodes` nodes at most.
    pub fn new(
        kind: AutoscalerKind,
        setup: KarpenterSetup,
        template: TemplateSource,
        max_nodes: u32,
    ) -> Self {
        Self {
            kind,
            setup,
            template,
            scan_interval: CA_SCAN_INTERVAL,
            batch_idle: KARPENTER_BATCH_IDLE,
            batch_max: KARPENTER_BATCH_MAX,
            max_nodes,
            next_scan: CA_SCAN_INTERVAL,
            batch_opened: None,
        }
    }

    /// Nodes to launch now; `total_nodes` counts those up and those on their way.
    pub fn tick(&mut self, view: &ClusterView, total_nodes: u32) -> u32 {
        let wanted = match self.kind {
            AutoscalerKind::None => 0,
            AutoscalerKind::ClusterAutoscaler => self.cluster_autoscaler(view),
            AutoscalerKind::Karpenter => self.karpenter(view),
        };
        wanted.min(self.max_nodes.saturating_sub(total_nodes))
    }

    fn cluster_autoscaler(&mut self, view: &ClusterView) -> u32 {
        if view.now < self.next_scan {
            return 0;
        }
        while self.next_scan <= view.now {
            self.next_scan += self.scan_interval;
        }
        let template_ip = match self.template {
            TemplateSource::ExistingNode => view.template_ip,
            TemplateSource::CapacityTable => view.ip_limit,
        };
        let per_node = if view.requests_ip { template_ip.min(view.max_pods) } else { view.max_pods };
        if per_node == 0 {
            // The template could hold none of the pods: CA says so and adds nothing.
            return 0;
        }
        view.beyond(per_node).div_ceil(per_node)
    }

    fn karpenter(&mut self, view: &ClusterView) -> u32 {
        if view.pending == 0 {
            self.batch_opened = None;
            return 0;
        }
        let opened = *self.batch_opened.get_or_insert(view.now);
        let idle_since = view.newest_pending_at.max(opened);
        if view.now < opened + self.batch_max && view.now < idle_since + self.batch_idle {
            return 0;
        }
        self.batch_opened = None;
        if view.requests_ip || self.setup == KarpenterSetup::Naive || view.max_pods == 0 {
            // #751: no instance type offers the unknown resource; Karpenter launches nothing.
            return 0;
        }
        view.beyond(view.max_pods).div_ceil(view.max_pods)
    }
}

/// Nodes a scale-up really needed: the pending pods less the room the nodes
/// already up or on their way have by their instance IP limits and `maxPods`
/// (what their pools can grow to), in new nodes of `per_node` pods each.
pub fn nodes_needed(pending: u32, fleet_room: u32, per_node: u32) -> u32 {
    if per_node == 0 {
        return 0;
    }
    pending.saturating_sub(fleet_room).div_ceil(per_node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(n: usize, ip_allocatable: u32) -> Vec<SchedNode> {
        let node = SchedNode {
            schedulable: true,
            max_pods: 56,
            ip_allocatable,
            pods: ip_allocatable,
            ip_requested: ip_allocatable,
        };
        vec![node; n]
    }

    fn view(
        now: u64,
        pending: u32,
        requests_ip: bool,
        nodes: &[SchedNode],
        template_ip: u32,
    ) -> ClusterView<'_> {
        ClusterView {
            now: Duration::from_secs(now),
            pending,
            newest_pending_at: Duration::ZERO,
            requests_ip,
            nodes,
            upcoming: 0,
            template_ip,
            ip_limit: 56,
            max_pods: 56,
        }
    }

    fn ca(template: TemplateSource) -> Autoscaler {
        Autoscaler::new(AutoscalerKind::ClusterAutoscaler, KarpenterSetup::Supported, template, 1000)
    }

    #[test]
    fn cluster_autoscaler_scans_every_ten_seconds_and_trusts_its_template() {
        let nodes = full(50, 8);
        let mut old = ca(TemplateSource::ExistingNode);
        assert_eq!(old.tick(&view(5, 1600, true, &nodes, 8), 50), 0, "no scan before 10 s");
        assert_eq!(old.tick(&view(10, 1600, true, &nodes, 8), 50), 200, "a copy of a pool-of-8 node holds 8");
        assert_eq!(old.tick(&view(11, 1600, true, &nodes, 8), 250), 0, "next scan at 20 s");
        let mut upcoming = view(20, 1600, true, &nodes, 8);
        upcoming.upcoming = 200;
        assert_eq!(old.tick(&upcoming, 250), 0, "the nodes on their way cover the pods");

        let nodes = full(50, 56);
        let mut table = ca(TemplateSource::CapacityTable);
        assert_eq!(table.tick(&view(10, 100, true, &nodes, 0), 50), 2, "the capacity table: 56 a node");
        let mut capped = Autoscaler::new(
            AutoscalerKind::ClusterAutoscaler,
            KarpenterSetup::Supported,
            TemplateSource::ExistingNode,
            60,
        );
        assert_eq!(capped.tick(&view(10, 1600, true, &full(50, 8), 8), 50), 10, "the group's max size");
        assert_eq!(
            ca(TemplateSource::ExistingNode).tick(&view(10, 10, true, &nodes, 0), 50),
            0,
            "empty template"
        );
    }

    #[test]
    fn karpenter_batches_and_ignores_pods_with_an_unknown_resource() {
        let nodes = full(50, 56);
        let supported = || {
            Autoscaler::new(
                AutoscalerKind::Karpenter,
                KarpenterSetup::Supported,
                TemplateSource::ExistingNode,
                1000,
            )
        };
        let mut k = supported();
        assert_eq!(k.tick(&view(0, 100, false, &nodes, 0), 50), 0, "the batch opens");
        assert_eq!(
            k.tick(&view(1, 100, false, &nodes, 0), 50),
            2,
            "1 s without a new pod closes it: 100 pods / 56"
        );

        let mut ramp = supported();
        let mut v = view(0, 100, false, &nodes, 0);
        for s in 0..10 {
            v.now = Duration::from_secs(s);
            v.newest_pending_at = v.now;
            assert_eq!(ramp.tick(&v, 50), 0, "pods keep coming at {s} s");
        }
        v.now = Duration::from_secs(10);
        v.newest_pending_at = v.now;
        assert_eq!(ramp.tick(&v, 50), 2, "the batch closes at 10 s whatever comes");

        let mut mutated = supported();
        mutated.tick(&view(0, 100, true, &nodes, 56), 50);
        assert_eq!(
            mutated.tick(&view(1, 100, true, &nodes, 56), 50),
            0,
            "#751: a pod requesting eni-ipam.io/ip gets no node"
        );
        let mut naive = Autoscaler::new(
            AutoscalerKind::Karpenter,
            KarpenterSetup::Naive,
            TemplateSource::ExistingNode,
            1000,
        );
        naive.tick(&view(0, 100, false, &nodes, 0), 50);
        assert_eq!(naive.tick(&view(1, 100, false, &nodes, 0), 50), 0, "naive setup: nothing");
    }

    #[test]
    fn a_node_was_needed_only_for_pods_beyond_the_fleets_ip_limits() {
        // (pending, room the fleet has by its limits, pods a new node takes, nodes needed)
        let rows = [(1600, 2400, 56, 0), (650, 0, 27, 25), (100, 80, 56, 1), (0, 0, 56, 0), (10, 0, 0, 0)];
        for (pending, room, per_node, needed) in rows {
            assert_eq!(nodes_needed(pending, room, per_node), needed, "{pending} pending, room {room}");
        }
    }
}
