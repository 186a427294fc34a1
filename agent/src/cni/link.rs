//! Main-plugin networking: a veth pair with one end in the pod's netns, the
//! pod address as a /32, a default route through a link-local gateway whose
//! neighbour entry is the host end's MAC, and a host route to the pod. Done
//! over netlink ([`crate::netlink`]): the pod's side from a thread that entered
//! the pod's netns, no tool spawned. The host end is where the agent attaches
//! the eBPF datapath once the plugin registers it.

use std::net::Ipv4Addr;
use std::path::Path;

use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol};
use netlink_packet_route::route::{RouteScope, RouteType};

use crate::netlink::{Netlink, NetlinkError, in_netns};

/// Why a step of the pod's link setup failed.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {detail}")]
pub struct LinkError {
    /// What was being done.
    pub step: String,
    /// The kernel's answer (with its errno).
    pub detail: String,
}

impl LinkError {
    fn new(step: &str, error: impl std::fmt::Display) -> Self {
        Self { step: step.to_owned(), detail: error.to_string() }
    }
}

/// The pod's default gateway: link-local, answered by the host end of the veth.
pub const POD_GATEWAY: &str = "169.254.1.1";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The kernel's main table.
const MAIN_TABLE: u32 = 254;

/// The host end's name: `eni` + 12 hex digits of a hash of container id and interface
/// (15 characters, the kernel's limit), stable so DEL finds what ADD made.
pub fn host_veth_name(container_id: &str, if_name: &str) -> String {
    // FNV-1a: stable across builds and Rust versions, unlike DefaultHasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in container_id.bytes().chain([0]).chain(if_name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("eni{:012x}", hash & 0xffff_ffff_ffff)
}

fn mac_text(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// What [`setup`] made.
#[derive(Debug, Clone)]
pub struct PodLink {
    /// Host end name.
    pub host_if: String,
    /// Host end MAC.
    pub host_mac: String,
    /// Host end interface index (in the node's network namespace).
    pub host_ifindex: u32,
    /// Pod end MAC.
    pub pod_mac: String,
}

/// Creates (or re-creates, for a retried ADD) the veth pair and configures both ends.
pub fn setup(
    netns: &str,
    if_name: &str,
    host_if: &str,
    pod_ip: &str,
    mtu: u32,
) -> Result<PodLink, LinkError> {
    let step = format!("open netns {netns}");
    let pod_netns = std::fs::File::open(netns).map_err(|e| LinkError::new(&step, e))?;
    let ip: Ipv4Addr =
        pod_ip.parse().map_err(|_| LinkError::new("read the pod IP", format!("{pod_ip:?} is not IPv4")))?;
    let mut netlink = Netlink::open().map_err(|e| LinkError::new("open netlink", e))?;
    // A retried ADD: start from scratch (deleting one end removes both).
    let step = format!("delete old host veth {host_if}");
    netlink.delete_link(host_if).map_err(|e| LinkError::new(&step, e))?;
    let step = format!("delete old pod interface {if_name} in {netns}");
    in_netns(Path::new(netns), || Netlink::open()?.delete_link(if_name))
        .map_err(|e| LinkError::new(&step, e))?;
    let step = format!("create veth {host_if} <-> {if_name} in {netns}");
    netlink.add_veth(host_if, if_name, &pod_netns, mtu).map_err(|e| LinkError::new(&step, e))?;
    let result = configure(&mut netlink, netns, if_name, host_if, ip);
    if result.is_err() {
        let _ = netlink.delete_link(host_if);
    }
    result
}

fn configure(
    netlink: &mut Netlink,
    netns: &str,
    if_name: &str,
    host_if: &str,
    ip: Ipv4Addr,
) -> Result<PodLink, LinkError> {
    let step = format!("read host veth {host_if}");
    let host = netlink
        .link(host_if)
        .map_err(|e| LinkError::new(&step, e))?
        .ok_or_else(|| LinkError::new(&step, "it vanished"))?;
    let host_mac: [u8; 6] = host.mac.as_slice().try_into().map_err(|_| LinkError::new(&step, "no MAC"))?;
    let step = format!("configure {if_name} in {netns}");
    let pod_mac = in_netns(Path::new(netns), || {
        let mut pod = Netlink::open()?;
        pod.set_up(1, "lo")?;
        let link = pod
            .link(if_name)?
            .ok_or(NetlinkError { action: format!("find {if_name}"), errno: libc::ENODEV })?;
        disable_ipv6(if_name)?;
        pod.set_up(link.index, if_name)?;
        pod.add_address(link.index, ip, 32, if_name)?;
        pod.replace_route(
            route(link.index, GATEWAY, 32, None),
            &format!("{POD_GATEWAY} dev {if_name} scope link"),
        )?;
        pod.replace_route(
            route(link.index, Ipv4Addr::UNSPECIFIED, 0, Some(GATEWAY)),
            &format!("default via {POD_GATEWAY} dev {if_name} onlink"),
        )?;
        pod.replace_neighbour(
            link.index,
            GATEWAY,
            Some(host_mac),
            &format!("{POD_GATEWAY} dev {if_name} permanent"),
        )?;
        Ok(mac_text(&link.mac))
    })
    .map_err(|e| LinkError::new(&step, e))?;
    let step = format!("bring up {host_if}");
    netlink.set_up(host.index, host_if).map_err(|e| LinkError::new(&step, e))?;
    let step = format!("route {ip} to {host_if}");
    netlink
        .replace_route(route(host.index, ip, 32, None), &format!("{ip}/32 dev {host_if} scope link"))
        .map_err(|e| LinkError::new(&step, e))?;
    Ok(PodLink {
        host_if: host_if.to_owned(),
        host_mac: mac_text(&host_mac),
        host_ifindex: host.index,
        pod_mac,
    })
}

/// Turns IPv6 off on the pod's interface before it comes up (in the calling thread's network
/// namespace): pods get IPv4 only, and the datapath drops (and counts) IPv6 from a pod, so
/// the kernel's router solicitations and DAD would be nothing but noise in those counters. A
/// kernel without IPv6 has nothing to turn off.
fn disable_ipv6(if_name: &str) -> Result<(), NetlinkError> {
    let path = format!("/proc/sys/net/ipv6/conf/{if_name}/disable_ipv6");
    match std::fs::write(&path, "1") {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(NetlinkError {
            action: format!("write 1 to {path}"),
            errno: error.raw_os_error().unwrap_or(libc::EIO),
        }),
    }
}

/// A main-table route to `destination/prefix` out of link `oif`: through `gateway` (onlink),
/// or, without one, on the link itself (scope link).
fn route(oif: u32, destination: Ipv4Addr, prefix: u8, gateway: Option<Ipv4Addr>) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.destination_prefix_length = prefix;
    message.header.table = MAIN_TABLE as u8;
    message.header.protocol = RouteProtocol::Boot;
    message.header.kind = RouteType::Unicast;
    message.attributes = vec![RouteAttribute::Table(MAIN_TABLE), RouteAttribute::Oif(oif)];
    if prefix > 0 {
        message.attributes.push(RouteAttribute::Destination(RouteAddress::Inet(destination)));
    }
    match gateway {
        Some(gateway) => {
            message.header.scope = RouteScope::Universe;
            message.header.flags = RouteFlags::Onlink;
            message.attributes.push(RouteAttribute::Gateway(RouteAddress::Inet(gateway)));
        }
        None => message.header.scope = RouteScope::Link,
    }
    message
}

/// Removes the pair (idempotent: a missing link is success).
pub fn teardown(host_if: &str) -> Result<(), LinkError> {
    let step = format!("delete {host_if}");
    Netlink::open()
        .and_then(|mut netlink| netlink.delete_link(host_if))
        .map(|_| ())
        .map_err(|e| LinkError::new(&step, e))
}

/// CHECK: what [`setup`] made is still there. In the pod: `if_name` up with `pod_ip`, the
/// route to the link-local gateway and the default route through it on that link. On the
/// node (the calling thread's namespace): `host_if` up, and the route to `pod_ip` on it.
/// The first thing missing is the error.
pub fn check(netns: &str, if_name: &str, host_if: &str, pod_ip: &str) -> Result<(), LinkError> {
    let ip: Ipv4Addr =
        pod_ip.parse().map_err(|_| LinkError::new("read the pod IP", format!("{pod_ip:?} is not IPv4")))?;
    let step = format!("check {if_name} in {netns}");
    let pod_side = in_netns(Path::new(netns), || {
        let mut pod = Netlink::open()?;
        let Some(link) = pod.link(if_name)? else { return Ok(Err(format!("{if_name} does not exist"))) };
        if !link.up {
            return Ok(Err(format!("{if_name} is down")));
        }
        if !pod.ipv4_addresses()?.iter().any(|(index, a)| *index == link.index && *a == ip) {
            return Ok(Err(format!("{pod_ip} is not on {if_name}")));
        }
        let routes = pod.routes()?;
        if !routes.iter().any(|r| main_route_on(r, link.index, GATEWAY, 32, None)) {
            return Ok(Err(format!("the route to {POD_GATEWAY} on {if_name} is gone")));
        }
        if !routes.iter().any(|r| main_route_on(r, link.index, Ipv4Addr::UNSPECIFIED, 0, Some(GATEWAY))) {
            return Ok(Err(format!("the default route via {POD_GATEWAY} on {if_name} is gone")));
        }
        Ok(Ok(()))
    })
    .map_err(|e| LinkError::new(&step, e))?;
    pod_side.map_err(|detail| LinkError::new(&step, detail))?;
    let step = format!("check host veth {host_if}");
    let mut netlink = Netlink::open().map_err(|e| LinkError::new(&step, e))?;
    let host = netlink
        .link(host_if)
        .map_err(|e| LinkError::new(&step, e))?
        .ok_or_else(|| LinkError::new(&step, "it does not exist"))?;
    if !host.up {
        return Err(LinkError::new(&step, "it is down"));
    }
    let routes = netlink.routes().map_err(|e| LinkError::new(&step, e))?;
    if !routes.iter().any(|r| main_route_on(r, host.index, ip, 32, None)) {
        return Err(LinkError::new(&step, format!("the node's route to {pod_ip} on it is gone")));
    }
    Ok(())
}

/// Whether `route` is a main-table route to `destination/prefix` out of link `oif`, through
/// `gateway` when one is given.
fn main_route_on(
    route: &RouteMessage,
    oif: u32,
    destination: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> bool {
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    let attribute_ip = |want: fn(&RouteAttribute) -> Option<&RouteAddress>| {
        route.attributes.iter().find_map(want).and_then(|a| match a {
            RouteAddress::Inet(ip) => Some(*ip),
            _ => None,
        })
    };
    let dst = attribute_ip(|a| match a {
        RouteAttribute::Destination(d) => Some(d),
        _ => None,
    })
    .unwrap_or(Ipv4Addr::UNSPECIFIED);
    let via = attribute_ip(|a| match a {
        RouteAttribute::Gateway(g) => Some(g),
        _ => None,
    });
    let out = route.attributes.iter().any(|a| matches!(a, RouteAttribute::Oif(i) if *i == oif));
    table == MAIN_TABLE
        && route.header.destination_prefix_length == prefix
        && dst == destination
        && out
        && (gateway.is_none() || via == gateway)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("abc", "eth0");
        assert_eq!(a, host_veth_name("abc", "eth0"));
        assert_eq!(a.len(), 15);
        assert_ne!(a, host_veth_name("abc", "eth1"));
        assert_ne!(host_veth_name("ab", "ceth0"), host_veth_name("abc", "eth0"));
    }
}
