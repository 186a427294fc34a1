//! The CNI contract as runtimes use it. ADD, CHECK and DEL go through libcni (the library
//! containerd and CRI-O call plugins with; Debian's libcni 1.1.2, driven by the Go program
//! in `tests/libcni/`) against a node of the test bed with the real agent on the eBPF
//! datapath. GC and STATUS came in libcni 1.2, which Debian does not ship: the plugin is run
//! for them as the CNI 1.1 spec says (`CNI_COMMAND`, the network's configuration on stdin
//! with `cni.dev/valid-attachments`). Needs root (fails loudly without).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::agent_node::AgentNode;
use common::libcni::Libcni;
use common::*;
use eni_ipam_agent::cni::link::host_veth_name;
use eni_ipam_netns_testbed::Netns;
use serde_json::{Value, json};

/// The conflist the chart writes (tests/chart checks the chart renders this shape), with
/// the test agent's socket.
fn chart_conflist(socket: &Path, portmap: bool) -> Value {
    let mut plugins = vec![json!({"type": "eni-ipam-cni", "socket": socket, "timeoutSeconds": 5})];
    if portmap {
        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}));
    }
    json!({"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0"], "name": "eni-ipam", "plugins": plugins})
}

/// (container id, interface) of every allocation the agent holds.
fn held(socket: &Path) -> BTreeSet<(String, String)> {
    allocations(socket)
        .iter()
        .map(|a| (a["containerId"].as_str().unwrap().to_owned(), a["ifName"].as_str().unwrap().to_owned()))
        .collect()
}

fn key(container: &str, if_name: &str) -> (String, String) {
    (container.to_owned(), if_name.to_owned())
}

#[test]
fn libcni_adds_checks_and_deletes_through_the_charts_conflist_on_an_ebpf_node_root() {
    require_root();
    let node = AgentNode::start("lcni");
    let node_ns = &node.bed.nodes[0].ns;
    let dir = tempfile::tempdir().unwrap();
    let cni = Libcni::build(dir.path(), node_ns.path());
    let socket = node.agent.socket.clone();
    let full = chart_conflist(&socket, true);
    let pid = std::process::id();

    let versions = cni.run("versions", &full, "none", Path::new(""), "eth0");
    assert!(versions.ok, "{}", versions.error_text());
    let spoken = |plugin: &str| -> Vec<String> {
        serde_json::from_value(versions.result[plugin].clone()).expect("a version list")
    };
    assert!(spoken("eni-ipam-cni").contains(&"1.1.0".to_owned()), "{:?}", versions.result);
    assert!(
        !spoken("portmap").contains(&"1.1.0".to_owned()),
        "Debian's portmap stops at 1.0.0, so the list's cniVersion stays 1.0.0: {:?}",
        versions.result
    );
    let validated = cni.run("validate", &full, "none", Path::new(""), "eth0");
    assert!(validated.ok, "libcni validates the chart's list: {}", validated.error_text());

    // ADD through the chain (ours, then portmap with a hostPort), DEL twice.
    let pod_a = Netns::create(format!("enilc{pid}a"));
    let ports = r#"[{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}]"#;
    let added = cni.run_with("add", &full, "ctr-a", &pod_a.path(), "eth0", &["-port-mappings", ports]);
    assert!(added.ok, "ADD: {}\nagent log:\n{}", added.error_text(), node.agent_log());
    assert_eq!(added.result["cniVersion"], "1.0.0", "libcni 1.1.2 runs the list at its cniVersion");
    let ip_a = address_of(&added.result);
    let vpc_host = common::agent_node::VPC_HOST.to_string();
    assert!(pod_a.succeeds("ping", &["-c1", "-W2", &vpc_host]), "the pod at {ip_a} reaches the VPC");
    let nat = || {
        String::from_utf8_lossy(
            &node_ns.command("iptables").args(["-t", "nat", "-S"]).output().unwrap().stdout,
        )
        .into_owned()
    };
    assert!(nat().contains("18080"), "portmap chained after us wrote its DNAT: {}", nat());
    for round in ["first", "second"] {
        // As a runtime does, DEL passes the same capability arguments as ADD.
        let deleted = cni.run_with("del", &full, "ctr-a", &pod_a.path(), "eth0", &["-port-mappings", ports]);
        assert!(deleted.ok, "{round} DEL: {}", deleted.error_text());
        assert!(held(&socket).is_empty(), "{round} DEL: the IP is free");
    }
    assert!(!nat().contains("18080"), "portmap's DEL ran too: {}", nat());
    assert!(!node_ns.ip_text(&["link"]).contains(&host_veth_name("ctr-a", "eth0")), "host veth removed");

    // The same list at 1.1.0 (what libcni >= 1.2 picks out of cniVersions) cannot run on
    // libcni 1.1.2: that is why the chart keeps cniVersion 1.0.0 next to cniVersions.
    let mut at_11 = full.clone();
    at_11["cniVersion"] = json!("1.1.0");
    at_11.as_object_mut().unwrap().remove("cniVersions");
    let refused = cni.run("add", &at_11, "ctr-v", &pod_a.path(), "eth0");
    assert!(!refused.ok, "libcni 1.1.2 runs a 1.1.0 list: {:?}", refused.result);
    println!("libcni 1.1.2 with cniVersion 1.1.0: {}", refused.error_text());
    let section =
        json!({"cniVersion": "1.0.0", "name": "eni-ipam", "type": "eni-ipam-cni", "socket": socket});
    let cleanup = run_plugin("DEL", "ctr-v", pod_a.path(), "eth0", &section, Some(node_ns.name()), "");
    assert!(cleanup.ok, "{}", cleanup.raw);

    // CHECK, with our plugin alone (the chart with cni.portmap=false: Debian's portmap fails
    // its own CHECK, an upstream bug).
    let ours = chart_conflist(&socket, false);
    let pod_b = Netns::create(format!("enilc{pid}b"));
    let added = cni.run("add", &ours, "ctr-b", &pod_b.path(), "eth0");
    assert!(added.ok, "ADD: {}", added.error_text());
    let ip_b = address_of(&added.result);
    let check = || cni.run("check", &ours, "ctr-b", &pod_b.path(), "eth0");
    let healthy = check();
    assert!(healthy.ok, "CHECK right after ADD: {}", healthy.error_text());
    let fails_with = |what: &str, want: &str| {
        let answer = check();
        assert!(!answer.ok, "CHECK passed with {what}");
        assert!(answer.error_text().contains(want), "CHECK with {what}: {}", answer.error_text());
        println!("CHECK with {what}: {}", answer.error_text());
    };

    pod_b.ip(&["route", "del", "default"]);
    fails_with("the pod's default route removed", "the default route via 169.254.1.1 on eth0 is gone");
    pod_b.ip(&["route", "replace", "default", "via", "169.254.1.1", "dev", "eth0", "onlink"]);
    assert!(check().ok, "CHECK with the route back: {}", check().error_text());

    pod_b.ip(&["addr", "del", &format!("{ip_b}/32"), "dev", "eth0"]);
    fails_with("the pod's address removed", &format!("{ip_b} is not on eth0"));
    // The kernel flushed the link's routes with its last address: all three come back.
    pod_b.ip(&["addr", "add", &format!("{ip_b}/32"), "dev", "eth0"]);
    pod_b.ip(&["route", "replace", "169.254.1.1", "dev", "eth0", "scope", "link"]);
    pod_b.ip(&["route", "replace", "default", "via", "169.254.1.1", "dev", "eth0", "onlink"]);
    assert!(check().ok, "CHECK with the address back: {}", check().error_text());

    let host_if = host_veth_name("ctr-b", "eth0");
    node_ns.ip(&["link", "set", &host_if, "down"]);
    fails_with("the host veth down", "it is down");
    node_ns.ip(&["link", "set", &host_if, "up"]);
    // Down took the node's route to the pod with it.
    fails_with("the node's route to the pod gone", &format!("the node's route to {ip_b} on it is gone"));
    node_ns.ip(&["route", "replace", &format!("{ip_b}/32"), "dev", &host_if, "scope", "link"]);
    assert!(check().ok, "CHECK with the host side back: {}", check().error_text());

    node.pinned().remove_endpoint(ip_b.parse().unwrap()).unwrap();
    fails_with("the datapath endpoint removed", "missing from the datapath's endpoint map");
    let again = cni.run("add", &ours, "ctr-b", &pod_b.path(), "eth0");
    assert!(again.ok, "a retried ADD sets everything up again: {}", again.error_text());
    assert_eq!(address_of(&again.result), ip_b, "same IP");
    assert!(check().ok, "CHECK after the retried ADD: {}", check().error_text());
    assert!(pod_b.succeeds("ping", &["-c1", "-W2", &vpc_host]), "the pod reaches the VPC again");

    // A second interface of ours in the same pod: refused before anything changes.
    let second = cni.run("add", &ours, "ctr-b", &pod_b.path(), "eth1");
    assert!(!second.ok, "a second main interface was set up");
    assert_eq!(second.error["code"], 7, "{}", second.error_text());
    assert!(second.error_text().contains("one interface"), "{}", second.error_text());
    assert_eq!(held(&socket), BTreeSet::from([key("ctr-b", "eth0")]), "no IP taken for eth1");
    assert!(!pod_b.ip_text(&["link"]).contains("eth1"), "no eth1 in the pod");
    assert!(!node_ns.ip_text(&["link"]).contains(&host_veth_name("ctr-b", "eth1")), "no host veth for eth1");
    assert!(check().ok, "eth0 untouched: {}", check().error_text());

    for round in ["first", "second"] {
        let deleted = cni.run("del", &ours, "ctr-b", &pod_b.path(), "eth0");
        assert!(deleted.ok, "{round} DEL: {}", deleted.error_text());
    }
    assert!(held(&socket).is_empty());
    let gone = check();
    assert!(!gone.ok && gone.error["code"] == 3, "CHECK after DEL: unknown container: {}", gone.error_text());
}

/// GC and STATUS as the CNI 1.1 spec runs them: `CNI_COMMAND` and `CNI_PATH` only, the
/// network's configuration on stdin.
fn run_plugin_for_network(command: &str, network: &Value, node: &Netns) -> PluginRun {
    run_plugin(command, "", "", "", network, Some(node.name()), "")
}

#[test]
fn gc_frees_only_its_networks_stale_ips_and_status_stays_ready_with_a_full_pool_root() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), &pool_json([10, 79, 0, 10], 3, "10.79.0.0/24", "10.79.0.1"));
    let pid = std::process::id();
    let node = Netns::create(format!("enignode{pid}"));
    let socket = agent.socket.clone();
    let network = |name: &str| json!({"cniVersion": "1.1.0", "name": name, "type": "eni-ipam-cni", "socket": socket, "timeoutSeconds": 5});
    let pods: Vec<Netns> = (0..3).map(|i| Netns::create(format!("enigpod{pid}x{i}"))).collect();
    for (i, (container, name)) in [("c1", "eni-ipam"), ("c2", "eni-ipam"), ("c3", "other")].iter().enumerate()
    {
        let run = run_plugin("ADD", container, pods[i].path(), "eth0", &network(name), Some(node.name()), "");
        assert!(run.ok, "ADD {container}: {}", run.raw);
        assert_eq!(run.stdout.unwrap()["cniVersion"], "1.1.0");
    }
    let full = run_plugin("ADD", "c4", pods[0].path(), "eth1", &network("other"), Some(node.name()), "");
    assert_eq!(full.stdout.unwrap()["code"], 11, "the pool of 3 is full");

    let status = run_plugin_for_network("STATUS", &network("eni-ipam"), &node);
    assert!(status.ok && status.raw.trim().is_empty(), "STATUS with a full pool is ready: {}", status.raw);

    let with = |valid: Value| {
        let mut config = network("eni-ipam");
        config["cni.dev/valid-attachments"] = valid;
        config
    };
    let no_key = run_plugin_for_network("GC", &network("eni-ipam"), &node);
    assert!(!no_key.ok && no_key.stdout.unwrap()["code"] == 7, "{}", no_key.raw);
    assert_eq!(held(&socket).len(), 3, "GC without valid attachments released nothing");

    let gc = run_plugin_for_network("GC", &with(json!([{"containerID": "c1", "ifname": "eth0"}])), &node);
    assert!(gc.ok, "GC: {}", gc.raw);
    assert_eq!(held(&socket), BTreeSet::from([key("c1", "eth0"), key("c3", "eth0")]), "c2 freed");
    assert!(!node.ip_text(&["link"]).contains(&host_veth_name("c2", "eth0")), "c2's veth removed");
    assert!(node.ip_text(&["link"]).contains(&host_veth_name("c1", "eth0")), "c1's veth kept");

    let gc = run_plugin_for_network("GC", &with(Value::Null), &node);
    assert!(gc.ok, "GC with null: {}", gc.raw);
    assert_eq!(held(&socket), BTreeSet::from([key("c3", "eth0")]), "null: none of eni-ipam's is valid");

    let mut other = network("other");
    other["cni.dev/valid-attachments"] = json!([]);
    let gc = run_plugin_for_network("GC", &other, &node);
    assert!(gc.ok, "GC of the other network with []: {}", gc.raw);
    assert!(held(&socket).is_empty(), "[]: none of other's is valid");

    agent.kill();
    let status = run_plugin_for_network("STATUS", &network("eni-ipam"), &node);
    assert!(!status.ok, "STATUS with the agent down");
    assert_eq!(status.stdout.unwrap()["code"], 50, "{}", status.raw);
}
