//! Destinations in the host routes go to the node's own stack, the rest out of the ENI
//! (needs root).

use eni_ipam_netns_testbed as testbed;

use std::{net::Ipv4Addr, time::Duration};

use eni_ipam_datapath::Ipv4Prefix;
use testbed::{PodSpec, Testbed, echo};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

#[test]
fn host_routes_reach_the_node_stack_instead_of_the_eni() {
    let mut bed = Testbed::new("hostroutes", 1, &[PodSpec { node: 0, eni: 1, ip: POD_A }]);
    bed.start_datapath(0);
    let (node, pod) = (&bed.nodes[0].ns, &bed.pods[0]);
    node.own_address(NODE_IP);
    node.ip(&["route", "add", &format!("{POD_A}/32"), "dev", &pod.veth]);
    let pod_mac = pod.endpoint.pod_mac.to_string();
    node.ip(&[
        "neigh",
        "replace",
        &POD_A.to_string(),
        "lladdr",
        &pod_mac,
        "dev",
        &pod.veth,
        "nud",
        "permanent",
    ]);
    let to_eni_before = bed.router.rx_packets("n0e1");
    let server = echo::EchoServer::udp(&bed.nodes[0].ns, NODE_IP);
    let exchange = |bed: &Testbed| {
        echo::udp_echo_client(&bed.pods[0].ns, server.addr, 3, 56, Duration::from_millis(10)).received
    };

    assert_eq!(exchange(&bed), 0, "without a host route the node IP is sent out of the ENI");
    assert!(bed.router.rx_packets("n0e1") - to_eni_before >= 3, "the datagrams must have left through ENI 1");

    let node_prefix = Ipv4Prefix::new(NODE_IP, 32).unwrap();
    bed.datapath(0).set_host_routes(&[node_prefix]).unwrap();
    assert_eq!(exchange(&bed), 3);

    bed.datapath(0).set_host_routes(&[]).unwrap();
    assert_eq!(exchange(&bed), 0, "the host route must be gone");
}
