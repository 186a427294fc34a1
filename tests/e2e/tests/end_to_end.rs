//! Every scenario of issue 12 on each cloud, sized down for `scripts/test`
//! (`scripts/local-cluster --full` runs the full sizes). Root: namespaces and eBPF.
//! `ENI_E2E_DIR` keeps the logs, state and kubeconfig for a look after the run.
//! The chart is rendered with `helm` (scripts/install-test-tools) to start the
//! operator and the webhook as it does.

use eni_ipam_e2e::bed::{Bed, BedConfig, DatapathMode};
use eni_ipam_e2e::cloud::CloudKind;
use eni_ipam_e2e::node::Knobs;
use eni_ipam_e2e::report::table;
use eni_ipam_e2e::scenarios::{Run, Size};

async fn every_scenario(cloud: CloudKind) {
    let config = BedConfig {
        cloud,
        datapath: DatapathMode::EbpfTcx,
        nodes: 3,
        knobs: Knobs { pre_allocate: 3, max_allocate: 10 },
    };
    let dir = std::env::var_os("ENI_E2E_DIR").map(|d| std::path::PathBuf::from(d).join(cloud.to_string()));
    let mut bed = Bed::start(config, dir).await;
    let progress = |line: &str| eprintln!("{line}");
    let mut run = Run::new(&mut bed, Size::new(false), &progress);
    run.all().await;
    println!("{}", table(&format!("## {cloud}, 3 nodes (scripts/test size)"), &run.rows));
    assert_eq!(run.rows.len(), 14, "every scenario reported a row");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_on_the_alibaba_emulator_root() {
    every_scenario(CloudKind::Alibaba).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_on_moto_ec2_root() {
    every_scenario(CloudKind::Aws).await;
}
