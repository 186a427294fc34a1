//! The traffic matrix of issue 29 (`matrix.rs`) for every datapath on each cloud, sized down
//! for `scripts/test`: one bed of 2 nodes per (cloud, datapath), 3 rounds a cell. Every cell
//! must pass with no failure and no source-check drop, and nothing may stay behind: no
//! network namespace, no pin folder of the bed. Root: namespaces, eBPF, iptables.

use eni_ipam_e2e::bed::{Bed, BedConfig, DatapathMode};
use eni_ipam_e2e::cloud::CloudKind;
use eni_ipam_e2e::matrix::{self, table};

const ROUNDS: u32 = 3;

/// Network namespaces and pin folders this process made: the fabric's (`eni-<pid>-`),
/// the kubelets' pod sandboxes (`e2e<pid>-`) and the agents' pins (`eni-ipam-test-<pid>-`).
fn leftovers() -> Vec<String> {
    let pid = std::process::id();
    let ours = [format!("eni-{pid}-"), format!("e2e{}-", pid % 100_000), format!("eni-ipam-test-{pid}-")];
    let netns = std::fs::read_dir("/var/run/netns").into_iter().flatten().flatten();
    let pins = std::fs::read_dir("/sys/fs/bpf").into_iter().flatten().flatten();
    netns
        .chain(pins)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| ours.iter().any(|prefix| name.starts_with(prefix)))
        .collect()
}

async fn every_datapath(cloud: CloudKind) {
    let mut failures = Vec::new();
    let mut tables = Vec::new();
    for datapath in DatapathMode::ALL {
        let config = BedConfig { cloud, datapath, nodes: 2, knobs: matrix::KNOBS };
        let dir = std::env::var_os("ENI_E2E_DIR").map(|d| {
            std::path::PathBuf::from(d)
                .join(format!("matrix-{cloud}-{}", datapath.to_string().replace('/', "-")))
        });
        let mut bed = Bed::start(config, dir).await;
        let say = |line: &str| eprintln!("{line}");
        let cells = matrix::run(&mut bed, ROUNDS, &say).await;
        drop(bed);
        let text = table(&format!("## {cloud}, datapath {datapath}, 2 nodes, {ROUNDS} rounds"), &cells);
        println!("{text}");
        tables.push(text);
        failures.extend(cells.iter().filter(|c| !c.clean()).map(|c| format!("{datapath}: {}", c.name)));
        let left = leftovers();
        assert!(left.is_empty(), "the {datapath} bed left these behind: {left:?}");
    }
    assert!(failures.is_empty(), "cells that failed on {cloud}: {failures:#?}\n{}", tables.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_matrix_on_the_alibaba_emulator_root() {
    every_datapath(CloudKind::Alibaba).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_matrix_on_moto_ec2_root() {
    every_datapath(CloudKind::Aws).await;
}
