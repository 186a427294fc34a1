//! Main-plugin networking: a veth pair with one end in the pod's netns, the
//! pod address as a /32, a default route through a link-local gateway whose
//! neighbour entry is the host end's MAC, and a host route to the pod. Done
//! with iproute2 (`ip`, and `nsenter` to enter the pod netns), like the
//! reference plugins' shell equivalents; the host end is where the agent
//! attaches the eBPF datapath once the plugin registers it.

use crate::iproute::{IprouteError, in_netns, ip, run};

/// The pod's default gateway: link-local, answered by the host end of the veth.
pub const POD_GATEWAY: &str = "169.254.1.1";

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

fn link_mac(show: &str) -> Option<String> {
    let links: serde_json::Value = serde_json::from_str(show).ok()?;
    links.get(0)?.get("address")?.as_str().map(str::to_owned)
}

fn link_index(show: &str) -> Option<u32> {
    let links: serde_json::Value = serde_json::from_str(show).ok()?;
    links.get(0)?.get("ifindex")?.as_u64()?.try_into().ok()
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
) -> Result<PodLink, IprouteError> {
    if !std::path::Path::new(netns).exists() {
        return Err(IprouteError { step: format!("open netns {netns}"), detail: "no such file".into() });
    }
    // A retried ADD: start from scratch (deleting one end removes both).
    let _ = run("delete old host veth", ip(&["link", "del", host_if]), None);
    let _ = run("delete old pod interface", in_netns(netns, &["link", "del", if_name]), None);
    let mut add = vec!["link", "add", host_if];
    let mtu_text = mtu.to_string();
    if mtu != 0 {
        add.extend(["mtu", &mtu_text]);
    }
    add.extend(["type", "veth", "peer", "name", if_name, "netns", netns]);
    if mtu != 0 {
        add.extend(["mtu", &mtu_text]);
    }
    run(&format!("create veth {host_if} <-> {if_name} in {netns}"), ip(&add), None)?;
    let result = configure(netns, if_name, host_if, pod_ip);
    if result.is_err() {
        let _ = run("undo veth", ip(&["link", "del", host_if]), None);
    }
    result
}

fn configure(netns: &str, if_name: &str, host_if: &str, pod_ip: &str) -> Result<PodLink, IprouteError> {
    let host_show = run("read host veth", ip(&["-j", "link", "show", host_if]), None)?;
    let host_mac = link_mac(&host_show).ok_or_else(|| IprouteError {
        step: format!("read MAC of {host_if}"),
        detail: "no address".into(),
    })?;
    let host_ifindex = link_index(&host_show).ok_or_else(|| IprouteError {
        step: format!("read index of {host_if}"),
        detail: "no ifindex".into(),
    })?;
    let pod_commands = format!(
        "link set lo up\n\
         link set {if_name} up\n\
         addr add {pod_ip}/32 dev {if_name}\n\
         route add {POD_GATEWAY} dev {if_name} scope link\n\
         route add default via {POD_GATEWAY} dev {if_name} onlink\n\
         neigh replace {POD_GATEWAY} lladdr {host_mac} dev {if_name} nud permanent\n"
    );
    run(&format!("configure {if_name} in {netns}"), in_netns(netns, &["-batch", "-"]), Some(&pod_commands))?;
    let pod_mac =
        link_mac(&run("read pod interface", in_netns(netns, &["-j", "link", "show", if_name]), None)?)
            .unwrap_or_default();
    run(&format!("bring up {host_if}"), ip(&["link", "set", host_if, "up"]), None)?;
    run(
        &format!("route {pod_ip} to {host_if}"),
        ip(&["route", "replace", &format!("{pod_ip}/32"), "dev", host_if, "scope", "link"]),
        None,
    )?;
    Ok(PodLink { host_if: host_if.to_owned(), host_mac, host_ifindex, pod_mac })
}

/// Removes the pair (idempotent: a missing link is success).
pub fn teardown(host_if: &str) -> Result<(), IprouteError> {
    match run(&format!("delete {host_if}"), ip(&["link", "del", host_if]), None) {
        Ok(_) => Ok(()),
        Err(e) if e.detail.contains("Cannot find device") || e.detail.contains("does not exist") => Ok(()),
        Err(e) => Err(e),
    }
}

/// Whether the pod interface carries `pod_ip` (for CHECK).
pub fn check(netns: &str, if_name: &str, pod_ip: &str) -> Result<(), IprouteError> {
    let out =
        run(&format!("read {if_name} in {netns}"), in_netns(netns, &["-j", "addr", "show", if_name]), None)?;
    if out.contains(&format!("\"local\":\"{pod_ip}\"")) {
        Ok(())
    } else {
        Err(IprouteError {
            step: format!("check {if_name} in {netns}"),
            detail: format!("{pod_ip} is not on it"),
        })
    }
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
