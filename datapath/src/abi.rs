//! Rust twin of `bpf/eni_ipam.h`: the map keys and values shared with the eBPF programs.
//! Addresses are kept in network byte order, as the programs read them from packets.

use std::net::Ipv4Addr;

/// Number of drop reasons (`ENI_IPAM_DROP_REASONS`).
pub const DROP_REASONS: usize = 6;
/// Maximum endpoints per node (`ENI_IPAM_MAX_ENDPOINTS`).
pub const MAX_ENDPOINTS: usize = 4096;

/// Bit of `skb->mark` the node's netfilter sets on packets of NATed flows (`ENI_IPAM_NAT_MARK`).
pub const NAT_MARK: u32 = 0x0100_0000;

/// Entries of the LRU hash `nat_flows` (`ENI_IPAM_NAT_FLOWS`).
pub const NAT_FLOWS: usize = 262_144;

/// Slot of `endpoint_counters` for drops on veths without an endpoint (`ENI_IPAM_UNATTRIBUTED_SLOT`).
pub const UNATTRIBUTED_SLOT: u32 = 0;

/// Key of `endpoints` (`struct endpoint_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    /// IPv4 address, network byte order.
    pub pod_ip: u32,
}

impl EndpointKey {
    pub fn new(ip: Ipv4Addr) -> Self {
        Self { pod_ip: u32::from_ne_bytes(ip.octets()) }
    }

    pub fn ip(self) -> Ipv4Addr {
        Ipv4Addr::from(self.pod_ip.to_ne_bytes())
    }
}

/// Value of `endpoints` (`struct endpoint_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointValue {
    pub pod_veth_ifindex: u32,
    pub eni_ifindex: u32,
    pub pod_mac: [u8; 6],
    pub eni_mac: [u8; 6],
    pub gateway_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Index in `endpoint_counters`, 1..=MAX_ENDPOINTS.
    pub counter_slot: u32,
}

/// Value of `pod_veths`, keyed by host-side veth ifindex (`struct veth_owner`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VethOwner {
    pub pod_ip: u32,
    pub counter_slot: u32,
}

/// Key of the LPM trie `host_routes` (`struct host_route_key`); the datapath writes it as
/// aya's `lpm_trie::Key<u32>`, which has the same layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostRouteKey {
    pub prefixlen: u32,
    /// IPv4 address, network byte order.
    pub addr: u32,
}

/// Per-CPU value of the `endpoint_counters` array (`struct endpoint_counters`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterValue {
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub drops: [u64; DROP_REASONS],
}

/// Key of the LRU hash `nat_flows` (`struct nat_flow_key`): the 5-tuple of a reply of a
/// NATed flow as the programs read it at TC ingress; the value is the last time (kernel
/// monotonic ns) a packet of the flow left through the node's stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NatFlowKey {
    /// IPv4 addresses, network byte order.
    pub saddr: u32,
    pub daddr: u32,
    /// Ports, network byte order.
    pub sport: u16,
    pub dport: u16,
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub proto: u8,
    pub _pad: [u8; 3],
}

// SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding the kernel could leave
// uninitialised (EndpointValue's tail is an explicit field), valid for any bit pattern.
unsafe impl aya::Pod for EndpointKey {}
unsafe impl aya::Pod for EndpointValue {}
unsafe impl aya::Pod for VethOwner {}
unsafe impl aya::Pod for HostRouteKey {}
unsafe impl aya::Pod for CounterValue {}
unsafe impl aya::Pod for NatFlowKey {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[allow(non_upper_case_globals, dead_code)]
    mod c {
        include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));
    }

    #[test]
    fn endpoint_key_matches_c_header() {
        assert_eq!(size_of::<EndpointKey>(), c::SIZEOF_endpoint_key);
        assert_eq!(offset_of!(EndpointKey, pod_ip), c::OFFSETOF_endpoint_key_pod_ip);
    }

    #[test]
    fn endpoint_value_matches_c_header() {
        assert_eq!(size_of::<EndpointValue>(), c::SIZEOF_endpoint_info);
        assert_eq!(offset_of!(EndpointValue, pod_veth_ifindex), c::OFFSETOF_endpoint_info_pod_veth_ifindex);
        assert_eq!(offset_of!(EndpointValue, eni_ifindex), c::OFFSETOF_endpoint_info_eni_ifindex);
        assert_eq!(offset_of!(EndpointValue, pod_mac), c::OFFSETOF_endpoint_info_pod_mac);
        assert_eq!(offset_of!(EndpointValue, eni_mac), c::OFFSETOF_endpoint_info_eni_mac);
        assert_eq!(offset_of!(EndpointValue, gateway_mac), c::OFFSETOF_endpoint_info_gateway_mac);
        assert_eq!(offset_of!(EndpointValue, counter_slot), c::OFFSETOF_endpoint_info_counter_slot);
    }

    #[test]
    fn veth_owner_matches_c_header() {
        assert_eq!(size_of::<VethOwner>(), c::SIZEOF_veth_owner);
        assert_eq!(offset_of!(VethOwner, pod_ip), c::OFFSETOF_veth_owner_pod_ip);
        assert_eq!(offset_of!(VethOwner, counter_slot), c::OFFSETOF_veth_owner_counter_slot);
    }

    #[test]
    fn host_route_key_matches_c_header_and_aya_lpm_key() {
        assert_eq!(size_of::<HostRouteKey>(), c::SIZEOF_host_route_key);
        assert_eq!(offset_of!(HostRouteKey, prefixlen), c::OFFSETOF_host_route_key_prefixlen);
        assert_eq!(offset_of!(HostRouteKey, addr), c::OFFSETOF_host_route_key_addr);
        assert_eq!(size_of::<aya::maps::lpm_trie::Key<u32>>(), c::SIZEOF_host_route_key);
    }

    #[test]
    fn counter_value_matches_c_header() {
        assert_eq!(size_of::<CounterValue>(), c::SIZEOF_endpoint_counters);
        assert_eq!(offset_of!(CounterValue, tx_packets), c::OFFSETOF_endpoint_counters_tx_packets);
        assert_eq!(offset_of!(CounterValue, tx_bytes), c::OFFSETOF_endpoint_counters_tx_bytes);
        assert_eq!(offset_of!(CounterValue, rx_packets), c::OFFSETOF_endpoint_counters_rx_packets);
        assert_eq!(offset_of!(CounterValue, rx_bytes), c::OFFSETOF_endpoint_counters_rx_bytes);
        assert_eq!(offset_of!(CounterValue, drops), c::OFFSETOF_endpoint_counters_drops);
    }

    #[test]
    fn nat_flow_key_matches_c_header() {
        assert_eq!(size_of::<NatFlowKey>(), c::SIZEOF_nat_flow_key);
        assert_eq!(offset_of!(NatFlowKey, saddr), c::OFFSETOF_nat_flow_key_saddr);
        assert_eq!(offset_of!(NatFlowKey, daddr), c::OFFSETOF_nat_flow_key_daddr);
        assert_eq!(offset_of!(NatFlowKey, sport), c::OFFSETOF_nat_flow_key_sport);
        assert_eq!(offset_of!(NatFlowKey, dport), c::OFFSETOF_nat_flow_key_dport);
        assert_eq!(offset_of!(NatFlowKey, proto), c::OFFSETOF_nat_flow_key_proto);
    }

    #[test]
    fn constants_match_c_header() {
        assert_eq!(DROP_REASONS, c::DROP_REASONS);
        assert_eq!(MAX_ENDPOINTS, c::MAX_ENDPOINTS);
        assert_eq!(UNATTRIBUTED_SLOT as usize, c::UNATTRIBUTED_SLOT);
        assert_eq!(NAT_MARK as usize, c::NAT_MARK);
        assert_eq!(NAT_FLOWS, c::NAT_FLOWS);
        use crate::DropReason;
        let reasons = [
            (DropReason::SpoofedSource, c::DROP_SPOOFED_SOURCE),
            (DropReason::UnknownVeth, c::DROP_UNKNOWN_VETH),
            (DropReason::ArpSpoofed, c::DROP_ARP_SPOOFED),
            (DropReason::Ipv6, c::DROP_IPV6),
            (DropReason::NotIp, c::DROP_NOT_IP),
            (DropReason::Malformed, c::DROP_MALFORMED),
        ];
        assert_eq!(reasons.len(), DROP_REASONS, "every reason is compared");
        for (reason, index) in reasons {
            assert_eq!(reason as usize, index, "{reason:?}");
            assert_eq!(DropReason::ALL[index], reason, "ALL is in index order");
        }
    }

    #[test]
    fn endpoint_key_keeps_network_byte_order() {
        let key = EndpointKey::new(Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(key.pod_ip.to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(key.ip(), Ipv4Addr::new(10, 1, 2, 3));
    }
}
