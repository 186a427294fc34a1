//! The safety scenarios of issue 28 on each cloud, one bed per cloud; each
//! row must be clean (nothing of another cluster or CNI touched, no live ENI
//! detached, no IP doubled or left leaked, no hostile write accepted).
//! Root: namespaces and eBPF. `ENI_E2E_DIR` keeps logs for a look afterwards.

use eni_ipam_e2e::bed::{Bed, BedConfig, DatapathMode};
use eni_ipam_e2e::cloud::CloudKind;
use eni_ipam_e2e::node::Knobs;
use eni_ipam_e2e::safety::{self, SCENARIOS};

async fn every_safety_scenario(cloud: CloudKind) {
    let config = BedConfig {
        cloud,
        datapath: DatapathMode::EbpfTcx,
        nodes: 3,
        knobs: Knobs { pre_allocate: 3, max_allocate: 10 },
    };
    let dir =
        std::env::var_os("ENI_E2E_DIR").map(|d| std::path::PathBuf::from(d).join(format!("safety-{cloud}")));
    let mut bed = Bed::start(config, dir).await;
    let progress = |line: &str| eprintln!("{line}");
    let rows = safety::all(&mut bed, &progress).await;
    println!("{}", safety::table(&format!("## safety, {cloud}, 3 nodes"), &rows));
    assert_eq!(rows.len(), SCENARIOS.len(), "every safety scenario reported a row");
    for row in &rows {
        assert!(row.clean(), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn safety_on_the_alibaba_emulator_root() {
    every_safety_scenario(CloudKind::Alibaba).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn safety_on_moto_ec2_root() {
    every_safety_scenario(CloudKind::Aws).await;
}
