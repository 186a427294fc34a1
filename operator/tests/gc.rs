//! GC against the fake cloud: a gone node's ENIs are deleted in one pass, a leaked
//! detached ENI after the grace period, and an ENI without our tags never.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{InstanceId, VpcId};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, CloudProfile, CloudProvider, CreateEni, RetryPolicy, tag};
use eni_ipam_operator::gc::Gc;
use eni_ipam_operator::simulate::cloud_setup;

fn tags(cluster: &str, node: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (tag::CLUSTER.to_string(), cluster.to_string()),
        (tag::NODE.to_string(), node.to_string()),
        (tag::CREATED_BY.to_string(), tag::CREATOR.to_string()),
    ])
}

#[tokio::test(start_paused = true)]
async fn gc_deletes_a_gone_nodes_enis_and_leaks_after_grace_and_never_untagged_ones() {
    let profile = CloudProfile::aws();
    let vpc = VpcId::from("vpc-gc");
    let cloud = Arc::new(FakeCloud::new(profile.clone(), vpc.clone(), 3));
    let fleet = cloud_setup::launch(&cloud, 2, "m5.large", 8).unwrap();
    let (gone, kept): (InstanceId, InstanceId) = (fleet.instances[0].0.clone(), fleet.instances[1].0.clone());
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
    let on_gone = provider.create_eni(&create(0, tags("c1", "node-0"), "t1")).await.unwrap();
    provider.attach_eni(&on_gone.id, &gone, 1).await.unwrap();
    let on_kept = provider.create_eni(&create(1, tags("c1", "node-1"), "t2")).await.unwrap();
    provider.attach_eni(&on_kept.id, &kept, 1).await.unwrap();
    let leaked = provider.create_eni(&create(0, tags("c1", "node-x"), "t3")).await.unwrap();
    let foreign = provider.create_eni(&create(0, BTreeMap::new(), "t4")).await.unwrap();
    let other_cluster = provider.create_eni(&create(0, tags("c2", "node-y"), "t5")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await; // attachments settle

    let mut gc = Gc::new("c1", vpc.clone(), Duration::from_secs(600));
    let live = BTreeSet::from([kept.clone()]);
    let first = gc.pass(&provider, &live).await.unwrap();
    assert_eq!(
        first.deleted,
        vec![on_gone.id.clone()],
        "the gone node's ENI goes in one pass; the leak waits"
    );
    tokio::time::sleep(Duration::from_secs(601)).await;
    let second = gc.pass(&provider, &live).await.unwrap();
    assert_eq!(second.deleted, vec![leaked.id.clone()]);
    let left: BTreeSet<_> = cloud.console().all_enis().map(|e| e.id.clone()).collect();
    for id in [&on_kept.id, &foreign.id, &other_cluster.id] {
        assert!(left.contains(id), "{id} must survive GC");
    }
    assert!(!left.contains(&on_gone.id) && !left.contains(&leaked.id));
}
