//! IP ownership and the cloud's eventual consistency, through `Executor::converge`
//! against the fake cloud: IPs another writer put on the node are never in the pool
//! nor released, the record of what we assigned survives a restart and does not
//! follow a node name to a new instance, a released IP shown again by a stale
//! listing stays out, an EC2-shaped `SubnetFull` on an assign moves to another
//! subnet, and an ENI the listing does not show yet is not deleted blind.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use eni_ipam_api::{EniId, InstanceId};
use eni_ipam_cloud::{Api, EniState};
use eni_ipam_operator::executor::NodeOutcome;

mod common;

use common::executor_bed::{Bed, CLUSTER, free_since_start, release_round};

/// Another CNI's pods: `count` addresses assigned on the instance's primary ENI
/// straight in the cloud.
fn foreign_ips_on_primary(bed: &Bed, instance: &InstanceId, count: u32) -> BTreeSet<Ipv4Addr> {
    let primary = bed.enis_of(instance)[0].id.clone();
    bed.cloud.console().assign_ips(&primary, count).expect("console assign").into_iter().collect()
}

/// What the operator published, as the next `NodeTarget` reads it from `spec.pool`.
fn published(outcome: &NodeOutcome) -> BTreeMap<Ipv4Addr, EniId> {
    outcome.pool.iter().map(|(ip, entry)| (*ip, entry.eni.clone())).collect()
}

fn primary_ips(bed: &Bed, instance: &InstanceId) -> BTreeSet<Ipv4Addr> {
    bed.enis_of(instance)[0].secondary_ips.iter().copied().collect()
}

#[tokio::test(start_paused = true)]
async fn another_cnis_ips_on_the_primary_eni_are_never_handed_out_nor_released() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large"); // 3 ENIs x 9 pod IPs
    let foreign = foreign_ips_on_primary(&bed, &instance, 3);
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 4);

    let full = bed.executor.converge(&node).await.expect("converges");
    assert!(full.ready(), "{:?}", full.plan);
    let pool: BTreeSet<Ipv4Addr> = full.pool.keys().copied().collect();
    assert_eq!(pool.len(), 4);
    assert!(pool.is_disjoint(&foreign), "a foreign IP in the pool: {pool:?} vs {foreign:?}");
    assert_eq!(primary_ips(&bed, &instance).len(), 7, "ours assigned beside theirs");
    assert_eq!(full.capacity, 3 * 9 - 3, "their IPs are not our capacity");

    // Everything of ours becomes excess: only ours goes; theirs stay on the ENI.
    tokio::time::sleep(Duration::from_secs(10)).await;
    node.knobs.pre_allocate = 0;
    node.free_since = free_since_start(&full);
    node.published = published(&full);
    let emptied = release_round(&bed, &mut node).await;
    assert!(emptied.pool.is_empty(), "{:?}", emptied.pool);
    assert_eq!(primary_ips(&bed, &instance), foreign, "exactly the other CNI's IPs are left");
}

#[tokio::test(start_paused = true)]
async fn the_record_of_our_ips_on_the_primary_eni_survives_an_operator_restart() {
    let mut bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let foreign = foreign_ips_on_primary(&bed, &instance, 2);
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 5);
    let before = bed.executor.converge(&node).await.expect("converges");
    let assigns = bed.calls(Api::AssignPrivateIpAddresses);

    bed.restart();
    node.published = published(&before);
    let after = bed.executor.converge(&node).await.expect("converges after the restart");

    assert_eq!(after.pool, before.pool, "the same pool, from spec.pool");
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), assigns, "nothing assigned again");
    assert!(after.pool.keys().all(|ip| !foreign.contains(ip)));
}

#[tokio::test(start_paused = true)]
async fn a_leader_that_dies_between_an_assign_and_its_publish_leaks_nothing() {
    let mut bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let foreign = foreign_ips_on_primary(&bed, &instance, 2);
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 3);
    let first = bed.executor.converge(&node).await.expect("converges");
    // What the leader published: the pool and every IP then on the primary ENI.
    node.published = published(&first);
    node.primary_eni_ips = first.primary_eni_ips.clone();
    assert!(foreign.iter().all(|ip| first.primary_eni_ips.as_ref().unwrap().contains(ip)));
    // It assigns more (pre-allocate up) and dies before publishing that pool.
    node.knobs.pre_allocate = 6;
    let unpublished = bed.executor.converge(&node).await.expect("converges");
    let lost: Vec<Ipv4Addr> =
        unpublished.pool.keys().filter(|ip| !first.pool.contains_key(ip)).copied().collect();
    assert_eq!(lost.len(), 3);

    // The next leader knows only what was published.
    bed.restart();
    let assigns = bed.calls(Api::AssignPrivateIpAddresses);
    let after = bed.executor.converge(&node).await.expect("converges after the failover");
    assert!(
        lost.iter().all(|ip| after.pool.contains_key(ip)),
        "the old leader's assigns are the pool's: {after:?}"
    );
    assert!(after.pool.keys().all(|ip| !foreign.contains(ip)), "another CNI's IPs stay out");
    assert_eq!(after.pool.len(), 6);
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), assigns, "nothing assigned again");
}

#[tokio::test(start_paused = true)]
async fn a_node_name_reused_by_a_new_instance_gets_a_pool_of_the_new_instance_only() {
    let bed = Bed::aws();
    let old = bed.launch("m5.large");
    let mut node = bed.node("node-a", &old, "m5.large", 0, 4);
    let old_pool = bed.executor.converge(&node).await.expect("converges");

    // The name comes back on a new VM whose primary ENI already holds another writer's IPs.
    let new = bed.launch("m5.large");
    let foreign = foreign_ips_on_primary(&bed, &new, 2);
    node.instance = new.clone();
    node.published = published(&old_pool);
    let outcome = bed.executor.converge(&node).await.expect("converges on the new instance");

    let new_primary = bed.enis_of(&new)[0].id.clone();
    assert_eq!(outcome.pool.len(), 4);
    assert!(outcome.pool.values().all(|e| e.eni == new_primary), "{:?}", outcome.pool);
    assert!(outcome.pool.keys().all(|ip| !old_pool.pool.contains_key(ip)), "nothing of the old instance");
    assert!(outcome.pool.keys().all(|ip| !foreign.contains(ip)), "nothing of the other writer");
    assert_eq!(primary_ips(&bed, &old).len(), 4, "the old instance's IPs untouched");
}

#[tokio::test(start_paused = true)]
async fn a_released_ip_shown_again_by_a_stale_listing_is_not_taken_back() {
    // On an ENI we tagged every listed IP is ours: only the cooldown keeps a stale one out
    // (on the primary ENI, `spec.pool` no longer naming it is enough).
    let bed = Bed::alibaba();
    let instance = bed.launch("ecs.g7.xlarge");
    let mut node = bed.node("node-a", &instance, "ecs.g7.xlarge", 1, 4);
    let full = bed.executor.converge(&node).await.expect("converges");
    tokio::time::sleep(Duration::from_secs(10)).await;
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full);
    node.published = published(&full);
    let shrunk = release_round(&bed, &mut node).await;
    let released: Vec<Ipv4Addr> =
        full.pool.keys().filter(|ip| !shrunk.pool.contains_key(ip)).copied().collect();
    assert_eq!(released.len(), 2);

    // The cloud's listing lags: it still shows the released addresses on the ENI.
    let eni = bed.ours()[0].id.clone();
    bed.lag.lock().unwrap().stale = released.iter().map(|ip| (eni.clone(), *ip)).collect();
    node.published = published(&shrunk);
    node.release.clear();
    bed.executor.bulk_resync().await.expect("lists the VPC");
    let again = bed.executor.converge(&node).await.expect("converges");
    assert!(
        released.iter().all(|ip| !again.pool.contains_key(ip)),
        "a released IP came back: {:?}",
        again.pool
    );
    assert_eq!(again.pool, shrunk.pool);

    // Past the cooldown the listing is believed again (a real cloud has caught up by then).
    bed.lag.lock().unwrap().stale.clear();
    tokio::time::sleep(Duration::from_secs(61)).await;
    bed.executor.bulk_resync().await.expect("lists the VPC");
    let later = bed.executor.converge(&node).await.expect("converges");
    assert_eq!(later.pool, shrunk.pool);
}

#[tokio::test(start_paused = true)]
async fn subnet_full_on_an_assign_marks_the_enis_subnet_and_the_next_plan_uses_another() {
    let bed = Bed::aws();
    let other = bed.add_subnet(Ipv4Addr::new(10, 1, 0, 0), 28); // fewer free: chosen only when needed
    let instance = bed.launch("m5.large");
    let node = bed.node("node-a", &instance, "m5.large", 0, 4);
    // EC2 names the ENI in this error, not the subnet.
    bed.lag.lock().unwrap().assign_subnet_full = true;

    let outcome = bed.executor.converge(&node).await.expect("converges through another subnet");

    assert!(outcome.ready(), "{:?}", outcome.plan);
    let ours = bed.ours();
    assert_eq!(ours.len(), 1, "one new ENI: {ours:?}");
    assert_eq!(ours[0].subnet, other);
    assert!(outcome.pool.values().all(|e| e.subnet == other));
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), 0, "no assign reached the cloud");
}

#[tokio::test(start_paused = true)]
async fn an_eni_not_listed_right_after_its_create_is_left_to_gc_not_deleted_blind() {
    let bed = Bed::alibaba(); // first index 1: pods get a new ENI
    let instance = bed.launch("ecs.g7.xlarge");
    let node = bed.node("node-a", &instance, "ecs.g7.xlarge", 1, 4);
    bed.lag.lock().unwrap().hide_next_creates = 1;

    let outcome = bed.executor.converge(&node).await.expect("converges with a second ENI");

    assert!(outcome.ready(), "{:?}", outcome.plan);
    assert_eq!(bed.calls(Api::DeleteNetworkInterface), 0, "no delete sent for an ENI we could not see");
    let hidden: Vec<EniId> = bed.lag.lock().unwrap().unlisted.iter().cloned().collect();
    assert_eq!(hidden.len(), 1);
    let lagging = bed.cloud_enis().into_iter().find(|e| e.id == hidden[0]).expect("still in the cloud");
    assert_eq!(lagging.state, EniState::Detached);
    assert!(lagging.is_ours(CLUSTER), "tagged, so GC will find it once listed: {lagging:?}");
    assert!(outcome.pool.values().all(|e| e.eni != hidden[0]));
}
