//! The bed most datapath tests share: two nodes running the datapath and three pods.

use std::net::Ipv4Addr;

use eni_ipam_netns_testbed::{PodSpec, Testbed};

/// On node 0, ENI 1.
pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
/// On node 0, ENI 0.
pub const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
/// On node 1, ENI 0.
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);

/// Pods A, A2 and B (`bed.pods[0..3]`) on two nodes, the datapath loaded and attached on both.
pub fn two_nodes(tag: &str) -> Testbed {
    let mut bed = Testbed::new(
        tag,
        2,
        &[
            PodSpec { node: 0, eni: 1, ip: POD_A },
            PodSpec { node: 0, eni: 0, ip: POD_A2 },
            PodSpec { node: 1, eni: 0, ip: POD_B },
        ],
    );
    bed.start_datapath(0);
    bed.start_datapath(1);
    bed
}
