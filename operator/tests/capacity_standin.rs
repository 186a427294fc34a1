//! `status.ipLimit` and `status.shortfall` through `run` against the stand-in
//! apiserver (no real apiserver runs here) and the fake cloud: every ENINode gets its
//! instance's pod-IP limit; another tenant taking every free address of the subnet
//! brings a `SubnetsExhausted` shortfall at the pool's size to every node within a
//! resync, with no pod asking; the tenant gone, the shortfall goes.

use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{SecurityGroupId, VpcId};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, CloudProvider, CreateEni, RetryPolicy};
use eni_ipam_kube_standin::{ENINODES, KubeStandin};
use eni_ipam_operator::metrics::OperatorMetrics;
use eni_ipam_operator::run::RunConfig;
use eni_ipam_operator::simulate::cloud_setup;
use serde_json::Value;

mod common;

const VPC: &str = "vpc-capacity";

/// Every ENINode, until `done` holds for all of them, or a panic showing their status.
async fn wait_all(standin: &KubeStandin, what: &str, done: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = standin.list(ENINODES);
        if !nodes.is_empty() && nodes.iter().all(&done) {
            return;
        }
        let seen: Vec<String> = nodes
            .iter()
            .map(|n| format!("{}: {} pool {}", n["metadata"]["name"], n["status"], pool(n)))
            .collect();
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within 30 s; {seen:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pool(node: &Value) -> u64 {
    node["spec"]["pool"].as_object().map_or(0, |p| p.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_limit_is_published_and_an_exhausted_subnet_is_a_shortfall_until_freed() {
    let (url, standin) = KubeStandin::start().await;
    let profile = common::fast_profile();
    let cloud = Arc::new(FakeCloud::new(profile.clone(), VpcId::from(VPC), 13));
    let fleet = cloud_setup::launch(&cloud, 3, "m5.large", 8).unwrap();
    common::add_nodes(&standin, &fleet.instances, 0, VPC, 3);
    // One node whose pods use the primary ENI too, as on AWS by default.
    let primary_too = serde_json::json!({"spec": {"firstInterfaceIndex": 0}});
    standin.merge_patch(ENINODES, "", "node-002", primary_too, false).unwrap();
    let limit = |n: &Value| if n["metadata"]["name"] == "node-002" { 27 } else { 18 };
    let guard = Arc::new(CallGuard::for_profile(profile, 0.95, RetryPolicy::cloud_default(5)));
    let provider: Arc<dyn CloudProvider> = Arc::new(FakeProvider::new(cloud.clone(), guard));
    let config =
        RunConfig { resync_interval: Duration::from_secs(1), ..common::run_config("test", VPC, 2, 3) };
    let metrics = Arc::new(OperatorMetrics::default());
    let controller = common::Running::start(common::client(&url), provider, config, metrics);

    // m5.large: 3 ENIs x (10 - 1) from index 0, without the primary ENI's from index 1.
    wait_all(&standin, "every node's ipLimit, no shortfall", |n| {
        n["status"]["ipLimit"] == limit(n) && n["status"]["shortfall"].is_null() && pool(n) >= 3
    })
    .await;
    let managers = standin.managers(ENINODES, "", "node-000");
    assert!(managers["eni-ipam-operator"].iter().any(|p| p == "status.ipLimit"), "{managers:?}");

    // Another tenant takes every address left in every subnet, straight at the cloud.
    let tenants: Vec<_> = {
        let mut console = cloud.console();
        let subnets = console.list_subnets(&VpcId::from(VPC));
        subnets
            .iter()
            .map(|subnet| {
                let request = CreateEni {
                    subnet: subnet.id.clone(),
                    security_groups: vec![SecurityGroupId::from("sg-other")],
                    secondary_ips: 0,
                    tags: Default::default(),
                    client_token: format!("another-tenant-{}", subnet.id),
                };
                let eni = console.create_eni(&request).unwrap();
                let free = |console: &eni_ipam_cloud::fake::CloudState| {
                    let listed = console.list_subnets(&VpcId::from(VPC));
                    listed.iter().find(|s| s.id == subnet.id).map_or(0, |s| s.free_ips)
                };
                while free(&console) > 0 {
                    let count = free(&console).min(10);
                    console.assign_ips(&eni.id, count).unwrap();
                }
                eni.id
            })
            .collect()
    };
    wait_all(&standin, "a SubnetsExhausted shortfall at the pool's size", |n| {
        let short = &n["status"]["shortfall"];
        short["reason"] == "SubnetsExhausted"
            && short["obtainable"].as_u64() == Some(pool(n))
            && short["since"].as_str().is_some_and(|s| !s.is_empty())
            && n["status"]["ipLimit"] == limit(n)
    })
    .await;

    for tenant in &tenants {
        cloud.console().delete_eni(tenant).unwrap();
    }
    wait_all(&standin, "the shortfall cleared once the subnet has room", |n| {
        n["status"]["shortfall"].is_null() && n["status"]["ipLimit"] == limit(n)
    })
    .await;
    controller.stop().await;
}
