//! The agent's Kubernetes calls against a `tower_test` mock apiserver that
//! records every request: registration from both clouds' providerIDs
//! (exact method, path, body), adoption, and coalesced `status.used` writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_agent::ipam::Ipam;
use eni_ipam_agent::kube_side::{
    KEEP_NODE_KNOBS_ANNOTATION, KNOBS_LAYERED_ANNOTATION, Reporter, SpecDefaults, register_once,
};
use eni_ipam_agent::metrics::Metrics;
use eni_ipam_agent::pool::{CapacityRule, SubnetMap};
use eni_ipam_agent::state::StateStore;
use eni_ipam_api::{AllocateRequest, PoolOverrides};
use http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    content_type: String,
    body: Value,
}

/// A tiny apiserver: one Node, at most one ENINode, status applies merged into it.
struct Mock {
    node: Value,
    eninode: Option<Value>,
    seen: Vec<Seen>,
}

fn not_found(name: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
           "message": format!("eninodes {name} not found")})
}

fn start(node: Value, eninode: Option<Value>) -> (kube::Client, Arc<Mutex<Mock>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let mock = Arc::new(Mutex::new(Mock { node, eninode, seen: Vec::new() }));
    let state = mock.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let content_type =
                parts.headers.get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            let uri = parts.uri.to_string();
            let method = parts.method.to_string();
            let mut m = state.lock().unwrap();
            m.seen.push(Seen { method: method.clone(), uri: uri.clone(), content_type, body: body.clone() });
            let path = parts.uri.path();
            let (code, answer) = match (method.as_str(), path) {
                ("GET", p) if p.starts_with("/api/v1/nodes/") => (200, m.node.clone()),
                ("GET", "/apis/eni-ipam.io/v1alpha1/eninodes/n1") => match &m.eninode {
                    Some(e) => (200, e.clone()),
                    None => (404, not_found("n1")),
                },
                ("POST", "/apis/eni-ipam.io/v1alpha1/eninodes") => {
                    let mut created = body.clone();
                    created["metadata"]["resourceVersion"] = json!("1");
                    created["metadata"]["uid"] = json!("eninode-uid");
                    m.eninode = Some(created.clone());
                    (201, created)
                }
                ("PATCH", "/apis/eni-ipam.io/v1alpha1/eninodes/n1") => {
                    let mut merged = m.eninode.clone().unwrap();
                    json_merge(&mut merged, &body);
                    m.eninode = Some(merged.clone());
                    (200, merged)
                }
                ("PATCH", "/apis/eni-ipam.io/v1alpha1/eninodes/n1/status") => {
                    let mut merged = m.eninode.clone().unwrap();
                    merged["status"] = body["status"].clone();
                    m.eninode = Some(merged.clone());
                    (200, merged)
                }
                _ => (404, not_found(path)),
            };
            drop(m);
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), mock)
}

fn json_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn node(provider_id: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": "n1", "uid": "node-uid-1", "resourceVersion": "5", "labels": labels},
           "spec": {"providerID": provider_id}})
}

#[tokio::test]
async fn registration_creates_the_eninode_from_either_clouds_provider_id() {
    let cases = [
        (
            "aws:///us-east-1a/i-0abc123",
            json!({"node.kubernetes.io/instance-type": "m5.large"}),
            json!({"instanceId": "i-0abc123", "instanceType": "m5.large", "zone": "us-east-1a"}),
        ),
        (
            "cn-hangzhou.i-bp1xyz",
            json!({"node.kubernetes.io/instance-type": "ecs.g7.large", "topology.kubernetes.io/zone": "cn-hangzhou-h"}),
            json!({"instanceId": "i-bp1xyz", "instanceType": "ecs.g7.large", "zone": "cn-hangzhou-h"}),
        ),
    ];
    // The flags an admin set go into the spec of an ENINode the agent creates; unset ones stay
    // out, so the cluster-wide knobs reach the node.
    let defaults = SpecDefaults {
        knobs: PoolOverrides { pre_allocate: Some(12), min_allocate: Some(4), ..Default::default() },
        first_interface_index: Some(1),
        subnet_ids: vec!["subnet-pods".into()],
        subnet_tags: [("tier".to_owned(), "pods".to_owned())].into(),
        security_groups: vec!["sg-pods".into()],
    };
    for (provider_id, labels, want_spec) in cases {
        let (client, mock) = start(node(provider_id, labels), None);
        let eninode = register_once(&client, "n1", &defaults).await.unwrap();
        assert_eq!(eninode.spec.instance_id.as_str(), want_spec["instanceId"]);
        let seen = mock.lock().unwrap().seen.clone();
        let calls: Vec<(String, String)> = seen.iter().map(|s| (s.method.clone(), s.uri.clone())).collect();
        assert_eq!(
            calls,
            [
                ("GET".to_owned(), "/api/v1/nodes/n1".to_owned()),
                ("GET".to_owned(), "/apis/eni-ipam.io/v1alpha1/eninodes/n1".to_owned()),
                ("POST".to_owned(), "/apis/eni-ipam.io/v1alpha1/eninodes?".to_owned()),
            ],
            "{provider_id}"
        );
        let created = &seen[2].body;
        assert_eq!(created["kind"], "ENINode");
        for field in ["instanceId", "instanceType", "zone"] {
            assert_eq!(created["spec"][field], want_spec[field], "{provider_id} {field}");
        }
        assert_eq!(created["spec"]["ipam"], json!({"preAllocate": 12, "minAllocate": 4}));
        assert_eq!(created["metadata"]["annotations"][KNOBS_LAYERED_ANNOTATION], "true");
        assert_eq!(created["spec"]["firstInterfaceIndex"], 1);
        assert_eq!(created["spec"]["subnetIds"], json!(["subnet-pods"]));
        assert_eq!(created["spec"]["subnetTags"], json!({"tier": "pods"}));
        assert_eq!(created["spec"]["securityGroups"], json!(["sg-pods"]));
        assert_eq!(
            created["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid-1"}])
        );
    }
}

#[tokio::test]
async fn without_flags_a_new_eninode_carries_no_knobs() {
    let labels = json!({"node.kubernetes.io/instance-type": "m5.large"});
    let (client, mock) = start(node("aws:///us-east-1a/i-1", labels), None);
    register_once(&client, "n1", &SpecDefaults::default()).await.unwrap();
    let created = mock.lock().unwrap().seen[2].body.clone();
    for field in ["ipam", "firstInterfaceIndex", "subnetIds", "subnetTags", "securityGroups"] {
        assert_eq!(created["spec"].get(field), None, "{field} is left to the cluster-wide knobs");
    }
}

/// An ENINode as agents before the knobs ConfigMap wrote it: the DaemonSet's flags copied in.
fn legacy_eninode(annotations: Value) -> Value {
    json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode",
        "metadata": {"name": "n1", "resourceVersion": "3", "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid-1"}]},
        "spec": {"instanceId": "i-1", "instanceType": "m5.large", "zone": "us-east-1a", "vpcId": "vpc-1",
                 "ipam": {"preAllocate": 8, "minAllocate": 0, "maxAllocate": 0, "maxAboveWatermark": 0},
                 "subnetIds": ["subnet-old"], "securityGroups": ["sg-old"], "firstInterfaceIndex": 0,
                 "pool": {"10.0.0.5": {"eni": "eni-1", "subnet": "subnet-1"}}}})
}

#[tokio::test]
async fn knobs_an_older_agent_copied_into_the_spec_are_cleared_once_unless_kept() {
    let labels = json!({"node.kubernetes.io/instance-type": "m5.large"});
    let provider_id = "aws:///us-east-1a/i-1";
    let (client, mock) = start(node(provider_id, labels.clone()), Some(legacy_eninode(json!({}))));
    let flags = SpecDefaults { subnet_ids: vec!["subnet-flag".into()], ..Default::default() };
    let layered = register_once(&client, "n1", &flags).await.unwrap();
    assert!(layered.spec.ipam.is_empty(), "copied knobs cleared: {:?}", layered.spec.ipam);
    assert_eq!(layered.spec.first_interface_index, None);
    assert!(layered.spec.security_groups.is_empty());
    assert_eq!(layered.spec.subnet_ids, ["subnet-flag".into()], "a flag the admin set is written");
    assert_eq!(layered.spec.pool.len(), 1, "the operator's pool is kept");
    assert_eq!(layered.metadata.annotations.as_ref().unwrap()[KNOBS_LAYERED_ANNOTATION], "true");
    let writes =
        |mock: &Arc<Mutex<Mock>>| mock.lock().unwrap().seen.iter().filter(|s| s.method == "PATCH").count();
    assert_eq!(writes(&mock), 1);
    // Once layered, a restart leaves the spec alone, whatever was set on it since.
    register_once(&client, "n1", &SpecDefaults::default()).await.unwrap();
    assert_eq!(writes(&mock), 1, "nothing written for a layered ENINode");

    let keep = json!({KEEP_NODE_KNOBS_ANNOTATION: "true"});
    let (client, _mock) = start(node(provider_id, labels), Some(legacy_eninode(keep)));
    let kept = register_once(&client, "n1", &SpecDefaults::default()).await.unwrap();
    assert_eq!(kept.spec.ipam.pre_allocate, Some(8), "kept on purpose");
    assert_eq!(kept.spec.security_groups, ["sg-old".into()]);
    assert_eq!(kept.metadata.annotations.as_ref().unwrap()[KNOBS_LAYERED_ANNOTATION], "true");
}

#[tokio::test]
async fn registration_adopts_an_existing_eninode_and_refuses_a_bad_provider_id() {
    let existing = json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode",
        "metadata": {"name": "n1", "resourceVersion": "3"},
        "spec": {"instanceId": "i-old", "instanceType": "m5.large", "zone": "us-east-1a", "vpcId": "vpc-1",
                 "pool": {"10.0.0.5": {"eni": "eni-1", "subnet": "subnet-1"}}}});
    let labels = json!({"node.kubernetes.io/instance-type": "m5.large"});
    let (client, mock) = start(node("aws:///us-east-1a/i-new", labels.clone()), Some(existing));
    let adopted = register_once(&client, "n1", &SpecDefaults::default()).await.unwrap();
    assert_eq!(adopted.spec.instance_id.as_str(), "i-new");
    assert_eq!(adopted.spec.pool.len(), 1, "the operator's pool is kept");
    let seen = mock.lock().unwrap().seen.clone();
    let patch = seen.last().unwrap();
    assert_eq!(
        (patch.method.as_str(), patch.uri.as_str()),
        ("PATCH", "/apis/eni-ipam.io/v1alpha1/eninodes/n1?")
    );
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body["metadata"]["ownerReferences"][0]["uid"], "node-uid-1");

    let (client, mock) = start(node("gce://p/z/n1", labels), None);
    let err = register_once(&client, "n1", &SpecDefaults::default()).await.unwrap_err().to_string();
    assert!(err.contains("Node n1") && err.contains("gce://p/z/n1"), "{err}");
    assert_eq!(mock.lock().unwrap().seen.len(), 1, "nothing is written for a node that cannot be identified");
}

#[tokio::test(start_paused = true)]
async fn a_bad_provider_id_is_retried_and_shown_as_a_condition_next_to_the_operators() {
    let existing = json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode",
        "metadata": {"name": "n1", "resourceVersion": "3"},
        "spec": {"instanceId": "i-1", "instanceType": "m5.large", "zone": "z", "vpcId": "vpc-1"},
        "status": {"conditions": [{"type": "PoolReady", "status": "True"}]}});
    let labels = json!({"node.kubernetes.io/instance-type": "m5.large"});
    let (client, mock) = start(node("openstack:///x", labels), Some(existing));
    let gave_up = tokio::time::timeout(
        Duration::from_secs(60),
        eni_ipam_agent::kube_side::register(&client, "n1", &SpecDefaults::default()),
    )
    .await;
    assert!(gave_up.is_err(), "registration keeps retrying while the providerID is bad");
    let seen = mock.lock().unwrap().seen.clone();
    let node_reads = seen.iter().filter(|s| s.uri == "/api/v1/nodes/n1").count();
    assert!((3..=400).contains(&node_reads), "jittered retries within a minute: {node_reads}");
    let condition_patch =
        seen.iter().find(|s| s.uri.ends_with("/eninodes/n1/status?")).expect("a condition is written");
    assert_eq!(condition_patch.content_type, "application/merge-patch+json");
    let conditions = condition_patch.body["status"]["conditions"].as_array().unwrap();
    assert_eq!(conditions[0]["type"], "PoolReady", "the operator's condition is kept");
    assert_eq!(conditions[1]["type"], "Registered");
    assert_eq!(conditions[1]["reason"], "BadNodeIdentity");
    assert!(conditions[1]["message"].as_str().unwrap().contains("openstack:///x"));
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_200_allocations_is_written_in_few_coalesced_status_applies() {
    let pool: serde_json::Map<String, Value> = (0..250u32)
        .map(|i| {
            (format!("10.1.{}.{}", i / 200, i % 200 + 10), json!({"eni": "eni-1", "subnet": "subnet-1"}))
        })
        .collect();
    let eninode = json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode",
        "metadata": {"name": "n1", "resourceVersion": "3"},
        "spec": {"instanceId": "i-1", "instanceType": "m5.large", "zone": "z", "vpcId": "vpc-1", "pool": pool},
        "status": {"release": {"10.1.0.10": "marked", "10.1.0.11": "marked"}}});
    let labels = json!({"node.kubernetes.io/instance-type": "m5.large"});
    let (client, mock) = start(node("aws:///z/i-1", labels), Some(eninode));
    let dir = tempfile::tempdir().unwrap();
    let empty = eni_ipam_agent::pool::NodePool::default();
    let (ipam, _) = Ipam::open("n1", StateStore::new(dir.path().join("state.json")), empty, None).unwrap();
    let ipam = Arc::new(ipam);
    let reporter = Reporter::new(client, "n1".into(), Duration::from_secs(1));
    tokio::spawn(reporter.run(
        ipam.clone(),
        Arc::new(Metrics::default()),
        SubnetMap::new(),
        CapacityRule::default(),
    ));
    // The first pass reads the pool and answers the marks.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ipam.health().ipam.available, 250);
    for i in 0..200 {
        let request = AllocateRequest {
            container_id: format!("c{i}"),
            if_name: "eth0".into(),
            pod_namespace: "default".into(),
            pod_name: format!("p{i}"),
            network: String::new(),
        };
        ipam.allocate(&request).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = mock.lock().unwrap().seen.clone();
    let applies: Vec<&Seen> = seen.iter().filter(|s| s.method == "PATCH").collect();
    assert!(
        (2..=3).contains(&applies.len()),
        "200 allocations over 1 s with a 1 s interval: the first write plus at most two more, got {}",
        applies.len()
    );
    for apply in &applies {
        assert_eq!(
            apply.uri,
            "/apis/eni-ipam.io/v1alpha1/eninodes/n1/status?&force=true&fieldManager=eni-ipam-agent"
        );
        assert_eq!(apply.content_type, "application/apply-patch+yaml");
    }
    let first = &applies[0].body["status"];
    assert_eq!(
        first["release"],
        json!({"10.1.0.10": "ready", "10.1.0.11": "ready"}),
        "free marked IPs are ready"
    );
    let last = &applies.last().unwrap().body["status"];
    assert_eq!(last["used"].as_object().unwrap().len(), 200);
    assert_eq!(last["inUse"], 200);
    assert_eq!(last["used"]["10.1.0.12"], "default/p0", "marked IPs are never handed out");
}
