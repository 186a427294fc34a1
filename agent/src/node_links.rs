//! What the agent reads about the node's links, in its own network namespace: the ENI link
//! carrying a MAC, a veth's index by name, and the VPC gateway's MAC from the neighbour table
//! (asking the kernel to resolve it when nothing has yet).

use std::ffi::{CStr, CString};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use eni_ipam_datapath::MacAddr;

use crate::netlink::{NUD_FAILED, NUD_INCOMPLETE, Neighbour, Netlink};

/// A link of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeLink {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
}

/// The link whose hardware address is `mac` (an ENI is found by its MAC), if any.
pub fn link_with_mac(mac: MacAddr) -> std::io::Result<Option<NodeLink>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates the list it stores in `list`; freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut found = None;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned; entries are valid until freeifaddrs.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and at least a sockaddr.
        if i32::from(unsafe { (*entry.ifa_addr).sa_family }) != libc::AF_PACKET {
            continue;
        }
        // SAFETY: AF_PACKET entries carry a sockaddr_ll.
        let link = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_ll) };
        if link.sll_halen == 6 && link.sll_addr[..6] == mac.0 {
            // SAFETY: ifa_name is a NUL-terminated interface name.
            let name = unsafe { CStr::from_ptr(entry.ifa_name) }.to_string_lossy().into_owned();
            found = Some(NodeLink { name, ifindex: link.sll_ifindex as u32 });
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    Ok(found)
}

/// The index of the link called `name`, if it exists.
pub fn ifindex_of(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: if_nametoindex reads a NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

/// The MAC the neighbour table holds for `ip` on `link`, when resolved. The VPC gateway of
/// an ENI's subnet is reached through it.
fn neighbour_mac(netlink: &mut Netlink, link: &NodeLink, ip: Ipv4Addr) -> Result<Option<MacAddr>, String> {
    let entries = netlink.neighbours(link.ifindex, &link.name).map_err(|e| e.to_string())?;
    Ok(usable_mac(entries.iter().filter(|n| n.ip == ip)))
}

/// How long the agent waits for the VPC gateway to answer the ARP it asked the kernel for.
pub const GATEWAY_ARP_WAIT: Duration = Duration::from_secs(2);

/// The MAC of the VPC gateway `gateway` on ENI `link`. A freshly attached ENI carries no
/// traffic of its own, so nothing has made the kernel resolve its gateway yet: then the agent
/// installs a *managed* neighbour entry (Linux 5.16+), which the kernel resolves at once and
/// keeps resolved, and waits up to `wait` for the answer.
pub fn gateway_mac(link: &NodeLink, gateway: Ipv4Addr, wait: Duration) -> Result<MacAddr, String> {
    let dev = &link.name;
    let mut netlink = Netlink::open().map_err(|e| e.to_string())?;
    if let Some(mac) = neighbour_mac(&mut netlink, link, gateway)? {
        return Ok(mac);
    }
    netlink.replace_neighbour(link.ifindex, gateway, None, &format!("{gateway} dev {dev} managed")).map_err(
        |e| {
            format!(
                "the VPC gateway {gateway} is not resolved on ENI link {dev} and {e}: managed neighbours \
             need Linux 5.16+; or add a neighbour entry for the gateway yourself"
            )
        },
    )?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(mac) = neighbour_mac(&mut netlink, link, gateway)? {
            return Ok(mac);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the VPC gateway {gateway} did not answer ARP on ENI link {dev} within {wait:?}: check that \
                 the ENI is attached and in that subnet, and `ip neigh show {gateway} dev {dev} nud all`"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The MAC of the first usable entry: resolved (not FAILED or INCOMPLETE) and a unicast
/// address (a NOARP entry holds the broadcast MAC, which is no gateway).
fn usable_mac<'a>(entries: impl IntoIterator<Item = &'a Neighbour>) -> Option<MacAddr> {
    entries.into_iter().find_map(|entry| {
        if entry.state & (NUD_FAILED | NUD_INCOMPLETE) != 0 {
            return None;
        }
        let mac: [u8; 6] = entry.mac.as_deref()?.try_into().ok()?;
        let unicast = mac[0] & 1 == 0 && mac != [0; 6];
        unicast.then_some(MacAddr(mac))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::NUD_PERMANENT;

    #[test]
    fn loopback_is_found_by_name_and_its_zero_mac() {
        assert_eq!(ifindex_of("lo"), Some(1));
        assert_eq!(ifindex_of("no-such-link0"), None);
        let lo = link_with_mac(MacAddr([0; 6])).unwrap();
        assert_eq!(lo.map(|l| l.name).as_deref(), Some("lo"));
    }

    #[test]
    fn neighbour_entries_are_read_when_resolved() {
        const REACHABLE: u16 = 0x02;
        const NOARP: u16 = 0x40;
        let entry = |mac: Option<[u8; 6]>, state: u16| Neighbour {
            ip: Ipv4Addr::new(10, 0, 0, 1),
            mac: mac.map(|m| m.to_vec()),
            state,
            managed: false,
        };
        let good = [0x0a, 0, 0, 0, 0, 1];
        type Case = (&'static str, Vec<Neighbour>, Option<[u8; 6]>);
        let cases: &[Case] = &[
            ("permanent", vec![entry(Some(good), NUD_PERMANENT)], Some(good)),
            ("failed", vec![entry(None, NUD_FAILED)], None),
            ("incomplete", vec![entry(Some(good), NUD_INCOMPLETE)], None),
            ("the broadcast MAC is no gateway", vec![entry(Some([0xff; 6]), NOARP)], None),
            ("zero MAC", vec![entry(Some([0; 6]), NOARP)], None),
            (
                "failed, then a good one",
                vec![entry(None, NUD_FAILED), entry(Some(good), REACHABLE)],
                Some(good),
            ),
            ("none", vec![], None),
        ];
        for (name, entries, want) in cases {
            assert_eq!(usable_mac(entries), want.map(MacAddr), "{name}");
        }
    }
}
