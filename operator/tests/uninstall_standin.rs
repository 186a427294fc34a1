//! The uninstall hook steps against the stand-in apiserver: `prepare` requests the uninstall on
//! every ENINode and waits for the answers of the nodes that run an agent (a silent node only
//! delays it to the deadline, then is reported); `finish` waits for the agent pods to go, then
//! deletes every ENINode.

use std::time::Duration;

use eni_ipam_api::uninstall_mark::{UNINSTALL_ARMED, UNINSTALL_REQUESTED};
use eni_ipam_kube_standin::{ENINODES, KubeStandin, PODS};
use eni_ipam_operator::uninstall_hook::{HookConfig, finish, prepare};
use serde_json::{Value, json};

mod common;

const AGENT_LABELS: &str = "app.kubernetes.io/instance=eni-ipam,app.kubernetes.io/component=agent";

fn config(timeout: Duration) -> HookConfig {
    HookConfig {
        namespace: "eni-ipam".into(),
        agent_selector: AGENT_LABELS.into(),
        timeout,
        poll: Duration::from_millis(50),
        requested_by: "helm-uninstall-test".into(),
    }
}

fn eninode(name: &str) -> Value {
    json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode", "metadata": {"name": name},
           "spec": {"instanceId": format!("i-{name}"), "instanceType": "m5.large", "zone": "us-east-1a"}})
}

fn agent_pod(node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("agent-{node}"), "namespace": "eni-ipam",
                        "labels": {"app.kubernetes.io/instance": "eni-ipam", "app.kubernetes.io/component": "agent"}},
           "spec": {"nodeName": node, "containers": [{"name": "agent", "image": "x"}]},
           "status": {"phase": "Running"}})
}

fn annotation(standin: &KubeStandin, node: &str, key: &str) -> Option<String> {
    standin.get(ENINODES, "", node)?["metadata"]["annotations"][key].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_waits_for_running_agents_and_finish_deletes_the_eninodes_after_them() {
    let (url, standin) = KubeStandin::start().await;
    for node in ["n1", "n2", "n3"] {
        standin.create(ENINODES, eninode(node)).unwrap();
    }
    // n3 runs no agent (its pod is elsewhere or gone): nobody to wait for there.
    for node in ["n1", "n2"] {
        standin.create(PODS, agent_pod(node)).unwrap();
    }
    let client = common::client(&url);

    // n1's agent answers once it sees the request; n2's never does.
    let answering = {
        let standin = standin.clone();
        tokio::spawn(async move {
            while annotation(&standin, "n1", UNINSTALL_REQUESTED).is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let patch = json!({"metadata": {"annotations": {UNINSTALL_ARMED: "true"}}});
            standin.merge_patch(ENINODES, "", "n1", patch, false).unwrap();
        })
    };
    let started = std::time::Instant::now();
    let progress = prepare(&client, &config(Duration::from_secs(2))).await.expect("prepare");
    answering.await.unwrap();
    assert_eq!(progress.armed, ["n1"]);
    assert_eq!(progress.waiting, ["n2"], "the silent node is reported, not waited for forever");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited for n2 until the deadline");
    for node in ["n1", "n2", "n3"] {
        assert_eq!(
            annotation(&standin, node, UNINSTALL_REQUESTED).as_deref(),
            Some("helm-uninstall-test"),
            "{node}"
        );
    }

    // Once every agent has answered, prepare returns at once (a second run is harmless).
    standin
        .merge_patch(
            ENINODES,
            "",
            "n2",
            json!({"metadata": {"annotations": {UNINSTALL_ARMED: "true"}}}),
            false,
        )
        .unwrap();
    let started = std::time::Instant::now();
    let progress = prepare(&client, &config(Duration::from_secs(20))).await.expect("prepare again");
    assert_eq!((progress.armed.len(), progress.waiting.len()), (2, 0));
    assert!(started.elapsed() < Duration::from_secs(5));

    // finish: the ENINodes stay while an agent pod is left (it would register its node again).
    let removing = {
        let standin = standin.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(standin.list(ENINODES).len(), 3, "no ENINode deleted while agents run");
            standin.delete(PODS, "eni-ipam", "agent-n1");
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(standin.list(ENINODES).len(), 3);
            standin.delete(PODS, "eni-ipam", "agent-n2");
        })
    };
    let (left, mut deleted) = finish(&client, &config(Duration::from_secs(20))).await.expect("finish");
    removing.await.unwrap();
    deleted.sort();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(deleted, ["n1", "n2", "n3"]);
    assert!(standin.list(ENINODES).is_empty());
    let (_, again) = finish(&client, &config(Duration::from_secs(1))).await.expect("finish twice");
    assert!(again.is_empty(), "a second finish finds nothing to delete");
}
