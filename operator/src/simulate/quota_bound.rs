//! The least time any client could need to bring a fleet of fresh nodes to
//! their pre-allocation, given the cloud's quotas and the fewest calls per
//! node. The simulator's time is judged against it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use eni_ipam_api::EniId;
use eni_ipam_cloud::{Api, BucketId, CloudProfile};

use crate::planner::{self, Action, EniOwner, EniView, NodeSnapshot, PoolIp};

/// The fewest calls one fresh node needs, and the shortest chain of them.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeCost {
    /// Mutating calls per operation.
    pub calls: BTreeMap<Api, u64>,
    /// Latencies one node's calls must take one after another, at the least.
    pub critical_path: Duration,
    /// For each call of the chain, the least time from sending it to the node
    /// being ready (its own latency, what must follow it, attach delays).
    pub after: Vec<(Api, Duration)>,
}

/// Plays the planner on a fresh node as if every action succeeded at once,
/// and counts the calls. Uses the real planner, so the bound follows it.
pub fn fresh_node_cost(fresh: &NodeSnapshot, profile: &CloudProfile) -> NodeCost {
    let mut node = fresh.clone();
    let mut calls = BTreeMap::new();
    // Per pass: the chains of calls that pass makes (a chain runs in order;
    // chains of one pass could run side by side).
    let mut passes: Vec<Vec<Vec<(Api, Duration)>>> = Vec::new();
    let mut serial = 0u32;
    for _ in 0..16 {
        let plan = planner::plan(&node, Duration::ZERO);
        if plan.actions.is_empty() {
            break;
        }
        let mut chains = Vec::new();
        for action in plan.actions {
            let (eni, count, chain) = match action {
                Action::Assign { eni, count } => {
                    node.enis
                        .iter_mut()
                        .find(|e| e.id == eni)
                        .expect("planned on a known ENI")
                        .secondary_ips += count;
                    (eni, count, vec![(Api::AssignPrivateIpAddresses, profile.write_latency)])
                }
                Action::CreateEni { subnet, device_index, ips } => {
                    let id = EniId(format!("eni-planned-{device_index}"));
                    node.enis.push(EniView {
                        id: id.clone(),
                        device_index,
                        subnet,
                        secondary_ips: ips,
                        in_use: true,
                        owner: EniOwner::Ours,
                    });
                    let chain = vec![
                        (Api::CreateNetworkInterface, profile.write_latency),
                        // The attachment completes `attach_delay` after the call, and
                        // no client knows it has before one listing says so.
                        (
                            Api::AttachNetworkInterface,
                            profile.write_latency + profile.attach_delay + profile.read_latency,
                        ),
                    ];
                    (id, ips, chain)
                }
                Action::Release { .. } => continue,
            };
            for (api, _) in &chain {
                *calls.entry(*api).or_default() += 1;
            }
            chains.push(chain);
            for _ in 0..count {
                serial += 1;
                node.pool.push(PoolIp {
                    ip: Ipv4Addr::from(serial),
                    eni: eni.clone(),
                    free_since: Some(Duration::ZERO),
                    release: None,
                });
            }
        }
        passes.push(chains);
    }
    // Walk the passes backwards to know, for each call, what must still follow it.
    let mut after = Vec::new();
    let mut later = Duration::ZERO;
    for chains in passes.iter().rev() {
        let mut longest = Duration::ZERO;
        for chain in chains {
            let total: Duration = chain.iter().map(|(_, d)| *d).sum();
            longest = longest.max(total);
            let mut rest = total;
            for (api, d) in chain {
                after.push((*api, rest + later));
                rest -= *d;
            }
        }
        later += longest;
    }
    // One listing to learn the node's ENIs comes first.
    NodeCost { calls, critical_path: profile.read_latency + later, after }
}

/// The bound, with the calls it counted per quota bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaBound {
    /// The least time.
    pub bound: Duration,
    /// Calls counted per bucket.
    pub calls_per_bucket: BTreeMap<String, u64>,
}

/// `nodes` fresh nodes, each costing `cost`, plus the reads any client needs
/// (one instance-type lookup, one subnet listing, the ENI listing in full
/// pages). Per quota bucket: the last of its calls cannot be sent before the
/// bucket has let all of them through, and that call still has what follows
/// it to wait for; the bound is the largest such time, or one node's chain.
pub fn quota_bound(profile: &CloudProfile, nodes: u64, cost: &NodeCost) -> QuotaBound {
    let mut per_bucket: BTreeMap<BucketId, u64> = BTreeMap::new();
    for (api, n) in &cost.calls {
        *per_bucket.entry(profile.bucket_of(*api)).or_default() += n * nodes;
    }
    let listing_pages = nodes.div_ceil(u64::from(profile.batch.max_page_size));
    for (api, n) in [
        (Api::DescribeInstanceTypes, 1),
        (Api::DescribeSubnets, 1),
        (Api::DescribeNetworkInterfaces, listing_pages),
    ] {
        *per_bucket.entry(profile.bucket_of(api)).or_default() += n;
    }
    let bound = per_bucket
        .iter()
        .map(|(bucket, calls)| {
            let quota_time = profile.buckets.get(bucket).map_or(Duration::ZERO, |spec| spec.time_for(*calls));
            // The least that must follow whichever of the bucket's calls goes last.
            let tail = cost
                .after
                .iter()
                .filter(|(api, _)| profile.bucket_of(*api) == *bucket)
                .map(|(_, d)| *d)
                .min()
                .unwrap_or_default();
            quota_time + tail
        })
        .max()
        .unwrap_or_default()
        .max(cost.critical_path);
    QuotaBound { bound, calls_per_bucket: per_bucket.into_iter().map(|(b, n)| (b.to_string(), n)).collect() }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use eni_ipam_api::{PoolKnobs, SubnetId, VpcId, Zone};
    use eni_ipam_cloud::{InstanceLimits, Subnet};

    use super::*;
    use crate::planner::SubnetSelector;

    fn fresh(profile: &CloudProfile, ty: &str, first: u32, pre: u32) -> NodeSnapshot {
        let limits: InstanceLimits = profile.instance_types[ty].clone();
        NodeSnapshot {
            zone: Zone::from("z"),
            limits,
            first_interface_index: first,
            knobs: PoolKnobs { pre_allocate: pre, ..PoolKnobs::default() },
            enis: vec![EniView {
                id: EniId::from("eni-0"),
                device_index: 0,
                subnet: SubnetId::from("s"),
                secondary_ips: 0,
                in_use: true,
                owner: EniOwner::Primary,
            }],
            pool: vec![],
            subnets: vec![Subnet {
                id: SubnetId::from("s"),
                vpc: VpcId::from("v"),
                zone: Zone::from("z"),
                cidr: String::new(),
                free_ips: 1 << 20,
                tags: BTreeMap::new(),
            }],
            selector: SubnetSelector::default(),
            batch: profile.batch,
            release_delay: Duration::ZERO,
        }
    }

    #[test]
    fn aws_on_the_primary_eni_costs_one_assign_and_is_bound_by_the_mutating_bucket() {
        let p = CloudProfile::aws();
        let cost = fresh_node_cost(&fresh(&p, "m5.xlarge", 0, 8), &p);
        assert_eq!(cost.calls, BTreeMap::from([(Api::AssignPrivateIpAddresses, 1)]));
        // 1000 assigns: 200 burst, then 800 at 5/s; the last one still takes a write.
        assert_eq!(quota_bound(&p, 1000, &cost).bound, Duration::from_secs(160) + p.write_latency);
    }

    #[test]
    fn alibaba_secondary_eni_costs_create_and_attach_each_in_its_own_bucket() {
        let p = CloudProfile::alibaba();
        let cost = fresh_node_cost(&fresh(&p, "ecs.g7.xlarge", 1, 8), &p);
        assert_eq!(
            cost.calls,
            BTreeMap::from([(Api::CreateNetworkInterface, 1), (Api::AttachNetworkInterface, 1)])
        );
        // 1000 creates at 500/min with a 500 burst: 60 s; the last create is then
        // answered, its ENI attached, the attachment completes and a listing sees it.
        let b = quota_bound(&p, 1000, &cost);
        assert_eq!(b.bound, Duration::from_secs(60) + p.write_latency * 2 + p.attach_delay + p.read_latency);
        assert_eq!(b.calls_per_bucket["CreateNetworkInterface"], 1000);
    }

    #[test]
    fn a_small_fleet_is_bound_by_one_nodes_chain_of_calls() {
        let p = CloudProfile::alibaba();
        let cost = fresh_node_cost(&fresh(&p, "ecs.g7.xlarge", 1, 12), &p);
        // create (10 IPs), attach, wait, see it attached, then assign the other 2.
        assert_eq!(cost.calls[&Api::AssignPrivateIpAddresses], 1);
        let b = quota_bound(&p, 3, &cost);
        assert_eq!(b.bound, cost.critical_path);
        assert_eq!(
            b.bound,
            p.read_latency + p.write_latency * 2 + p.attach_delay + p.read_latency + p.write_latency
        );
    }
}
