//! The agent's nftables table `ip eni_ipam` and the sysctls policy routing needs.
//!
//! - `prerouting` (filter, priority mangle): a new connection that arrives on an ENI link for
//!   an address of the node (NodePort, hostPort) gets ct mark 0x80, and every packet of such a
//!   connection meta mark 0x80, so its replies (whose source conntrack rewrites to the node's
//!   address only after routing) take the main table like the node's own traffic
//!   (rule pref 1024 in [`crate::policy_routing`]), not the pod's ENI.
//! - `postrouting` (filter, priority 200, after source NAT): packets of a NATed connection get
//!   [`NAT_MARK`], from which the eBPF datapath learns to leave that flow's replies to the
//!   stack (conntrack must reverse the NAT).
//! - the set `eni_links`: interface indexes of the pool's ENI links and of the links of the
//!   main table's default routes (where NodePort traffic arrives).
//! - `forward` (filter): forwarded packets to the set `pod_blocked` (`--block-pod-destination`:
//!   the cloud's instance metadata service) are dropped. Only pods' traffic is forwarded: the
//!   node's own and hostNetwork pods' traffic leaves through `output`, so they still reach it.
//!   The eBPF datapath hands these destinations to the stack (they are host routes), so the
//!   drop holds with `--datapath=ebpf` as with `none`.
//!
//! The sysctls: `rp_filter=2` (loose) and `forwarding=1` on the ENI links, `forwarding=1` on
//! pod veths, set per link over netlink ([`crate::netlink::Netlink::enable_forwarding`]);
//! `net.ipv4.ip_forward=1` when it can be written ([`enable_ip_forward`]).
//!
//! The table is written whole with `nft -f -` (one transaction: the old table goes and the
//! new one comes atomically) at start and when the ENI links change, never per pod; the
//! image carries the `nftables` package for it.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use eni_ipam_datapath::Ipv4Prefix;
use eni_ipam_datapath::abi::NAT_MARK;

use crate::policy_routing::LOCAL_CONNECTION_MARK;

/// The table's family and name.
pub const TABLE: &str = "ip eni_ipam";

/// `elements = { ... }` of a set, or nothing for an empty one.
fn elements(items: Vec<String>) -> String {
    if items.is_empty() { String::new() } else { format!("\n\t\telements = {{ {} }}", items.join(", ")) }
}

/// The whole table for these ENI links and blocked pod destinations, as `nft -f` reads it
/// (replacing an existing one).
pub fn ruleset(eni_links: &BTreeSet<u32>, blocked: &[Ipv4Prefix]) -> String {
    let elements_of_links = elements(eni_links.iter().map(u32::to_string).collect());
    let blocked = elements(blocked.iter().map(|p| format!("{}/{}", p.addr, p.len)).collect());
    let mark = LOCAL_CONNECTION_MARK;
    format!(
        "table {TABLE} {{}}\n\
         delete table {TABLE}\n\
         table {TABLE} {{\n\
         \tset eni_links {{\n\t\ttype iface_index{elements_of_links}\n\t}}\n\
         \tset pod_blocked {{\n\t\ttype ipv4_addr\n\t\tflags interval{blocked}\n\t}}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority mangle; policy accept;\n\
         \t\tiif @eni_links fib daddr type local ct state new ct mark set ct mark | {mark:#x}\n\
         \t\tct mark & {mark:#x} == {mark:#x} meta mark set meta mark | {mark:#x}\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype filter hook postrouting priority 200; policy accept;\n\
         \t\tct status & (snat | dnat) != 0 meta mark set meta mark | {NAT_MARK:#010x}\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tip daddr @pod_blocked counter drop\n\
         \t}}\n\
         }}\n"
    )
}

/// Why the table could not be written or removed.
#[derive(Debug, thiserror::Error)]
#[error("nft table {TABLE}: {0}")]
pub struct NftError(String);

/// Writes the table for these ENI links and blocked pod destinations.
pub fn install(eni_links: &BTreeSet<u32>, blocked: &[Ipv4Prefix]) -> Result<(), NftError> {
    nft(&["-f", "-"], Some(&ruleset(eni_links, blocked)))
}

/// Removes the table; `Ok(false)` when there was none.
pub fn remove() -> Result<bool, NftError> {
    let exists = nft(&["list", "table", "ip", "eni_ipam"], None).is_ok();
    if !exists {
        return Ok(false);
    }
    nft(&["delete", "table", "ip", "eni_ipam"], None).map(|()| true)
}

fn nft(args: &[&str], input: Option<&str>) -> Result<(), NftError> {
    let program = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NftError(format!("cannot run {program}: {e}; the node image needs the nftables package"))
        })?;
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin.write_all(text.as_bytes()).map_err(|e| NftError(format!("writing to nft: {e}")))?;
    }
    let out = child.wait_with_output().map_err(|e| NftError(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError(format!(
            "`nft {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `net.ipv4.ip_forward=1` when /proc/sys can be written (the agent's container usually
/// has it read-only): the links that matter get `forwarding=1` over netlink anyway (see
/// [`crate::node_network`]); a node where it stays 0 is reported, not refused.
pub fn enable_ip_forward() -> Result<(), String> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    match std::fs::read_to_string(path) {
        Ok(current) if current.trim() == "1" => return Ok(()),
        _ => {}
    }
    std::fs::write(path, "1").map_err(|e| {
        format!(
            "net.ipv4.ip_forward is 0 and cannot be set ({e}): pod veths and ENI links get forwarding=1 \
             one by one; set net.ipv4.ip_forward=1 on the node to cover every link"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ruleset_replaces_the_table_and_lists_the_eni_links() {
        let text = ruleset(&BTreeSet::from([3, 7]), &[]);
        assert!(text.starts_with("table ip eni_ipam {}\ndelete table ip eni_ipam\n"), "{text}");
        assert!(text.contains("elements = { 3, 7 }"), "{text}");
        assert!(text.contains("meta mark | 0x01000000"), "{text}");
        assert!(!ruleset(&BTreeSet::new(), &[]).contains("elements"), "an empty set has no elements line");
    }

    #[test]
    fn forwarded_packets_to_a_blocked_destination_are_dropped() {
        let metadata = Ipv4Prefix::new(std::net::Ipv4Addr::new(169, 254, 169, 254), 32).unwrap();
        let text = ruleset(&BTreeSet::new(), &[metadata]);
        let set = "\tset pod_blocked {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 169.254.169.254/32 }\n\t}";
        assert!(text.contains(set), "{text}");
        assert!(text.contains("type filter hook forward priority filter; policy accept;\n\t\tip daddr @pod_blocked counter drop"), "{text}");
        // No hook on output: the node's own traffic (and hostNetwork pods') is never matched.
        assert!(!text.contains("hook output"), "{text}");
    }
}
