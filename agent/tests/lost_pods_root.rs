//! IPs of pods that went away without a CNI DEL: the real agent binary against a
//! pod-resources `List` server (the device plugin's test kubelet), pods added through the
//! real plugin in network namespaces. Needs root (fails loudly without).

mod common;

#[path = "../../device-plugin/tests/support/kubelet.rs"]
#[allow(dead_code)]
mod kubelet;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use eni_ipam_agent::cni::link::host_veth_name;
use eni_ipam_netns_testbed::Netns;
use serde_json::json;

/// Container ids holding an IP, and their IPs.
fn held(socket: &Path) -> Vec<(String, String)> {
    allocations(socket)
        .iter()
        .map(|a| (a["containerId"].as_str().unwrap().to_owned(), a["ip"].as_str().unwrap().to_owned()))
        .collect()
}

fn containers(socket: &Path) -> BTreeSet<String> {
    held(socket).into_iter().map(|(c, _)| c).collect()
}

#[test]
fn a_pod_kubelet_forgot_loses_its_ip_after_the_grace_and_the_ip_cools_down_root() {
    require_root();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _context = runtime.enter();
    let dir = tempfile::tempdir().unwrap();
    let kubelet = kubelet::PodResourcesState::default();
    let socket = dir.path().join("pod-resources.sock");
    let server = kubelet.serve(&socket);

    let mut agent = Agent::configure(dir.path(), &pool_json([10, 81, 0, 10], 3, "10.81.0.0/24", "10.81.0.1"));
    agent.extra_args = ["--pod-resources-socket", socket.to_str().unwrap()]
        .into_iter()
        .chain(["--lost-pod-grace", "1500ms", "--lost-pod-cooldown", "1h"])
        .map(str::to_owned)
        .collect();
    let pid = std::process::id();
    let node = Netns::create(format!("enilpnode{pid}"));
    // In the node's namespace, where the plugin makes the pods' host veths.
    agent.netns = Some(node.path());
    agent.restart();
    let config =
        json!({"cniVersion": "1.0.0", "name": "eni-ipam", "type": "eni-ipam-cni", "socket": agent.socket});
    let pods: Vec<Netns> = (0..4).map(|i| Netns::create(format!("enilp{pid}x{i}"))).collect();
    let add = |i: usize| {
        run_plugin("ADD", &format!("c{i}"), pods[i].path(), "eth0", &config, Some(node.name()), "")
    };
    // run_plugin names the pod default/pod-<container>, as kubelet's CNI_ARGS would.
    for i in [1, 2] {
        kubelet.add_pod(&format!("pod-c{i}"), "eni-ipam.io/ip", vec![]);
        let run = add(i);
        assert!(run.ok, "ADD c{i}: {}", run.raw);
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        containers(&agent.socket),
        BTreeSet::from(["c1".into(), "c2".into()]),
        "live pods keep their IPs"
    );

    // kubelet forgets c2's pod; no DEL comes.
    let lost_ip = held(&agent.socket).into_iter().find(|(c, _)| c == "c2").unwrap().1;
    kubelet.remove_pod("pod-c2");
    let forgotten = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(containers(&agent.socket).contains("c2"), "freed before the 1.5 s grace");
    while containers(&agent.socket).contains("c2") {
        assert!(forgotten.elapsed() < Duration::from_secs(10), "c2's IP not freed within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("freed {:?} after kubelet forgot the pod", forgotten.elapsed());
    assert!(forgotten.elapsed() >= Duration::from_millis(1500));
    assert!(!node.ip_text(&["link"]).contains(&host_veth_name("c2", "eth0")), "the lost pod's veth is gone");
    assert!(containers(&agent.socket).contains("c1"), "the live pod keeps its IP");

    // The freed IP cools down: the next pod gets the other free one, then the pool is out.
    kubelet.add_pod("pod-c3", "eni-ipam.io/ip", vec![]);
    let run = add(3);
    assert!(run.ok, "ADD c3: {}", run.raw);
    assert_ne!(address_of(&run.stdout.unwrap()), lost_ip, "the cooling IP was handed out");
    kubelet.add_pod("pod-c0", "eni-ipam.io/ip", vec![]);
    let run = add(0);
    assert!(!run.ok, "ADD c0 got the cooling IP: {}", run.raw);
    assert!(run.raw.contains("1 freed from lost pods and cooling down"), "{}", run.raw);

    // kubelet unreachable: nothing is freed, however long (it lists no pod at all).
    server.abort();
    std::fs::remove_file(&socket).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        containers(&agent.socket),
        BTreeSet::from(["c1".into(), "c3".into()]),
        "freed on a failed listing"
    );
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("no IP is freed until kubelet answers again"), "{log}");
    assert_eq!(log.matches("freed the IP of a pod kubelet no longer runs").count(), 1, "{log}");
    agent.kill();
}
