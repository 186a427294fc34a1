//! The flags of `simulate --pods`, flattened into `simulate`'s own.

use std::time::Duration;

use clap::Args;
use eni_ipam_api::duration::parse_interval;

use super::SimConfig;
use super::autoscaler::{AutoscalerKind, KarpenterSetup, TemplateSource};
use super::capacity_model::CapacityMode;
use super::pods::{PodArrival, PodSimConfig};

/// Which capacity meanings a pod simulation plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CapacityChoice {
    /// The pool (today's meaning).
    Old,
    /// The instance's IP limit, lowered on a shortfall.
    New,
    /// Both, side by side.
    Both,
}

/// Flags of the pod simulation.
#[derive(Debug, Args)]
pub struct PodArgs {
    /// After the fleet is up, send pods at it (a burst or a ramp), schedule them by
    /// eni-ipam.io/ip and maxPods, and let an autoscaler add nodes; report how long
    /// pods were Pending and waited for an IP, and the nodes added that were not
    /// needed. The old capacity (the pool) and the new one (the instance's IP limit)
    /// are played side by side.
    #[arg(long, conflicts_with_all = ["bench", "endpoint"])]
    pub pods: bool,
    /// Pods created at once (default 2000 unless --pod-rate).
    #[arg(long, value_name = "N", requires = "pods", conflicts_with = "pod_rate")]
    pub pod_burst: Option<u32>,
    /// Pods created per second, one after another, until --pod-total.
    #[arg(long, value_name = "R", requires_all = ["pods", "pod_total"])]
    pub pod_rate: Option<f64>,
    /// Pods in all with --pod-rate.
    #[arg(long, value_name = "N", requires = "pod_rate")]
    pub pod_total: Option<u32>,
    /// Who adds nodes for pods that stay Pending: none, cluster-autoscaler (scans
    /// every 10 s, new nodes copied from --node-template) or karpenter (batches
    /// pending pods 1 s idle / 10 s max; ignores pods requesting eni-ipam.io/ip,
    /// kubernetes-sigs/karpenter#751).
    #[arg(long, value_enum, default_value = "none", requires = "pods")]
    pub autoscaler: AutoscalerKind,
    /// With --autoscaler karpenter: supported (the webhook leaves pods unmutated,
    /// kubelet maxPods from `eni-ipam-operator capacity` bounds them; the default) or
    /// naive (the webhook mutates every pod: Karpenter launches nothing for them).
    #[arg(long, value_enum)]
    pub karpenter_setup: Option<KarpenterSetup>,
    /// With --autoscaler cluster-autoscaler: where new nodes' eni-ipam.io/ip comes
    /// from: existing-node (a copy of a running node's allocatable; the default) or
    /// capacity-table (the node-template tag `capacity` prints, as for scale from zero).
    #[arg(long, value_enum)]
    pub node_template: Option<TemplateSource>,
    /// From an autoscaler's launch to the node registering with its agent running.
    #[arg(long, default_value = "60s", value_parser = parse_interval, requires = "pods")]
    pub node_boot_time: Duration,
    /// kubelet maxPods of every node (default: the instance's pod IPs, as
    /// `eni-ipam-operator capacity` prints; host-network pods are not simulated).
    #[arg(long, value_name = "N", requires = "pods")]
    pub max_pods: Option<u32>,
    /// The most nodes the autoscaler may have in the cluster (its node group's max size).
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "pods")]
    pub autoscaler_max_nodes: u32,
    /// Pods still Pending this long after the first pod was created are reported as never scheduled.
    #[arg(long, default_value = "10m", value_parser = parse_interval, requires = "pods")]
    pub pod_horizon: Duration,
    /// Which eni-ipam.io/ip capacity to play: old (the pool), new (the instance's IP
    /// limit, lowered on a shortfall) or both side by side.
    #[arg(long, value_enum, default_value = "both", requires = "pods")]
    pub capacity: CapacityChoice,
}

impl PodArgs {
    /// The pod simulation over `fleet`, or why these flags do not go together.
    pub fn config(&self, fleet: SimConfig) -> Result<PodSimConfig, String> {
        if self.karpenter_setup.is_some() && self.autoscaler != AutoscalerKind::Karpenter {
            return Err("--karpenter-setup needs --autoscaler karpenter".into());
        }
        if self.node_template.is_some() && self.autoscaler != AutoscalerKind::ClusterAutoscaler {
            return Err("--node-template needs --autoscaler cluster-autoscaler".into());
        }
        let mut config = PodSimConfig::new(fleet);
        config.arrival = match (self.pod_burst, self.pod_rate, self.pod_total) {
            (_, Some(per_second), Some(pods)) => PodArrival::Ramp { per_second, pods },
            (Some(pods), _, _) => PodArrival::Burst { pods },
            _ => config.arrival,
        };
        config.autoscaler = self.autoscaler;
        config.karpenter_setup = self.karpenter_setup.unwrap_or(config.karpenter_setup);
        config.template = self.node_template.unwrap_or(config.template);
        config.boot_time = self.node_boot_time;
        config.max_pods = self.max_pods;
        config.max_nodes = self.autoscaler_max_nodes;
        config.horizon = self.pod_horizon;
        config.modes = match self.capacity {
            CapacityChoice::Old => vec![CapacityMode::Pool],
            CapacityChoice::New => vec![CapacityMode::InstanceLimit],
            CapacityChoice::Both => vec![CapacityMode::Pool, CapacityMode::InstanceLimit],
        };
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}
