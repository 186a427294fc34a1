//! The plugin as another plugin's `ipam`, run as a runtime runs it, against the
//! real agent: exhausted pool, STATUS and GC (CNI 1.1) of the network `n`.

mod common;

use common::*;
use serde_json::json;

#[test]
fn exhausted_pool_status_and_gc() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &pool_json([10, 79, 0, 10], 1, "10.79.0.0/24", "10.79.0.1"));
    let config = json!({"cniVersion": "1.1.0", "name": "n", "type": "bridge",
                        "ipam": {"type": "eni-ipam-cni", "socket": agent.socket}});
    let first = run_plugin("ADD", "a", "/proc/self/ns/net", "eth0", &config, None, "");
    assert!(first.ok, "{}", first.raw);
    assert_eq!(first.stdout.unwrap()["ips"][0]["address"], "10.79.0.10/24");
    let full = run_plugin("ADD", "b", "/proc/self/ns/net", "eth0", &config, None, "");
    assert!(!full.ok);
    let err = full.stdout.unwrap();
    assert_eq!(err["code"], 11);
    assert!(err["msg"].as_str().unwrap().contains("no free IP"), "{err}");
    assert!(err["details"].as_str().unwrap().contains("all 1 pool IPs are taken"), "{err}");
    let status = run_plugin("STATUS", "", "", "", &config, None, "");
    assert!(status.ok, "a pool full for a moment is no reason to be not ready: {}", status.raw);

    // GC keeps what the runtime lists and frees the rest.
    let mut gc = config.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}]);
    assert!(run_plugin("GC", "", "", "", &gc, None, "").ok);
    assert_eq!(agent.healthz().unwrap()["ipam"]["allocated"], 1, "a is still listed");
    gc["cni.dev/valid-attachments"] = json!([]);
    let run = run_plugin("GC", "", "", "", &gc, None, "");
    assert!(run.ok, "{}", run.raw);
    assert_eq!(agent.healthz().unwrap()["ipam"]["allocated"], 0);
    assert!(run_plugin("STATUS", "", "", "", &config, None, "").ok, "STATUS still ready");
}

#[test]
fn restart_frees_the_ips_of_containers_the_runtime_no_longer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(dir.path(), &pool_json([10, 81, 0, 10], 4, "10.81.0.0/24", "10.81.0.1"));
    let config = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
                        "ipam": {"type": "eni-ipam-cni", "socket": agent.socket}});
    let mut ips = Vec::new();
    for c in ["alive", "gone"] {
        let run = run_plugin("ADD", c, "/proc/self/ns/net", "eth0", &config, None, "");
        assert!(run.ok, "{}", run.raw);
        ips.push(address_of(&run.stdout.unwrap()));
    }
    let live = dir.path().join("live-containers");
    std::fs::write(&live, "# exported by the runtime\nalive\n").unwrap();
    agent.extra_args = vec!["--live-containers-file".into(), live.display().to_string()];
    agent.restart();
    assert_eq!(agent.healthz().unwrap()["ipam"]["allocated"], 1);
    let again = run_plugin("ADD", "alive", "/proc/self/ns/net", "eth0", &config, None, "");
    assert_eq!(address_of(&again.stdout.unwrap()), ips[0], "the live container keeps its IP");
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    assert!(
        log.contains("freed the IP of a container the runtime no longer runs") && log.contains("gone"),
        "{log}"
    );
}

#[test]
fn main_mode_add_into_a_missing_netns_is_code_3_and_keeps_no_ip() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(dir.path(), &pool_json([10, 82, 0, 10], 2, "10.82.0.0/24", "10.82.0.1"));
    let config = json!({"cniVersion": "1.0.0", "name": "n", "type": "eni-ipam-cni", "socket": agent.socket});
    let missing = dir.path().join("no-such-netns").display().to_string();
    let run = run_plugin("ADD", "c1", &missing, "eth0", &config, None, "");
    assert!(!run.ok);
    let err = run.stdout.unwrap();
    assert_eq!(err["code"], 3, "{err}");
    assert!(err["details"].as_str().unwrap().contains("no-such-netns"), "{err}");
    assert_eq!(agent.healthz().unwrap()["ipam"]["allocated"], 0, "a failed ADD holds no IP");
}
