//! The agent owns the maps: reconcile removes what it no longer owns (needs root).

use eni_ipam_netns_testbed as testbed;

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use eni_ipam_datapath::{EndpointInfo, MacAddr};
use testbed::{PodSpec, Testbed, echo};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const GONE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 99);

#[test]
fn reconcile_removes_endpoints_and_links_no_longer_owned() {
    let mut bed = Testbed::new(
        "reconcile",
        1,
        &[PodSpec { node: 0, eni: 1, ip: POD_A }, PodSpec { node: 0, eni: 0, ip: POD_A2 }],
    );
    bed.start_datapath(0);
    // Pod A2 reaches pod A through the datapath while it is served.
    let server = echo::EchoServer::udp(&bed.pods[0].ns, POD_A);
    let udp = echo::udp_echo_client(&bed.pods[1].ns, server.addr, 2, 56, Duration::from_millis(10));
    assert_eq!(udp.received, 2);
    let stale =
        EndpointInfo { pod_veth_ifindex: 4242, pod_mac: MacAddr([2, 0, 0, 0, 0, 9]), ..bed.pods[0].endpoint };
    bed.datapath(0).upsert_endpoint(GONE, stale).unwrap();
    assert!(bed.datapath(0).endpoints().unwrap().contains_key(&GONE));

    // The agent's state no longer has GONE nor pod A2.
    let desired: BTreeMap<_, _> = bed.desired(0).into_iter().filter(|(ip, _)| *ip == POD_A).collect();
    let a2_veth = bed.pods[1].endpoint.pod_veth_ifindex;
    let report = bed.datapath(0).reconcile(&desired).unwrap();

    assert_eq!(report.upserted, Vec::<Ipv4Addr>::new());
    assert_eq!(report.removed, vec![POD_A2, GONE]);
    assert_eq!(report.detached_pod_veths, vec![a2_veth]);
    let left: Vec<Ipv4Addr> = bed.datapath(0).endpoints().unwrap().into_keys().collect();
    assert_eq!(left, vec![POD_A]);
    let counted: Vec<Ipv4Addr> = bed.datapath(0).counters().unwrap().into_keys().collect();
    assert_eq!(counted, vec![Ipv4Addr::UNSPECIFIED, POD_A]);

    // Pod A2 is no longer served: its veth is detached, so the node (no routes) drops it.
    let udp = echo::udp_echo_client(&bed.pods[1].ns, server.addr, 2, 56, Duration::from_millis(10));
    assert_eq!(udp.received, 0);
    // A second reconcile with the same state changes nothing.
    assert_eq!(bed.datapath(0).reconcile(&desired).unwrap(), Default::default());
}
