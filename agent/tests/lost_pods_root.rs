//! IPs of pods (or of a pod's old sandbox) that went away without a CNI DEL: the real agent
//! binary against a pod-resources `List` server (the device plugin's test kubelet), pods
//! added through the real plugin in network namespaces. Needs root (fails loudly without).

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

    let mut agent = Agent::configure(dir.path(), &pool_json([10, 81, 0, 10], 4, "10.81.0.0/24", "10.81.0.1"));
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

    // The runtime restarted and kubelet gave pod-c1 a new sandbox; the old one's DEL never
    // comes. The new sandbox's ADD, as the agent receives it:
    let ip_of = |container: &str| held(&agent.socket).into_iter().find(|(c, _)| c == container).unwrap().1;
    let old_c1_ip = ip_of("c1");
    let body = json!({"containerId": "c1-new", "ifName": "eth0", "podNamespace": "default",
                      "podName": "pod-c1", "network": "eni-ipam"});
    let client = eni_ipam_agent::cni::agent_client::AgentClient::new(&agent.socket, Duration::from_secs(5));
    client.call("POST", "/v1/ipam", Some(body.to_string().as_bytes())).expect("allocate for c1-new");
    let resandboxed = Instant::now();
    while containers(&agent.socket).contains("c1") {
        assert!(
            resandboxed.elapsed() < Duration::from_secs(10),
            "the old sandbox's IP not freed within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(resandboxed.elapsed() >= Duration::from_millis(1500), "freed before the grace");
    assert!(
        !node.ip_text(&["link"]).contains(&host_veth_name("c1", "eth0")),
        "the old sandbox's veth is gone"
    );
    assert_eq!(
        containers(&agent.socket),
        BTreeSet::from(["c1-new".into(), "c2".into()]),
        "the pod's new sandbox and the other pod keep their IPs"
    );

    // kubelet forgets c2's pod; no DEL comes.
    let lost_ip = ip_of("c2");
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
    assert!(containers(&agent.socket).contains("c1-new"), "the live pod keeps its IP");

    // The freed IPs cool down: the next pod gets the other free one, then the pool is out.
    kubelet.add_pod("pod-c3", "eni-ipam.io/ip", vec![]);
    let run = add(3);
    assert!(run.ok, "ADD c3: {}", run.raw);
    let ip_c3 = address_of(&run.stdout.unwrap());
    assert!(ip_c3 != lost_ip && ip_c3 != old_c1_ip, "a cooling IP was handed out: {ip_c3}");
    kubelet.add_pod("pod-c0", "eni-ipam.io/ip", vec![]);
    let run = add(0);
    assert!(!run.ok, "ADD c0 got the cooling IP: {}", run.raw);
    assert!(run.raw.contains("2 freed from lost pods and cooling down"), "{}", run.raw);

    // kubelet unreachable: nothing is freed, however long (it lists no pod at all).
    server.abort();
    std::fs::remove_file(&socket).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        containers(&agent.socket),
        BTreeSet::from(["c1-new".into(), "c3".into()]),
        "freed on a failed listing"
    );
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(log.contains("no IP is freed until kubelet answers again"), "{log}");
    assert_eq!(log.matches("freed the IP of a lost sandbox").count(), 2, "{log}");
    agent.kill();
}
