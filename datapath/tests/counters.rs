//! Counters: exact per-endpoint counts, drops on veths without an endpoint, and a re-added
//! endpoint starting from zero (needs root).

use eni_ipam_netns_testbed as testbed;

use std::net::Ipv4Addr;

use eni_ipam_datapath::DropReason;
use testbed::{PodSpec, Testbed, traffic};

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
    let ping = traffic::ping(&bed.pods[1].ns, POD_A, 5, "0.01", None);
    assert_eq!(ping.received, 5, "{}", ping.output);
    let a2 = bed.datapath(0).endpoint_counters(POD_A2).unwrap();
    assert_eq!((a2.tx_packets, a2.rx_packets), (5, 5), "pod A2 counters {a2:?}");
    // Bytes are frame lengths: 14 Ethernet + 20 IPv4 + 8 ICMP + 56 data.
    assert_eq!(a2.tx_bytes, 5 * 98, "pod A2 counters {a2:?}");

    // The agent removes A2 but its veth stays attached: its packets are dropped, unattributed.
    bed.datapath(0).remove_endpoint(POD_A2).unwrap();
    let unattributed = bed.datapath(0).endpoint_counters(Ipv4Addr::UNSPECIFIED).unwrap();
    let ping = traffic::ping(&bed.pods[1].ns, POD_A, 4, "0.01", None);
    assert_eq!(ping.received, 0, "{}", ping.output);
    let after = bed.datapath(0).endpoint_counters(Ipv4Addr::UNSPECIFIED).unwrap();
    assert_eq!(after.drops(DropReason::UnknownVeth) - unattributed.drops(DropReason::UnknownVeth), 4);

    // Re-added, it starts from zero.
    let endpoint = bed.pods[1].endpoint;
    bed.datapath(0).upsert_endpoint(POD_A2, endpoint).unwrap();
    assert_eq!(bed.datapath(0).endpoint_counters(POD_A2).unwrap(), Default::default());
    let ping = traffic::ping(&bed.pods[1].ns, POD_A, 3, "0.01", None);
    assert_eq!(ping.received, 3, "{}", ping.output);
    let a2 = bed.datapath(0).endpoint_counters(POD_A2).unwrap();
    assert_eq!((a2.tx_packets, a2.rx_packets), (3, 3), "pod A2 counters {a2:?}");
}
