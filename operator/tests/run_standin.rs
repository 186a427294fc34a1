//! `run` against the stand-in apiserver and the fake cloud: the whole controller
//! (watch, reflector, fleet, executor, server-side apply) with nothing mocked in between.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_admin::Admin;
use eni_ipam_api::VpcId;
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, CloudProfile, CloudProvider, CreateEni, RetryPolicy, tag};
use eni_ipam_kube_standin::{ENINODES, EVENTS, KubeStandin};
use eni_ipam_operator::metrics::OperatorMetrics;
use eni_ipam_operator::run::RunConfig;
use eni_ipam_operator::simulate::cloud_setup;

mod common;

/// An AWS-shaped fake cloud with quotas and delays small enough for real time.
fn fast_cloud() -> (Arc<FakeCloud>, CloudProfile) {
    let profile = common::fast_profile();
    (Arc::new(FakeCloud::new(profile.clone(), VpcId::from("vpc-run"), 7)), profile)
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_eninodes_reach_their_pre_allocation_through_the_standin() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (url, standin) = KubeStandin::start().await;
    let (cloud, profile) = fast_cloud();
    let fleet = cloud_setup::launch(&cloud, 200, "m5.large", 8).unwrap();
    // A leak of ours (tagged, never attached) and someone else's detached ENI.
    let (leaked, foreign) = {
        let mut console = cloud.console();
        let subnet = console.list_subnets(&VpcId::from("vpc-run"))[0].id.clone();
        let eni = |tags: BTreeMap<String, String>, token: &str| CreateEni {
            subnet: subnet.clone(),
            security_groups: vec![],
            secondary_ips: 2,
            tags,
            client_token: token.into(),
        };
        let ours = BTreeMap::from([
            (tag::CLUSTER.to_owned(), "test".to_owned()),
            (tag::NODE.to_owned(), "node-gone".to_owned()),
            (tag::CREATED_BY.to_owned(), tag::CREATOR.to_owned()),
        ]);
        let leaked = console.create_eni(&eni(ours, "leak")).unwrap().id;
        let foreign = console.create_eni(&eni(BTreeMap::new(), "theirs")).unwrap().id;
        (leaked, foreign)
    };
    common::add_nodes(&standin, &fleet.instances, 0, "vpc-run", 8);
    let guard = Arc::new(CallGuard::for_profile(profile, 0.95, RetryPolicy::cloud_default(3)));
    let provider: Arc<dyn CloudProvider> = Arc::new(FakeProvider::new(cloud.clone(), guard.clone()));
    let client = common::client(&url);
    let config = RunConfig {
        gc_interval: Duration::from_millis(200),
        gc_grace: Duration::from_secs(1),
        node_events: true,
        ..common::run_config("test", "vpc-run", 16, 1)
    };
    let metrics = Arc::new(OperatorMetrics::default());
    guard.observe(metrics.clone());
    let controller = common::Running::start(client, provider, config, metrics.clone());
    let ready = |standin: &KubeStandin| {
        standin
            .list(ENINODES)
            .iter()
            .filter(|n| {
                n["status"]["conditions"][0]["type"] == "PoolReady"
                    && n["status"]["conditions"][0]["status"] == "True"
            })
            .count()
    };
    // Generous bound against a hung controller; the test asserts the end state, not the time.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ready(&standin) < 200 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready(&standin), 200, "every ENINode reports PoolReady=True");
    for n in standin.list(ENINODES) {
        let pool = n["spec"]["pool"].as_object().unwrap();
        assert!(pool.len() >= 8, "{}: pool of {} < pre-allocation 8", n["metadata"]["name"], pool.len());
        assert_eq!(n["status"]["available"].as_u64().unwrap() as usize, pool.len());
        let managers = standin.managers(ENINODES, "", n["metadata"]["name"].as_str().unwrap());
        assert!(managers["eni-ipam-operator"].iter().any(|p| p.starts_with("spec.pool.")));
        assert!(managers["eni-ipam-operator"].iter().any(|p| p == "status.conditions"));
    }
    // What an admin sees: metrics on the admin port and Events on the Nodes. Both follow
    // the fleet's events, drained one at a time (each Event is a write to the apiserver):
    // they may trail the ENINodes by a moment, so wait for the last one.
    assert!(metrics.readiness().is_ok(), "ready once the caches are loaded");
    let ready_events = |standin: &KubeStandin| {
        standin
            .list(EVENTS)
            .iter()
            .filter(|e| e["reason"] == "PoolReady" && e["regarding"]["kind"] == "Node")
            .count()
    };
    let drained = tokio::time::Instant::now() + Duration::from_secs(30);
    let (status, text) = loop {
        let (status, text) =
            eni_ipam_admin::fetch(eni_ipam_admin::admin_router(metrics.clone()), "/metrics").await;
        let all_counted =
            text.contains("eni_ipam_nodes{category=\"ok\"} 200") && ready_events(&standin) >= 200;
        if all_counted || tokio::time::Instant::now() > drained {
            break (status, text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status, 200);
    let pooled: usize =
        standin.list(ENINODES).iter().map(|n| n["spec"]["pool"].as_object().unwrap().len()).sum();
    for line in [
        "eni_ipam_nodes{category=\"ok\"} 200".to_string(),
        format!("eni_ipam_ips{{state=\"available\"}} {pooled}"),
        "eni_ipam_ips{state=\"used\"} 0".to_string(),
        "eni_ipam_operator_leader 1".to_string(),
        "eni_ipam_subnet_free_ips{subnet=".to_string(),
    ] {
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    let created = text
        .lines()
        .find(|l| l.starts_with("eni_ipam_eni_creations_total{result=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(created >= 200, "one ENI created per node at least, counted: {created}\n{text}");
    assert_eq!(ready_events(&standin), 200, "one PoolReady Event per Node");
    // No IP in two pools.
    let mut owners = BTreeMap::new();
    for n in standin.list(ENINODES) {
        for ip in n["spec"]["pool"].as_object().unwrap().keys() {
            assert!(owners.insert(ip.clone(), n["metadata"]["name"].clone()).is_none(), "{ip} twice");
        }
    }
    // At target, the controller stops writing: the resourceVersion settles.
    let rv = standin.resource_version();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(standin.resource_version(), rv, "no writes once every node is at target");
    // A Node deleted (and its ENINode) while its VM runs: its ENIs stay attached
    // through many GC passes (every 200 ms, grace 1 s), since the cloud says the VM runs.
    let vm = fleet.instances[0].0.clone();
    let ours_on = |cloud: &FakeCloud| {
        cloud.console().all_enis().filter(|e| e.instance.as_ref() == Some(&vm) && e.is_ours("test")).count()
    };
    let before = ours_on(&cloud);
    assert!(before > 0, "node-000 has ENIs of ours before");
    assert!(standin.delete_node("node-000"));
    standin.delete(ENINODES, "", "node-000").unwrap();
    let asked = |cloud: &FakeCloud| {
        cloud.counts().get(&eni_ipam_cloud::Api::DescribeInstances).map_or(0, |c| c.calls)
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(ours_on(&cloud), before, "node-000's ENIs stay on its running VM");
    assert!(asked(&cloud) >= 3, "GC asked the cloud about the VM on several passes ({})", asked(&cloud));
    let left: usize = cloud.console().all_enis().filter(|e| e.is_ours("test")).count();
    assert!(left >= 200, "every node keeps its ENIs ({left})");
    // The leak is collected after the grace; the untagged ENI is never touched.
    let exists = |id: &eni_ipam_api::EniId| cloud.console().all_enis().any(|e| &e.id == id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while exists(&leaked) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!exists(&leaked), "the tagged, detached ENI {leaked} is collected");
    assert!(exists(&foreign), "an ENI without our tags ({foreign}) is never touched");
    controller.stop().await;
}
