//! `run` refuses an ENINode whose instance is not its Node's, or that has no Node,
//! before any cloud call for it: against the stand-in apiserver and the fake cloud.

use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{InstanceId, VpcId};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, CloudProvider, RetryPolicy};
use eni_ipam_kube_standin::{ENINODES, EVENTS, KubeStandin};
use eni_ipam_operator::metrics::OperatorMetrics;
use eni_ipam_operator::run::RunConfig;
use eni_ipam_operator::simulate::cloud_setup;
use serde_json::{Value, json};

mod common;

fn eninode(name: &str, instance: &InstanceId, zone: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {
        "instanceId": instance.to_string(), "instanceType": "m5.large", "zone": zone,
        "vpcId": "vpc-id", "ipam": {"preAllocate": 4}, "firstInterfaceIndex": 1}})
}

/// The PoolReady condition of an ENINode: (status, reason).
fn pool_ready(standin: &KubeStandin, name: &str) -> Option<(String, String)> {
    let node = standin.list(ENINODES).into_iter().find(|n| n["metadata"]["name"] == name)?;
    let conditions = node["status"]["conditions"].as_array()?.clone();
    let c = conditions.into_iter().find(|c| c["type"] == "PoolReady")?;
    Some((c["status"].as_str()?.to_owned(), c["reason"].as_str()?.to_owned()))
}

async fn wait_for(standin: &KubeStandin, name: &str, want: (&str, &str)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let want = Some((want.0.to_owned(), want.1.to_owned()));
    while pool_ready(standin, name) != want && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(pool_ready(standin, name), want, "ENINode {name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eninode_not_matching_its_node_is_refused_without_a_cloud_call() {
    let (url, standin) = KubeStandin::start().await;
    let profile = common::fast_profile();
    let cloud = Arc::new(FakeCloud::new(profile.clone(), VpcId::from("vpc-id"), 5));
    let vms = cloud_setup::launch(&cloud, 4, "m5.large", 4).unwrap().instances;
    let zones: Vec<String> = vms.iter().map(|(_, z)| z.to_string()).collect();
    let [(good, _), (own, _), (victim, _), (orphan, _)] = <[_; 4]>::try_from(vms).unwrap();
    let [za, zb, zv, zc] = <[String; 4]>::try_from(zones).unwrap();
    // node-a: as it should be. node-b: its ENINode points at another VM of the VPC.
    // node-c: an ENINode with no Node (yet).
    standin.create_node("node-a", &format!("aws:///{za}/{good}"));
    standin.create(ENINODES, eninode("node-a", &good, &za)).unwrap();
    standin.create_node("node-b", &format!("aws:///{zb}/{own}"));
    standin.create(ENINODES, eninode("node-b", &victim, &zv)).unwrap();
    standin.create(ENINODES, eninode("node-c", &orphan, &zc)).unwrap();

    let guard = Arc::new(CallGuard::for_profile(profile, 0.95, RetryPolicy::cloud_default(3)));
    let provider: Arc<dyn CloudProvider> = Arc::new(FakeProvider::new(cloud.clone(), guard));
    let config = RunConfig { node_events: true, ..common::run_config("test", "vpc-id", 4, 1) };
    let controller =
        common::Running::start(common::client(&url), provider, config, Arc::new(OperatorMetrics::default()));

    wait_for(&standin, "node-a", ("True", "AtTarget")).await;
    wait_for(&standin, "node-b", ("False", "InstanceMismatch")).await;
    wait_for(&standin, "node-c", ("False", "NodeNotFound")).await;
    let enis_on = |instance: &InstanceId| {
        cloud
            .console()
            .all_enis()
            .filter(|e| e.instance.as_ref() == Some(instance))
            .cloned()
            .collect::<Vec<_>>()
    };
    for untouched in [&victim, &own, &orphan] {
        let enis = enis_on(untouched);
        assert_eq!(enis.len(), 1, "only the VM's primary ENI on {untouched}: {enis:?}");
        assert!(enis[0].secondary_ips.is_empty(), "no IP assigned on {untouched}");
    }
    assert!(standin.list(ENINODES).iter().all(|n| n["metadata"]["name"] == "node-a"
        || n["spec"]["pool"].is_null()
        || n["spec"]["pool"].as_object().is_some_and(|p| p.is_empty())));
    let warned = standin.list(EVENTS).iter().any(|e| {
        e["reason"] == "InstanceMismatch"
            && e["regarding"]["name"] == "node-b"
            && e["note"].as_str().is_some_and(|n| n.contains(victim.as_str()) && n.contains(own.as_str()))
    });
    assert!(warned, "a Warning Event on Node node-b names both instances: {:?}", standin.list(EVENTS));

    // The Node appears: node-c is worked. node-b's ENINode is set right (as its agent adopts it): worked.
    standin.create_node("node-c", &format!("aws:///{zc}/{orphan}"));
    wait_for(&standin, "node-c", ("True", "AtTarget")).await;
    standin
        .merge_patch(
            ENINODES,
            "",
            "node-b",
            json!({"spec": {"instanceId": own.to_string(), "zone": zb}}),
            false,
        )
        .unwrap();
    wait_for(&standin, "node-b", ("True", "AtTarget")).await;
    assert!(
        enis_on(&victim)[0].secondary_ips.is_empty() && enis_on(&victim).len() == 1,
        "the victim never touched"
    );
    controller.stop().await;
}
