//! Pod to pod on one node: redirected veth to veth, never through the VPC (needs root).

use eni_ipam_netns_testbed as testbed;

use std::{net::Ipv4Addr, time::Duration};

use testbed::{PodSpec, Testbed, echo, traffic};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

#[test]
fn pods_on_one_node_talk_without_leaving_it() {
    let mut bed = Testbed::new(
        "samenode",
        1,
        &[PodSpec { node: 0, eni: 1, ip: POD_A }, PodSpec { node: 0, eni: 0, ip: POD_A2 }],
    );
    bed.start_datapath(0);
    let router_before = bed.router.rx_packets("n0e0") + bed.router.rx_packets("n0e1");

    let server = echo::EchoServer::udp(&bed.pods[1].ns, POD_A2);
    let udp = echo::udp_echo_client(&bed.pods[0].ns, server.addr, 10, 56, Duration::from_millis(10));
    assert_eq!((udp.sent, udp.received), (10, 10));
    traffic::tcp_echo(&bed.pods[1].ns, &bed.pods[0].ns, POD_A, 1 << 20);

    let router_after = bed.router.rx_packets("n0e0") + bed.router.rx_packets("n0e1");
    assert_eq!(router_after, router_before, "same-node traffic must not reach the VPC router");
    let a2 = bed.datapath(0).endpoint_counters(POD_A2).unwrap();
    assert!(a2.rx_packets >= 10 && a2.tx_packets >= 10, "pod A2 counters {a2:?}");
}
