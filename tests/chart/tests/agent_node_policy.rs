//! The chart's ValidatingAdmissionPolicy on the agent's Node writes
//! (templates/agent/write-policy.yaml, `agent-node-writes`), rendered by helm and
//! evaluated with a CEL interpreter the way kube-apiserver evaluates it: the agent's
//! one write, the JSON patch that removes the startup taint (built with the agent's own
//! `removal_patch` and applied as the apiserver would), passes on its own Node; any
//! other change to any Node is refused. RBAC, the agent's flags and the tolerations of
//! the pods that run before nodes are ready follow `agent.startupTaint`.

mod agent_policy;

use agent_policy::{admit, agent_of, refused};
use clap::CommandFactory;
use eni_ipam_agent::cli::Cli;
use eni_ipam_agent::startup_taint::{DEFAULT_KEY, removal_patch};
use eni_ipam_chart_tests::{Helm, admission_policies, command_line, containers, flag_value, parse_documents};
use eni_ipam_kube_standin::{AdmissionPolicy, Denial, UserInfo};
use serde_json::{Value, json};

fn rendered(sets: &[&str]) -> Vec<Value> {
    parse_documents(&Helm::default().render(&[], sets))
}

fn node_policy(sets: &[&str]) -> Option<AdmissionPolicy> {
    admission_policies(&rendered(sets))
        .into_iter()
        .find(|(p, _)| p["metadata"]["name"] == "eni-ipam-agent-node-writes")
        .map(|(policy, binding)| {
            AdmissionPolicy::compile(&policy, &binding).unwrap_or_else(|e| panic!("{e}"))
        })
}

/// A Node as kubelet registered it with `--register-with-taints`, plus an admin's taint.
fn stored(name: &str, key: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": "n-1", "resourceVersion": "9",
            "labels": {"node.kubernetes.io/instance-type": "m5.large"},
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"}},
        "spec": {"providerID": "aws:///us-east-1a/i-0aaa", "podCIDR": "10.244.1.0/24", "taints": [
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            {"key": key, "effect": "NoSchedule"}]},
        "status": {"allocatable": {"eni-ipam.io/ip": "8"}}})
}

fn patched(old: &Value, patch: Value) -> Value {
    let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
    let mut next = old.clone();
    json_patch::patch(&mut next, &patch).unwrap();
    next
}

fn merged(old: &Value, patch: &Value) -> Value {
    let mut next = old.clone();
    json_patch::merge(&mut next, patch);
    next
}

fn write(
    policy: &AdmissionPolicy,
    user: &UserInfo,
    operation: &str,
    subresource: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Denial> {
    admit(policy, ("", "v1", "nodes"), user, operation, subresource, object, old)
}

/// The value the agent's own parser reads for `--long` from the rendered DaemonSet.
fn agent_flag(objects: &[Value], long: &str) -> Option<String> {
    let agent = containers(objects)
        .into_iter()
        .find(|c| c.workload == "DaemonSet/eni-ipam-agent" && c.name == "agent")
        .expect("the agent container");
    let parser = Cli::command();
    let line = command_line(&agent, &parser);
    flag_value(&parser, &line.argv, long)
}

#[test]
fn the_agent_may_remove_the_startup_taint_from_its_own_node_and_nothing_else() {
    let policy = node_policy(&[]).expect("the chart renders the Node policy by default");
    let a = agent_of("node-a");
    let old = stored("node-a", DEFAULT_KEY);
    let removed = patched(&old, removal_patch(1, DEFAULT_KEY));
    write(&policy, &a, "UPDATE", "", &removed, Some(&old)).expect("the agent's removal of its startup taint");
    // The only taint: the list is left empty.
    let mut alone = old.clone();
    alone["spec"]["taints"] = json!([{"key": DEFAULT_KEY, "effect": "NoSchedule"}]);
    write(&policy, &a, "UPDATE", "", &patched(&alone, removal_patch(0, DEFAULT_KEY)), Some(&alone))
        .expect("removing the only taint");

    let taint_says = "may only remove the taint eni-ipam.io/agent-not-ready:NoSchedule";
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "another taint removed",
            patched(&old, json!([{"op": "remove", "path": "/spec/taints/0"}])),
            taint_says,
        ),
        ("every taint removed", merged(&old, &json!({"spec": {"taints": []}})), taint_says),
        (
            "ours removed and one added",
            merged(
                &old,
                &json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                {"key": "evil", "effect": "NoExecute"}]}}),
            ),
            taint_says,
        ),
        ("nothing removed", merged(&old, &json!({"metadata": {"labels": {"x": "y"}}})), taint_says),
        (
            "ours with another effect",
            merged(
                &old,
                &json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoExecute"}]}}),
            ),
            taint_says,
        ),
        (
            "cordoned on the way",
            merged(&removed, &json!({"spec": {"unschedulable": true}})),
            "may not change a Node's spec",
        ),
        (
            "another instance",
            merged(&removed, &json!({"spec": {"providerID": "aws:///us-east-1a/i-0evil"}})),
            "may not change a Node's spec",
        ),
        (
            "pod range dropped",
            merged(&removed, &json!({"spec": {"podCIDR": null}})),
            "may not change a Node's spec",
        ),
        (
            "relabelled",
            merged(&removed, &json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}})),
            "labels, annotations",
        ),
        (
            "annotated",
            merged(&removed, &json!({"metadata": {"annotations": {"a": "b"}}})),
            "labels, annotations",
        ),
        ("finalizer", merged(&removed, &json!({"metadata": {"finalizers": ["x"]}})), "labels, annotations"),
    ];
    for (what, object, says) in cases {
        let result = write(&policy, &a, "UPDATE", "", &object, Some(&old));
        assert!(result.is_err(), "must be refused: {what}");
        refused(result, says);
    }
    // Another node's Node, its status, a create, a token without a node name.
    let b = stored("node-b", DEFAULT_KEY);
    refused(
        write(&policy, &a, "UPDATE", "", &patched(&b, removal_patch(1, DEFAULT_KEY)), Some(&b)),
        "the eni-ipam agent of node node-a may write only Node node-a, not node-b",
    );
    refused(write(&policy, &a, "UPDATE", "status", &removed, Some(&old)), "does not write a Node's status");
    refused(write(&policy, &a, "CREATE", "", &stored("node-a", "x"), None), "never creates a Node");
    let mut tokenless = a.clone();
    tokenless.extra.clear();
    refused(write(&policy, &tokenless, "UPDATE", "", &removed, Some(&old)), "carries no node name");
    // Others are not held to it.
    write(
        &policy,
        &UserInfo::admin(),
        "UPDATE",
        "",
        &merged(&old, &json!({"spec": {"taints": []}})),
        Some(&old),
    )
    .expect("an admin is not matched");
}

#[test]
fn the_key_is_the_configured_one() {
    let key = "startup-taint.cluster-autoscaler.kubernetes.io/eni-ipam";
    let set = format!("agent.startupTaint.key={key}");
    let policy = node_policy(&[&set]).expect("rendered");
    let a = agent_of("node-a");
    let old = stored("node-a", key);
    write(&policy, &a, "UPDATE", "", &patched(&old, removal_patch(1, key)), Some(&old)).expect("its key");
    let default = stored("node-a", DEFAULT_KEY);
    refused(
        write(&policy, &a, "UPDATE", "", &patched(&default, removal_patch(1, DEFAULT_KEY)), Some(&default)),
        "may only remove the taint startup-taint.cluster-autoscaler.kubernetes.io/eni-ipam:NoSchedule",
    );
    // The agent is told the same key, and the pods that run before any node is ready tolerate it.
    let objects = rendered(&[&set]);
    assert_eq!(agent_flag(&objects, "startup-taint").as_deref(), Some(key));
    assert_eq!(agent_flag(&objects, "startup-taint-resource").as_deref(), Some("eni-ipam.io/ip"));
    for deployment in ["eni-ipam-operator", "eni-ipam-webhook"] {
        let object = objects
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == deployment)
            .expect("rendered");
        let tolerations = object["spec"]["template"]["spec"]["tolerations"].as_array().unwrap();
        assert!(
            tolerations
                .iter()
                .any(|t| t["key"] == key && t["operator"] == "Exists" && t["effect"] == "NoSchedule"),
            "{deployment} tolerates the startup taint: {tolerations:?}"
        );
        assert!(
            tolerations.iter().any(|t| t["key"] == "node.kubernetes.io/not-ready"),
            "{deployment} keeps its own tolerations"
        );
    }
}

fn node_verbs(objects: &[Value]) -> Vec<String> {
    let role = objects
        .iter()
        .find(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == "eni-ipam-agent")
        .expect("the agent's ClusterRole");
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["resources"].as_array().unwrap().iter().any(|x| x == "nodes"))
        .flat_map(|r| r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn off_the_agent_never_writes_a_node() {
    assert_eq!(node_verbs(&rendered(&[])), ["get", "patch"]);
    let objects = rendered(&["agent.startupTaint.enabled=false"]);
    assert_eq!(node_verbs(&objects), ["get"], "no patch on Nodes");
    assert!(node_policy(&["agent.startupTaint.enabled=false"]).is_none());
    assert_eq!(agent_flag(&objects, "startup-taint").as_deref(), Some(""));
    let operator = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "eni-ipam-operator")
        .unwrap();
    assert!(
        !operator["spec"]["template"]["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == DEFAULT_KEY)
    );
    // The ENINode policy stays; the Node policy needs writePolicy too.
    assert!(node_policy(&["agent.writePolicy=false"]).is_none());
    // A key that is not a taint key is refused at install.
    let error = Helm::default()
        .template(&[], &["agent.startupTaint.key=not a key"])
        .expect_err("refused by the schema");
    assert!(error.contains("startupTaint"), "{error}");
}
