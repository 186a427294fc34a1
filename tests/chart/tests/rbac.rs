//! Least privilege, pinned: the exact rules each component gets, so a wider
//! grant is a visible change to this file. The reasons for each verb are in
//! the templates' comments (templates/operator/rbac.yaml, agent/rbac.yaml).

use std::collections::BTreeMap;

use eni_ipam_chart_tests::{Helm, parse_documents};
use serde_json::Value;

/// `kind/name` -> "group resource: verbs" lines, for every Role and ClusterRole.
fn rules(objects: &[Value]) -> BTreeMap<String, Vec<String>> {
    let mut found = BTreeMap::new();
    for object in objects.iter().filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role") {
        let name =
            format!("{}/{}", object["kind"].as_str().unwrap(), object["metadata"]["name"].as_str().unwrap());
        let mut lines = Vec::new();
        for rule in object["rules"].as_array().into_iter().flatten() {
            let list = |key: &str| -> String {
                rule[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            lines.push(format!("[{}] {}: {}", list("apiGroups"), list("resources"), list("verbs")));
        }
        found.insert(name, lines);
    }
    found
}

#[test]
fn each_component_gets_only_what_it_uses() {
    let objects = parse_documents(&Helm::default().render(&[], &[]));
    let expected: BTreeMap<String, Vec<String>> = [
        (
            "ClusterRole/eni-ipam-operator",
            vec![
                "[eni-ipam.io] eninodes: get,list,watch,patch",
                "[eni-ipam.io] eninodes/status: patch",
                "[] nodes: get,list,watch",
                "[] namespaces: get",
                "[,events.k8s.io] events: create,patch",
            ],
        ),
        ("Role/eni-ipam-operator-leader-election", vec!["[coordination.k8s.io] leases: get,create,update"]),
        ("Role/eni-ipam-operator-knobs", vec!["[] configmaps: get,list,watch"]),
        (
            "ClusterRole/eni-ipam-agent",
            vec![
                "[eni-ipam.io] eninodes: get,create,patch",
                "[eni-ipam.io] eninodes/status: patch",
                "[] nodes: get,patch",
                "[events.k8s.io] events: create",
                "[networking.k8s.io] servicecidrs: list",
            ],
        ),
        // The uninstall hook Jobs (templates/uninstall/rbac.yaml): request, then delete ENINodes;
        // watch the agent pods of the release namespace.
        ("ClusterRole/eni-ipam-uninstall", vec!["[eni-ipam.io] eninodes: list,patch,delete"]),
        ("Role/eni-ipam-uninstall", vec!["[] pods: list"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(rules(&objects), expected);
    let operator =
        objects.iter().find(|o| o["metadata"]["name"] == "eni-ipam-operator" && o["kind"] == "ClusterRole");
    let namespaces =
        operator.unwrap()["rules"].as_array().unwrap().iter().find(|r| r["resources"][0] == "namespaces");
    assert_eq!(
        namespaces.unwrap()["resourceNames"],
        serde_json::json!(["kube-system"]),
        "the operator reads the kube-system namespace (its UID) and no other"
    );
}

#[test]
fn only_the_agent_container_and_the_operator_get_an_apiserver_token() {
    let objects = parse_documents(&Helm::default().render(&[], &[]));
    let workload = |kind: &str, suffix: &str| -> Value {
        objects
            .iter()
            .find(|o| {
                o["kind"] == kind && o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with(suffix))
            })
            .unwrap_or_else(|| panic!("no {kind} *{suffix}"))["spec"]["template"]["spec"]
            .clone()
    };
    let webhook = workload("Deployment", "-webhook");
    assert_eq!(webhook["automountServiceAccountToken"], false, "the webhook calls no API");
    let agent_pod = workload("DaemonSet", "-agent");
    assert_eq!(agent_pod["automountServiceAccountToken"], false);
    for container in agent_pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(agent_pod["initContainers"].as_array().unwrap())
    {
        let mounts_token = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["name"] == "kube-api-access");
        assert_eq!(mounts_token, container["name"] == "agent", "token mount of {}", container["name"]);
    }
    let no_binding_for_webhook = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")
        .all(|b| !b["subjects"].to_string().contains("-webhook"));
    assert!(no_binding_for_webhook, "the webhook must have no RBAC");
}

#[test]
fn agent_capabilities_follow_the_values() {
    let caps = |sets: &[&str]| -> Value {
        let objects = parse_documents(&Helm::default().render(&[], sets));
        let daemonset = objects.iter().find(|o| o["kind"] == "DaemonSet").expect("DaemonSet").clone();
        let agent = daemonset["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "agent")
            .unwrap()
            .clone();
        assert_eq!(agent["securityContext"]["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert!(agent["securityContext"].get("privileged").is_none(), "never privileged");
        agent["securityContext"]["capabilities"]["add"].clone()
    };
    assert_eq!(caps(&[]), serde_json::json!(["BPF", "NET_ADMIN"]));
    assert_eq!(caps(&["agent.socketGroup=cni"]), serde_json::json!(["BPF", "NET_ADMIN", "CHOWN"]));
    assert_eq!(caps(&["agent.datapath.enabled=false"]), serde_json::json!(["NET_ADMIN"]), "policy routing");
}
