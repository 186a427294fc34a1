//! GC against the fake cloud, the decision's inputs gathered for real: an ENI
//! on a VM that runs without a Node stays through many passes, a leaked
//! detached ENI goes after the grace and not before, and ENIs without our tags,
//! of another cluster or with our id and another cluster's UID never go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{InstanceId, VpcId};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{Api, CallGuard, CloudProfile, CloudProvider, CreateEni, RetryPolicy, tag};
use eni_ipam_operator::cluster_identity::ClusterIdentity;
use eni_ipam_operator::gc::{Gc, Keep};
use eni_ipam_operator::simulate::cloud_setup;

fn tags(cluster: &str, uid: &str, node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (tag::CLUSTER.to_string(), cluster.to_string()),
        (tag::CLUSTER_UID.to_string(), uid.to_string()),
        (tag::NODE.to_string(), node.to_string()),
        (tag::CREATED_BY.to_string(), tag::CREATOR.to_string()),
    ])
}

#[tokio::test(start_paused = true)]
async fn gc_keeps_a_running_vms_enis_without_its_node_deletes_leaks_after_grace_and_never_others() {
    let profile = CloudProfile::aws();
    let vpc = VpcId::from("vpc-gc");
    let cloud = Arc::new(FakeCloud::new(profile.clone(), vpc.clone(), 3));
    let fleet = cloud_setup::launch(&cloud, 2, "m5.large", 8).unwrap();
    let (node_deleted, with_node): (InstanceId, InstanceId) =
        (fleet.instances[0].0.clone(), fleet.instances[1].0.clone());
    let guard = Arc::new(CallGuard::for_profile(profile, 0.95, RetryPolicy::cloud_default(1)));
    let provider = FakeProvider::new(cloud.clone(), guard);
    let subnets = provider.list_subnets(&vpc).await.unwrap();
    let subnet_of = |i: usize| subnets.iter().find(|s| s.zone == fleet.instances[i].1).unwrap().id.clone();
    let create = |i: usize, tags, token: &str| CreateEni {
        subnet: subnet_of(i),
        security_groups: vec![],
        secondary_ips: 2,
        tags,
        client_token: token.into(),
    };
    let on_running = provider.create_eni(&create(0, tags("c1", "u1", "node-0"), "t1")).await.unwrap();
    provider.attach_eni(&on_running.id, &node_deleted, 1).await.unwrap();
    let on_node = provider.create_eni(&create(1, tags("c1", "u1", "node-1"), "t2")).await.unwrap();
    provider.attach_eni(&on_node.id, &with_node, 1).await.unwrap();
    let leaked = provider.create_eni(&create(0, tags("c1", "u1", "node-x"), "t3")).await.unwrap();
    let foreign = provider.create_eni(&create(0, BTreeMap::new(), "t4")).await.unwrap();
    let other_cluster = provider.create_eni(&create(0, tags("c2", "u2", "node-y"), "t5")).await.unwrap();
    let same_id = provider.create_eni(&create(0, tags("c1", "u9", "node-z"), "t6")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await; // attachments settle

    let identity = ClusterIdentity { id: "c1".into(), uid: Some("u1".into()) };
    let mut gc = Gc::new(identity, vpc.clone(), Duration::from_secs(600));
    // node-0's Node is gone (deleted, or the watch lags); its VM runs.
    let live = BTreeSet::from([with_node.clone()]);
    let first = gc.pass(&provider, &live).await.unwrap();
    assert!(
        first.deleted.is_empty() && first.detached.is_empty(),
        "nothing goes before the grace: {first:?}"
    );
    assert_eq!(first.kept[&on_running.id], Keep::InstanceRunning);
    assert_eq!(first.kept[&on_node.id], Keep::NodeNamesInstance);
    assert_eq!(first.kept[&leaked.id], Keep::WithinGrace);
    assert_eq!(cloud.counts()[&Api::DescribeInstances].calls, 1, "only the instance without a Node is asked");
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(150)).await;
        let pass = gc.pass(&provider, &live).await.unwrap();
        assert!(pass.detached.is_empty(), "a running VM's ENI is never detached: {pass:?}");
        assert!(!pass.deleted.contains(&on_running.id));
    }
    let left: BTreeSet<_> = cloud.console().all_enis().map(|e| e.id.clone()).collect();
    for id in [&on_running.id, &on_node.id, &foreign.id, &other_cluster.id, &same_id.id] {
        assert!(left.contains(id), "{id} must survive GC");
    }
    assert!(!left.contains(&leaked.id), "the leak went after the grace");
    let attached = cloud.console().all_enis().find(|e| e.id == on_running.id).unwrap().instance.clone();
    assert_eq!(attached, Some(node_deleted), "still attached to its running VM");
}
