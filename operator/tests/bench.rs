//! `simulate --bench` on a small matrix: every strategy runs, the tables, the
//! JSON and the chart carry them, and the measured claims hold.

use eni_ipam_cloud::CloudKind;
use eni_ipam_operator::simulate::Strategy;
use eni_ipam_operator::simulate::bench::{BenchConfig, run_bench};
use eni_ipam_operator::simulate::restart::Restarter;

#[tokio::test(start_paused = true)]
async fn a_small_bench_compares_every_strategy_and_checks_the_resync_claim() {
    let config = BenchConfig {
        sizes: vec![300],
        clouds: vec![CloudKind::Aws, CloudKind::Alibaba],
        fault_rate: 0.01,
        resync_sizes: vec![2_500],
        memory_sizes: vec![200],
        restart_sizes: vec![200],
        seed: 3,
        memory_binary: None,
    };
    let report = run_bench(&config, &|_| {}).await.expect("the bench runs");
    assert_eq!(report.bursts.len(), 2 * Strategy::ALL.len());
    for run in &report.bursts {
        assert_eq!(run.ready_nodes, 300, "{:?} on {}", run.strategy, run.cloud);
        assert_eq!((run.leaked_enis, run.duplicate_ips), (0, 0), "{:?}", run.strategy);
    }
    for cloud in ["aws", "alibaba"] {
        let of = |s: Strategy| report.bursts.iter().find(|r| r.cloud == cloud && r.strategy == s).unwrap();
        // Daemons on every node, without a shared limiter, meet the quota head on.
        assert!(
            of(Strategy::NodeSideDaemons).throttled_calls > 10 * (of(Strategy::Ours).throttled_calls + 1)
        );
        // Listing subnet by subnet costs more describe calls than coalesced resyncs.
        let describes = |s: Strategy| of(s).api_calls.get("DescribeNetworkInterfaces").copied().unwrap_or(0);
        assert!(describes(Strategy::PerSubnetListing) > describes(Strategy::Ours), "{cloud}");
        // A 15 s timer can only delay when a node sees its pool.
        let all = |s: Strategy| of(s).time_to_all_ready_s.unwrap();
        assert!(all(Strategy::FixedNodeUpdate15s) >= all(Strategy::Ours), "{cloud}");
    }
    for r in &report.resync {
        assert_eq!(r.full_resync_calls, r.expected_calls, "full resync calls == ceil(ENIs / page size)");
        assert!(r.per_subnet_calls >= r.full_resync_calls);
        assert_eq!(r.per_instance_calls, 1);
        assert!(r.bytes > 0);
    }
    assert!(report.memory[0].peak_rss_mib > 0.0);
    assert_eq!(report.restart.len(), 2 * 3, "three restarters on each cloud");
    for r in report.restart.iter().filter(|r| r.restarter == Restarter::Ours) {
        assert!(r.ratio_to_steady <= 2.0, "{r:?}");
    }
    let tables = report.tables();
    assert!(tables.contains("restart storm"), "{tables}");
    for strategy in Strategy::ALL {
        assert!(tables.contains(strategy.label()), "{strategy:?} missing from the tables");
    }
    let chart = report.chart();
    assert_eq!(chart.matches("<polyline").count(), 2 * Strategy::ALL.len(), "a line per strategy and cloud");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["bursts"].as_array().unwrap().len(), 10);
    assert!(json["resync"][0]["full_resync_calls"].is_u64());
}
