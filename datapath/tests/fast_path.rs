//! What takes the fast path: only IPv4 TCP or UDP, not a fragment, TTL > 1 (IP options are
//! fine); everything else from a pod goes to the node's stack, neither forwarded by the
//! datapath nor dropped by it (needs root). Frames are sent raw from inside pod A.

mod common;

use eni_ipam_netns_testbed as testbed;

use std::time::Duration;

use common::{POD_A, POD_B, two_nodes};
use eni_ipam_datapath::DropReason;
use testbed::frames;

#[test]
fn only_unfragmented_tcp_and_udp_with_ttl_above_one_are_forwarded() {
    let mut bed = two_nodes("fastpath");
    let (pod_mac, veth) = (bed.pods[0].endpoint.pod_mac, bed.pods[0].veth.clone());
    let macs = (pod_mac, bed.nodes[0].ns.link(&veth).1);
    let udp = |ttl| frames::udp(macs, (POD_A, 4000), (POD_B, 4000), ttl, 18);
    let with_ip = |mut frame: Vec<u8>, edit: &dyn Fn(&mut Vec<u8>)| {
        edit(&mut frame);
        frames::set_ipv4_checksum(&mut frame[14..]);
        frame
    };
    // Offset 20-21 of the frame: flags and fragment offset; 23: protocol.
    let more_fragments = with_ip(udp(64), &|f| f[20] = 0x20);
    let later_fragment = with_ip(udp(64), &|f| f[21] = 0x10);
    let gre = with_ip(udp(64), &|f| f[23] = 47);
    let icmp = with_ip(udp(64), &|f| f[23] = 1);
    let with_options = with_ip(udp(64), &|f| {
        // IHL 6: one 4-byte option (end of list), total length + 4.
        f[14] = 0x46;
        let total = u16::from_be_bytes([f[16], f[17]]) + 4;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.splice(34..34, [0u8; 4]);
    });
    let table: [(&str, Vec<u8>, u64); 8] = [
        ("UDP, TTL 64", udp(64), 1),
        ("TCP, TTL 64", frames::tcp(macs, (POD_A, 4000), (POD_B, 80), 64, 10), 1),
        ("UDP with an IP option", with_options, 1),
        ("UDP, TTL 1 (time exceeded is the stack's)", udp(1), 0),
        ("UDP, first fragment", more_fragments, 0),
        ("UDP, later fragment", later_fragment, 0),
        ("ICMP", icmp, 0),
        ("GRE", gre, 0),
    ];
    for (what, frame, forwarded) in table {
        let before = bed.datapath(0).endpoint_counters(POD_A).unwrap();
        frames::send(&bed.pods[0].ns, "eth0", &[frame], None);
        std::thread::sleep(Duration::from_millis(50));
        let counted = bed.datapath(0).endpoint_counters(POD_A).unwrap().since(&before);
        assert_eq!(counted.tx_packets, forwarded, "{what}: forwarded by the datapath? {counted:?}");
        for reason in DropReason::ALL {
            assert_eq!(counted.drops(reason), 0, "{what}: dropped as {reason:?}");
        }
    }
}
