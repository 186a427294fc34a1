//! Issue 23's acceptance for the simulator: a 2,000-pod burst onto 50 nodes with
//! pools of 8, on both clouds, under Cluster Autoscaler and Karpenter, with the
//! old capacity (the pool) and the new one (the instance's IP limit) played side
//! by side in one run: with the new one no node is added that was not needed, and
//! under Karpenter's supported setup every pod is scheduled. The real operator
//! grows the pools in the fake cloud, on the virtual clock (seconds of real time).

use std::process::{Command, Output};

use eni_ipam_api::PoolKnobs;
use eni_ipam_cloud::CloudKind;
use eni_ipam_operator::simulate::SimConfig;
use eni_ipam_operator::simulate::autoscaler::{AutoscalerKind, KarpenterSetup};
use eni_ipam_operator::simulate::capacity_model::CapacityMode;
use eni_ipam_operator::simulate::pod_report::{PodReport, PodRun};
use eni_ipam_operator::simulate::pods::{self, PodArrival, PodSimConfig};

fn burst(
    cloud: CloudKind,
    instance_type: Option<&str>,
    autoscaler: AutoscalerKind,
    setup: KarpenterSetup,
) -> PodSimConfig {
    let fleet = SimConfig {
        cloud,
        nodes: 50,
        instance_type: instance_type.map(str::to_owned),
        knobs: PoolKnobs { pre_allocate: 8, ..PoolKnobs::default() },
        ..SimConfig::default()
    };
    let mut config = PodSimConfig::new(fleet);
    config.arrival = PodArrival::Burst { pods: 2000 };
    config.autoscaler = autoscaler;
    config.karpenter_setup = setup;
    config
}

async fn play(config: &PodSimConfig) -> PodReport {
    pods::run(config, true).await.expect("the pod simulation runs")
}

fn side(report: &PodReport, mode: CapacityMode) -> &PodRun {
    report.run(mode).expect("both capacities played")
}

fn assert_clean(report: &PodReport) {
    for run in &report.runs {
        assert_eq!(run.duplicate_pod_ips, 0, "{:?}: an IP went to two pods", run.capacity);
        assert_eq!(run.pod_ips_not_on_node, 0, "{:?}: a pod IP is not on its node's ENIs", run.capacity);
        assert_eq!(run.duplicate_pool_ips, 0, "{:?}: an IP is in two pools", run.capacity);
    }
}

#[tokio::test(start_paused = true)]
async fn cluster_autoscaler_adds_no_unneeded_node_with_the_new_capacity_on_both_clouds() {
    let mut aws = None;
    for cloud in [CloudKind::Aws, CloudKind::Alibaba] {
        let report =
            play(&burst(cloud, None, AutoscalerKind::ClusterAutoscaler, KarpenterSetup::Supported)).await;
        assert_clean(&report);
        let new = side(&report, CapacityMode::InstanceLimit);
        assert_eq!(new.nodes_added_unneeded, 0, "{cloud}: {}", report.table());
        assert_eq!(new.nodes_added, 0, "{cloud}: the fleet's IP limits hold the burst");
        assert_eq!(new.pods_never_scheduled, 0, "{cloud}");
        assert_eq!(new.pods_running, 2000, "{cloud}: every pod got its IP");
        assert_eq!(side(&report, CapacityMode::Pool).pods_running, 2000, "{cloud}");
        if cloud == CloudKind::Aws {
            aws = Some(report);
        }
    }
    // The old capacity on EC2: the pools refill slower than CA's 10 s scan, so CA
    // copies a pool-sized template and launches nodes the fleet did not need.
    let report = aws.expect("the AWS run");
    let old = side(&report, CapacityMode::Pool);
    assert!(old.nodes_added_unneeded > 0, "{}", report.table());
    assert_eq!(old.nodes_added_unneeded, old.nodes_added, "every one of them unneeded");
}

#[tokio::test(start_paused = true)]
async fn karpenter_schedules_every_pod_with_the_supported_setup_on_both_clouds() {
    for cloud in [CloudKind::Aws, CloudKind::Alibaba] {
        let report = play(&burst(cloud, None, AutoscalerKind::Karpenter, KarpenterSetup::Supported)).await;
        assert_clean(&report);
        for run in &report.runs {
            assert_eq!(run.pods_never_scheduled, 0, "{cloud} {:?}: {}", run.capacity, report.table());
            assert_eq!(run.nodes_added_unneeded, 0, "{cloud} {:?}", run.capacity);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn beyond_the_fleets_ip_limits_karpenter_launches_only_with_the_supported_setup() {
    // m5.large holds 27 pod IPs: 50 nodes take 1,350 of the 2,000 pods.
    let supported =
        play(&burst(CloudKind::Aws, Some("m5.large"), AutoscalerKind::Karpenter, KarpenterSetup::Supported))
            .await;
    assert_clean(&supported);
    for run in &supported.runs {
        assert_eq!(run.pods_never_scheduled, 0, "{}", supported.table());
        assert_eq!(run.nodes_added, 25, "650 pods / 27 a node");
        assert_eq!(run.nodes_added_unneeded, 0);
    }
    let naive =
        play(&burst(CloudKind::Aws, Some("m5.large"), AutoscalerKind::Karpenter, KarpenterSetup::Naive))
            .await;
    for run in &naive.runs {
        assert_eq!(run.nodes_added, 0, "#751: no node for a pod requesting eni-ipam.io/ip");
        assert_eq!(run.pods_never_scheduled, 650, "{}", naive.table());
    }
    let ca = play(&burst(
        CloudKind::Aws,
        Some("m5.large"),
        AutoscalerKind::ClusterAutoscaler,
        KarpenterSetup::Supported,
    ))
    .await;
    let new = side(&ca, CapacityMode::InstanceLimit);
    assert_eq!(
        (new.nodes_added, new.nodes_added_unneeded, new.pods_never_scheduled),
        (25, 0, 0),
        "{}",
        ca.table()
    );
    assert!(side(&ca, CapacityMode::Pool).nodes_added > 25, "{}", ca.table());
}

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eni-ipam-operator"))
        .args(args)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("the binary runs")
}

#[test]
fn pod_flags_that_do_not_go_together_are_one_line_errors() {
    let cases: [(&[&str], &str); 6] = [
        (&["simulate", "--pod-burst", "10"], "--pods"),
        (&["simulate", "--pods", "--pod-burst", "10", "--pod-rate", "5"], "--pod-rate"),
        (&["simulate", "--pods", "--pod-rate", "5"], "--pod-total"),
        (
            &["simulate", "--pods", "--karpenter-setup", "naive"],
            "--karpenter-setup needs --autoscaler karpenter",
        ),
        (
            &["simulate", "--pods", "--node-template", "capacity-table", "--autoscaler", "karpenter"],
            "--node-template needs --autoscaler cluster-autoscaler",
        ),
        (
            &[
                "simulate",
                "--pods",
                "--nodes",
                "50",
                "--autoscaler",
                "karpenter",
                "--autoscaler-max-nodes",
                "10",
            ],
            "raise it",
        ),
    ];
    for (args, must_say) in cases {
        let out = operator(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(must_say), "{args:?}: expected '{must_say}' in: {err}");
    }
}

#[test]
fn the_pod_table_and_json_agree() {
    let dir = std::env::temp_dir().join(format!("eni-ipam-pods-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("pods.json");
    let out = operator(&[
        "simulate",
        "--nodes",
        "5",
        "--pods",
        "--pod-rate",
        "20",
        "--pod-total",
        "100",
        "--autoscaler",
        "cluster-autoscaler",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let table = String::from_utf8(out.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "old and new");
    assert_eq!(runs[0]["capacity"], "pool");
    assert_eq!(runs[1]["capacity"], "instance-limit");
    for run in runs {
        assert_eq!(run["pods_scheduled"], 100);
        assert!(run["pod_pending"]["p99_s"].is_number() && run["pod_waiting_for_ip"]["p50_s"].is_number());
    }
    assert!(table.contains("100 pods at 20/s onto 5 x m5.xlarge"), "{table}");
    let scheduled = table.lines().find(|l| l.trim_start().starts_with("pods scheduled")).unwrap();
    assert_eq!(scheduled.matches("100 / 100").count(), 2, "{scheduled}");
}

#[tokio::test(start_paused = true)]
async fn the_new_capacity_stops_at_max_allocate_and_the_autoscaler_adds_what_that_leaves_out() {
    // Pools capped at 20: 50 nodes hold 1,000 of the 2,000 pods, 50 more nodes are needed.
    let mut config =
        burst(CloudKind::Aws, None, AutoscalerKind::ClusterAutoscaler, KarpenterSetup::Supported);
    config.fleet.knobs.max_allocate = 20;
    config.modes = vec![CapacityMode::InstanceLimit];
    let report = play(&config).await;
    assert_clean(&report);
    let new = side(&report, CapacityMode::InstanceLimit);
    assert_eq!((new.nodes_added, new.nodes_added_unneeded), (50, 0), "{}", report.table());
    assert_eq!(new.pods_running, 2000);
}
