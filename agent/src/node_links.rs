//! What the agent reads about the node's links, in its own network namespace: the ENI link
//! carrying a MAC, a veth's index by name, and the VPC gateway's MAC from the neighbour table
//! (asking the kernel to resolve it when nothing has yet).

use std::ffi::{CStr, CString};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use eni_ipam_datapath::MacAddr;

use crate::iproute::{self, run};

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

/// The MAC the neighbour table holds for `ip` on link `dev` (`ip -j neigh show`), when
/// resolved. The VPC gateway of an ENI's subnet is reached through it.
fn neighbour_mac(dev: &str, ip: Ipv4Addr) -> Result<Option<MacAddr>, String> {
    let step = format!("read the neighbour {ip} on {dev}");
    let stdout = run(&step, iproute::ip(&["-j", "neigh", "show", "to", &ip.to_string(), "dev", dev]), None)
        .map_err(|e| e.to_string())?;
    Ok(parse_neighbour(&stdout))
}

/// How long the agent waits for the VPC gateway to answer the ARP it asked the kernel for.
pub const GATEWAY_ARP_WAIT: Duration = Duration::from_secs(2);

/// The MAC of the VPC gateway `gateway` on ENI link `dev`. A freshly attached ENI carries no
/// traffic of its own, so nothing has made the kernel resolve its gateway yet: then the agent
/// installs a *managed* neighbour entry (Linux 5.16+), which the kernel resolves at once and
/// keeps resolved, and waits up to `wait` for the answer.
pub fn gateway_mac(dev: &str, gateway: Ipv4Addr, wait: Duration) -> Result<MacAddr, String> {
    if let Some(mac) = neighbour_mac(dev, gateway)? {
        return Ok(mac);
    }
    let gw = gateway.to_string();
    let step = format!("`ip neigh replace {gw} dev {dev} managed`");
    run(&step, iproute::ip(&["neigh", "replace", &gw, "dev", dev, "managed"]), None).map_err(|e| {
        format!(
            "the VPC gateway {gateway} is not resolved on ENI link {dev} and {e}: managed neighbours \
             need Linux 5.16+ and iproute2 5.16+; or add a neighbour entry for the gateway yourself"
        )
    })?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(mac) = neighbour_mac(dev, gateway)? {
            return Ok(mac);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the VPC gateway {gateway} did not answer ARP on ENI link {dev} within {wait:?}: check that \
                 the ENI is attached and in that subnet, and `ip neigh show {gw} dev {dev} nud all`"
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The MAC of the first usable entry: resolved (not FAILED or INCOMPLETE) and a unicast
/// address (a NOARP entry holds the broadcast MAC, which is no gateway).
fn parse_neighbour(json: &str) -> Option<MacAddr> {
    let entries: serde_json::Value = serde_json::from_str(json).ok()?;
    entries.as_array()?.iter().find_map(|entry| {
        let unusable = entry["state"]
            .as_array()
            .is_some_and(|states| states.iter().any(|s| s == "FAILED" || s == "INCOMPLETE"));
        if unusable {
            return None;
        }
        let mac: MacAddr = entry["lladdr"].as_str()?.parse().ok()?;
        let unicast = mac.0[0] & 1 == 0 && mac.0 != [0; 6];
        unicast.then_some(mac)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_found_by_name_and_its_zero_mac() {
        assert_eq!(ifindex_of("lo"), Some(1));
        assert_eq!(ifindex_of("no-such-link0"), None);
        let lo = link_with_mac(MacAddr([0; 6])).unwrap();
        assert_eq!(lo.map(|l| l.name).as_deref(), Some("lo"));
    }

    #[test]
    fn neighbour_entries_are_read_when_resolved() {
        let reachable = r#"[{"dst":"10.0.0.1","lladdr":"0a:00:00:00:00:01","state":["PERMANENT"]}]"#;
        assert_eq!(parse_neighbour(reachable), Some("0a:00:00:00:00:01".parse().unwrap()));
        let failed = r#"[{"dst":"10.0.0.1","state":["FAILED"]}]"#;
        assert_eq!(parse_neighbour(failed), None);
        let incomplete = r#"[{"dst":"10.0.0.1","lladdr":"0a:00:00:00:00:01","state":["INCOMPLETE"]}]"#;
        assert_eq!(parse_neighbour(incomplete), None);
        let noarp = r#"[{"dst":"10.0.0.1","lladdr":"ff:ff:ff:ff:ff:ff","state":["NOARP"]}]"#;
        assert_eq!(parse_neighbour(noarp), None, "the broadcast MAC is no gateway");
        let zero = r#"[{"dst":"10.0.0.1","lladdr":"00:00:00:00:00:00","state":["NOARP"]}]"#;
        assert_eq!(parse_neighbour(zero), None);
        let stale_then_good = r#"[{"dst":"10.0.0.1","state":["FAILED"]},
            {"dst":"10.0.0.1","lladdr":"0a:00:00:00:00:02","state":["REACHABLE"]}]"#;
        assert_eq!(parse_neighbour(stale_then_good), Some("0a:00:00:00:00:02".parse().unwrap()));
        assert_eq!(parse_neighbour("[]"), None);
        assert_eq!(parse_neighbour(""), None);
    }
}
