//! The summary table: one row per scenario.

use std::time::Duration;

use serde::Serialize;

use crate::cloud::CloudCounts;

/// One scenario's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Scenario.
    pub scenario: String,
    /// Pods created during it.
    pub pods: usize,
    /// Creation to Running, median (ms).
    pub p50_ms: u64,
    /// Creation to Running, 99th percentile (ms).
    pub p99_ms: u64,
    /// Cloud API calls the operators made.
    pub cloud_calls: u64,
    /// Of those, answered "throttled".
    pub throttled: u64,
    /// Of those, answered with an injected 500.
    pub server_errors: u64,
    /// ENIs left over once a GC pass was over.
    pub leaked_enis: usize,
    /// IPs in two pools or held by two pods.
    pub double_ips: usize,
    /// Pings lost between pods on two nodes.
    pub lost_packets: u64,
}

/// The `q` quantile of sorted durations, in ms (nearest rank).
pub fn quantile_ms(sorted: &[Duration], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_millis() as u64
}

impl Row {
    /// A row from the pods' times to Running and the counts.
    pub fn new(
        scenario: &str,
        mut times: Vec<Duration>,
        calls: CloudCounts,
        leaked_enis: usize,
        double_ips: usize,
        lost_packets: u64,
    ) -> Self {
        times.sort();
        Self {
            scenario: scenario.to_owned(),
            pods: times.len(),
            p50_ms: quantile_ms(&times, 0.5),
            p99_ms: quantile_ms(&times, 0.99),
            cloud_calls: calls.calls,
            throttled: calls.throttled,
            server_errors: calls.server_errors,
            leaked_enis,
            double_ips,
            lost_packets,
        }
    }

    /// The row as a table line.
    pub fn line(&self) -> String {
        format!(
            "| {:<28} | {:>5} | {:>7} | {:>7} | {:>11} | {:>9} | {:>5} | {:>11} | {:>10} | {:>12} |",
            self.scenario,
            self.pods,
            self.p50_ms,
            self.p99_ms,
            self.cloud_calls,
            self.throttled,
            self.server_errors,
            self.leaked_enis,
            self.double_ips,
            self.lost_packets
        )
    }
}

/// The whole table, titled.
pub fn table(title: &str, rows: &[Row]) -> String {
    let mut out = format!("{title}\n");
    out.push_str(
        "| scenario                     |  pods | p50 ms  | p99 ms  | cloud calls | throttled |   5xx | leaked ENIs | double IPs | lost packets |\n",
    );
    out.push_str(
        "|------------------------------|------:|--------:|--------:|------------:|----------:|------:|------------:|-----------:|-------------:|\n",
    );
    for row in rows {
        out.push_str(&row.line());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let ms = |v: &[u64]| v.iter().map(|m| Duration::from_millis(*m)).collect::<Vec<_>>();
        assert_eq!(quantile_ms(&ms(&[]), 0.5), 0);
        assert_eq!(quantile_ms(&ms(&[10, 20, 30, 40]), 0.5), 20);
        assert_eq!(quantile_ms(&ms(&(1..=100).collect::<Vec<_>>()), 0.99), 99);
        assert_eq!(quantile_ms(&ms(&[5]), 0.99), 5);
        let calls = CloudCounts { calls: 7, throttled: 2, server_errors: 1 };
        let row = Row::new("x", ms(&[30, 10, 20]), calls, 0, 0, 1);
        assert_eq!((row.pods, row.p50_ms, row.p99_ms), (3, 20, 30));
        assert_eq!((row.cloud_calls, row.throttled, row.server_errors), (7, 2, 1));
    }
}
