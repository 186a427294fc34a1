//! The chart's ValidatingAdmissionPolicy on the agent's ENINode writes
//! (templates/agent/write-policy.yaml), rendered by helm and evaluated with a CEL
//! interpreter the way kube-apiserver evaluates it (eni-ipam-kube-standin's `policy`):
//! the writes the agent really makes (built with the agent's own functions where it has
//! them) pass; another node's ENINode, the operator's fields and a token without a
//! node name are refused. The objects are as the apiserver would hand them to the
//! policy: the stored one (`oldObject`) and the one after the patch (`object`).

mod agent_policy;

use agent_policy::{AGENT_SA, NAMESPACE, admit, agent_of, refused};
use eni_ipam_agent::kube_side::{StatusReport, layering_patch, release_report, status_apply_body};
use eni_ipam_api::ReleaseState;
use eni_ipam_chart_tests::{Helm, admission_policies, parse_documents, validate_kubernetes};
use eni_ipam_kube_standin::{AdmissionPolicy, Denial, UserInfo};
use serde_json::{Value, json};

fn rendered(sets: &[&str]) -> Vec<Value> {
    parse_documents(&Helm::default().render(&[], sets))
}

/// The default render's policy, compiled once for all the checks of a test binary.
fn policy() -> &'static AdmissionPolicy {
    static POLICY: std::sync::OnceLock<AdmissionPolicy> = std::sync::OnceLock::new();
    POLICY.get_or_init(compile_rendered)
}

fn compile_rendered() -> AdmissionPolicy {
    let (policy, binding) = admission_policies(&rendered(&[]))
        .into_iter()
        .find(|(p, _)| p["metadata"]["name"] == "eni-ipam-agent-writes")
        .expect("the chart renders the policy on the agent's ENINode writes");
    AdmissionPolicy::compile(&policy, &binding).unwrap_or_else(|e| panic!("{e}"))
}

/// An ENINode as the cluster holds it after the agent created it and the operator worked it.
fn stored(node: &str) -> Value {
    json!({
        "apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode",
        "metadata": {"name": node, "uid": "u-1", "resourceVersion": "7",
            "annotations": {"eni-ipam.io/knobs-layered": "true"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": "n-1"}]},
        "spec": {"instanceId": "i-0aaa", "instanceType": "m5.large", "zone": "us-east-1a", "vpcId": "",
            "poolInstanceId": "i-0aaa", "primaryEniIps": ["10.0.1.10", "10.0.1.11"],
            "pool": {"10.0.1.10": {"eni": "eni-1", "subnet": "subnet-1"},
                     "10.0.1.11": {"eni": "eni-1", "subnet": "subnet-1"}}},
        "status": {
            "used": {"10.0.1.10": "default/web"}, "inUse": 1, "available": 2, "eniCount": 1,
            "enis": {"eni-1": {"mac": "0a:00:00:00:00:01", "deviceIndex": 1, "subnet": "subnet-1",
                               "ips": ["10.0.1.10", "10.0.1.11"]}},
            "release": {"10.0.1.11": "marked"},
            "conditions": [{"type": "PoolReady", "status": "True", "reason": "AtTarget"}]
        }
    })
}

fn merged(old: &Value, patch: &Value) -> Value {
    let mut next = old.clone();
    json_patch::merge(&mut next, patch);
    next
}

/// What the apiserver stores after the agent's server-side apply of `status.used`,
/// `inUse` and `release` (fields it owns whole).
fn applied_status(old: &Value, body: &Value) -> Value {
    let mut next = old.clone();
    for field in ["used", "inUse", "release"] {
        next["status"][field] = body["status"][field].clone();
    }
    next
}

fn check(
    user: &UserInfo,
    operation: &str,
    subresource: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Denial> {
    admit(policy(), ("eni-ipam.io", "v1alpha1", "eninodes"), user, operation, subresource, object, old)
}

fn update(user: &UserInfo, subresource: &str, old: &Value, new: &Value) -> Result<(), Denial> {
    check(user, "UPDATE", subresource, new, Some(old))
}

#[test]
fn the_policy_renders_and_validates_against_kubernetes_1_32() {
    let manifests = Helm::default().render(&[], &[]);
    let objects = parse_documents(&manifests);
    let policy = objects.iter().find(|o| o["kind"] == "ValidatingAdmissionPolicy").expect("rendered");
    assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
    assert_eq!(policy["spec"]["failurePolicy"], "Fail");
    let only: String = objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("ValidatingAdmissionPolicy")))
        .map(|o| format!("---\n{}\n", serde_json::to_string(o).unwrap()))
        .collect();
    validate_kubernetes(&only, "1.32.0").unwrap_or_else(|report| panic!("{report}"));
    // The validator knows this kind: an unknown field in it is refused.
    let broken = only.replacen("\"failurePolicy\"", "\"failurePolicyy\"", 1);
    let report = validate_kubernetes(&broken, "1.32.0").expect_err("an unknown field must be refused");
    assert!(report.contains("failurePolicyy"), "{report}");
    // Off by value, for clusters older than 1.30, which are refused with it on.
    assert!(!rendered(&["agent.writePolicy=false"]).iter().any(|o| o["kind"] == "ValidatingAdmissionPolicy"));
    let helm = Helm::default();
    let refused =
        helm.template_for("1.29.4", &[], &[]).expect_err("1.29 has no ValidatingAdmissionPolicy v1");
    assert!(
        refused.contains("agent.writePolicy needs Kubernetes 1.30 or later") && refused.contains("v1.29.4"),
        "{refused}"
    );
    helm.template_for("1.29.4", &[], &["agent.writePolicy=false"]).expect("renders without the policy");
    helm.template_for("1.30.0", &[], &[]).expect("1.30 takes the policy");
}

#[test]
fn the_agent_may_make_every_write_it_makes_on_its_own_eninode() {
    let a = agent_of("node-a");
    // Create, as register_once does: spec from the Node and the knob flags, no pool.
    let created = json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode",
        "metadata": {"name": "node-a", "annotations": {"eni-ipam.io/knobs-layered": "true"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "n-1"}]},
        "spec": {"instanceId": "i-0aaa", "instanceType": "m5.large", "zone": "us-east-1a", "vpcId": "",
                 "ipam": {"preAllocate": 4}, "securityGroups": ["sg-1"]}});
    check(&a, "CREATE", "", &created, None).expect("create its own ENINode");

    // The status report: used, inUse and the answer to the operator's mark.
    let old = stored("node-a");
    let used = [("10.0.1.10".to_owned(), "default/web".to_owned())].into();
    let current = [("10.0.1.11".to_owned(), ReleaseState::Marked)].into();
    let report = StatusReport { release: release_report(&current, &used), used };
    assert_eq!(report.release.get("10.0.1.11"), Some(&ReleaseState::Ready));
    update(&a, "status", &old, &applied_status(&old, &status_apply_body(&report, None)))
        .expect("status report");

    // Its condition Registered, merged into the list it read.
    let mut conditions = old["status"]["conditions"].as_array().unwrap().clone();
    conditions.push(json!({"type": "Registered", "status": "False", "reason": "BadNodeIdentity"}));
    update(&a, "status", &old, &merged(&old, &json!({"status": {"conditions": conditions}})))
        .expect("condition");

    // The uninstall answer, set and removed.
    let armed = merged(&old, &json!({"metadata": {"annotations": {"eni-ipam.io/uninstall-armed": "true"}}}));
    update(&a, "", &old, &armed).expect("arm");
    update(
        &a,
        "",
        &armed,
        &merged(&armed, &json!({"metadata": {"annotations": {"eni-ipam.io/uninstall-armed": null}}})),
    )
    .expect("disarm");

    // Adoption by a Node of the same name on a new instance.
    let adopted = merged(
        &old,
        &json!({
        "metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-a", "uid": "n-2"}]},
        "spec": {"instanceId": "i-0bbb", "instanceType": "m5.xlarge", "zone": "us-east-1b"}}),
    );
    update(&a, "", &old, &adopted).expect("adoption");

    // The one-time clearing of knobs an older agent copied (no knobs-layered mark yet).
    let mut older = stored("node-a");
    older["metadata"]["annotations"] = json!({});
    older["spec"]["ipam"] = json!({"preAllocate": 8, "minAllocate": 0});
    let eninode: eni_ipam_api::ENINode = serde_json::from_value(older.clone()).unwrap();
    let patch =
        layering_patch(&eninode, &Default::default()).expect("an older ENINode gets the layering patch");
    update(&a, "", &older, &merged(&older, &patch)).expect("layering");
}

#[test]
fn another_nodes_eninode_is_refused() {
    let a = agent_of("node-a");
    let b = stored("node-b");
    let says = "the eni-ipam agent of node node-a may write only ENINode node-a, not node-b";
    let mut created = b.clone();
    created.as_object_mut().unwrap().remove("status");
    created["spec"].as_object_mut().unwrap().remove("pool");
    created["spec"].as_object_mut().unwrap().remove("poolInstanceId");
    created["spec"].as_object_mut().unwrap().remove("primaryEniIps");
    refused(check(&a, "CREATE", "", &created, None), says);
    refused(update(&a, "", &b, &merged(&b, &json!({"spec": {"instanceId": "i-0evil"}}))), says);
    refused(
        update(&a, "status", &b, &merged(&b, &json!({"status": {"release": {"10.0.1.11": "ready"}}}))),
        says,
    );
    refused(update(&a, "status", &b, &merged(&b, &json!({"status": {"used": {}}}))), says);
}

#[test]
fn the_operators_fields_on_its_own_eninode_are_refused() {
    let a = agent_of("node-a");
    let old = stored("node-a");
    let cases: &[(&str, Value, &str)] = &[
        ("", json!({"spec": {"pool": {"10.0.9.9": {"eni": "eni-9", "subnet": "subnet-9"}}}}), "spec.pool"),
        ("", json!({"spec": {"pool": {"10.0.1.11": null}}}), "spec.pool"),
        // A node must not make the operator's pool of another instance look like its own.
        ("", json!({"spec": {"poolInstanceId": "i-0bbb"}}), "poolInstanceId"),
        ("", json!({"spec": {"poolInstanceId": null}}), "poolInstanceId"),
        // Nor claim another CNI's IPs on the primary ENI as ones an operator failover left behind.
        ("", json!({"spec": {"primaryEniIps": ["10.0.1.10"]}}), "primaryEniIps"),
        ("", json!({"spec": {"ipam": {"preAllocate": 500}}}), "knobs"),
        ("", json!({"spec": {"securityGroups": ["sg-open"]}}), "knobs"),
        ("", json!({"spec": {"vpcId": "vpc-other"}}), "knobs"),
        (
            "",
            json!({"metadata": {"annotations": {"eni-ipam.io/uninstall-requested": "true"}}}),
            "annotations",
        ),
        ("", json!({"metadata": {"annotations": {"eni-ipam.io/knobs-layered": null}}}), "annotations"),
        ("", json!({"metadata": {"labels": {"x": "y"}}}), "labels"),
        ("", json!({"metadata": {"finalizers": ["keep"]}}), "finalizers"),
        (
            "",
            json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "node-b", "uid": "n-9"}]}}),
            "only its own Node",
        ),
        ("status", json!({"status": {"available": 40}}), "operator only"),
        ("status", json!({"status": {"eniCount": 3}}), "operator only"),
        (
            "status",
            json!({"status": {"enis": {"eni-2": {"mac": "x", "deviceIndex": 2, "subnet": "s"}}}}),
            "operator only",
        ),
        ("status", json!({"status": {"errorMessage": "hi"}}), "operator only"),
        ("status", json!({"status": {"conditions": []}}), "operator only"),
        ("status", json!({"status": {"release": {"10.0.1.10": "ready"}}}), "release marks"),
        ("status", json!({"status": {"release": {"10.0.1.11": "released"}}}), "release marks"),
        (
            "status",
            json!({"status": {"release": {"10.0.1.11": "ready", "10.0.1.12": "marked"}}}),
            "release marks",
        ),
    ];
    for (subresource, patch, says) in cases {
        let result = update(&a, subresource, &old, &merged(&old, patch));
        assert!(result.is_err(), "must be refused: {patch}");
        refused(result, says);
    }
    // A create may not bring a pool either.
    let mut created = old.clone();
    created.as_object_mut().unwrap().remove("status");
    refused(check(&a, "CREATE", "", &created, None), "spec.pool");
    // Nor the instance a pool was built for.
    created["spec"].as_object_mut().unwrap().remove("pool");
    refused(check(&a, "CREATE", "", &created, None), "poolInstanceId");
    created["spec"].as_object_mut().unwrap().remove("poolInstanceId");
    refused(check(&a, "CREATE", "", &created, None), "primaryEniIps");
}

#[test]
fn a_token_without_one_node_name_is_refused() {
    let old = stored("node-a");
    let new = merged(&old, &json!({"status": {"used": {}}}));
    let says = "carries no node name";
    let mut user = agent_of("node-a");
    user.extra.clear();
    refused(update(&user, "status", &old, &new), says);
    user.extra.insert("authentication.kubernetes.io/pod-name".into(), vec!["agent-x".into()]);
    refused(update(&user, "status", &old, &new), says);
    user.extra
        .insert("authentication.kubernetes.io/node-name".into(), vec!["node-a".into(), "node-b".into()]);
    refused(update(&user, "status", &old, &new), says);
}

#[test]
fn only_the_agents_service_account_is_held_to_it() {
    let old = stored("node-a");
    let pool = merged(&old, &json!({"spec": {"pool": {"10.0.9.9": {"eni": "eni-9", "subnet": "subnet-9"}}}}));
    let operator = UserInfo::service_account_on_node(NAMESPACE, "eni-ipam-operator", "node-c");
    update(&operator, "", &old, &pool).expect("the operator writes the pool");
    update(&UserInfo::admin(), "", &old, &pool).expect("an admin is not matched");
    // Same name in another namespace: another service account, not matched.
    let elsewhere = UserInfo::service_account_on_node("other", AGENT_SA, "node-z");
    update(&elsewhere, "", &old, &pool).expect("another namespace's account is not the agent");
}
