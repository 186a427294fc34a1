//! Command line of `eni-ipam-operator`. Every flag can also come from an
//! environment variable (`ENI_IPAM_<FLAG>`), as DaemonSets and Deployments
//! usually set them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use eni_ipam_api::PoolKnobs;
use eni_ipam_cloud::CloudKind;

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
}

const RUN_ABOUT: &str = "\
Run the controller a cluster runs. It watches ENINodes (each node's agent registers \
its own), and keeps every node's spec.pool at the planner's target through the cloud \
API: allocation in deficit order by a bounded worker pool, failures retried after a \
full-jitter backoff, and a VPC-wide bulk resync on a timer. It writes with server-side \
apply under the field manager eni-ipam-operator.

The apiserver comes from --kubeconfig, else $KUBECONFIG or ~/.kube/config, else the \
in-cluster service account.

Examples:
  eni-ipam-operator run --cloud aws --vpc vpc-0abc --cluster-name prod
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
    /// The cloud whose ENIs pods get.
    #[arg(long, env = "ENI_IPAM_CLOUD", value_enum, default_value = "aws")]
    pub cloud: RunCloud,
    /// The cluster's VPC (required for aws and alibaba).
    #[arg(long, env = "ENI_IPAM_VPC")]
    pub vpc: Option<String>,
    /// Name of this cluster, written in the tags of every ENI it creates; GC touches only ENIs with it.
    #[arg(long, env = "ENI_IPAM_CLUSTER_NAME", default_value = "eni-ipam")]
    pub cluster_name: String,
    /// EC2 API endpoint override (e.g. a VPC endpoint or a test bed).
    #[arg(long, env = "ENI_IPAM_AWS_ENDPOINT")]
    pub aws_endpoint: Option<String>,
    /// ECS/VPC API endpoint override (e.g. the emulator).
    #[arg(long, env = "ENI_IPAM_ALIBABA_ENDPOINT")]
    pub alibaba_endpoint: Option<String>,
    /// AWS region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// Alibaba Cloud region.
    #[arg(long, env = "ALIBABA_CLOUD_REGION_ID", default_value = "cn-hangzhou")]
    pub alibaba_region: String,
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Nodes allocated for at once.
    #[arg(long, env = "ENI_IPAM_PARALLEL_ALLOC_WORKERS", default_value_t = 64)]
    pub parallel_alloc_workers: usize,
    /// Period of the VPC-wide resync of all ENIs (jittered by a tenth).
    #[arg(long, env = "ENI_IPAM_RESYNC_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub resync_interval: Duration,
    /// How long a pool IP stays free before it is released back to the cloud.
    #[arg(long, env = "ENI_IPAM_EXCESS_IP_RELEASE_DELAY", default_value = "3m", value_parser = parse_duration)]
    pub excess_ip_release_delay: Duration,
    /// Fraction of the cloud's published API quota the client allows itself.
    #[arg(long, env = "ENI_IPAM_LIMITER_MARGIN", default_value_t = 0.95)]
    pub limiter_margin: f64,
    /// Mean period of ENI garbage collection (jittered by half).
    #[arg(long, env = "ENI_IPAM_ENI_GC_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub eni_gc_interval: Duration,
    /// A detached ENI tagged with this cluster is deleted after this long.
    #[arg(long, env = "ENI_IPAM_ENI_GC_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub eni_gc_grace: Duration,
    /// Seed of jitter and idempotency tokens (vary it across replicas).
    #[arg(long, env = "ENI_IPAM_SEED", default_value_t = 1)]
    pub seed: u64,
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

Examples:
  eni-ipam-operator simulate
  eni-ipam-operator simulate --cloud alibaba --nodes 1000 --json report.json
  eni-ipam-operator simulate --pre-allocate 16 --max-above-watermark 4 --fault-rate 0.02";

/// Pool knobs, shared by every command that plans pools.
#[derive(Debug, Args, Clone)]
pub struct KnobArgs {
    /// Free IPs to keep ready on every node for new pods.
    #[arg(long, env = "ENI_IPAM_PRE_ALLOCATE", default_value_t = PoolKnobs::DEFAULT_PRE_ALLOCATE)]
    pub pre_allocate: u32,
    /// Every node's pool grows to at least this many IPs at once.
    #[arg(long, env = "ENI_IPAM_MIN_ALLOCATE", default_value_t = 0)]
    pub min_allocate: u32,
    /// No node's pool grows beyond this many IPs (0: only the instance limits).
    #[arg(long, env = "ENI_IPAM_MAX_ALLOCATE", default_value_t = 0)]
    pub max_allocate: u32,
    /// Extra IPs taken when allocating anyway, if the ENI being filled has room.
    #[arg(long, env = "ENI_IPAM_MAX_ABOVE_WATERMARK", default_value_t = 0)]
    pub max_above_watermark: u32,
    /// First ENI device index whose IPs pods may use (default: aws 0, i.e. the
    /// primary ENI's secondary IPs too; alibaba 1).
    #[arg(long, env = "ENI_IPAM_FIRST_INTERFACE_INDEX")]
    pub first_interface_index: Option<u32>,
}

impl KnobArgs {
    /// The knobs.
    pub fn knobs(&self) -> PoolKnobs {
        PoolKnobs {
            pre_allocate: self.pre_allocate,
            min_allocate: self.min_allocate,
            max_allocate: self.max_allocate,
            max_above_watermark: self.max_above_watermark,
        }
    }
}

/// Flags of `simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
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
    /// AWS region (with --endpoint; credentials come from the usual AWS
    /// environment variables, shared profile or instance role).
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// Alibaba region (with --endpoint; credentials from
    /// ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET).
    #[arg(long, env = "ALIBABA_CLOUD_REGION_ID", default_value = "cn-hangzhou")]
    pub alibaba_region: String,
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
    /// Nodes the operator works on at once.
    #[arg(long, env = "ENI_IPAM_PARALLEL_ALLOC_WORKERS", default_value_t = 64)]
    pub parallel_alloc_workers: usize,
    /// Seed of every random choice (latency, jitter, faults): same seed, same run.
    #[arg(long, env = "ENI_IPAM_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Share of cloud calls answered with a 5xx error, in [0, 1).
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Client-side rate limit as a share of the cloud's quota, in (0, 1].
    #[arg(long, env = "ENI_IPAM_LIMITER_MARGIN", default_value_t = 0.95)]
    pub limiter_margin: f64,
    /// Stop after this much simulated time even if nodes are not ready (e.g. 1h, 90s).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub deadline: Duration,
    /// Period of the bulk resync: all ENIs of the VPC in as few paginated
    /// calls as the cloud allows, and the subnets (e.g. 1m, 30s).
    #[arg(long, env = "ENI_IPAM_RESYNC_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub resync_interval: Duration,
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
}

fn parse_cloud(s: &str) -> Result<CloudKind, String> {
    s.parse()
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}

/// `500ms`, `30s`, `5m`, `1h`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("'{text}' is not a duration: write e.g. 500ms, 30s, 5m, 1h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit '{unit}' in '{text}': use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is out of range"))
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
            workers: self.parallel_alloc_workers,
            seed: self.seed,
            fault_rate: self.fault_rate,
            limiter_margin: self.limiter_margin,
            deadline: self.deadline,
            resync_interval: self.resync_interval,
            security_groups: self.security_groups.clone(),
            strategy: self.strategy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_an_admin_writes_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("unit"));
        assert!(parse_duration("soon").unwrap_err().contains("e.g."));
    }
}
