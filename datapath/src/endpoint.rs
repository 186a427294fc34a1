//! What the agent tells the datapath about a pod, and what the datapath counts for it.

use std::{fmt, net::Ipv4Addr, str::FromStr};

use crate::abi::{CounterValue, DROP_REASONS, EndpointValue};

/// An Ethernet address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// A MAC address that is not six colon-separated hex bytes.
#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a MAC address (expected six hex bytes like 02:00:00:00:00:01)")]
pub struct InvalidMacAddr(String);

impl FromStr for MacAddr {
    type Err = InvalidMacAddr;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(|| InvalidMacAddr(text.to_owned()))?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| InvalidMacAddr(text.to_owned()))?;
        }
        if parts.next().is_some() {
            return Err(InvalidMacAddr(text.to_owned()));
        }
        Ok(Self(bytes))
    }
}

/// Where a pod lives on this node and how its traffic leaves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// Host-side veth of the pod, in the node's network namespace.
    pub pod_veth_ifindex: u32,
    /// MAC of the pod's own interface (eth0 inside the pod).
    pub pod_mac: MacAddr,
    /// ENI that owns the pod's IP.
    pub eni_ifindex: u32,
    /// MAC of that ENI.
    pub eni_mac: MacAddr,
    /// MAC of the VPC gateway reached through that ENI.
    pub gateway_mac: MacAddr,
}

impl EndpointInfo {
    pub(crate) fn to_value(self, counter_slot: u32) -> EndpointValue {
        EndpointValue {
            pod_veth_ifindex: self.pod_veth_ifindex,
            eni_ifindex: self.eni_ifindex,
            pod_mac: self.pod_mac.0,
            eni_mac: self.eni_mac.0,
            gateway_mac: self.gateway_mac.0,
            _pad: [0; 2],
            counter_slot,
        }
    }

    pub(crate) fn from_value(value: EndpointValue) -> Self {
        Self {
            pod_veth_ifindex: value.pod_veth_ifindex,
            pod_mac: MacAddr(value.pod_mac),
            eni_ifindex: value.eni_ifindex,
            eni_mac: MacAddr(value.eni_mac),
            gateway_mac: MacAddr(value.gateway_mac),
        }
    }
}

/// An IPv4 prefix such as `10.100.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Prefix {
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub len: u8,
}

impl Ipv4Prefix {
    /// The prefix with its host bits cleared; `None` if `len` > 32.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Self> {
        if len > 32 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
        Some(Self { addr: Ipv4Addr::from(u32::from(addr) & mask), len })
    }
}

impl fmt::Display for Ipv4Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Why the datapath dropped a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A pod sent from an address that is not its own (anti-spoofing).
    SpoofedSource = 0,
    /// A packet arrived on an attached pod veth for which no endpoint is registered.
    UnknownVeth = 1,
    /// An ARP packet from a pod whose sender IP is not the pod's own.
    ArpSpoofed = 2,
    /// An IPv6 packet from a pod (IPv6 is not supported yet).
    Ipv6 = 3,
    /// A frame from a pod that is neither IPv4 nor ARP, VLAN-tagged frames included.
    NotIp = 4,
    /// An IPv4 frame from a pod too short for its header or with a bad version or IHL, or
    /// an ARP packet that is not IPv4 over Ethernet.
    Malformed = 5,
}

impl DropReason {
    /// Every reason, in the order of the C enum (the index into the drop counters).
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::SpoofedSource,
        DropReason::UnknownVeth,
        DropReason::ArpSpoofed,
        DropReason::Ipv6,
        DropReason::NotIp,
        DropReason::Malformed,
    ];

    /// Stable label, e.g. for a Prometheus `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::UnknownVeth => "unknown_veth",
            DropReason::ArpSpoofed => "arp_spoofed",
            DropReason::Ipv6 => "ipv6",
            DropReason::NotIp => "not_ip",
            DropReason::Malformed => "malformed",
        }
    }
}

/// Per-endpoint counters, summed over all CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EndpointCounters {
    /// Packets and bytes (Ethernet frame lengths) the pod sent that the datapath forwarded.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets and bytes the datapath delivered to the pod.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    drops: [u64; DROP_REASONS],
}

impl EndpointCounters {
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// What was counted between `earlier` (a reading of the same endpoint) and `self`.
    pub fn since(&self, earlier: &EndpointCounters) -> EndpointCounters {
        let mut drops = [0; DROP_REASONS];
        for (d, (now, then)) in drops.iter_mut().zip(self.drops.iter().zip(earlier.drops)) {
            *d = now.saturating_sub(then);
        }
        EndpointCounters {
            tx_packets: self.tx_packets.saturating_sub(earlier.tx_packets),
            tx_bytes: self.tx_bytes.saturating_sub(earlier.tx_bytes),
            rx_packets: self.rx_packets.saturating_sub(earlier.rx_packets),
            rx_bytes: self.rx_bytes.saturating_sub(earlier.rx_bytes),
            drops,
        }
    }

    pub(crate) fn sum<'a>(per_cpu: impl IntoIterator<Item = &'a CounterValue>) -> Self {
        per_cpu.into_iter().fold(Self::default(), |mut total, cpu| {
            total.tx_packets += cpu.tx_packets;
            total.tx_bytes += cpu.tx_bytes;
            total.rx_packets += cpu.rx_packets;
            total.rx_bytes += cpu.rx_bytes;
            for (sum, value) in total.drops.iter_mut().zip(cpu.drops) {
                *sum += value;
            }
            total
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_through_text() {
        let mac: MacAddr = "02:0a:FF:00:10:01".parse().unwrap();
        assert_eq!(mac.0, [0x02, 0x0a, 0xff, 0x00, 0x10, 0x01]);
        assert_eq!(mac.to_string(), "02:0a:ff:00:10:01");
    }

    #[test]
    fn mac_rejects_wrong_lengths() {
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("zz:00:00:00:00:00".parse::<MacAddr>().is_err());
    }

    #[test]
    fn prefixes_clear_host_bits_and_reject_long_lengths() {
        let prefix = Ipv4Prefix::new(Ipv4Addr::new(10, 100, 3, 4), 16).unwrap();
        assert_eq!(prefix.to_string(), "10.100.0.0/16");
        assert_eq!(Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 1), 32).unwrap().addr, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 1), 0).unwrap().addr, Ipv4Addr::UNSPECIFIED);
        assert_eq!(Ipv4Prefix::new(Ipv4Addr::new(10, 0, 0, 1), 33), None);
    }

    #[test]
    fn counters_sum_over_cpus() {
        let cpus = [
            CounterValue {
                tx_packets: 1,
                tx_bytes: 100,
                rx_packets: 2,
                rx_bytes: 200,
                drops: [3, 0, 1, 0, 0, 2],
            },
            CounterValue {
                tx_packets: 4,
                tx_bytes: 400,
                rx_packets: 5,
                rx_bytes: 500,
                drops: [6, 7, 0, 0, 4, 0],
            },
        ];
        let total = EndpointCounters::sum(&cpus);
        assert_eq!((total.tx_packets, total.tx_bytes, total.rx_packets, total.rx_bytes), (5, 500, 7, 700));
        assert_eq!(total.drops(DropReason::SpoofedSource), 9);
        assert_eq!(total.drops(DropReason::UnknownVeth), 7);
        assert_eq!(total.drops(DropReason::ArpSpoofed), 1);
        assert_eq!(total.drops(DropReason::Ipv6), 0);
        assert_eq!(total.drops(DropReason::NotIp), 4);
        assert_eq!(total.drops(DropReason::Malformed), 2);
    }

    #[test]
    fn counters_since_an_earlier_reading_are_the_difference() {
        let earlier = EndpointCounters::sum(&[CounterValue {
            tx_packets: 1,
            tx_bytes: 10,
            drops: [0, 0, 2, 0, 0, 0],
            ..Default::default()
        }]);
        let now = EndpointCounters::sum(&[CounterValue {
            tx_packets: 4,
            tx_bytes: 40,
            rx_packets: 1,
            rx_bytes: 5,
            drops: [1, 0, 5, 0, 0, 0],
        }]);
        let d = now.since(&earlier);
        assert_eq!((d.tx_packets, d.tx_bytes, d.rx_packets, d.rx_bytes), (3, 30, 1, 5));
        assert_eq!((d.drops(DropReason::SpoofedSource), d.drops(DropReason::ArpSpoofed)), (1, 3));
    }

    #[test]
    fn drop_reason_labels_are_the_agreed_names() {
        let labels: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels, ["spoofed_source", "unknown_veth", "arp_spoofed", "ipv6", "not_ip", "malformed"]);
    }
}
