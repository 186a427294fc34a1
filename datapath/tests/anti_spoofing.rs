//! Anti-spoofing without holes: every kind of frame a pod can put on its veth is checked,
//! and each drop is counted against the pod with its reason (needs root). Frames are sent
//! from inside the pod with an AF_PACKET socket, as a compromised pod could.

mod common;

use eni_ipam_netns_testbed as testbed;

use std::{net::Ipv4Addr, time::Duration};

use common::{POD_A, POD_A2, POD_B, two_nodes};
use eni_ipam_datapath::{DropReason, EndpointCounters};
use testbed::{
    Testbed,
    frames::{self, VnetHeader},
};

const FOREIGN: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 99);
const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Frames at least a page long: the kernel builds the skb of a packet socket with only
/// `hdr_len` bytes linear (the rest in page fragments) only past a page.
const BIG: usize = 5000;

/// Sends `frames` from pod A (optionally behind a vnet header) and returns the change of
/// pod A's counters.
fn send_from_a(bed: &mut Testbed, frames: &[Vec<u8>], vnet: Option<VnetHeader>) -> EndpointCounters {
    let before = bed.datapath(0).endpoint_counters(POD_A).unwrap();
    frames::send(&bed.pods[0].ns, "eth0", frames, vnet);
    std::thread::sleep(Duration::from_millis(100));
    let after = bed.datapath(0).endpoint_counters(POD_A).unwrap();
    delta(&before, &after)
}

fn delta(before: &EndpointCounters, after: &EndpointCounters) -> EndpointCounters {
    after.since(before)
}

fn only_drops(counted: &EndpointCounters, reason: DropReason, count: u64) {
    for other in DropReason::ALL {
        let want = if other == reason { count } else { 0 };
        assert_eq!(counted.drops(other), want, "{other:?} drops, counters {counted:?}");
    }
    if count > 0 {
        assert_eq!(counted.tx_packets, 0, "a dropped frame is not forwarded: {counted:?}");
    }
}

#[test]
fn arp_passes_only_with_the_pods_own_sender_ip_or_as_a_probe() {
    let mut bed = two_nodes("arp");
    let node = &bed.nodes[0].ns;
    node.own_address(NODE_IP);
    let (pod_mac, veth) = (bed.pods[0].endpoint.pod_mac, bed.pods[0].veth.clone());
    let neighbours = |bed: &Testbed| bed.nodes[0].ns.ip_text(&["neigh", "show", "dev", &veth]);

    // A foreign sender IP: the node must not learn (or answer) it.
    let spoofed = frames::arp_request(pod_mac, FOREIGN, NODE_IP);
    only_drops(&send_from_a(&mut bed, &[spoofed.clone(), spoofed], None), DropReason::ArpSpoofed, 2);
    assert!(!neighbours(&bed).contains(&FOREIGN.to_string()), "{}", neighbours(&bed));

    // An RFC 5227 probe (sender 0.0.0.0, as `arping -D` sends before using an address):
    // nothing can learn from it, so it passes.
    let probe = frames::arp_request(pod_mac, std::net::Ipv4Addr::UNSPECIFIED, NODE_IP);
    only_drops(&send_from_a(&mut bed, &[probe], None), DropReason::ArpSpoofed, 0);

    // The pod's own: the node answers and learns the pod's MAC.
    let own = frames::arp_request(pod_mac, POD_A, NODE_IP);
    only_drops(&send_from_a(&mut bed, &[own], None), DropReason::ArpSpoofed, 0);
    let learned = neighbours(&bed);
    assert!(learned.contains(&format!("{POD_A} lladdr {pod_mac}")), "the node must learn pod A: {learned}");
}

#[test]
fn ipv6_vlan_and_other_ethertypes_are_dropped_with_their_reason() {
    let mut bed = two_nodes("ethertypes");
    let (pod_mac, veth) = (bed.pods[0].endpoint.pod_mac, &bed.pods[0].veth);
    let veth_mac = bed.nodes[0].ns.link(veth).1;
    let ipv6 = frames::raw(veth_mac, pod_mac, frames::ETH_P_IPV6, &[0x60; 40]);
    only_drops(&send_from_a(&mut bed, &[ipv6], None), DropReason::Ipv6, 1);

    let other = frames::raw(veth_mac, pod_mac, 0x88b5, &[0; 46]);
    only_drops(&send_from_a(&mut bed, &[other], None), DropReason::NotIp, 1);

    // A well-formed packet from the pod's own address, but VLAN-tagged. The kernel moves an
    // in-frame tag beside the frame (skb vlan_tci) before TC ingress, as a VLAN device with
    // tag offload would have sent it: both reach the program as `vlan_present`.
    let own = frames::udp((pod_mac, veth_mac), (POD_A, 4000), (POD_B, 4000), 64, 18);
    let tagged = frames::vlan_tagged(&own, 7);
    only_drops(&send_from_a(&mut bed, &[tagged], None), DropReason::NotIp, 1);
    let double_tagged = frames::vlan_tagged(&frames::vlan_tagged(&own, 7), 8);
    only_drops(&send_from_a(&mut bed, &[double_tagged], None), DropReason::NotIp, 1);

    // The same packet untagged is the pod's to send.
    let sent = send_from_a(&mut bed, &[own], None);
    only_drops(&sent, DropReason::NotIp, 0);
    assert_eq!(sent.tx_packets, 1, "{sent:?}");
}

#[test]
fn spoofed_malformed_nonlinear_and_gso_ipv4_are_checked() {
    let mut bed = two_nodes("ipv4");
    let (pod_mac, veth) = (bed.pods[0].endpoint.pod_mac, bed.pods[0].veth.clone());
    let veth_mac = bed.nodes[0].ns.link(&veth).1;
    let macs = (pod_mac, veth_mac);

    let spoofed = frames::udp(macs, (FOREIGN, 4000), (POD_B, 4000), 64, 18);
    only_drops(&send_from_a(&mut bed, &[spoofed], None), DropReason::SpoofedSource, 1);

    let mut version_6 = frames::udp(macs, (POD_A, 4000), (POD_B, 4000), 64, 18);
    version_6[14] = 0x65;
    let mut short_ihl = frames::udp(macs, (POD_A, 4000), (POD_B, 4000), 64, 18);
    short_ihl[14] = 0x44;
    let truncated = frames::raw(veth_mac, pod_mac, frames::ETH_P_IP, &[0x45; 10]);
    only_drops(&send_from_a(&mut bed, &[version_6, short_ihl, truncated], None), DropReason::Malformed, 3);

    // Frames longer than the MTU need a larger one on both veth ends (they are not GSO).
    for (ns, link) in [(&bed.pods[0].ns, "eth0"), (&bed.nodes[0].ns, veth.as_str())] {
        ns.ip(&["link", "set", link, "mtu", "9000"]);
    }
    for (ns, link) in [(&bed.pods[1].ns, "eth0"), (&bed.nodes[0].ns, bed.pods[1].veth.as_str())] {
        ns.ip(&["link", "set", link, "mtu", "9000"]);
    }
    // The IPv4 header outside the linear buffer: pulled in, then checked.
    let spoofed_big = frames::udp(macs, (FOREIGN, 4000), (POD_B, 4000), 64, BIG);
    let nonlinear = Some(VnetHeader::nonlinear());
    only_drops(&send_from_a(&mut bed, &[spoofed_big], nonlinear), DropReason::SpoofedSource, 1);
    // ... and the pod's own such packet is forwarded, intact, to a pod on the node.
    let socket = bed.pods[1].ns.run(|| std::net::UdpSocket::bind((POD_A2, 0)).unwrap());
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let port = socket.local_addr().unwrap().port();
    let own_big = frames::udp(macs, (POD_A, 4000), (POD_A2, port), 64, BIG);
    let sent = send_from_a(&mut bed, std::slice::from_ref(&own_big), nonlinear);
    only_drops(&sent, DropReason::SpoofedSource, 0);
    assert_eq!((sent.tx_packets, sent.tx_bytes), (1, own_big.len() as u64), "{sent:?}");
    let mut buf = vec![0u8; 2 * BIG];
    let (n, from) = socket.recv_from(&mut buf).expect("pod A2 receives the non-linear datagram");
    assert_eq!((n, from.ip()), (BIG, std::net::IpAddr::V4(POD_A)));
    assert!(buf[..n] == own_big[42..], "the datagram arrives intact");

    // GSO (a TCP super-packet of 1000-byte segments, as a vnet-header device hands over).
    let gso = Some(VnetHeader::tcp_gso(1000));
    let spoofed_gso = frames::tcp(macs, (FOREIGN, 4000), (POD_B, 80), 64, BIG);
    only_drops(&send_from_a(&mut bed, &[spoofed_gso], gso), DropReason::SpoofedSource, 1);
    let own_gso = frames::tcp(macs, (POD_A, 4000), (POD_A2, 80), 64, BIG);
    let sent = send_from_a(&mut bed, std::slice::from_ref(&own_gso), gso);
    only_drops(&sent, DropReason::SpoofedSource, 0);
    assert_eq!(sent.tx_bytes, own_gso.len() as u64, "the GSO packet is forwarded whole: {sent:?}");
}
