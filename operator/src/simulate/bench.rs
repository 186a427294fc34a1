//! `simulate --bench`: the same simulator run for every strategy, fleet size
//! and cloud profile in one go, plus the cost of a full resync at several
//! fleet sizes and the process's memory as the fleet grows. Prints tables,
//! writes them as JSON and draws the 1,000-node bursts as one SVG.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::VpcId;
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{
    CallGuard, CloudKind, CloudProfile, CloudProvider, EniQuery, RetryPolicy, list_all_enis,
};
use serde::Serialize;

use super::chart::{Panel, Series, svg};
use super::footprint::{cpu_time, proc_status_mib};
use super::report::SimReport;
use super::restart::{RestartStorm, Restarter, restart_storm};
use super::strategy::Strategy;
use super::{SimConfig, cloud_setup, run};

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// Fleet sizes of the burst comparison.
    pub sizes: Vec<u32>,
    /// Cloud profiles.
    pub clouds: Vec<CloudKind>,
    /// Share of calls answered with a 5xx, the same for every strategy (so
    /// that retry policies matter).
    pub fault_rate: f64,
    /// ENI counts of the resync cost table.
    pub resync_sizes: Vec<u32>,
    /// Fleet sizes of the memory table (ascending).
    pub memory_sizes: Vec<u32>,
    /// Fleet sizes of the restart-storm table.
    pub restart_sizes: Vec<u32>,
    /// Seed.
    pub seed: u64,
    /// The operator binary: each memory point then runs in a fresh process
    /// of its own, so one size's peak does not hide the next. `None`: in this
    /// process (peaks only grow).
    pub memory_binary: Option<std::path::PathBuf>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            sizes: vec![100, 1000, 5000],
            clouds: vec![CloudKind::Aws, CloudKind::Alibaba],
            fault_rate: 0.01,
            resync_sizes: vec![2_000, 20_000, 50_000],
            memory_sizes: vec![1_000, 5_000, 20_000],
            restart_sizes: vec![1_000],
            seed: 1,
            memory_binary: None,
        }
    }
}

/// One resync measurement.
#[derive(Clone, Debug, Serialize)]
pub struct ResyncCost {
    /// Profile.
    pub cloud: String,
    /// ENIs in the VPC.
    pub enis: u32,
    /// Calls of our full resync (one VPC-wide paginated list).
    pub full_resync_calls: u32,
    /// `ceil(enis / page size)`.
    pub expected_calls: u32,
    /// Calls of the per-subnet strategy for the same state.
    pub per_subnet_calls: u32,
    /// Bytes the listing carries, as JSON.
    pub bytes: u64,
    /// Operator CPU for the full resync (listing + cache), milliseconds.
    pub cpu_ms: f64,
    /// Calls of one per-instance resync.
    pub per_instance_calls: u32,
    /// CPU of one per-instance resync, milliseconds.
    pub per_instance_cpu_ms: f64,
}

/// One memory measurement.
#[derive(Clone, Debug, Serialize)]
pub struct MemoryPoint {
    /// Nodes.
    pub nodes: u32,
    /// Pool IPs across the fleet.
    pub pool_ips: u64,
    /// The process's peak RSS so far, MiB (operator and fake cloud together).
    pub peak_rss_mib: f64,
}

/// Everything measured.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Burst runs, every strategy, size and cloud.
    pub bursts: Vec<SimReport>,
    /// Full and per-instance resync cost.
    pub resync: Vec<ResyncCost>,
    /// Everything restarting at once: the first minute against a steady one.
    pub restart: Vec<RestartStorm>,
    /// Peak memory as the fleet grows.
    pub memory: Vec<MemoryPoint>,
}

/// The process's peak RSS, MiB, from /proc.
pub fn peak_rss_mib() -> f64 {
    proc_status_mib("VmHWM")
}

/// Runs everything; `progress` hears a line per step.
pub async fn run_bench(config: &BenchConfig, progress: &dyn Fn(&str)) -> anyhow::Result<BenchReport> {
    let mut bursts = Vec::new();
    for cloud in &config.clouds {
        for &nodes in &config.sizes {
            for strategy in Strategy::ALL {
                progress(&format!("burst: {cloud}, {nodes} nodes, {}", strategy.label()));
                let sim = SimConfig {
                    cloud: *cloud,
                    nodes,
                    strategy,
                    fault_rate: config.fault_rate,
                    seed: config.seed,
                    deadline: Duration::from_secs(4 * 3600),
                    ..SimConfig::default()
                };
                bursts.push(run(&sim, true, &|_| {}).await?);
            }
        }
    }
    let mut resync = Vec::new();
    for cloud in &config.clouds {
        for &enis in &config.resync_sizes {
            progress(&format!("resync cost: {cloud}, {enis} ENIs"));
            resync.push(resync_cost(*cloud, enis, config.seed).await?);
        }
    }
    let mut memory = Vec::new();
    for &nodes in &config.memory_sizes {
        progress(&format!("memory: {nodes} nodes"));
        // 17.5 pool IPs a node on average, as in a 20,000-node / 350,000-IP fleet.
        let sim = SimConfig {
            nodes,
            instance_type: Some("m5.4xlarge".into()),
            knobs: eni_ipam_api::PoolKnobs { pre_allocate: 17, max_above_watermark: 1, ..Default::default() },
            seed: config.seed,
            deadline: Duration::from_secs(6 * 3600),
            ..SimConfig::default()
        };
        let report = match &config.memory_binary {
            Some(binary) => run_apart(binary, nodes, config.seed)?,
            None => run(&sim, true, &|_| {}).await?,
        };
        memory.push(MemoryPoint {
            nodes,
            pool_ips: u64::from(report.ready_nodes) * 18,
            peak_rss_mib: report.peak_rss_mib,
        });
    }
    let mut restart = Vec::new();
    for cloud in &config.clouds {
        for &nodes in &config.restart_sizes {
            for restarter in Restarter::ALL {
                progress(&format!("restart storm: {cloud}, {nodes} nodes, {}", restarter.label()));
                restart.push(restart_storm(*cloud, nodes, restarter, config.seed).await?);
            }
        }
    }
    Ok(BenchReport { bursts, resync, memory, restart })
}

/// The memory run in a process of its own; its JSON report carries its peak.
fn run_apart(binary: &std::path::Path, nodes: u32, seed: u64) -> anyhow::Result<SimReport> {
    let dir = std::env::temp_dir().join(format!("eni-ipam-bench-{}-{nodes}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let json = dir.join("report.json");
    let status = std::process::Command::new(binary)
        .args(["simulate", "--no-progress", "--instance-type", "m5.4xlarge", "--pre-allocate", "17"])
        .args(["--max-above-watermark", "1", "--deadline", "6h", "--nodes", &nodes.to_string()])
        .args(["--seed", &seed.to_string(), "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "the memory run for {nodes} nodes failed ({status})");
    let value: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)?;
    std::fs::remove_dir_all(&dir).ok();
    let mut report = serde_json::from_value::<PartialReport>(value)?;
    report.nodes = nodes;
    Ok(report.into())
}

/// The fields of a report the memory table needs.
#[derive(serde::Deserialize)]
struct PartialReport {
    #[serde(default)]
    nodes: u32,
    ready_nodes: u32,
    peak_rss_mib: f64,
}

impl From<PartialReport> for SimReport {
    fn from(p: PartialReport) -> Self {
        SimReport::memory_only(p.nodes, p.ready_nodes, p.peak_rss_mib)
    }
}

/// A VPC holding `enis` ENIs (instances with a primary ENI and one more),
/// listed once in full, per subnet, and for one instance.
async fn resync_cost(kind: CloudKind, enis: u32, seed: u64) -> anyhow::Result<ResyncCost> {
    let mut profile = CloudProfile::of(kind);
    profile.buckets.clear(); // cost, not quotas, is measured here
    let vpc = VpcId::from("vpc-bench");
    let cloud = Arc::new(FakeCloud::new(profile.clone(), vpc.clone(), seed));
    let fleet = cloud_setup::launch(&cloud, enis, profile.default_instance_type, 1)?;
    let guard = Arc::new(CallGuard::new(profile.clone(), BTreeMap::new(), RetryPolicy::cloud_default(seed)));
    let provider = FakeProvider::new(cloud.clone(), guard);
    let cache = crate::instances::InstancesCache::new();

    let before = cpu_time();
    let (all, calls) = list_all_enis(&provider, &EniQuery::Vpc(vpc.clone())).await?;
    let bytes: u64 = all.iter().map(|e| serde_json::to_vec(e).map_or(0, |v| v.len() as u64)).sum();
    cache.replace_all(all);
    let cpu = cpu_time().saturating_sub(before);

    let mut per_subnet_calls = 0;
    for subnet in provider.list_subnets(&vpc).await? {
        per_subnet_calls += list_all_enis(&provider, &EniQuery::Subnet(subnet.id)).await?.1;
    }
    let instance = fleet.instances[0].0.clone();
    let before = cpu_time();
    let rounds = 20;
    let mut per_instance_calls = 0;
    for _ in 0..rounds {
        let (listed, calls) = list_all_enis(&provider, &EniQuery::Instances(vec![instance.clone()])).await?;
        cache.replace_instances(std::slice::from_ref(&instance), listed);
        per_instance_calls = calls;
    }
    let per_instance_cpu = cpu_time().saturating_sub(before).as_secs_f64() * 1000.0 / f64::from(rounds);
    Ok(ResyncCost {
        cloud: kind.to_string(),
        enis,
        full_resync_calls: calls,
        expected_calls: enis.div_ceil(profile.batch.max_page_size),
        per_subnet_calls,
        bytes,
        cpu_ms: cpu.as_secs_f64() * 1000.0,
        per_instance_calls,
        per_instance_cpu_ms: per_instance_cpu,
    })
}

impl BenchReport {
    /// The tables a person reads.
    pub fn tables(&self) -> String {
        let mut t = String::new();
        let mut groups: BTreeMap<(String, u32), Vec<&SimReport>> = BTreeMap::new();
        for r in &self.bursts {
            groups.entry((r.cloud.clone(), r.nodes)).or_default().push(r);
        }
        let secs = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |s| format!("{s:.1}"));
        for ((cloud, nodes), runs) in &groups {
            let ours = runs.iter().find(|r| r.strategy == Strategy::Ours).and_then(|r| r.time_to_all_ready_s);
            let _ = writeln!(
                t,
                "\nburst: {nodes} nodes join at once, {cloud} profile (quota bound {:.1} s)",
                runs[0].quota_bound_s
            );
            let _ = writeln!(
                t,
                "  {:<26} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10} {:>10}",
                "strategy",
                "ready",
                "all (s)",
                "x ours",
                "x bound",
                "p50 (s)",
                "p99 (s)",
                "throttled",
                "calls/node",
                "mut/node"
            );
            for r in runs {
                let vs_ours = match (r.time_to_all_ready_s, ours) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
                    _ => "-".into(),
                };
                let _ = writeln!(
                    t,
                    "  {:<26} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>10} {:>10.2} {:>10.2}",
                    r.strategy.label(),
                    format!("{}/{}", r.ready_nodes, r.nodes),
                    secs(r.time_to_all_ready_s),
                    vs_ours,
                    r.ratio_to_quota_bound.map_or_else(|| "-".into(), |x| format!("{x:.2}")),
                    secs(r.node_ready_p50_s),
                    secs(r.node_ready_p99_s),
                    r.throttled_calls,
                    r.api_calls_total as f64 / f64::from(r.nodes),
                    r.mutating_calls_per_node,
                );
            }
        }
        let _ = writeln!(
            t,
            "\nfull resync (one VPC-wide paginated list) vs per-subnet listing, and one per-instance resync"
        );
        let _ = writeln!(
            t,
            "  {:<8} {:>7} {:>7} {:>9} {:>11} {:>10} {:>9} {:>13} {:>14}",
            "cloud",
            "ENIs",
            "calls",
            "ceil(n/p)",
            "per-subnet",
            "MiB JSON",
            "CPU ms",
            "1-inst calls",
            "1-inst CPU ms"
        );
        for r in &self.resync {
            let _ = writeln!(
                t,
                "  {:<8} {:>7} {:>7} {:>9} {:>11} {:>10.1} {:>9.0} {:>13} {:>14.2}",
                r.cloud,
                r.enis,
                r.full_resync_calls,
                r.expected_calls,
                r.per_subnet_calls,
                r.bytes as f64 / 1048576.0,
                r.cpu_ms,
                r.per_instance_calls,
                r.per_instance_cpu_ms
            );
        }
        let _ = writeln!(
            t,
            "\nrestart storm: everything restarts at once; cloud calls of the first minute vs a steady minute"
        );
        let _ = writeln!(
            t,
            "  {:<8} {:>6}  {:<26} {:>12} {:>10} {:>9} {:>10} {:>9} {:>14}",
            "cloud",
            "nodes",
            "who restarts",
            "steady /min",
            "first min",
            "x steady",
            "throttled",
            "writes",
            "all resynced s"
        );
        for r in &self.restart {
            let _ = writeln!(
                t,
                "  {:<8} {:>6}  {:<26} {:>12.1} {:>10} {:>9.1} {:>10} {:>9} {:>14}",
                r.cloud,
                r.nodes,
                r.restarter.label(),
                r.steady_calls_per_min,
                r.restart_calls_first_min,
                r.ratio_to_steady,
                r.restart_throttled_first_min,
                r.restart_writes_first_min,
                r.all_resynced_s.map_or("-".into(), |t| format!("{t:.1}"))
            );
        }
        let _ = writeln!(t, "\npeak memory as the fleet grows (operator and fake cloud in one process)");
        for m in &self.memory {
            let _ = writeln!(
                t,
                "  {:>6} nodes, {:>7} pool IPs: {:>7.1} MiB",
                m.nodes, m.pool_ips, m.peak_rss_mib
            );
        }
        t
    }

    /// The SVG: nodes ready over time in the 1,000-node (or the middle) bursts.
    pub fn chart(&self) -> String {
        let size = if self.bursts.iter().any(|r| r.nodes == 1000) {
            1000
        } else {
            self.bursts.first().map_or(0, |r| r.nodes)
        };
        let mut clouds: Vec<&str> = self.bursts.iter().map(|r| r.cloud.as_str()).collect();
        clouds.dedup();
        let panels: Vec<Panel> = clouds
            .iter()
            .map(|cloud| {
                let runs: Vec<&SimReport> =
                    self.bursts.iter().filter(|r| r.cloud == *cloud && r.nodes == size).collect();
                Panel {
                    title: format!("{size} nodes join at once: {cloud}"),
                    series: runs
                        .iter()
                        .map(|r| Series { label: r.strategy.label(), ready: &r.ready_curve })
                        .collect(),
                    nodes: size,
                    quota_bound_s: runs.first().map_or(0.0, |r| r.quota_bound_s),
                }
            })
            .collect();
        svg(&panels)
    }
}
