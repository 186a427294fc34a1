//! The agent's policy routing in a node namespace of the test bed with `--datapath=none`,
//! where the kernel alone forwards pod traffic: after CNI ADD each pod has its two rules and
//! its ENI a table, so a packet from the pod IP to a VPC address leaves by the pod's ENI (the
//! kernel's own route lookup for the veth's ingress, and the router's counters for a real
//! ping); DEL removes the pod's rules; a restart puts back what is missing and removes what
//! is ours and unneeded, never another's rule; `eni-ipam-agent uninstall` leaves none of it.
//! Needs root; the namespaces carry the pid and are removed on drop.

mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use common::agent_node::{AgentNode, POOL, VPC_HOST};
use eni_ipam_agent::cni::link::host_veth_name;
use eni_ipam_agent::policy_routing::{PROTOCOL, TABLE_BASE};
use eni_ipam_netns_testbed::{Netns, traffic};
use serde_json::Value;

/// The agent's rules (those with its protocol), as `PREF: [from SRC] [to DST] [fwmark M] lookup T`.
fn our_rules(ns: &Netns) -> BTreeSet<String> {
    entries(ns, &["-j", "rule", "show"])
        .iter()
        .filter(|r| r["protocol"].as_str() == Some(PROTOCOL.to_string().as_str()))
        .map(|r| {
            let mut text = format!("{}:", r["priority"]);
            if r["src"] != "all" {
                text += &format!(" from {}", r["src"].as_str().unwrap());
            }
            if let Some(dst) = r["dst"].as_str() {
                text += &format!(" to {dst}");
            }
            if let Some(mark) = r["fwmark"].as_str() {
                text += &format!(" fwmark {mark}/{}", r["fwmask"].as_str().unwrap_or_default());
            }
            text + &format!(" lookup {}", r["table"].as_str().unwrap())
        })
        .collect()
}

/// The agent's routes (every table), as `table T: default via GW dev LINK`.
fn our_routes(ns: &Netns) -> BTreeSet<String> {
    entries(ns, &["-j", "route", "show", "table", "all"])
        .iter()
        .filter(|r| r["protocol"].as_str() == Some(PROTOCOL.to_string().as_str()))
        .map(|r| format!("table {}: {} via {} dev {}", r["table"], r["dst"], r["gateway"], r["dev"]))
        .map(|t| t.replace('"', ""))
        .collect()
}

fn entries(ns: &Netns, args: &[&str]) -> Vec<Value> {
    let out = ns.ip(args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("ip {args:?}: {e}"))
}

fn nft_tables(ns: &Netns) -> String {
    let out = ns.command("nft").args(["list", "tables"]).output().expect("run nft");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The link a packet from `from` to `to` arriving on `iif` leaves by, as the kernel routes it.
fn leaves_by(ns: &Netns, from: Ipv4Addr, to: Ipv4Addr, iif: &str) -> String {
    let route = entries(ns, &["-j", "route", "get", &to.to_string(), "from", &from.to_string(), "iif", iif]);
    route[0]["dev"].as_str().unwrap_or_default().to_owned()
}

fn read(ns: &Netns, path: &str) -> String {
    let out = ns.command("cat").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn policy_routing_follows_add_del_restart_and_uninstall_root() {
    common::require_root();
    let mut node = AgentNode::prepare_with("agentpr", false);
    let before_rules = node.bed.nodes[0].ns.ip_text(&["rule", "show"]);
    node.agent.restart();
    let enis: Vec<(String, u32)> =
        node.bed.nodes[0].enis.iter().map(|e| (e.name.clone(), e.ifindex)).collect();
    let table = |eni: usize| TABLE_BASE + enis[eni].1;
    let ns_ref = &node.bed.nodes[0].ns;

    // Start: a table per pool ENI, the marked-traffic rule, the nft table and the sysctls.
    let tables: BTreeSet<String> =
        (0..2).map(|e| format!("table {}: default via {} dev {}", table(e), POOL[e].2, enis[e].0)).collect();
    assert_eq!(our_routes(ns_ref), tables);
    assert_eq!(our_rules(ns_ref), BTreeSet::from(["1024: fwmark 0x80/0x80 lookup main".to_owned()]));
    let set = ns_ref.command("nft").args(["list", "set", "ip", "eni_ipam", "eni_links"]).output().unwrap();
    let set = String::from_utf8_lossy(&set.stdout);
    assert!(set.contains("eni0") && set.contains("eni1"), "both ENIs are in the nft set: {set}");
    assert_eq!(read(ns_ref, "/proc/sys/net/ipv4/ip_forward"), "1");
    for (name, _) in &enis {
        assert_eq!(read(ns_ref, &format!("/proc/sys/net/ipv4/conf/{name}/rp_filter")), "2", "{name}");
    }

    // ADD: both rules of each pod, before the plugin answered.
    let a = node.add_pod("ctra");
    let b = node.add_pod("ctrb");
    let (ea, eb) = (AgentNode::owning_eni(a), AgentNode::owning_eni(b));
    assert_ne!(ea, eb, "one pod on each ENI");
    let ns_ref = &node.bed.nodes[0].ns;
    let pod_rules = |ip: Ipv4Addr, eni: usize| {
        [format!("512: to {ip} lookup main"), format!("1536: from {ip} lookup {}", table(eni))]
    };
    let mut want: BTreeSet<String> = BTreeSet::from(["1024: fwmark 0x80/0x80 lookup main".to_owned()]);
    want.extend(pod_rules(a, ea));
    want.extend(pod_rules(b, eb));
    assert_eq!(our_rules(ns_ref), want);

    // Traffic from each pod to the VPC leaves by the ENI owning its IP, and comes back.
    for (container, ip) in [("ctra", a), ("ctrb", b)] {
        let veth = host_veth_name(container, "eth0");
        let owner = AgentNode::owning_eni(ip);
        assert_eq!(leaves_by(ns_ref, ip, VPC_HOST, &veth), enis[owner].0, "{ip} from {veth}");
        let before = node.router_rx();
        const SENT: u64 = 10;
        let ping = traffic::ping(&node.pods[container], VPC_HOST, SENT as u32, "0.01", None);
        assert_eq!((ping.transmitted, ping.received), (SENT, SENT), "{}\n{}", ping.output, node.agent_log());
        let delta: Vec<u64> = node.router_rx().iter().zip(&before).map(|(after, b)| after - b).collect();
        // Plus the ARP exchange that resolves the ENI's gateway the first time.
        assert!((SENT..=SENT + 2).contains(&delta[owner]), "{ip}'s pings arrive on eni{owner}: {delta:?}");
        assert_eq!(delta[1 - owner], 0, "nothing on the other ENI: {delta:?}");
    }
    // Marked traffic (replies of connections that came in on an ENI for a node address) takes
    // the main table, like the node's own: with the node's route to the VPC host by ENI 0, b's
    // marked packets leave by eni0, its others by its own ENI.
    let ns_ref = &node.bed.nodes[0].ns;
    let gateway0 = POOL[0].2.to_string();
    let host = VPC_HOST.to_string();
    assert!(
        ns_ref.ip(&["route", "add", &host, "via", &gateway0, "dev", &enis[0].0, "onlink"]).status.success()
    );
    let veth_b = host_veth_name("ctrb", "eth0");
    let marked = entries(
        ns_ref,
        &["-j", "route", "get", &host, "from", &b.to_string(), "iif", &veth_b, "mark", "0x80"],
    );
    assert_eq!(marked[0]["dev"], enis[0].0.as_str(), "{marked:?}");
    assert_eq!(leaves_by(ns_ref, b, VPC_HOST, &veth_b), enis[eb].0);
    assert!(ns_ref.ip(&["route", "del", &host]).status.success());

    // DEL: the pod's rules go, the other pod's stay.
    node.del_pod("ctra");
    let ns_ref = &node.bed.nodes[0].ns;
    want.retain(|r| !pod_rules(a, ea).contains(r));
    assert_eq!(our_rules(ns_ref), want);

    // Restart after changes behind the agent's back: b's rule lost, a rule and a table of
    // ours that nothing needs, and someone else's rule at our preference.
    node.agent.kill();
    let ours = PROTOCOL.to_string();
    let eni0 = enis[0].0.clone();
    let stray_table = (TABLE_BASE + 999).to_string();
    for args in [
        vec!["rule", "del", "from", &b.to_string(), "pref", "1536"],
        vec!["rule", "add", "from", "10.0.0.99", "lookup", &stray_table, "pref", "1536", "protocol", &ours],
        vec![
            "route",
            "add",
            "default",
            "via",
            "10.0.0.1",
            "dev",
            &eni0,
            "onlink",
            "table",
            &stray_table,
            "proto",
            &ours,
        ],
        vec!["rule", "add", "from", "10.0.0.98", "lookup", "100", "pref", "1536"],
    ] {
        let out = ns_ref.ip(&args);
        assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    node.agent.restart();
    let ns_ref = &node.bed.nodes[0].ns;
    assert_eq!(our_rules(ns_ref), want, "reconciled:\n{}", node.agent_log());
    assert_eq!(our_routes(ns_ref), tables, "the stray table is gone");
    let all_rules = ns_ref.ip_text(&["rule", "show"]);
    assert!(all_rules.contains("from 10.0.0.98 lookup 100"), "another's rule stays: {all_rules}");
    assert_eq!(ns_ref.ip(&["rule", "del", "from", "10.0.0.98", "pref", "1536"]).status.code(), Some(0));

    // Uninstall: none of ours is left, and the rules are as before the agent.
    assert!(node.agent.terminate().success());
    let mut uninstall = ns_ref.command(common::AGENT);
    uninstall
        .arg("uninstall")
        .arg(format!("--state-file={}", node.agent.state.display()))
        .arg(format!("--socket={}", node.agent.socket.display()))
        .arg(format!("--bpf-pin-dir={}", node.agent.dir.join("no-pins").display()))
        .arg(format!("--cni-conf-dir={}", node.agent.dir.join("net.d").display()))
        .arg(format!("--cni-bin-dir={}", node.agent.dir.join("bin").display()));
    let out = uninstall.output().expect("run eni-ipam-agent uninstall");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("removed ip rule") && log.contains("removed nft table ip eni_ipam"), "{log}");
    assert!(our_rules(ns_ref).is_empty() && our_routes(ns_ref).is_empty());
    assert_eq!(ns_ref.ip_text(&["rule", "show"]), before_rules);
    assert!(!nft_tables(ns_ref).contains("eni_ipam"), "{}", nft_tables(ns_ref));
}
