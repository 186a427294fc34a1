//! The simulator's report: one struct, written as JSON and rendered as the
//! table a person reads, so the two always agree.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use eni_ipam_api::PoolKnobs;
use serde::Serialize;

use super::invariants::Invariants;
use super::strategy::Strategy;
use crate::resync::ResyncCounts;

/// Everything a run measured.
#[derive(Clone, Debug, Serialize)]
pub struct SimReport {
    /// `aws` or `alibaba`.
    pub cloud: String,
    /// Instance type of every node.
    pub instance_type: String,
    /// The pool knobs.
    pub knobs: PoolKnobs,
    /// First usable device index.
    pub first_interface_index: u32,
    /// RNG seed.
    pub seed: u64,
    /// Whether time was virtual (paused tokio clock).
    pub virtual_time: bool,
    /// Nodes that joined.
    pub nodes: u32,
    /// Nodes whose pool reached its target.
    pub ready_nodes: u32,
    /// Time until the last node was ready; `null` if some never were.
    pub time_to_all_ready_s: Option<f64>,
    /// The least time any client could need under the cloud's quotas.
    pub quota_bound_s: f64,
    /// `time_to_all_ready_s / quota_bound_s`.
    pub ratio_to_quota_bound: Option<f64>,
    /// Median time to a node's readiness.
    pub node_ready_p50_s: Option<f64>,
    /// 99th percentile of the same.
    pub node_ready_p99_s: Option<f64>,
    /// Calls the cloud received, per API (cloud's names).
    pub api_calls: BTreeMap<String, u64>,
    /// All calls the cloud received.
    pub api_calls_total: u64,
    /// Calls the cloud answered "throttled".
    pub throttled_calls: u64,
    /// Calls answered with an injected fault.
    pub faulted_calls: u64,
    /// Retries the client made.
    pub client_retries: u64,
    /// Mutating calls per node.
    pub mutating_calls_per_node: f64,
    /// Calls the quota bound counted, per quota bucket.
    pub quota_bound_calls: BTreeMap<String, u64>,
    /// How resyncs were served.
    pub resync: ResyncCounts,
    /// ENINode writes that changed something.
    pub node_store_writes: u64,
    /// Node convergences that failed and were retried.
    pub node_failures: u64,
    /// Nodes that reported a shortfall (instance or subnet limits).
    pub shortfall_nodes: u64,
    /// ENIs of ours detached or not listed by their node.
    pub leaked_enis: u64,
    /// IPs in two pools.
    pub duplicate_ips: u64,
    /// Pool IPs not on their ENI in the cloud.
    pub pool_mismatches: u64,
    /// Real time the run took.
    pub wall_clock_s: f64,
    /// Ours, or the strategy compared with.
    pub strategy: Strategy,
    /// The process's peak RSS at the end of the run, MiB (the fake cloud
    /// included when it runs in the process).
    pub peak_rss_mib: f64,
    /// Each ready node's time, sorted (for charts; not in the JSON).
    #[serde(skip)]
    pub ready_curve: Vec<f64>,
}

/// Nearest-rank percentile of sorted durations, in seconds.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1].as_secs_f64())
}

impl SimReport {
    /// A report that only carries a memory measurement.
    pub fn memory_only(nodes: u32, ready_nodes: u32, peak_rss_mib: f64) -> Self {
        Self {
            cloud: String::new(),
            instance_type: String::new(),
            knobs: PoolKnobs::default(),
            first_interface_index: 0,
            seed: 0,
            virtual_time: true,
            nodes,
            ready_nodes,
            time_to_all_ready_s: None,
            quota_bound_s: 0.0,
            ratio_to_quota_bound: None,
            node_ready_p50_s: None,
            node_ready_p99_s: None,
            api_calls: BTreeMap::new(),
            api_calls_total: 0,
            throttled_calls: 0,
            faulted_calls: 0,
            client_retries: 0,
            mutating_calls_per_node: 0.0,
            quota_bound_calls: BTreeMap::new(),
            resync: ResyncCounts::default(),
            node_store_writes: 0,
            node_failures: 0,
            shortfall_nodes: 0,
            leaked_enis: 0,
            duplicate_ips: 0,
            pool_mismatches: 0,
            wall_clock_s: 0.0,
            strategy: Strategy::Ours,
            peak_rss_mib,
            ready_curve: Vec::new(),
        }
    }

    /// Copies the invariant counts in.
    pub fn with_invariants(mut self, inv: Invariants) -> Self {
        self.leaked_enis = inv.leaked_enis;
        self.duplicate_ips = inv.duplicate_ips;
        self.pool_mismatches = inv.pool_mismatches;
        self
    }

    /// Share of calls throttled.
    pub fn throttled_share(&self) -> f64 {
        if self.api_calls_total == 0 {
            0.0
        } else {
            self.throttled_calls as f64 / self.api_calls_total as f64
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let secs = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |s| format!("{s:.1} s"));
        let mut t = String::new();
        let clock = if self.virtual_time { "virtual time" } else { "real time" };
        let _ = writeln!(
            t,
            "eni-ipam simulate: {} nodes x {} on the {} profile, pre-allocate {} ({clock})",
            self.nodes, self.instance_type, self.cloud, self.knobs.pre_allocate
        );
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<26} {v}");
        };
        row("ready nodes", format!("{} / {}", self.ready_nodes, self.nodes));
        row("time to all ready", secs(self.time_to_all_ready_s));
        row(
            "quota bound",
            format!(
                "{:.1} s  (ratio {})",
                self.quota_bound_s,
                self.ratio_to_quota_bound.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"))
            ),
        );
        row(
            "node ready p50 / p99",
            format!("{} / {}", secs(self.node_ready_p50_s), secs(self.node_ready_p99_s)),
        );
        row(
            "cloud calls",
            format!(
                "{} (throttled {} = {:.2}%, faults {}, retries {})",
                self.api_calls_total,
                self.throttled_calls,
                self.throttled_share() * 100.0,
                self.faulted_calls,
                self.client_retries
            ),
        );
        for (api, n) in &self.api_calls {
            row(&format!("  {api}"), n.to_string());
        }
        row("mutating calls per node", format!("{:.2}", self.mutating_calls_per_node));
        row(
            "resync batches",
            format!(
                "{} bulk, {} per-instance, for {} requests",
                self.resync.bulk, self.resync.per_instance, self.resync.requests
            ),
        );
        row("leaked ENIs", self.leaked_enis.to_string());
        row("duplicate IPs", self.duplicate_ips.to_string());
        row("pool / cloud mismatches", self.pool_mismatches.to_string());
        row("wall clock", format!("{:.1} s", self.wall_clock_s));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_secs).collect();
        assert_eq!(percentile(&d, 50.0), Some(50.0));
        assert_eq!(percentile(&d, 99.0), Some(99.0));
        assert_eq!(percentile(&d[..1], 99.0), Some(1.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
