//! `simulate --pods`: after the fleet is up, pods arrive (a burst or a ramp),
//! a model of kube-scheduler binds them by `eni-ipam.io/ip` and `maxPods`,
//! each node's agent hands them pool IPs and reports its usage (which grows
//! the pool through the real operator in the fake cloud), and an autoscaler
//! adds nodes for the pods that stay pending. The same run is played once per
//! capacity meaning, so the two can be read side by side.

use std::time::Duration;

use eni_ipam_cloud::CloudProfile;
use serde::Serialize;

use super::autoscaler::{AutoscalerKind, KarpenterSetup, TemplateSource};
use super::capacity_model::CapacityMode;
use super::pod_report::PodReport;
use super::{ConfigError, SimConfig, Strategy};

/// How the pods arrive.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PodArrival {
    /// All at once.
    Burst {
        /// Pods.
        pods: u32,
    },
    /// One after another at a steady rate.
    Ramp {
        /// Pods a second.
        per_second: f64,
        /// Pods in all.
        pods: u32,
    },
}

impl PodArrival {
    /// Pods in all.
    pub fn pods(self) -> u32 {
        match self {
            PodArrival::Burst { pods } | PodArrival::Ramp { pods, .. } => pods,
        }
    }

    /// When the `n`th pod is created.
    pub fn created_at(self, n: u32) -> Duration {
        match self {
            PodArrival::Burst { .. } => Duration::ZERO,
            PodArrival::Ramp { per_second, .. } => Duration::from_secs_f64(f64::from(n) / per_second),
        }
    }
}

/// What to simulate with pods.
#[derive(Clone, Debug)]
pub struct PodSimConfig {
    /// The fleet that is up when the pods come (cloud, nodes, instance type, knobs, ...).
    pub fleet: SimConfig,
    /// How the pods arrive.
    pub arrival: PodArrival,
    /// Who adds nodes.
    pub autoscaler: AutoscalerKind,
    /// How Karpenter and eni-ipam are set up together (Karpenter only).
    pub karpenter_setup: KarpenterSetup,
    /// Cluster Autoscaler's node template (Cluster Autoscaler only).
    pub template: TemplateSource,
    /// From an autoscaler's launch to the node's agent registering it.
    pub boot_time: Duration,
    /// kubelet `maxPods` (`None`: the instance's pod IPs, as `capacity` prints).
    pub max_pods: Option<u32>,
    /// The most nodes the autoscaler may have in the cluster.
    pub max_nodes: u32,
    /// Pods still Pending this long after the first pod was created never get scheduled.
    pub horizon: Duration,
    /// The capacity meanings to play, each a run of its own.
    pub modes: Vec<CapacityMode>,
}

impl PodSimConfig {
    /// Defaults for `fleet`: the burst of 2,000 pods, no autoscaler, both meanings.
    pub fn new(fleet: SimConfig) -> Self {
        Self {
            fleet,
            arrival: PodArrival::Burst { pods: 2000 },
            autoscaler: AutoscalerKind::None,
            karpenter_setup: KarpenterSetup::Supported,
            template: TemplateSource::ExistingNode,
            boot_time: Duration::from_secs(60),
            max_pods: None,
            max_nodes: 1000,
            horizon: Duration::from_secs(600),
            modes: vec![CapacityMode::Pool, CapacityMode::InstanceLimit],
        }
    }

    /// Whether the pods carry the `eni-ipam.io/ip` request (the webhook mutated them).
    pub fn pods_request_ip(&self) -> bool {
        !(self.autoscaler == AutoscalerKind::Karpenter && self.karpenter_setup == KarpenterSetup::Supported)
    }

    /// The instance's pod IPs (the `ipLimit` the operator publishes).
    pub fn ip_limit(&self) -> u32 {
        let profile = CloudProfile::of(self.fleet.cloud);
        let ty = self.fleet.instance_type(&profile);
        profile.instance_types.get(&ty).map_or(0, |l| l.pod_capacity(self.fleet.first_index(&profile)))
    }

    /// kubelet `maxPods` in effect.
    pub fn max_pods(&self) -> u32 {
        self.max_pods.unwrap_or_else(|| self.ip_limit())
    }

    /// Rejects what no run could satisfy.
    pub fn validate(&self) -> Result<(), PodConfigError> {
        self.fleet.validate()?;
        if self.fleet.strategy != Strategy::Ours {
            return Err(PodConfigError::Strategy(self.fleet.strategy));
        }
        if self.arrival.pods() == 0 {
            return Err(PodConfigError::NoPods);
        }
        if let PodArrival::Ramp { per_second, .. } = self.arrival
            && !(per_second.is_finite() && per_second > 0.0)
        {
            return Err(PodConfigError::Rate(per_second));
        }
        if self.max_pods == Some(0) {
            return Err(PodConfigError::NoMaxPods);
        }
        if self.autoscaler != AutoscalerKind::None && self.max_nodes < self.fleet.nodes {
            return Err(PodConfigError::MaxNodes { max: self.max_nodes, nodes: self.fleet.nodes });
        }
        if self.modes.is_empty() {
            return Err(PodConfigError::NoModes);
        }
        if self.horizon < Duration::from_secs(1) {
            return Err(PodConfigError::Horizon(self.horizon));
        }
        Ok(())
    }
}

/// A pod simulation no run could satisfy, in words that say what to change.
#[derive(Debug, thiserror::Error)]
pub enum PodConfigError {
    /// The fleet's own settings.
    #[error(transparent)]
    Fleet(#[from] ConfigError),
    /// A strategy to compare with: only ours grows pools on usage.
    #[error("--pods runs eni-ipam's own operator; drop --strategy (got {})", .0.label())]
    Strategy(Strategy),
    /// `--pod-burst 0` or `--pod-total 0`.
    #[error("--pod-burst / --pod-total must be at least 1")]
    NoPods,
    /// A rate of no pods.
    #[error("--pod-rate must be a number of pods a second above 0 (got {0})")]
    Rate(f64),
    /// `--max-pods 0`.
    #[error("--max-pods must be at least 1 (leave it out for the instance's pod IPs)")]
    NoMaxPods,
    /// A ceiling below the fleet.
    #[error(
        "--autoscaler-max-nodes {max} is below --nodes {nodes}: the autoscaler could never add one; raise it"
    )]
    MaxNodes {
        /// The ceiling.
        max: u32,
        /// The fleet.
        nodes: u32,
    },
    /// No capacity meaning to play.
    #[error("--capacity needs old, new or both")]
    NoModes,
    /// A horizon too short to schedule anything.
    #[error("--pod-horizon {0:?} is below 1s; give the pods time to be scheduled")]
    Horizon(Duration),
}

/// Plays the pods once per capacity meaning on the virtual or the real clock.
pub async fn run(config: &PodSimConfig, virtual_time: bool) -> anyhow::Result<PodReport> {
    config.validate()?;
    let wall = std::time::Instant::now();
    let mut runs = Vec::with_capacity(config.modes.len());
    for mode in &config.modes {
        runs.push(super::pod_run::play(config, *mode).await?);
    }
    Ok(PodReport::new(config, virtual_time, runs, wall.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PodSimConfig {
        PodSimConfig::new(SimConfig { nodes: 50, ..SimConfig::default() })
    }

    #[test]
    fn impossible_pod_settings_say_what_to_change() {
        let mut c = config();
        c.arrival = PodArrival::Burst { pods: 0 };
        assert!(c.validate().unwrap_err().to_string().contains("at least 1"));
        let mut c = config();
        c.arrival = PodArrival::Ramp { per_second: 0.0, pods: 10 };
        assert!(c.validate().unwrap_err().to_string().contains("--pod-rate"));
        let mut c = config();
        c.autoscaler = AutoscalerKind::ClusterAutoscaler;
        c.max_nodes = 10;
        assert!(c.validate().unwrap_err().to_string().contains("below --nodes 50"));
        let mut c = config();
        c.fleet.strategy = Strategy::NodeSideDaemons;
        assert!(c.validate().unwrap_err().to_string().contains("drop --strategy"));
        assert!(config().validate().is_ok());
    }

    #[test]
    fn only_karpenters_supported_setup_leaves_pods_unmutated() {
        let mut c = config();
        assert!(c.pods_request_ip());
        c.autoscaler = AutoscalerKind::Karpenter;
        assert!(!c.pods_request_ip());
        c.karpenter_setup = KarpenterSetup::Naive;
        assert!(c.pods_request_ip());
        assert_eq!(config().ip_limit(), 56, "m5.xlarge: 4 ENIs x 14 secondary IPs");
    }

    #[test]
    fn a_ramp_spreads_the_pods_over_time() {
        let ramp = PodArrival::Ramp { per_second: 50.0, pods: 100 };
        assert_eq!(ramp.created_at(50), Duration::from_secs(1));
        assert_eq!(PodArrival::Burst { pods: 100 }.created_at(99), Duration::ZERO);
    }
}
