//! The agent binary against the stand-in kube-apiserver: a Node registered with the
//! startup taint keeps it while the pool is empty and while kubelet publishes no
//! `eni-ipam.io/ip`; once both are there the agent removes exactly that taint (the
//! admin's own taint stays), records an Event on the Node, and stops looking. With
//! `--startup-taint=""` the Node is never written.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{AGENT, KillOnDrop, wait_for};
use eni_ipam_kube_standin::{ENINODES, EVENTS, KubeStandin, NODES};
use serde_json::{Value, json};

const TAINT: &str = "eni-ipam.io/agent-not-ready";

fn tainted_node() -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"node.kubernetes.io/instance-type": "m5.large"}},
        "spec": {"providerID": "aws:///us-east-1a/i-0abc123", "taints": [
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            {"key": TAINT, "effect": "NoSchedule"}]},
        "status": {"allocatable": {"pods": "110"}}})
}

fn agent(url: &str, dir: &std::path::Path, extra: &[&str]) -> KillOnDrop {
    KillOnDrop(
        Command::new(AGENT)
            .args(["--node-name", "n1", "--kube-url", url, "--metrics-addr", "127.0.0.1:0"])
            .args(["--eninode-resync", "200ms", "--subnet", "subnet-1=10.1.0.0/16"])
            .args(["--datapath", "none", "--node-routing=false"])
            .arg("--socket")
            .arg(dir.join("agent.sock"))
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the agent"),
    )
}

fn taint_keys(standin: &KubeStandin) -> Vec<String> {
    let node = standin.get(NODES, "", "n1").expect("the Node");
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["key"].as_str().map(str::to_owned))
        .collect()
}

fn node_writes(standin: &KubeStandin) -> usize {
    standin.requests().iter().filter(|r| r.method != "GET" && r.path == "/api/v1/nodes/n1").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_taint_goes_once_the_pool_and_the_device_plugin_are_there() {
    let (url, standin) = KubeStandin::start().await;
    standin.create(NODES, tainted_node()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(&url, dir.path(), &[]);
    wait_for("the ENINode", || standin.get(ENINODES, "", "n1")).await;

    // No pool: the taint stays.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(taint_keys(&standin), ["dedicated", TAINT], "no pool IP yet: the taint stays");

    // The operator gives a pool; kubelet does not publish the resource yet: it stays.
    let pool = json!({"10.1.0.10": {"eni": "eni-1", "subnet": "subnet-1"},
                      "10.1.0.11": {"eni": "eni-1", "subnet": "subnet-1"}});
    standin.merge_patch(ENINODES, "", "n1", json!({"spec": {"pool": pool}}), false).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        taint_keys(&standin),
        ["dedicated", TAINT],
        "no allocatable eni-ipam.io/ip yet: the taint stays"
    );
    assert_eq!(node_writes(&standin), 0, "the Node was not written while it was not ready");

    // kubelet publishes the device plugin's slots: the taint goes, and only it.
    standin
        .merge_patch(NODES, "", "n1", json!({"status": {"allocatable": {"eni-ipam.io/ip": "2"}}}), true)
        .unwrap();
    wait_for("the startup taint to go", || (taint_keys(&standin) == ["dedicated"]).then_some(())).await;
    let node = standin.get(NODES, "", "n1").unwrap();
    assert_eq!(node["spec"]["taints"], json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]));
    let event = wait_for("the Event on the Node", || {
        standin
            .list(EVENTS)
            .into_iter()
            .find(|e| e["regarding"]["name"] == "n1" && e["reason"] == "StartupTaintRemoved")
    })
    .await;
    assert_eq!(event["regarding"]["kind"], "Node");
    assert_eq!(event["type"], "Normal");
    assert!(event["note"].as_str().unwrap().contains(TAINT), "{event}");

    // Done: no more reads of the Node for the taint.
    let reads = |s: &KubeStandin| {
        s.requests().iter().filter(|r| r.method == "GET" && r.path == "/api/v1/nodes/n1").count()
    };
    let before = reads(&standin);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(reads(&standin), before, "the agent stops reading the Node once the taint is gone");
    assert_eq!(node_writes(&standin), 1, "one write: the removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_flag_empty_the_node_is_never_written() {
    let (url, standin) = KubeStandin::start().await;
    let mut node = tainted_node();
    node["status"]["allocatable"]["eni-ipam.io/ip"] = json!("2");
    standin.create(NODES, node).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(&url, dir.path(), &["--startup-taint="]);
    wait_for("the ENINode", || standin.get(ENINODES, "", "n1")).await;
    let pool = json!({"10.1.0.10": {"eni": "eni-1", "subnet": "subnet-1"}});
    standin.merge_patch(ENINODES, "", "n1", json!({"spec": {"pool": pool}}), false).unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(taint_keys(&standin), ["dedicated", TAINT]);
    assert_eq!(node_writes(&standin), 0);
}
