//! `Executor::converge` against the in-memory fake cloud: every test checks
//! its result against the cloud's own state (`cloud.console()`), not only
//! against what the executor says it did.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use eni_ipam_api::{EniId, InstanceId, SubnetId};
use eni_ipam_cloud::fake::Faults;
use eni_ipam_cloud::{Api, CloudProfile, CreateEni, EniState, tag};
use eni_ipam_operator::executor::{ExecError, NodeTarget};
use eni_ipam_operator::planner::{Shortfall, SubnetSelector};
use futures::future::join_all;
use tokio::time::Instant;

mod common;

use common::executor_bed::{Bed, CLUSTER, Setup, free_since_start, release_round};

// ---------------------------------------------------------------------------
// 1, 2: a fresh node, then idempotence.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn fresh_aws_node_fills_its_primary_eni_with_one_assign() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let node = bed.node("node-a", &instance, "m5.large", 0, 8);

    let outcome = bed.executor.converge(&node).await.expect("converges");

    assert!(outcome.ready(), "{:?}", outcome.plan);
    assert_eq!(outcome.pool.len(), 8);
    assert_eq!(outcome.capacity, 3 * 9);
    let enis = bed.enis_of(&instance);
    assert_eq!(enis.len(), 1, "first index 0 needs no new ENI");
    let primary = &enis[0];
    assert_eq!(primary.device_index, Some(0));
    assert_eq!(primary.secondary_ips.len(), 8);
    for (ip, entry) in &outcome.pool {
        assert_eq!(entry.eni, primary.id);
        assert!(primary.secondary_ips.contains(ip), "{ip} is not on {} in the cloud", primary.id);
        assert_ne!(*ip, primary.primary_ip, "the ENI's own address is never a pod IP");
    }
    bed.assert_pool_matches_cloud(&node, &outcome);
    // The agent's subnet CIDR and gateway: AWS's VPC router is the network address + 1.
    let status = &outcome.enis[primary.id.as_str()];
    assert_eq!((status.subnet_cidr.as_str(), status.gateway.as_str()), ("10.0.0.0/24", "10.0.0.1"));
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), 1);
    assert_eq!(bed.calls(Api::CreateNetworkInterface), 0);
    assert_eq!(bed.calls(Api::AttachNetworkInterface), 0);
}

#[tokio::test(start_paused = true)]
async fn converging_a_ready_node_again_changes_nothing() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let node = bed.node("node-a", &instance, "m5.large", 0, 8);
    let first = bed.executor.converge(&node).await.expect("converges");
    let before = bed.mutating_calls();
    let enis_before = bed.cloud_enis();

    tokio::time::sleep(Duration::from_secs(600)).await;
    let second = bed.executor.converge(&node).await.expect("converges again");

    assert!(second.ready());
    assert!(second.plan.actions.is_empty());
    assert_eq!(bed.mutating_calls(), before, "a ready node costs no mutating call");
    assert_eq!(bed.cloud_enis(), enis_before);
    assert_eq!(second.pool, first.pool);
}

#[tokio::test(start_paused = true)]
async fn converging_a_ready_alibaba_node_again_changes_nothing() {
    let bed = Bed::alibaba();
    let instance = bed.launch("ecs.g7.xlarge");
    let node = bed.node("node-a", &instance, "ecs.g7.xlarge", 1, 12);
    bed.executor.converge(&node).await.expect("converges");
    let before = bed.mutating_calls();

    let again = bed.executor.converge(&node).await.expect("converges again");

    assert!(again.ready());
    assert_eq!(bed.mutating_calls(), before);
    assert_eq!(bed.ours().len(), 1);
}

// ---------------------------------------------------------------------------
// 3: a secondary ENI on Alibaba.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn alibaba_node_gets_a_tagged_secondary_eni_and_assigns_what_create_cannot_carry() {
    let bed = Bed::alibaba();
    let instance = bed.launch("ecs.g7.xlarge");
    let node = bed.node("node-ali", &instance, "ecs.g7.xlarge", 1, 12);

    let outcome = bed.executor.converge(&node).await.expect("converges");

    assert!(outcome.ready(), "{:?}", outcome.plan);
    assert_eq!(outcome.pool.len(), 12);
    let enis = bed.enis_of(&instance);
    assert_eq!(enis.len(), 2, "primary + one secondary ENI: {enis:?}");
    let primary = &enis[0];
    assert!(primary.secondary_ips.is_empty(), "first index 1: the primary ENI serves no pods");
    let eni = &enis[1];
    assert_eq!(eni.device_index, Some(1));
    assert_eq!(eni.state, EniState::InUse);
    assert_eq!(eni.secondary_ips.len(), 12);
    assert_eq!(eni.tags.get(tag::CLUSTER).map(String::as_str), Some(CLUSTER));
    assert_eq!(eni.tags.get(tag::NODE).map(String::as_str), Some("node-ali"));
    assert_eq!(eni.tags.get(tag::CREATED_BY).map(String::as_str), Some(tag::CREATOR));
    assert!(outcome.pool.values().all(|p| p.eni == eni.id && p.subnet == bed.subnet));
    bed.assert_pool_matches_cloud(&node, &outcome);
    // Alibaba's vSwitch gateway is the first of the three addresses it keeps at the top.
    let status = &outcome.enis[eni.id.as_str()];
    assert_eq!((status.subnet_cidr.as_str(), status.gateway.as_str()), ("10.0.0.0/24", "10.0.0.253"));
    assert!(
        enis.iter()
            .flat_map(|e| e.secondary_ips.iter().chain([&e.primary_ip]))
            .all(|ip| ip.octets()[3] < 253),
        "the fake Alibaba cloud never hands out the vSwitch's reserved top addresses"
    );

    let creates = bed.creates();
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert!(creates[0] <= 10, "Alibaba's create carries at most 10 IPs: {creates:?}");
    assert_eq!(creates[0], 10);
    assert_eq!(bed.calls(Api::CreateNetworkInterface), 1);
    assert_eq!(bed.calls(Api::AttachNetworkInterface), 1);
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), 1, "the 2 left over in one assign");
    bed.assert_no_leak();
}

// ---------------------------------------------------------------------------
// 4: attach failures clean up after themselves.
// ---------------------------------------------------------------------------

/// An ENI made straight in the cloud (another writer) and attached at `index`.
fn attach_foreign(bed: &Bed, instance: &InstanceId, subnet: &SubnetId, index: u32, ips: u32) -> EniId {
    let mut console = bed.cloud.console();
    let eni = console
        .create_eni(&CreateEni {
            subnet: subnet.clone(),
            security_groups: vec![],
            secondary_ips: ips,
            tags: BTreeMap::new(),
            client_token: format!("foreign-{index}-{}", instance.as_str()),
        })
        .expect("console create");
    console.attach_eni(&eni.id, instance, index, Instant::now()).expect("console attach");
    eni.id
}

#[tokio::test(start_paused = true)]
async fn attach_to_a_taken_index_deletes_the_new_eni_and_uses_the_next_index() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    bed.executor.converge(&node).await.expect("converges");
    // Another writer takes index 1; the executor's cache does not know yet.
    let foreign = attach_foreign(&bed, &instance, &bed.subnet, 1, 0);

    // 9 pod IPs per ENI: the primary's and those of a new ENI (the foreign one gets none).
    node.knobs.pre_allocate = 18;
    let outcome = bed.executor.converge(&node).await.expect("re-plans after the failed attach");

    assert!(outcome.ready(), "{:?}", outcome.plan);
    assert_eq!(outcome.pool.len(), 18);
    assert!(bed.enis_of(&instance)[1].secondary_ips.is_empty(), "no IP assigned on the foreign ENI");
    assert_eq!(bed.calls(Api::CreateNetworkInterface), 2, "one at the taken index, one at the next");
    assert_eq!(bed.calls(Api::DeleteNetworkInterface), 1, "the unattachable ENI was deleted");
    let ours = bed.ours();
    assert_eq!(ours.len(), 1, "only the attached one of ours remains: {ours:?}");
    assert_eq!(ours[0].device_index, Some(2));
    let enis = bed.enis_of(&instance);
    assert_eq!(enis.iter().map(|e| e.device_index).collect::<Vec<_>>(), vec![Some(0), Some(1), Some(2)]);
    assert_eq!(enis[1].id, foreign);
    bed.assert_pool_matches_cloud(&node, &outcome);
    bed.assert_no_leak();
}

#[tokio::test(start_paused = true)]
async fn attach_to_a_full_instance_leaks_nothing() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    bed.executor.converge(&node).await.expect("converges");
    // The instance gets its maximum of 3 ENIs behind the executor's back.
    attach_foreign(&bed, &instance, &bed.subnet, 1, 0);
    attach_foreign(&bed, &instance, &bed.subnet, 2, 0);

    node.knobs.pre_allocate = 30; // the foreign ENIs leave only the primary's 9
    let result = bed.executor.converge(&node).await;

    if let Ok(outcome) = &result {
        assert_eq!(outcome.plan.shortfall, Some(Shortfall::InstanceLimit { missing: 21 }));
        assert_eq!(outcome.pool.len(), 9);
        assert_eq!(outcome.capacity, 9, "the foreign ENIs' slots are not this cluster's capacity");
        bed.assert_pool_matches_cloud(&node, outcome);
    }
    assert!(bed.calls(Api::CreateNetworkInterface) >= 1, "the stale plan did try to create");
    assert_eq!(bed.ours(), vec![], "every ENI the executor created is gone again");
    assert_eq!(bed.enis_of(&instance).len(), 3);
    bed.assert_no_leak();
    assert!(result.is_ok(), "{result:?}");
}

/// The subnet accounting of the cache must not keep the addresses of an ENI
/// that was deleted after a failed attach: else the node is told its subnets
/// are exhausted while the cloud has room.
#[tokio::test(start_paused = true)]
async fn a_failed_attach_gives_its_addresses_back_to_the_subnet_count() {
    let bed = Bed::aws();
    let pods = bed.add_subnet(Ipv4Addr::new(10, 1, 0, 0), 26); // 59 free
    let other = bed.add_subnet(Ipv4Addr::new(10, 2, 0, 0), 28); // 11 free
    let instance = bed.launch("m5.4xlarge"); // 8 ENIs x 30 IPs
    let mut node = bed.node("node-a", &instance, "m5.4xlarge", 1, 1);
    node.selector = SubnetSelector { ids: vec![pods.clone()], tags: BTreeMap::new() };
    bed.executor.converge(&node).await.expect("converges");
    assert_eq!(bed.free_ips(&pods), 57);
    // Another writer fills `other` with an ENI at index 2, unknown to the cache.
    attach_foreign(&bed, &instance, &other, 2, 10);
    assert_eq!(bed.free_ips(&other), 0);

    node.knobs.pre_allocate = 50;
    let outcome = bed.executor.converge(&node).await.expect("converges");

    assert_eq!(bed.calls(Api::DeleteNetworkInterface), 1, "the stale plan's ENI hit the taken index");
    assert!(
        outcome.ready(),
        "the cloud has {} free in the pods' subnet, yet: {:?}",
        bed.free_ips(&pods),
        outcome.plan
    );
    assert_eq!(outcome.pool.len(), 50);
    bed.assert_pool_matches_cloud(&node, &outcome);
    bed.assert_no_leak();
}

// ---------------------------------------------------------------------------
// 5: release.
// ---------------------------------------------------------------------------

/// Every pool IP free since the executor started.
#[tokio::test(start_paused = true)]
async fn free_ips_past_the_release_delay_go_back_to_the_cloud() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    let full = bed.executor.converge(&node).await.expect("converges");
    assert_eq!(bed.enis_of(&instance)[0].secondary_ips.len(), 8);

    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(bed.executor.now() >= Duration::from_secs(10));
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full);
    let outcome = release_round(&bed, &mut node).await;

    assert!(outcome.ready());
    let primary = &bed.enis_of(&instance)[0];
    assert_eq!(primary.secondary_ips.len(), 2, "{primary:?}");
    let dropped: Vec<_> = outcome.release.iter().filter(|(_, c)| c.is_none()).map(|(ip, _)| *ip).collect();
    assert_eq!(dropped.len(), 6, "the released IPs' entries go away with them: {:?}", outcome.release);
    assert_eq!(outcome.pool.len(), 2);
    bed.assert_pool_matches_cloud(&node, &outcome);
    assert_eq!(bed.calls(Api::UnassignPrivateIpAddresses), 1);
    assert_eq!(bed.free_ips(&bed.subnet), 251 - 1 - 2, "released addresses are back in the subnet");
}

#[tokio::test(start_paused = true)]
async fn used_ips_are_never_released() {
    let bed = Bed::aws();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    let full = bed.executor.converge(&node).await.expect("converges");
    // A pod holds the lowest IP: the planner releases the lowest addresses
    // first, so this is the one it would take if `used` were ignored.
    let held = *full.pool.keys().next().expect("pool not empty");

    tokio::time::sleep(Duration::from_secs(10)).await;
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full); // even listed as free since long ago
    node.used = BTreeSet::from([held]);
    let outcome = release_round(&bed, &mut node).await;

    assert!(outcome.ready());
    let primary = &bed.enis_of(&instance)[0];
    assert!(primary.secondary_ips.contains(&held), "the used IP {held} was released: {primary:?}");
    assert_eq!(primary.secondary_ips.len(), 3, "1 used + 2 free kept: {primary:?}");
    assert!(outcome.pool.contains_key(&held));
    bed.assert_pool_matches_cloud(&node, &outcome);
}

#[tokio::test(start_paused = true)]
async fn free_ips_within_the_release_delay_are_kept() {
    let bed = Setup { release_delay: Duration::from_secs(180), ..Setup::new(CloudProfile::aws()) }.build();
    let instance = bed.launch("m5.large");
    let mut node = bed.node("node-a", &instance, "m5.large", 0, 8);
    let full = bed.executor.converge(&node).await.expect("converges");

    tokio::time::sleep(Duration::from_secs(60)).await;
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full);
    let outcome = bed.executor.converge(&node).await.expect("converges");

    assert_eq!(outcome.plan.release_waiting, 6);
    assert_eq!(bed.enis_of(&instance)[0].secondary_ips.len(), 8, "nothing released before the delay");
    assert_eq!(bed.calls(Api::UnassignPrivateIpAddresses), 0);

    tokio::time::sleep(Duration::from_secs(150)).await;
    release_round(&bed, &mut node).await;
    assert_eq!(bed.enis_of(&instance)[0].secondary_ips.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn alibaba_release_is_split_in_calls_of_ten() {
    let bed = Bed::alibaba();
    let instance = bed.launch("ecs.g7.4xlarge"); // 29 pod IPs per ENI
    let mut node = bed.node("node-a", &instance, "ecs.g7.4xlarge", 1, 25);
    let full = bed.executor.converge(&node).await.expect("converges");
    assert_eq!(full.pool.len(), 25);
    assert_eq!(bed.creates(), vec![10]);
    assert_eq!(bed.calls(Api::AssignPrivateIpAddresses), 2, "15 more in calls of at most 10");

    tokio::time::sleep(Duration::from_secs(10)).await;
    node.knobs.pre_allocate = 2;
    node.free_since = free_since_start(&full);
    let outcome = release_round(&bed, &mut node).await;

    assert!(outcome.ready());
    assert_eq!(bed.calls(Api::UnassignPrivateIpAddresses), 3, "23 in 10 + 10 + 3");
    let eni = &bed.enis_of(&instance)[1];
    assert_eq!(eni.secondary_ips.len(), 2);
    bed.assert_pool_matches_cloud(&node, &outcome);
}

// ---------------------------------------------------------------------------
// 6: subnet exhaustion.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_tiny_subnet_ends_in_a_subnets_exhausted_shortfall_without_leaks() {
    // /28: 16 addresses, 5 reserved, 1 for the primary ENI: 10 left.
    let bed = Setup::new(CloudProfile::aws()).prefix(28).build();
    let instance = bed.launch("m5.large");
    assert_eq!(bed.free_ips(&bed.subnet), 10);
    let node = bed.node("node-a", &instance, "m5.large", 1, 12);

    let outcome = bed.executor.converge(&node).await.expect("converges as far as the subnet allows");

    assert!(!outcome.ready());
    assert_eq!(outcome.plan.shortfall, Some(Shortfall::SubnetsExhausted { missing: 3 }));
    assert_eq!(outcome.pool.len(), 9, "one ENI: its own address + 9");
    assert_eq!(bed.free_ips(&bed.subnet), 0);
    assert_eq!(bed.ours().len(), 1);
    bed.assert_pool_matches_cloud(&node, &outcome);
    bed.assert_no_leak();

    // Asking again does not try (and fail) again.
    let before = bed.mutating_calls();
    let again = bed.executor.converge(&node).await.expect("converges");
    assert_eq!(again.plan.shortfall, Some(Shortfall::SubnetsExhausted { missing: 3 }));
    assert_eq!(bed.mutating_calls(), before);
}

#[tokio::test(start_paused = true)]
async fn a_subnet_filled_by_another_writer_is_believed_and_nothing_leaks() {
    let bed = Setup::new(CloudProfile::aws()).prefix(27).build(); // 27 free
    let a = bed.launch("m5.large");
    let b = bed.launch("m5.large");
    let mut node = bed.node("node-a", &a, "m5.large", 1, 1);
    bed.executor.converge(&node).await.expect("converges"); // cache: 25 - 2 = 23 free
    // Another writer takes 20 addresses (in the cache's back).
    attach_foreign(&bed, &b, &bed.subnet, 1, 9);
    attach_foreign(&bed, &b, &bed.subnet, 2, 9);
    assert_eq!(bed.free_ips(&bed.subnet), 3);

    node.knobs.pre_allocate = 18;
    let outcome = bed.executor.converge(&node).await.expect("converges as far as the cloud allows");

    assert!(!outcome.ready());
    assert!(matches!(outcome.plan.shortfall, Some(Shortfall::SubnetsExhausted { .. })), "{:?}", outcome.plan);
    bed.assert_pool_matches_cloud(&node, &outcome);
    assert_eq!(bed.ours().len(), 1, "no second ENI of ours: {:?}", bed.ours());
    bed.assert_no_leak();
}

// ---------------------------------------------------------------------------
// 7: throttling.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_limiter_faster_than_the_quota_is_saved_by_retries() {
    const NODES: usize = 320;
    let profile = CloudProfile::aws();
    // The client believes the cloud allows 1.5 times its real rate.
    let limits = profile.buckets.iter().map(|(id, spec)| (*id, spec.scaled(1.5))).collect();
    let bed = Setup::new(profile).prefix(20).limiter(limits).build();
    let nodes: Vec<NodeTarget> = (0..NODES)
        .map(|n| {
            let instance = bed.launch("m5.large");
            bed.node(&format!("node-{n:03}"), &instance, "m5.large", 0, 8)
        })
        .collect();

    let results = join_all(nodes.iter().map(|n| bed.executor.converge(n))).await;

    let counts = bed.cloud.counts();
    let throttled: u64 = counts.values().map(|c| c.throttled).sum();
    assert!(throttled > 0, "the cloud never throttled: {counts:?}");
    let failed: Vec<&ExecError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} nodes failed, e.g. {:?}", failed.len(), failed.first());
    for (node, result) in nodes.iter().zip(&results) {
        let outcome = result.as_ref().expect("checked");
        assert!(outcome.ready(), "{}: {:?}", node.name, outcome.plan);
        assert_eq!(outcome.pool.len(), 8);
        bed.assert_pool_matches_cloud(node, outcome);
    }
    assert_eq!(
        counts[&Api::AssignPrivateIpAddresses].calls - counts[&Api::AssignPrivateIpAddresses].throttled,
        NODES as u64,
        "one accepted assign per node"
    );
}

// ---------------------------------------------------------------------------
// 8: transient faults.
// ---------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn transient_faults_end_in_consistent_pools_after_retries() {
    const NODES: usize = 8;
    let bed = Bed::alibaba();
    let nodes: Vec<NodeTarget> = (0..NODES)
        .map(|n| {
            let instance = bed.launch("ecs.g7.xlarge");
            bed.node(&format!("node-{n}"), &instance, "ecs.g7.xlarge", 1, 12)
        })
        .collect();
    bed.cloud.set_faults(Faults { transient_rate: 0.3, ..Faults::default() });

    let converge_until_ready = |node: &NodeTarget| {
        let executor = &bed.executor;
        let node = node.clone();
        async move {
            let mut errors: u32 = 0;
            for _ in 0..40 {
                match executor.converge(&node).await {
                    Ok(outcome) if outcome.ready() => return (outcome, errors),
                    Ok(_) => {}
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            panic!("{} never converged", node.name);
        }
    };
    let outcomes = join_all(nodes.iter().map(converge_until_ready)).await;
    bed.cloud.set_faults(Faults::default());

    let faulted: u64 = bed.cloud.counts().values().map(|c| c.faulted).sum();
    assert!(faulted > 0);
    let errors: u32 = outcomes.iter().map(|(_, e)| e).sum();
    assert!(errors > 0, "at 30% faults some converge should have failed");
    let mut seen = BTreeSet::new();
    for (node, (outcome, _)) in nodes.iter().zip(&outcomes) {
        assert_eq!(outcome.pool.len(), 12, "{}", node.name);
        bed.assert_pool_matches_cloud(node, outcome);
        for ip in outcome.pool.keys() {
            assert!(seen.insert(*ip), "{ip} is in two nodes' pools");
        }
    }
    bed.assert_no_leak();
    // Every address the cloud handed out is in exactly one place.
    let mut everywhere = BTreeSet::new();
    for eni in bed.cloud_enis() {
        for ip in std::iter::once(&eni.primary_ip).chain(&eni.secondary_ips) {
            assert!(everywhere.insert(*ip), "{ip} held twice in the cloud");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn instance_type_limits_are_fetched_once_and_refreshed_by_the_bulk_resync_only() {
    let bed = Bed::aws();
    for n in 0..3 {
        let instance = bed.launch("m5.large");
        let node = bed.node(&format!("node-{n}"), &instance, "m5.large", 0, 4);
        bed.executor.converge(&node).await.expect("converges");
    }
    assert_eq!(bed.calls(Api::DescribeInstanceTypes), 1, "one fetch for three nodes of one type");
    bed.executor.bulk_resync().await.expect("bulk resync");
    assert_eq!(bed.calls(Api::DescribeInstanceTypes), 2, "the bulk resync refreshes the cached types");
}
