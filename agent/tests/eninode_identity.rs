//! The agent binary against the stand-in kube-apiserver, on its node's identity:
//! an ENINode deleted under the running agent is created again (not read as a 404
//! forever with a frozen pool), and a node name that comes back on a new instance
//! adopts the ENINode without serving the old instance's pool.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{AGENT, KillOnDrop, wait_for};
use eni_ipam_agent::cni::agent_client::AgentClient;
use eni_ipam_kube_standin::{ENINODES, KubeStandin, NODES};
use serde_json::{Value, json};

fn spawn_agent(url: &str, dir: &std::path::Path) -> KillOnDrop {
    KillOnDrop(
        Command::new(AGENT)
            .args(["--node-name", "n1", "--kube-url", url, "--metrics-addr", "127.0.0.1:0"])
            .args(["--ipam-node-update-rate", "100ms", "--eninode-resync", "100ms"])
            .args(["--subnet", "subnet-1=10.1.0.0/16", "--datapath", "none", "--node-routing=false"])
            .arg("--socket")
            .arg(dir.join("agent.sock"))
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn node(standin: &KubeStandin, instance: &str) -> Value {
    standin
        .create(
            NODES,
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": "n1", "labels": {"node.kubernetes.io/instance-type": "m5.large"}},
                   "spec": {"providerID": format!("aws:///us-east-1a/{instance}")}}),
        )
        .unwrap()
}

/// The operator's part: `count` pool IPs from 10.1.<third>.10 on, built for `instance`.
fn pool_patch(third: u32, count: u32, instance: &str) -> Value {
    let pool: serde_json::Map<String, Value> = (0..count)
        .map(|i| (format!("10.1.{third}.{}", i + 10), json!({"eni": "eni-1", "subnet": "subnet-1"})))
        .collect();
    json!({"spec": {"pool": pool, "poolInstanceId": instance}})
}

async fn served(socket: &std::path::Path) -> Option<u64> {
    let client = AgentClient::new(socket, Duration::from_secs(2));
    let answer =
        tokio::task::spawn_blocking(move || client.call("GET", "/v1/healthz", None).ok()).await.unwrap()?;
    serde_json::from_slice::<Value>(&answer.body).ok()?["ipam"]["available"].as_u64()
}

async fn wait_served(socket: &std::path::Path, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while served(socket).await != Some(want) {
        assert!(
            Instant::now() < deadline,
            "the agent serves {:?} pool IPs, not {want}",
            served(socket).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eninode_deleted_under_the_agent_is_created_again() {
    let (url, standin) = KubeStandin::start().await;
    let node = node(&standin, "i-0abc1");
    let dir = tempfile::tempdir().unwrap();
    let _agent = spawn_agent(&url, dir.path());
    let first = wait_for("the ENINode", || standin.get(ENINODES, "", "n1")).await;
    standin.merge_patch(ENINODES, "", "n1", pool_patch(0, 5, "i-0abc1"), false).unwrap();
    wait_served(&dir.path().join("agent.sock"), 5).await;

    standin.delete(ENINODES, "", "n1").expect("deleted");
    let again = wait_for("the ENINode created again", || {
        standin.get(ENINODES, "", "n1").filter(|e| e["metadata"]["uid"] != first["metadata"]["uid"])
    })
    .await;
    assert_eq!(again["spec"]["instanceId"], "i-0abc1");
    assert_eq!(again["metadata"]["ownerReferences"][0]["uid"], node["metadata"]["uid"]);
    // The new ENINode's pool is the operator's to fill; the agent follows it again.
    standin.merge_patch(ENINODES, "", "n1", pool_patch(1, 3, "i-0abc1"), false).unwrap();
    wait_served(&dir.path().join("agent.sock"), 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_name_back_on_a_new_instance_does_not_serve_the_old_instances_pool() {
    let (url, standin) = KubeStandin::start().await;
    // The name's old life: an ENINode of i-0old with a pool the operator built for it.
    let old = json!({"metadata": {"name": "n1"}, "spec": {
        "instanceId": "i-0old", "instanceType": "m5.large", "zone": "us-east-1a", "vpcId": "vpc-1"}});
    standin.create(ENINODES, old).unwrap();
    standin.merge_patch(ENINODES, "", "n1", pool_patch(0, 6, "i-0old"), false).unwrap();
    node(&standin, "i-0new");
    let dir = tempfile::tempdir().unwrap();
    let _agent = spawn_agent(&url, dir.path());

    wait_for("the ENINode adopted", || {
        standin.get(ENINODES, "", "n1").filter(|e| e["spec"]["instanceId"] == "i-0new")
    })
    .await;
    let socket = dir.path().join("agent.sock");
    wait_served(&socket, 0).await;
    // Still none a while later: the old instance's IPs are never handed out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(served(&socket).await, Some(0));

    // The operator rebuilds the pool for the new instance (its apply replaces the whole map): served.
    standin.merge_patch(ENINODES, "", "n1", json!({"spec": {"pool": null}}), false).unwrap();
    standin.merge_patch(ENINODES, "", "n1", pool_patch(1, 4, "i-0new"), false).unwrap();
    wait_served(&socket, 4).await;
}
