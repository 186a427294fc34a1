//! The exact requests one publish sends, against a tower-test mock apiserver.

use std::collections::BTreeMap;

use eni_ipam_api::{ENINode, ENINodeSpec, ENINodeStatus, EniId, PoolEntry, ReleaseState, SubnetId};
use eni_ipam_operator::kube_store::KubeNodeStore;
use eni_ipam_operator::node_store::{NodeStore, PoolUpdate};
use kube::Api;
use kube::client::Body;
use kube::runtime::{reflector, watcher};
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<http::Request<Body>, http::Response<Body>>;

async fn expect(handle: &mut Handle, method: &str, uri: &str, content_type: &str) -> Value {
    let (req, send) = handle.next_request().await.expect("a request");
    assert_eq!(req.method().as_str(), method);
    assert_eq!(req.uri().to_string(), uri);
    assert_eq!(req.headers()["content-type"], content_type);
    let body: Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    let reply = json!({"apiVersion":"eni-ipam.io/v1alpha1","kind":"ENINode",
        "metadata":{"name":"n1","resourceVersion":"2"},
        "spec":{"instanceId":"i-1","instanceType":"m5.large","zone":"a","vpcId":"v"}});
    send.send_response(http::Response::builder().body(Body::from(reply.to_string().into_bytes())).unwrap());
    body
}

#[tokio::test]
async fn publish_applies_spec_pool_then_status_as_eni_ipam_operator_and_skips_no_ops() {
    let (mock, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = kube::Client::new(mock, "default");
    let (reader, mut writer) = reflector::store::<ENINode>();
    let mut node = ENINode::new("n1", ENINodeSpec::default());
    node.metadata.resource_version = Some("1".into());
    writer.apply_watcher_event(&watcher::Event::Apply(node.clone()));
    let store = KubeNodeStore::new(Api::all(client), reader);
    let pool = BTreeMap::from([(
        "10.0.0.5".to_string(),
        PoolEntry { eni: EniId::from("eni-1"), subnet: SubnetId::from("subnet-1") },
    )]);
    let update = PoolUpdate {
        pool: pool.clone(),
        pool_instance: Some(eni_ipam_api::InstanceId::from("i-1")),
        primary_eni_ips: Some(vec!["10.0.0.5".into(), "10.0.0.9".into()]),
        enis: BTreeMap::new(),
        condition: PoolUpdate::pool_ready(true, "AtTarget", String::new()),
        release: BTreeMap::new(),
        effective: Some(eni_ipam_api::EffectiveIpam {
            pre_allocate: 8,
            sources: BTreeMap::from([("preAllocate".to_owned(), "cluster".to_owned())]),
            ..Default::default()
        }),
        ip_limit: None,
        shortfall: None,
    };
    let server = tokio::spawn(async move {
        let spec = expect(
            &mut handle,
            "PATCH",
            "/apis/eni-ipam.io/v1alpha1/eninodes/n1?&force=true&fieldManager=eni-ipam-operator",
            "application/apply-patch+yaml",
        )
        .await;
        assert_eq!(
            spec,
            json!({"apiVersion":"eni-ipam.io/v1alpha1","kind":"ENINode",
                "spec":{"pool":{"10.0.0.5":{"eni":"eni-1","subnet":"subnet-1"}},"poolInstanceId":"i-1",
                    "primaryEniIps":["10.0.0.5","10.0.0.9"]}})
        );
        let status = expect(
            &mut handle,
            "PATCH",
            "/apis/eni-ipam.io/v1alpha1/eninodes/n1/status?&force=true&fieldManager=eni-ipam-operator",
            "application/apply-patch+yaml",
        )
        .await;
        assert_eq!(status["status"]["available"], 1);
        assert_eq!(status["status"]["eniCount"], 0);
        assert_eq!(status["status"]["conditions"][0]["type"], "PoolReady");
        assert_eq!(status["status"]["conditions"][0]["status"], "True");
        assert_eq!(
            status["status"]["effectiveIpam"]["preAllocate"], 8,
            "the knobs in force, in the same apply"
        );
        assert_eq!(status["status"]["effectiveIpam"]["sources"]["preAllocate"], "cluster");
        assert!(status.get("metadata").is_none() && status.get("spec").is_none());
        handle
    });
    store.publish("n1", update.clone()).await.unwrap();
    let mut handle = server.await.unwrap();
    // Once the cache holds what was published, the same publish sends nothing.
    let mut published = node;
    published.spec.pool = pool;
    published.spec.pool_instance_id = update.pool_instance.clone();
    published.spec.primary_eni_ips = update.primary_eni_ips.clone();
    let mut status =
        ENINodeStatus { available: 1, effective_ipam: update.effective.clone(), ..Default::default() };
    status.conditions = vec![update.condition.clone()];
    published.status = Some(status);
    let (reader, mut writer) = reflector::store::<ENINode>();
    writer.apply_watcher_event(&watcher::Event::Apply(published));
    let (mock, h2) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let store = KubeNodeStore::new(Api::all(kube::Client::new(mock, "default")), reader);
    store.publish("n1", update).await.unwrap();
    drop(store);
    let mut h2 = h2;
    assert!(h2.next_request().await.is_none(), "a no-op publish sends no request");
    handle.allow(0);
}

#[tokio::test]
async fn release_marks_are_a_merge_patch_on_status_that_can_drop_the_agents_answers() {
    let (mock, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let (reader, mut writer) = reflector::store::<ENINode>();
    let mut node = ENINode::new("n1", ENINodeSpec::default());
    node.metadata.resource_version = Some("1".into());
    let condition = PoolUpdate::pool_ready(true, "AtTarget", String::new());
    // The agent answered do-not-release for .6; spec and status are otherwise as published.
    node.status = Some(ENINodeStatus {
        conditions: vec![condition.clone()],
        release: BTreeMap::from([("10.0.0.6".to_string(), ReleaseState::DoNotRelease)]),
        ..Default::default()
    });
    writer.apply_watcher_event(&watcher::Event::Apply(node));
    let store = KubeNodeStore::new(Api::all(kube::Client::new(mock, "default")), reader);
    let update = PoolUpdate {
        pool: BTreeMap::new(),
        pool_instance: None,
        primary_eni_ips: None,
        enis: BTreeMap::new(),
        condition,
        release: BTreeMap::from([
            ("10.0.0.5".to_string(), Some(ReleaseState::Marked)),
            ("10.0.0.6".to_string(), None),
        ]),
        effective: None,
        ip_limit: None,
        shortfall: None,
    };
    let server = tokio::spawn(async move {
        let body = expect(
            &mut handle,
            "PATCH",
            "/apis/eni-ipam.io/v1alpha1/eninodes/n1/status?",
            "application/merge-patch+json",
        )
        .await;
        assert_eq!(body, json!({"status": {"release": {"10.0.0.5": "marked", "10.0.0.6": null}}}));
    });
    store.publish("n1", update).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_failure_condition_replaces_only_pool_ready_in_a_merge_patch_and_keeps_the_agents() {
    let (mock, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let (reader, mut writer) = reflector::store::<ENINode>();
    let mut node = ENINode::new("n1", ENINodeSpec::default());
    node.metadata.resource_version = Some("1".into());
    let mut agents = PoolUpdate::pool_ready(true, "AtTarget", String::new());
    agents.type_ = "Registered".into();
    node.status = Some(ENINodeStatus {
        conditions: vec![PoolUpdate::pool_ready(true, "AtTarget", String::new()), agents],
        ..Default::default()
    });
    writer.apply_watcher_event(&watcher::Event::Apply(node));
    let store = KubeNodeStore::new(Api::all(kube::Client::new(mock, "default")), reader);
    let failed = PoolUpdate::pool_ready(false, "CloudThrottled", "throttled; retrying".into());
    let server = tokio::spawn(async move {
        let body = expect(
            &mut handle,
            "PATCH",
            "/apis/eni-ipam.io/v1alpha1/eninodes/n1/status?",
            "application/merge-patch+json",
        )
        .await;
        let conditions = body["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2, "{body}");
        assert_eq!(conditions[0]["type"], "PoolReady");
        assert_eq!(conditions[0]["status"], "False");
        assert_eq!(conditions[0]["reason"], "CloudThrottled");
        assert!(
            !conditions[0]["lastTransitionTime"].as_str().unwrap().is_empty(),
            "status changed: new time"
        );
        assert_eq!(conditions[1]["type"], "Registered", "the agent's condition is kept");
    });
    store.set_condition("n1", failed).await.unwrap();
    server.await.unwrap();
}
