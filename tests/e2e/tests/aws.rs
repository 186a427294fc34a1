//! Every scenario of issue 12 on the moto EC2 (through the test bed's proxy), sized down for
//! `scripts/test` (`scripts/local-cluster --full` runs the full sizes). Root.

use eni_ipam_e2e::bed::{Bed, BedConfig};
use eni_ipam_e2e::cloud::CloudKind;
use eni_ipam_e2e::node::Knobs;
use eni_ipam_e2e::report::table;
use eni_ipam_e2e::scenarios::{Run, Size};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn end_to_end_on_moto_ec2_root() {
    let config =
        BedConfig { cloud: CloudKind::Aws, nodes: 3, knobs: Knobs { pre_allocate: 3, max_allocate: 10 } };
    // ENI_E2E_DIR keeps the logs, state and kubeconfig for a look after the run.
    let mut bed = Bed::start(config, std::env::var_os("ENI_E2E_DIR").map(Into::into)).await;
    let progress = |line: &str| eprintln!("{line}");
    let mut run = Run::new(&mut bed, Size::new(false), &progress);
    run.all().await;
    println!("{}", table("## aws, 3 nodes (scripts/test size)", &run.rows));
    assert_eq!(run.rows.len(), 10, "every scenario reported a row");
}
