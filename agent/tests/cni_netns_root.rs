//! The plugin run as a runtime runs it, against the real agent binary, in
//! network namespaces with the real kernel. Needs root (fails loudly without).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use eni_ipam_netns_testbed::Netns;
use serde_json::json;

const BRIDGE: &str = "/usr/lib/cni/bridge";
const PTP: &str = "/usr/lib/cni/ptp";

fn main_config(socket: &std::path::Path) -> serde_json::Value {
    json!({"cniVersion": "1.0.0", "name": "eni", "type": "eni-ipam-cni", "socket": socket, "timeoutSeconds": 5})
}

#[test]
fn hundred_pods_get_distinct_ips_keep_them_across_a_restart_and_del_frees_them_root() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let pool = pool_json([10, 77, 0, 10], 120, "10.77.0.0/24", "10.77.0.1");
    let pool_ips: BTreeSet<String> = pool["ips"].as_object().unwrap().keys().cloned().collect();
    let pid = std::process::id();
    let node = Netns::create(format!("eninode{pid}"));
    // The agent runs in the node's namespace, as on a node (hostNetwork): CHECK asks it
    // about the pods' host veths there.
    let mut agent = Agent::configure(dir.path(), &pool);
    agent.netns = Some(node.path());
    agent.restart();
    // The node's own address, the source of its pings to pods.
    node.own_address("10.76.0.1");
    let pods: Vec<Netns> = (0..100).map(|i| Netns::create(format!("enipod{pid}x{i}"))).collect();
    let config = main_config(&agent.socket);

    let mut ips = BTreeMap::new();
    for (i, pod) in pods.iter().enumerate() {
        let run = run_plugin("ADD", &format!("ctr{i}"), pod.path(), "eth0", &config, Some(node.name()), "");
        assert!(run.ok, "ADD pod {i}: {}", run.raw);
        let result = run.stdout.unwrap();
        assert_eq!(result["cniVersion"], "1.0.0");
        assert_eq!(result["interfaces"][1]["sandbox"], pod.path().to_str().unwrap());
        let ip = address_of(&result);
        assert!(pool_ips.contains(&ip), "{ip} is not a pool IP");
        assert!(pod.ip_text(&["-4", "addr", "show", "eth0"]).contains(&format!("{ip}/32")));
        assert!(pod.ip_text(&["-6", "addr", "show", "eth0"]).trim().is_empty(), "pods are IPv4 only");
        ips.insert(i, ip);
    }
    let distinct: BTreeSet<&String> = ips.values().collect();
    assert_eq!(distinct.len(), 100, "100 pods, 100 distinct IPs");
    assert_eq!(agent.healthz().unwrap()["ipam"]["allocated"], 100);

    // Real packets: the node reaches pods through their veths and the pods answer.
    for i in [0, 57, 99] {
        assert!(node.succeeds("ping", &["-c1", "-W2", &ips[&i]]), "ping pod {i} at {}", ips[&i]);
    }
    let check = run_plugin("CHECK", "ctr3", pods[3].path(), "eth0", &config, Some(node.name()), "");
    assert!(check.ok, "CHECK: {}", check.raw);

    agent.kill();
    let down = run_plugin("ADD", "ctr-new", pods[0].path(), "eth1", &config, Some(node.name()), "");
    assert!(!down.ok);
    assert_eq!(down.stdout.as_ref().unwrap()["code"], 11, "{}", down.raw);
    assert!(down.raw.contains("unreachable"), "{}", down.raw);

    agent.restart();
    for (i, pod) in pods.iter().enumerate() {
        let run = run_plugin("ADD", &format!("ctr{i}"), pod.path(), "eth0", &config, Some(node.name()), "");
        assert!(run.ok, "ADD again pod {i}: {}", run.raw);
        assert_eq!(address_of(&run.stdout.unwrap()), ips[&i], "pod {i} keeps its IP across the restart");
    }
    assert!(node.succeeds("ping", &["-c1", "-W2", &ips[&42]]), "pod 42 reachable after the re-ADD");

    for (i, pod) in pods.iter().enumerate() {
        let run = run_plugin("DEL", &format!("ctr{i}"), pod.path(), "eth0", &config, Some(node.name()), "");
        assert!(run.ok && run.raw.trim().is_empty(), "DEL pod {i}: {}", run.raw);
        assert!(!pod.ip_text(&["link"]).contains("eth0"), "DEL removes the pod interface");
    }
    assert_eq!(agent.healthz().unwrap()["ipam"]["allocated"], 0);
    let again = run_plugin("DEL", "ctr5", "", "eth0", &config, Some(node.name()), "");
    assert!(again.ok, "DEL is idempotent, also without a netns: {}", again.raw);
    assert!(!node.ip_text(&["link"]).contains("eni"), "no host veth left behind");
}

#[test]
fn debian_bridge_plugin_uses_eni_ipam_cni_as_its_ipam_root() {
    require_root();
    for tool in [BRIDGE, PTP] {
        assert!(
            std::path::Path::new(tool).exists(),
            "{tool} missing: apt-get install containernetworking-plugins"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &pool_json([10, 78, 0, 10], 4, "10.78.0.0/24", "10.78.0.1"));
    let pid = std::process::id();
    let node = Netns::create(format!("eninodeb{pid}"));
    let pods: Vec<Netns> = (0..2).map(|i| Netns::create(format!("enipodb{pid}x{i}"))).collect();
    let plugin_dir = std::path::Path::new(PLUGIN).parent().unwrap().display().to_string();
    let cni_path = format!("{plugin_dir}:/usr/lib/cni");
    let config = json!({
        "cniVersion": "1.0.0", "name": "eni-bridge", "type": "bridge", "bridge": "enibr0",
        "isGateway": true, "ipMasq": false,
        "ipam": {"type": "eni-ipam-cni", "socket": agent.socket, "timeoutSeconds": 5},
    });
    let mut ips = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let run = run_cni(
            BRIDGE,
            "ADD",
            &format!("br{i}"),
            pod.path(),
            "eth0",
            &config,
            Some(node.name()),
            &cni_path,
        );
        assert!(run.ok, "bridge ADD {i}: {}", run.raw);
        let result = run.stdout.unwrap();
        assert_eq!(result["ips"][0]["gateway"], "10.78.0.1", "{result}");
        let address = result["ips"][0]["address"].as_str().unwrap().to_owned();
        assert!(address.ends_with("/24"), "{address}");
        assert!(pod.ip_text(&["-4", "addr", "show", "eth0"]).contains(&address));
        ips.push(address_of(&result));
    }
    assert_ne!(ips[0], ips[1]);
    assert!(pods[0].succeeds("ping", &["-c1", "-W2", "10.78.0.1"]), "pod reaches the bridge gateway");
    assert!(pods[0].succeeds("ping", &["-c1", "-W2", &ips[1]]), "pod reaches the other pod over the bridge");
    let check = run_cni(BRIDGE, "DEL", "br0", pods[0].path(), "eth0", &config, Some(node.name()), &cni_path);
    assert!(check.ok, "bridge DEL: {}", check.raw);
    assert_eq!(agent.healthz().unwrap()["ipam"]["allocated"], 1);

    // ptp, the other reference main plugin, with the same IPAM.
    let ptp = json!({
        "cniVersion": "1.0.0", "name": "eni-ptp", "type": "ptp",
        "ipam": {"type": "eni-ipam-cni", "socket": agent.socket},
    });
    let pod = Netns::create(format!("enipodp{pid}"));
    let run = run_cni(PTP, "ADD", "ptp0", pod.path(), "eth0", &ptp, Some(node.name()), &cni_path);
    assert!(run.ok, "ptp ADD: {}", run.raw);
    let ip = address_of(&run.stdout.unwrap());
    assert!(node.succeeds("ping", &["-c1", "-W2", &ip]), "node reaches the ptp pod");
    let del = run_cni(PTP, "DEL", "ptp0", pod.path(), "eth0", &ptp, Some(node.name()), &cni_path);
    assert!(del.ok, "ptp DEL: {}", del.raw);
}
