//! The pod simulation's report: one struct per capacity meaning, written as
//! JSON and as a table with the meanings side by side.

use std::fmt::Write as _;
use std::time::Duration;

use eni_ipam_api::PoolKnobs;
use eni_ipam_cloud::CloudProfile;
use serde::Serialize;

use super::autoscaler::{AutoscalerKind, KarpenterSetup, TemplateSource};
use super::capacity_model::CapacityMode;
use super::pods::{PodArrival, PodSimConfig};
use super::report::percentile;

/// Median and 99th percentile of a wait, in seconds (`None`: nobody waited).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Waits {
    /// Median.
    pub p50_s: Option<f64>,
    /// 99th percentile.
    pub p99_s: Option<f64>,
}

impl Waits {
    /// Nearest-rank percentiles of `waits`.
    pub fn of(mut waits: Vec<Duration>) -> Self {
        waits.sort();
        Self { p50_s: percentile(&waits, 50.0), p99_s: percentile(&waits, 99.0) }
    }
}

/// One capacity meaning's run.
#[derive(Clone, Debug, Serialize)]
pub struct PodRun {
    /// `old` (the pool) or `new` (the instance's IP limit).
    pub capacity: CapacityMode,
    /// Pods created.
    pub pods: u32,
    /// Pods bound to a node.
    pub pods_scheduled: u32,
    /// Pods that got their IP.
    pub pods_running: u32,
    /// From creation to binding, over the pods bound.
    pub pod_pending: Waits,
    /// From binding to the agent giving the pod its IP, over the pods that got one.
    pub pod_waiting_for_ip: Waits,
    /// Nodes the autoscaler launched.
    pub nodes_added: u32,
    /// Of those, nodes not needed: launched while the nodes already up or on their way
    /// had room for every pending pod by the IPs their pools can grow to (instance
    /// limit, shortfall, `max-allocate`) and `maxPods`, summed over the scale-ups.
    pub nodes_added_unneeded: u32,
    /// Times the autoscaler launched nodes.
    pub scale_ups: u32,
    /// Pods still Pending at the end of the run.
    pub pods_never_scheduled: u32,
    /// Time for the fleet to get its pools before the first pod.
    pub fleet_ready_s: f64,
    /// From the first pod to the last one running; `null` if some never ran.
    pub all_pods_running_s: Option<f64>,
    /// Simulated time from the first pod to the end of the run.
    pub simulated_s: f64,
    /// IPs the agents gave to two pods (must be 0).
    pub duplicate_pod_ips: u64,
    /// Pod IPs the cloud does not have on an ENI of the pod's node (must be 0).
    pub pod_ips_not_on_node: u64,
    /// IPs in two nodes' pools (must be 0).
    pub duplicate_pool_ips: u64,
}

/// The whole pod simulation.
#[derive(Clone, Debug, Serialize)]
pub struct PodReport {
    /// `aws` or `alibaba`.
    pub cloud: String,
    /// Instance type of every node.
    pub instance_type: String,
    /// Nodes up when the pods came.
    pub nodes: u32,
    /// Pool knobs of every node.
    pub knobs: PoolKnobs,
    /// First device index for pods.
    pub first_interface_index: u32,
    /// The instance's pod IPs (the ENINode's `ipLimit`).
    pub ip_limit: u32,
    /// kubelet `maxPods`.
    pub max_pods: u32,
    /// How the pods came.
    pub arrival: PodArrival,
    /// Who added nodes.
    pub autoscaler: AutoscalerKind,
    /// Karpenter's setup (Karpenter runs only).
    pub karpenter_setup: Option<KarpenterSetup>,
    /// Cluster Autoscaler's template (Cluster Autoscaler runs only).
    pub node_template: Option<TemplateSource>,
    /// Whether the pods request `eni-ipam.io/ip`.
    pub pods_request_ip: bool,
    /// Launch to registration of an added node.
    pub node_boot_time_s: f64,
    /// Pods still Pending this long after the first one was created count as never scheduled.
    pub horizon_s: f64,
    /// RNG seed.
    pub seed: u64,
    /// Whether time was virtual.
    pub virtual_time: bool,
    /// One run per capacity meaning.
    pub runs: Vec<PodRun>,
    /// Real time all runs took.
    pub wall_clock_s: f64,
}

impl PodReport {
    /// The report of `runs` played for `config`.
    pub fn new(config: &PodSimConfig, virtual_time: bool, runs: Vec<PodRun>, wall: Duration) -> Self {
        let profile = CloudProfile::of(config.fleet.cloud);
        Self {
            cloud: config.fleet.cloud.to_string(),
            instance_type: config.fleet.instance_type(&profile),
            nodes: config.fleet.nodes,
            knobs: config.fleet.knobs,
            first_interface_index: config.fleet.first_index(&profile),
            ip_limit: config.ip_limit(),
            max_pods: config.max_pods(),
            arrival: config.arrival,
            autoscaler: config.autoscaler,
            karpenter_setup: (config.autoscaler == AutoscalerKind::Karpenter)
                .then_some(config.karpenter_setup),
            node_template: (config.autoscaler == AutoscalerKind::ClusterAutoscaler)
                .then_some(config.template),
            pods_request_ip: config.pods_request_ip(),
            node_boot_time_s: config.boot_time.as_secs_f64(),
            horizon_s: config.horizon.as_secs_f64(),
            seed: config.fleet.seed,
            virtual_time,
            runs,
            wall_clock_s: wall.as_secs_f64(),
        }
    }

    /// The run of one capacity meaning.
    pub fn run(&self, mode: CapacityMode) -> Option<&PodRun> {
        self.runs.iter().find(|r| r.capacity == mode)
    }

    /// The human table: one column per capacity meaning.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let arrival = match self.arrival {
            PodArrival::Burst { pods } => format!("a burst of {pods} pods"),
            PodArrival::Ramp { per_second, pods } => format!("{pods} pods at {per_second}/s"),
        };
        let setup = match (self.karpenter_setup, self.node_template) {
            (Some(s), _) => format!(" ({} setup)", kebab(&s)),
            (_, Some(t)) => format!(" (template: {})", kebab(&t)),
            _ => String::new(),
        };
        let clock = if self.virtual_time { "virtual time" } else { "real time" };
        let _ = writeln!(
            t,
            "eni-ipam simulate --pods: {arrival} onto {} x {} ({}), pools of {}, autoscaler {}{setup} ({clock})",
            self.nodes,
            self.instance_type,
            self.cloud,
            self.knobs.pre_allocate,
            kebab(&self.autoscaler)
        );
        let _ = writeln!(
            t,
            "  ip limit {} a node, maxPods {}, pods {} eni-ipam.io/ip, node boot {:.0} s",
            self.ip_limit,
            self.max_pods,
            if self.pods_request_ip { "request" } else { "do not request" },
            self.node_boot_time_s
        );
        let _ = write!(t, "  {:<34}", "capacity");
        for run in &self.runs {
            let _ = write!(
                t,
                " {:>18}",
                format!("{} ({})", super::capacity_model::label(run.capacity), kebab(&run.capacity))
            );
        }
        let _ = writeln!(t);
        let secs = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
        let rows: [(&str, Cell); 12] = [
            ("pods scheduled", |r| format!("{} / {}", r.pods_scheduled, r.pods)),
            ("pods never scheduled", |r| r.pods_never_scheduled.to_string()),
            ("pod Pending p50 / p99", |r| pair(r.pod_pending)),
            ("waiting for IP p50 / p99", |r| pair(r.pod_waiting_for_ip)),
            ("nodes added", |r| r.nodes_added.to_string()),
            ("nodes added, not needed", |r| r.nodes_added_unneeded.to_string()),
            ("scale-ups", |r| r.scale_ups.to_string()),
            ("pods running", |r| format!("{} / {}", r.pods_running, r.pods)),
            ("all pods running after", |r| {
                r.all_pods_running_s.map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"))
            }),
            ("fleet ready before the pods", |r| format!("{:.1} s", r.fleet_ready_s)),
            ("duplicate pod / pool IPs", |r| format!("{} / {}", r.duplicate_pod_ips, r.duplicate_pool_ips)),
            ("pod IPs not on their node", |r| r.pod_ips_not_on_node.to_string()),
        ];
        for (name, cell) in rows {
            let _ = write!(t, "  {name:<34}");
            for run in &self.runs {
                let _ = write!(t, " {:>18}", cell(run));
            }
            let _ = writeln!(t);
        }
        let _ = writeln!(t, "  {:<34} {}", "wall clock", secs(Some(self.wall_clock_s)));
        t
    }
}

/// One cell of the table, from a run.
type Cell = fn(&PodRun) -> String;

fn pair(w: Waits) -> String {
    let s = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}"));
    format!("{} / {} s", s(w.p50_s), s(w.p99_s))
}

/// A value's name as the flags and the JSON spell it.
fn kebab<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}
