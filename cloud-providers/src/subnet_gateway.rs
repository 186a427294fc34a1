//! Which addresses of a subnet the cloud keeps for itself, and which one of them is the VPC
//! router a node's ENI sends off-subnet traffic to. Neither cloud returns the gateway from its
//! subnet listing, so the operator derives it from the CIDR by the cloud's documented layout:
//!
//! - AWS EC2 reserves the first four addresses and the last one of every subnet; the VPC
//!   router is the network address + 1 (`10.0.32.0/19` -> `10.0.32.1`).
//! - Alibaba Cloud reserves the first address and the last three of every vSwitch
//!   (`192.168.1.0/24`: .0, .253, .254, .255, per the CreateVSwitch reference); the vSwitch
//!   gateway is the lowest of those last three, the broadcast address - 2 (`172.16.20.0/24` ->
//!   `172.16.20.253`, the gateway in Alibaba's own policy-routing example for secondary ENIs).
//!   The documentation shows it on /24 vSwitches only; that it is the same for every prefix
//!   length is inferred, not documented. The agent's `--subnet SUBNET_ID=CIDR,GATEWAY` overrides
//!   it per subnet should a vSwitch ever differ.

use std::net::Ipv4Addr;

use crate::profile::CloudKind;

/// Addresses the cloud reserves at the low and the high end of every subnet.
pub fn reserved_addresses(kind: CloudKind) -> (u32, u32) {
    match kind {
        CloudKind::Aws => (4, 1),
        CloudKind::Alibaba => (1, 3),
    }
}

/// The VPC router's address in subnet `cidr` (`a.b.c.d/len`) of cloud `kind`; `None` when
/// `cidr` is not an IPv4 CIDR or too small to hold the cloud's reserved addresses.
pub fn subnet_gateway(kind: CloudKind, cidr: &str) -> Option<Ipv4Addr> {
    let (base, len) = cidr.split_once('/')?;
    let base: Ipv4Addr = base.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    if len > 32 {
        return None;
    }
    let size = 1u64 << (32 - len);
    let (low, high) = reserved_addresses(kind);
    if size <= u64::from(low + high) {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    let network = u32::from(base) & mask;
    let broadcast = network | !mask;
    Some(Ipv4Addr::from(match kind {
        CloudKind::Aws => network + 1,
        CloudKind::Alibaba => broadcast - 2,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_follows_each_clouds_layout() {
        use CloudKind::{Alibaba, Aws};
        let table: [(CloudKind, &str, Option<&str>); 14] = [
            (Aws, "10.0.0.0/20", Some("10.0.0.1")),
            (Aws, "10.0.32.0/19", Some("10.0.32.1")),
            (Aws, "172.31.16.0/28", Some("172.31.16.1")),
            (Aws, "10.0.32.9/19", Some("10.0.32.1")),
            (Alibaba, "192.168.1.0/24", Some("192.168.1.253")),
            (Alibaba, "172.16.0.0/20", Some("172.16.15.253")),
            (Alibaba, "10.0.0.0/16", Some("10.0.255.253")),
            (Alibaba, "10.1.2.16/29", Some("10.1.2.21")),
            (Alibaba, "10.1.2.20/29", Some("10.1.2.21")),
            (Aws, "10.0.0.0/30", None),
            (Alibaba, "10.0.0.0/30", None),
            (Aws, "10.0.0.0", None),
            (Alibaba, "10.0.0.0/33", None),
            (Aws, "fd00::/64", None),
        ];
        for (kind, cidr, want) in table {
            assert_eq!(subnet_gateway(kind, cidr), want.map(|w| w.parse().unwrap()), "{kind} {cidr}");
        }
    }

    #[test]
    fn the_gateway_is_one_of_the_reserved_addresses() {
        for kind in [CloudKind::Aws, CloudKind::Alibaba] {
            let (low, high) = reserved_addresses(kind);
            let network = u32::from(Ipv4Addr::new(10, 0, 0, 0));
            let gateway = u32::from(subnet_gateway(kind, "10.0.0.0/24").unwrap()) - network;
            assert!(gateway < low || gateway >= 256 - high, "{kind}: offset {gateway}");
        }
    }
}
