//! A hostile agent: a client holding node A's agent credentials (the bearer token the
//! bed gave A's agent, which the stand-in maps to the agent's service account with
//! `authentication.kubernetes.io/node-name` = A, as a bound token would be) writes
//! what a compromised node would: node B's ENINode (its instance id, pool, release
//! answers, used IPs, a create under another name) and the operator's fields of its own
//! (pool, ENIs, knobs, release marks), and Nodes (B's taints, A cordoned or relabelled).
//! The stand-in enforces the chart's ValidatingAdmissionPolicies with a CEL interpreter,
//! as kube-apiserver would: every write must be refused, and B's ENINode, A's pool and
//! both Nodes must read as before. Then a pod
//! on A still gets an IP (A's real agent works under the same policy), and the audit.

use std::time::Duration;

use eni_ipam_kube_standin::{ENINODES, NODES};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::{Value, json};

use crate::bed::{Bed, agent_token};
use crate::safety::SafetyRow;
use crate::scenarios::{Run, Size};

const MERGE: &str = "application/merge-patch+json";
const APPLY: &str = "application/apply-patch+yaml";

/// One hostile request: what it tries, where, and how.
struct Attempt {
    what: &'static str,
    method: reqwest::Method,
    path: String,
    content_type: &'static str,
    body: Value,
}

fn patch(what: &'static str, path: String, content_type: &'static str, body: Value) -> Attempt {
    Attempt { what, method: reqwest::Method::PATCH, path, content_type, body }
}

/// The writes a compromised node A would try.
fn attempts(a: &str, b: &str, b_pool: &[String], foreign_ip: &str) -> Vec<Attempt> {
    let eninode = |n: &str| format!("/apis/eni-ipam.io/v1alpha1/eninodes/{n}");
    let status = |n: &str| format!("/apis/eni-ipam.io/v1alpha1/eninodes/{n}/status");
    let node = |n: &str| format!("/api/v1/nodes/{n}");
    let ready: serde_json::Map<String, Value> =
        b_pool.iter().map(|ip| (ip.clone(), json!("ready"))).collect();
    let applied = |release: Value| json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode", "status": {"release": release}});
    let apply_path = |n: &str| format!("{}?fieldManager=eni-ipam-agent&force=true", status(n));
    vec![
        patch("B: spec.instanceId", eninode(b), MERGE, json!({"spec": {"instanceId": "i-0hostile"}})),
        patch("B: spec.pool emptied", eninode(b), MERGE, json!({"spec": {"pool": null}})),
        patch("B: release answered ready (apply)", apply_path(b), APPLY, applied(json!(ready))),
        patch("B: release answered ready (merge)", status(b), MERGE, json!({"status": {"release": ready}})),
        patch("B: status.used emptied", status(b), MERGE, json!({"status": {"used": null, "inUse": 0}})),
        Attempt {
            what: "create an ENINode for no node of A's",
            method: reqwest::Method::POST,
            path: "/apis/eni-ipam.io/v1alpha1/eninodes".into(),
            content_type: "application/json",
            body: json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode", "metadata": {"name": format!("{b}-shadow")},
                "spec": {"instanceId": "i-0hostile", "instanceType": "x", "zone": "z", "vpcId": ""}}),
        },
        patch(
            "A: spec.pool gets an IP",
            eninode(a),
            MERGE,
            json!({"spec": {"pool": {foreign_ip: {"eni": "eni-hostile", "subnet": "subnet-hostile"}}}}),
        ),
        patch("A: spec.ipam.preAllocate", eninode(a), MERGE, json!({"spec": {"ipam": {"preAllocate": 200}}})),
        patch("A: status.enis", status(a), MERGE, json!({"status": {"enis": null, "available": 999}})),
        patch("A: release marked by the agent", apply_path(a), APPLY, applied(json!({foreign_ip: "marked"}))),
        // Nodes: the agent may only take its own startup taint off (the chart's Node policy).
        patch(
            "B's Node: tainted",
            node(b),
            MERGE,
            json!({"spec": {"taints": [{"key": "hostile", "effect": "NoSchedule"}]}}),
        ),
        patch("A's Node: cordoned", node(a), MERGE, json!({"spec": {"unschedulable": true}})),
        patch(
            "A's Node: labelled control plane",
            node(a),
            MERGE,
            json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}}),
        ),
    ]
}

/// Runs the scenario on nodes 0 (A) and 1 (B) of `bed`.
pub async fn run(bed: &mut Bed, progress: &(dyn Fn(&str) + Sync)) -> SafetyRow {
    let mut row = SafetyRow::new("hostile agent (node A's token)");
    let (a, b) = (bed.nodes[0].name.clone(), bed.nodes[1].name.clone());
    progress(&format!(
        "  hostile agent: {a}'s agent credentials write {b}'s ENINode and its own operator fields"
    ));
    let b_before = bed.standin.get(ENINODES, "", &b).expect("node B has its ENINode");
    let nodes_before = [&a, &b].map(|n| bed.standin.get(NODES, "", n).expect("the Node")["spec"].clone());
    let a_pool_before =
        bed.standin.get(ENINODES, "", &a).expect("node A has its ENINode")["spec"]["pool"].clone();
    let b_pool: Vec<String> =
        b_before["spec"]["pool"].as_object().into_iter().flatten().map(|(ip, _)| ip.clone()).collect();
    let foreign_ip = b_pool.first().cloned().unwrap_or_else(|| "10.255.255.254".into());
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}", bed.standin.addr().port());
    let token = agent_token(&a);
    let mut refusals = Vec::new();
    for attempt in attempts(&a, &b, &b_pool, &foreign_ip) {
        let answer = http
            .request(attempt.method.clone(), format!("{base}{}", attempt.path))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .header(CONTENT_TYPE, attempt.content_type)
            .body(attempt.body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: the stand-in did not answer: {e}", attempt.what));
        let code = answer.status().as_u16();
        let text = answer.text().await.unwrap_or_default();
        if (200..300).contains(&code) {
            row.hostile_writes_accepted += 1;
            progress(&format!("    ACCEPTED {}: {code} {text}", attempt.what));
        } else {
            refusals.push(code);
            let message: Value = serde_json::from_str(&text).unwrap_or_default();
            progress(&format!(
                "    refused {}: {code} {}",
                attempt.what,
                message["message"].as_str().unwrap_or(&text)
            ));
        }
    }
    // What the stand-in holds, whatever it answered.
    let b_after = bed.standin.get(ENINODES, "", &b).expect("node B keeps its ENINode");
    let b_spec_changed = b_after["spec"]["instanceId"] != b_before["spec"]["instanceId"]
        || b_after["spec"]["pool"].is_null() && !b_before["spec"]["pool"].is_null();
    let b_ready_added = b_after["status"]["release"]
        .as_object()
        .into_iter()
        .flatten()
        .any(|(ip, state)| state == "ready" && b_before["status"]["release"][ip.as_str()] != "ready");
    let a_after = bed.standin.get(ENINODES, "", &a).expect("node A keeps its ENINode");
    let a_changed = a_after["spec"]["pool"].get(foreign_ip.as_str()).is_some()
        && a_pool_before.get(foreign_ip.as_str()).is_none()
        || a_after["spec"]["ipam"]["preAllocate"] == 200
        || a_after["status"]["available"] == 999;
    let shadow = bed.standin.get(ENINODES, "", &format!("{b}-shadow")).is_some();
    let nodes_after = [&a, &b].map(|n| bed.standin.get(NODES, "", n).expect("the Node")["spec"].clone());
    let a_node = bed.standin.get(NODES, "", &a).expect("node A's Node");
    let node_changed = nodes_after != nodes_before
        || a_node["metadata"]["labels"].get("node-role.kubernetes.io/control-plane").is_some();
    let stored =
        [b_spec_changed, b_ready_added, a_changed, shadow, node_changed].iter().filter(|x| **x).count();
    row.hostile_writes_accepted = row.hostile_writes_accepted.max(stored);

    // A's own agent still writes under the policy: a pod on A gets an IP.
    let pod = "hostile-agent-check";
    bed.create_pod_on(pod, &a, json!([])).await;
    bed.wait_all_running(Duration::from_secs(60)).await;
    bed.delete_pod(pod);
    // The pod may have grown A's pool: an IP assigned in the cloud shows before spec.pool does.
    let run = Run::new(bed, Size::new(false), progress);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut findings = run.audit_now().await;
    while !findings.clean() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        findings = run.audit_now().await;
    }
    row.double_ips = findings.double_ips.len();
    row.note = format!(
        "{} writes refused ({}); a pod on {a} got its IP after",
        refusals.len(),
        refusals.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
    );
    if !findings.clean() {
        row.note.push_str(&format!("; audit: {findings:?}"));
    }
    row
}
