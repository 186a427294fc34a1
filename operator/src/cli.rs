//! Command line of `eni-ipam-operator`. Every flag can also come from an
//! environment variable (`ENI_IPAM_<FLAG>`), as DaemonSets and Deployments
//! usually set them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use eni_ipam_api::duration::{parse_duration, parse_interval};
pub use eni_ipam_api::knob_args::KnobArgs;
use eni_ipam_cloud::CloudKind;

pub use crate::account_args::CloudAccountArgs;
pub use crate::alibaba_args::AlibabaArgs;
use crate::cluster_identity::parse_cluster_id;
use crate::simulate::{SimConfig, Strategy};

/// eni-ipam operator: keeps a warm pool of ENI IPs on every node.
#[derive(Debug, Parser)]
#[command(name = "eni-ipam-operator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Simulate a fleet of nodes joining at once, against the built-in fake
    /// cloud (no cloud account needed), and report how fast every node got
    /// its pre-allocated IPs, the cloud calls made, throttling, leaks and
    /// duplicates.
    #[command(long_about = SIMULATE_ABOUT)]
    Simulate(SimulateArgs),
    /// Run the controller in a cluster: watch ENINodes and keep every node's pool at its target.
    #[command(long_about = RUN_ABOUT)]
    Run(RunArgs),
    /// Per instance type: the pod IPs, the maxPods for kubelet or Karpenter, and the
    /// Cluster Autoscaler node-template tag for scaling from zero.
    #[command(long_about = crate::sizing::args::CAPACITY_ABOUT)]
    Capacity(crate::sizing::args::CapacityArgs),
    /// The chart's uninstall hooks: ask every node's agent to clean its node, then delete the ENINodes.
    #[command(subcommand)]
    Uninstall(UninstallStep),
}

/// The two steps of `helm uninstall` (docs/operations.md, "Removing eni-ipam").
#[derive(Debug, Subcommand)]
pub enum UninstallStep {
    /// pre-delete hook: request the uninstall on every ENINode and wait until every running
    /// agent has answered that it will clean its node when terminated.
    Prepare(UninstallHookArgs),
    /// post-delete hook: wait until the agent pods are gone, then delete every ENINode
    /// (ENIs and their IPs stay).
    Finish(UninstallHookArgs),
}

/// Flags of both uninstall steps.
#[derive(Debug, Args)]
pub struct UninstallHookArgs {
    #[command(flatten)]
    pub log: eni_ipam_admin::process::LogArgs,
    /// Namespace of the agent pods (the release's namespace).
    #[arg(long, env = "ENI_IPAM_AGENT_NAMESPACE")]
    pub agent_namespace: String,
    /// Label selector of the agent pods, e.g. app.kubernetes.io/instance=eni-ipam,app.kubernetes.io/component=agent.
    #[arg(long, env = "ENI_IPAM_AGENT_SELECTOR")]
    pub agent_selector: String,
    /// Longest wait for the agents; nodes still waiting are named in the log and the uninstall goes on.
    #[arg(long, env = "ENI_IPAM_UNINSTALL_TIMEOUT", default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Written as the request's value on each ENINode (who asked).
    #[arg(long, env = "ENI_IPAM_UNINSTALL_REQUESTED_BY", default_value = "helm-uninstall")]
    pub requested_by: String,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
}

const RUN_ABOUT: &str = "\
Run the controller a cluster runs. It watches ENINodes (each node's agent registers \
its own), and keeps every node's spec.pool at the planner's target through the cloud \
API: allocation in deficit order by a bounded worker pool, failures retried after a \
full-jitter backoff, and a VPC-wide bulk resync on a timer. It writes with server-side \
apply under the field manager eni-ipam-operator.

Each node's knobs (pre-allocate, min/max, subnets, security groups, ...) are, field by \
field: the built-in defaults, then the defaults of the --knob-config ConfigMap, then its \
node-pool overrides that select the node (in list order), then the node's ENINode spec. \
The result and where each field came from are in the ENINode's status.effectiveIpam.

Excess IPs (free longer than --excess-ip-release-delay) are first marked in the \
ENINode's status.release; the node's agent answers ready (no pod holds it, and it \
stops handing it out) or do-not-release; only IPs answered ready go back to the cloud.

Every --eni-gc-interval, this cluster's ENIs (tagged with its --cluster-id, by default \
the kube-system namespace's UID) are deleted once provably dead for --eni-gc-grace: \
detached, or attached to an instance the cloud says is terminated or unknown and no \
Node names. Nothing without the tags, no other cluster's ENI and no primary ENI is \
touched. At start the operator refuses to run on a VPC where an ENI carries its id with \
another cluster's kube-system UID (two clusters given one --cluster-id).

With --leader-elect (the default), replicas elect a leader on a Lease; standbys keep \
their caches warm and serve /metrics, /healthz and /readyz on --metrics-addr, but call \
no cloud API. A leader that cannot renew within --leader-elect-renew-deadline stops \
at once.

The apiserver comes from --kubeconfig, else $KUBECONFIG or ~/.kube/config, else the \
in-cluster service account.

Examples:
  eni-ipam-operator run --cloud aws --vpc vpc-0abc --cluster-id prod
  eni-ipam-operator run --cloud aws --aws-endpoint http://127.0.0.1:5000 --vpc vpc-1";

/// Which cloud `run` talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RunCloud {
    /// An empty in-process fake cloud (demos; tests inject their own).
    Fake,
    /// AWS EC2.
    Aws,
    /// Alibaba Cloud ECS/VPC.
    Alibaba,
}

/// Flags of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub log: eni_ipam_admin::process::LogArgs,
    /// The cloud whose ENIs pods get.
    #[arg(long, env = "ENI_IPAM_CLOUD", value_enum, default_value = "aws")]
    pub cloud: RunCloud,
    /// The cluster's VPC (required for aws and alibaba).
    #[arg(long, env = "ENI_IPAM_VPC")]
    pub vpc: Option<String>,
    /// This cluster's identity, written in the tags of every ENI it creates; GC touches only ENIs with
    /// it. Default: the kube-system namespace's UID (unique per cluster). Set it to the old
    /// --cluster-name when upgrading, so the ENIs created before stay this cluster's.
    #[arg(long, env = "ENI_IPAM_CLUSTER_ID", value_parser = parse_cluster_id)]
    pub cluster_id: Option<String>,
    /// EC2 API endpoint override (e.g. a VPC endpoint or a test bed).
    #[arg(long, env = "ENI_IPAM_AWS_ENDPOINT")]
    pub aws_endpoint: Option<String>,
    /// One endpoint for ECS, VPC and STS (e.g. the emulator); see --alibaba-ecs-endpoint and friends.
    #[arg(long, env = "ENI_IPAM_ALIBABA_ENDPOINT")]
    pub alibaba_endpoint: Option<String>,
    #[command(flatten)]
    pub account: CloudAccountArgs,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub controller: ControllerArgs,
    /// How long a pool IP stays free before the operator marks it for release
    /// (the agent then confirms no pod holds it before the cloud call).
    #[arg(long, env = "ENI_IPAM_EXCESS_IP_RELEASE_DELAY", default_value = "3m", value_parser = parse_duration)]
    pub excess_ip_release_delay: Duration,
    /// Mean period of ENI garbage collection (jittered by half).
    #[arg(long, env = "ENI_IPAM_ENI_GC_INTERVAL", default_value = "5m", value_parser = parse_interval)]
    pub eni_gc_interval: Duration,
    /// A detached ENI tagged with this cluster is deleted after this long.
    #[arg(long, env = "ENI_IPAM_ENI_GC_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub eni_gc_grace: Duration,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "ENI_IPAM_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: std::net::SocketAddr,
    /// The ConfigMap (NAMESPACE/NAME) holding the cluster-wide knobs and node-pool overrides
    /// (the chart renders it from pool.*, eni.* and nodePools). It is watched: a change reaches
    /// every node without a restart. Unset: each node's knobs are its ENINode's spec over the
    /// built-in defaults.
    #[arg(long, env = "ENI_IPAM_KNOB_CONFIG", value_parser = parse_knob_config)]
    pub knob_config: Option<crate::knob_watch::KnobConfigRef>,
    /// Publish Kubernetes Events on Nodes when their pool state changes.
    #[arg(long, env = "ENI_IPAM_NODE_EVENTS", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub node_events: bool,
    #[command(flatten)]
    pub leader: LeaderArgs,
}

/// Leader election: with two or more replicas, only the holder of a Lease works.
#[derive(Debug, Args, Clone)]
pub struct LeaderArgs {
    /// Elect a leader on a coordination.k8s.io/v1 Lease; standbys serve health and
    /// metrics but call no cloud API. Turn off only with a single replica.
    #[arg(long, env = "ENI_IPAM_LEADER_ELECT", default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// A standby takes over after seeing no renewal for this long.
    #[arg(long, env = "ENI_IPAM_LEADER_ELECT_LEASE_DURATION", default_value = "15s", value_parser = parse_interval)]
    pub leader_elect_lease_duration: Duration,
    /// The leader steps down (stops every cloud call) if it cannot renew within this long.
    #[arg(long, env = "ENI_IPAM_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s", value_parser = parse_interval)]
    pub leader_elect_renew_deadline: Duration,
    /// Pause between attempts to acquire or renew the Lease.
    #[arg(long, env = "ENI_IPAM_LEADER_ELECT_RETRY_PERIOD", default_value = "2s", value_parser = parse_interval)]
    pub leader_elect_retry_period: Duration,
    /// Namespace of the Lease (normally the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-system")]
    pub leader_elect_namespace: String,
    /// Name of the Lease.
    #[arg(long, env = "ENI_IPAM_LEADER_ELECT_LEASE_NAME", default_value = "eni-ipam-operator")]
    pub leader_elect_lease_name: String,
    /// This replica's identity in the Lease: the pod name (the chart sets POD_NAME);
    /// without it, the host name plus a random suffix.
    #[arg(long, env = "POD_NAME")]
    pub leader_elect_identity: Option<String>,
}

impl LeaderArgs {
    /// The election settings, or `None` with `--leader-elect=false`.
    pub fn config(&self) -> Option<crate::leader::LeaderConfig> {
        self.leader_elect.then(|| crate::leader::LeaderConfig {
            namespace: self.leader_elect_namespace.clone(),
            lease_name: self.leader_elect_lease_name.clone(),
            identity: self.leader_elect_identity.clone().unwrap_or_else(default_identity),
            lease_duration: self.leader_elect_lease_duration,
            renew_deadline: self.leader_elect_renew_deadline,
            retry_period: self.leader_elect_retry_period,
        })
    }
}

/// The host name plus a random suffix: unique across restarts.
fn default_identity() -> String {
    let base = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "eni-ipam-operator".into());
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{base}-{:08x}", nanos ^ std::process::id())
}

/// The controller settings `run` and `simulate` share.
#[derive(Debug, Args, Clone)]
pub struct ControllerArgs {
    /// Nodes the operator works on at once (bounded worker pool).
    #[arg(long, env = "ENI_IPAM_PARALLEL_ALLOC_WORKERS", default_value_t = 128)]
    pub parallel_alloc_workers: usize,
    /// Period of the bulk resync: all ENIs of the VPC in as few paginated
    /// calls as the cloud allows, and the subnets (jittered by a tenth; e.g. 1m, 30s).
    #[arg(long, env = "ENI_IPAM_RESYNC_INTERVAL", default_value = "1m", value_parser = parse_interval)]
    pub resync_interval: Duration,
    /// Client-side rate limit as a share of the cloud's published API quota, in (0, 1].
    #[arg(long, env = "ENI_IPAM_LIMITER_MARGIN", default_value_t = 0.95, value_parser = parse_margin)]
    pub limiter_margin: f64,
    /// Seed of jitter and idempotency tokens. `run` picks a new one per process
    /// unless set (replicas and restarts must not repeat each other's tokens);
    /// `simulate` uses 1 (same seed, same run).
    #[arg(long, env = "ENI_IPAM_SEED")]
    pub seed: Option<u64>,
}

impl ControllerArgs {
    /// The seed for `simulate`: reproducible.
    pub fn simulation_seed(&self) -> u64 {
        self.seed.unwrap_or(1)
    }

    /// The seed for `run`: unique per process unless given.
    pub fn process_seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            (now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        })
    }
}

fn parse_knob_config(text: &str) -> Result<crate::knob_watch::KnobConfigRef, String> {
    text.parse()
}

fn parse_margin(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(m) if m > 0.0 && m <= 1.0 => Ok(m),
        _ => Err(format!("'{text}' is not a share in (0, 1]: e.g. 0.95 keeps 5% of the quota spare")),
    }
}

const SIMULATE_ABOUT: &str = "\
Simulate a fleet of nodes joining at once, against the built-in fake cloud \
(no cloud account needed).

The fake cloud enforces the chosen cloud's API quotas (EC2: a mutating bucket of \
200 calls refilled at 5/s and a describe bucket of 100 at 20/s; Alibaba: per-API \
quotas per minute), per-call batch limits, instance-type ENI/IP limits, finite \
subnets and asynchronous attachment. The real planner, executor, limiter and \
retry policy bring every node to its pre-allocation.

Time is virtual by default: a ten-minute cloud scenario runs in seconds. The \
report compares the time until every node is ready with the least time any \
client could need under the quotas (quota_bound_s).

With --pods, the fleet once up receives pods (--pod-burst, or --pod-rate with \
--pod-total); a model of kube-scheduler binds them by eni-ipam.io/ip and maxPods, each \
node's agent hands them pool IPs and reports its usage (the operator grows the pool), \
and --autoscaler adds nodes for pods left Pending. It is played once with the old \
capacity (the pool) and once with the new one (the instance's IP limit), side by side. \
See docs/scheduling.md, section Autoscalers in the simulator.

Examples:
  eni-ipam-operator simulate
  eni-ipam-operator simulate --cloud alibaba --nodes 1000 --json report.json
  eni-ipam-operator simulate --pre-allocate 16 --max-above-watermark 4 --fault-rate 0.02
  eni-ipam-operator simulate --nodes 50 --pods --pod-burst 2000 --autoscaler cluster-autoscaler
  eni-ipam-operator simulate --nodes 50 --pods --pod-rate 50 --pod-total 2000 --autoscaler karpenter";

/// Flags of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    #[command(flatten)]
    pub log: eni_ipam_admin::process::LogArgs,
    /// Cloud profile of the fake cloud: aws or alibaba.
    #[arg(long, env = "ENI_IPAM_CLOUD", default_value = "aws", value_parser = parse_cloud)]
    pub cloud: CloudKind,
    /// Talk to a real API endpoint (EC2: moto or a VPC endpoint; Alibaba: the
    /// ECS/VPC emulator or the cloud) instead of the built-in fake cloud. The
    /// fleet is then the instances already in --vpc (all taken to be of
    /// --instance-type), and time is real.
    #[arg(long, env = "ENI_IPAM_ENDPOINT", requires = "vpc")]
    pub endpoint: Option<String>,
    /// The VPC whose instances form the fleet (with --endpoint).
    #[arg(long, env = "ENI_IPAM_VPC")]
    pub vpc: Option<String>,
    #[command(flatten)]
    pub account: CloudAccountArgs,
    /// Security group for new ENIs (repeatable; Alibaba requires one).
    #[arg(long = "security-group", value_name = "ID")]
    pub security_groups: Vec<String>,
    /// Nodes joining at once.
    #[arg(long, env = "ENI_IPAM_NODES", default_value_t = 1000)]
    pub nodes: u32,
    /// Instance type of every node (default: aws m5.xlarge, alibaba ecs.g7.xlarge).
    #[arg(long, env = "ENI_IPAM_INSTANCE_TYPE")]
    pub instance_type: Option<String>,
    #[command(flatten)]
    pub knobs: KnobArgs,
    #[command(flatten)]
    pub controller: ControllerArgs,
    /// Share of cloud calls answered with a 5xx error, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Stop after this much simulated time even if nodes are not ready (e.g. 1h, 90s).
    #[arg(long, default_value = "1h", value_parser = parse_interval)]
    pub deadline: Duration,
    /// Run on the wall clock instead of virtual time (to watch it).
    #[arg(long)]
    pub real_time: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Run a strategy to compare with instead of ours: per-subnet-listing,
    /// fixed-node-update-15s, no-jitter-backoff, node-side-daemons.
    #[arg(long, default_value = "ours", value_parser = parse_strategy)]
    pub strategy: Strategy,
    /// Run the whole comparison instead of one simulation: every strategy at
    /// 100, 1,000 and 5,000 nodes on both cloud profiles, full-resync cost at
    /// 2,000 / 20,000 / 50,000 ENIs, memory at 1,000 / 5,000 / 20,000 nodes.
    /// Prints the tables; writes bench.json and bench.svg into --bench-out.
    #[arg(long, conflicts_with = "endpoint")]
    pub bench: bool,
    /// Where --bench writes bench.json and bench.svg.
    #[arg(long, value_name = "DIR", default_value = "target/bench")]
    pub bench_out: PathBuf,
    #[command(flatten)]
    pub pods: crate::simulate::pod_args::PodArgs,
}

fn parse_cloud(s: &str) -> Result<CloudKind, String> {
    s.parse()
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}

impl SimulateArgs {
    /// The simulator configuration.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            cloud: self.cloud,
            nodes: self.nodes,
            instance_type: self.instance_type.clone(),
            knobs: self.knobs.knobs(),
            first_interface_index: self.knobs.first_interface_index,
            workers: self.controller.parallel_alloc_workers,
            seed: self.controller.simulation_seed(),
            fault_rate: self.fault_rate,
            limiter_margin: self.controller.limiter_margin,
            deadline: self.deadline,
            resync_interval: self.controller.resync_interval,
            security_groups: self.security_groups.clone(),
            strategy: self.strategy,
        }
    }
}
