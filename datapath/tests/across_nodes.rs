//! Pod to pod across two nodes, each pod's IP on a different ENI (needs root).

mod common;

use eni_ipam_netns_testbed as testbed;

use std::{net::Ipv4Addr, time::Duration};

use common::{POD_A, POD_B, two_nodes};
use eni_ipam_datapath::DropReason;
use testbed::{Testbed, echo, traffic};

const LINKS: [&str; 4] = ["n0e0", "n0e1", "n1e0", "n1e1"];

/// Packets the VPC router received on each ENI of [`LINKS`] while `f` ran.
fn router_rx_during(bed: &Testbed, f: impl FnOnce()) -> Vec<u64> {
    let before: Vec<u64> = LINKS.iter().map(|l| bed.router.rx_packets(l)).collect();
    f();
    LINKS.iter().zip(before).map(|(l, b)| bed.router.rx_packets(l) - b).collect()
}

fn assert_left_by_owning_enis(delta: &[u64], at_least: u64) {
    assert!(
        delta[1] >= at_least,
        "pod A's requests must arrive on node 0's ENI 1 (n0e1): rx deltas {delta:?}"
    );
    assert_eq!(delta[0], 0, "nothing may arrive on node 0's ENI 0 (n0e0): rx deltas {delta:?}");
    assert!(
        delta[2] >= at_least,
        "pod B's replies must arrive on node 1's ENI 0 (n1e0): rx deltas {delta:?}"
    );
    assert_eq!(delta[3], 0, "nothing may arrive on node 1's ENI 1 (n1e1): rx deltas {delta:?}");
}

#[test]
fn udp_and_tcp_leave_through_the_eni_owning_the_source_ip() {
    let mut bed = two_nodes("across");
    let server = echo::EchoServer::udp(&bed.pods[2].ns, POD_B);
    let delta = router_rx_during(&bed, || {
        let udp = echo::udp_echo_client(&bed.pods[0].ns, server.addr, 20, 56, Duration::from_millis(10));
        assert_eq!((udp.sent, udp.received), (20, 20));
    });
    assert_left_by_owning_enis(&delta, 20);

    traffic::tcp_echo(&bed.pods[0].ns, &bed.pods[2].ns, POD_B, 4 << 20);

    let a = bed.datapath(0).endpoint_counters(POD_A).unwrap();
    assert!(a.tx_packets >= 20 && a.rx_packets >= 20, "pod A counters {a:?}");
    assert!(a.tx_bytes >= 4 << 20 && a.rx_bytes >= 4 << 20, "pod A byte counters {a:?}");
    assert_eq!(a.drops(DropReason::SpoofedSource), 0);
    let b = bed.datapath(1).endpoint_counters(POD_B).unwrap();
    assert!(b.rx_packets >= 20 && b.tx_packets >= 20, "pod B counters {b:?}");
}

#[test]
fn icmp_goes_through_the_node_stack_and_its_policy_routing() {
    let mut bed = two_nodes("icmp");
    let ping = traffic::ping(&bed.pods[0].ns, POD_B, 3, "0.01", None);
    assert_eq!(ping.received, 0, "without routes in the nodes ICMP goes nowhere: {}", ping.output);

    bed.install_kernel_routing(0);
    bed.install_kernel_routing(1);
    let before = bed.datapath(0).endpoint_counters(POD_A).unwrap();
    let delta = router_rx_during(&bed, || {
        let ping = traffic::ping(&bed.pods[0].ns, POD_B, 20, "0.01", None);
        assert_eq!((ping.transmitted, ping.received), (20, 20), "{}", ping.output);
    });
    assert_left_by_owning_enis(&delta, 20);
    let after = bed.datapath(0).endpoint_counters(POD_A).unwrap();
    assert_eq!(after, before, "ICMP is not the fast path's: the datapath forwarded none of it");
}

#[test]
fn spoofed_source_is_dropped_and_counted_exactly() {
    let mut bed = two_nodes("spoof");
    let spoofed = Ipv4Addr::new(10, 0, 1, 99);
    bed.pods[0].ns.ip(&["addr", "add", &format!("{spoofed}/32"), "dev", "eth0"]);
    let before = bed.datapath(0).endpoint_counters(POD_A).unwrap();
    let router_before = bed.router.rx_packets("n0e1") + bed.router.rx_packets("n0e0");

    let sent = 7;
    let ping = traffic::ping(&bed.pods[0].ns, POD_B, sent, "0.01", Some(spoofed));
    assert_eq!((ping.transmitted, ping.received), (u64::from(sent), 0), "{}", ping.output);

    let after = bed.datapath(0).endpoint_counters(POD_A).unwrap();
    assert_eq!(
        after.drops(DropReason::SpoofedSource) - before.drops(DropReason::SpoofedSource),
        u64::from(sent)
    );
    assert_eq!(after.tx_packets, before.tx_packets, "spoofed packets must not be forwarded");
    let router_after = bed.router.rx_packets("n0e1") + bed.router.rx_packets("n0e0");
    assert_eq!(router_after, router_before, "spoofed packets must not reach the VPC");

    // The pod's own address still works.
    let server = echo::EchoServer::udp(&bed.pods[2].ns, POD_B);
    let udp = echo::udp_echo_client(&bed.pods[0].ns, server.addr, 3, 56, Duration::from_millis(10));
    assert_eq!(udp.received, 3);
}
