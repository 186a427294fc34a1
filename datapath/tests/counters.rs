//! Counters: exact per-endpoint counts, drops on veths without an endpoint, and a re-added
//! endpoint starting from zero (needs root).

use eni_ipam_netns_testbed as testbed;

use std::{net::Ipv4Addr, time::Duration};

use eni_ipam_datapath::DropReason;
use testbed::{PodSpec, Testbed, echo};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);

#[test]
fn counters_are_exact_and_restart_from_zero_for_a_new_endpoint() {
    let mut bed = Testbed::new(
        "counters",
        1,
        &[PodSpec { node: 0, eni: 1, ip: POD_A }, PodSpec { node: 0, eni: 0, ip: POD_A2 }],
    );
    bed.start_datapath(0);
    let server = echo::EchoServer::udp(&bed.pods[0].ns, POD_A);
    let exchange = |bed: &Testbed, count| {
        echo::udp_echo_client(&bed.pods[1].ns, server.addr, count, 56, Duration::from_millis(10)).received
    };
    assert_eq!(exchange(&bed, 5), 5);
    let a2 = bed.datapath(0).endpoint_counters(POD_A2).unwrap();
    assert_eq!((a2.tx_packets, a2.rx_packets), (5, 5), "pod A2 counters {a2:?}");
    // Bytes are frame lengths: 14 Ethernet + 20 IPv4 + 8 UDP + 56 data.
    assert_eq!(a2.tx_bytes, 5 * 98, "pod A2 counters {a2:?}");

    // The agent removes A2 but its veth stays attached: its packets are dropped, unattributed.
    bed.datapath(0).remove_endpoint(POD_A2).unwrap();
    let unattributed = bed.datapath(0).endpoint_counters(Ipv4Addr::UNSPECIFIED).unwrap();
    assert_eq!(exchange(&bed, 4), 0);
    let after = bed.datapath(0).endpoint_counters(Ipv4Addr::UNSPECIFIED).unwrap();
    assert_eq!(after.drops(DropReason::UnknownVeth) - unattributed.drops(DropReason::UnknownVeth), 4);

    // Re-added, it starts from zero.
    let endpoint = bed.pods[1].endpoint;
    bed.datapath(0).upsert_endpoint(POD_A2, endpoint).unwrap();
    assert_eq!(bed.datapath(0).endpoint_counters(POD_A2).unwrap(), Default::default());
    assert_eq!(exchange(&bed, 3), 3);
    let a2 = bed.datapath(0).endpoint_counters(POD_A2).unwrap();
    assert_eq!((a2.tx_packets, a2.rx_packets), (3, 3), "pod A2 counters {a2:?}");
}
