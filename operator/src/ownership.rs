//! Which IPs on a node's ENIs are this cluster's to hand out and release. Pure.
//!
//! A node may carry addresses eni-ipam never assigned: another CNI's pods on a
//! node migrated to eni-ipam (aws-node, Terway), a second cluster's ENI, an
//! address an admin gave the VM. Handing one out double-books it; releasing one
//! cuts its owner off. So the pool is built from what this cluster can prove is
//! its own:
//! - every secondary IP of an ENI that carries this cluster's tags (we created it);
//! - on the primary ENI (device index 0, created with the VM, so nobody's tags),
//!   when pods may use it (`firstInterfaceIndex` 0): only the IPs this cluster
//!   assigned there, as recorded in the ENINode's `spec.pool` (the operator's own
//!   record, which outlives an operator restart) and in the answers of this
//!   converge's assign calls;
//! - any other ENI is foreign: no pool, no assign, no release; it still takes a
//!   device slot and its IPs count against the instance's capacity.
//!
//! An IP this cluster released is not taken back while it cools down, even when a
//! stale listing still shows it on the ENI.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use eni_ipam_api::{EniId, SubnetId};
use eni_ipam_cloud::{Eni, EniState, InstanceLimits};

/// Who an attached ENI belongs to, as far as this cluster's pool goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EniOwner {
    /// Created by this cluster (its tags): all its secondary IPs are ours.
    Ours,
    /// The VM's primary ENI: ours are only the IPs we assigned on it.
    Primary,
    /// Another CNI's, another cluster's, an admin's: not touched.
    Foreign,
}

impl EniOwner {
    /// Of one ENI, for `cluster`.
    pub fn of(eni: &Eni, cluster: &str) -> Self {
        if eni.is_ours(cluster) {
            EniOwner::Ours
        } else if eni.device_index == Some(0) {
            EniOwner::Primary
        } else {
            EniOwner::Foreign
        }
    }

    /// Whether the planner may add IPs to it.
    pub fn takes_ips(self) -> bool {
        self != EniOwner::Foreign
    }
}

/// Why an IP seen on a node's ENI is or is not in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVerdict {
    /// Ours: in the pool.
    Pool,
    /// The ENI is below the first usable index, or still attaching.
    EniNotUsable,
    /// The ENI is not this cluster's and not the primary.
    ForeignEni,
    /// On the primary ENI, but this cluster never assigned it.
    NotAssignedByUs,
    /// This cluster released it lately; a stale listing still shows it.
    Cooling,
}

/// What this cluster knows of the IPs it handled on one node.
#[derive(Clone, Debug, Default)]
pub struct IpRecord {
    /// IPs this cluster assigned, with the ENI they were assigned on: the
    /// ENINode's `spec.pool`, plus the answers of assign calls not published yet.
    pub assigned: BTreeMap<Ipv4Addr, EniId>,
    /// IPs this cluster released that are still cooling down.
    pub cooling: BTreeSet<Ipv4Addr>,
}

/// The verdict on one secondary IP of one ENI.
pub fn verdict(
    eni: &Eni,
    ip: Ipv4Addr,
    first_interface_index: u32,
    cluster: &str,
    record: &IpRecord,
) -> IpVerdict {
    if eni.state != EniState::InUse || eni.device_index.unwrap_or(0) < first_interface_index {
        return IpVerdict::EniNotUsable;
    }
    match EniOwner::of(eni, cluster) {
        EniOwner::Foreign => return IpVerdict::ForeignEni,
        // A record on another ENI (the same name's old instance) proves nothing here.
        EniOwner::Primary if record.assigned.get(&ip) != Some(&eni.id) => return IpVerdict::NotAssignedByUs,
        _ => {}
    }
    if record.cooling.contains(&ip) {
        return IpVerdict::Cooling;
    }
    IpVerdict::Pool
}

/// One IP of the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedIp {
    /// The address.
    pub ip: Ipv4Addr,
    /// Its ENI.
    pub eni: EniId,
    /// The ENI's subnet.
    pub subnet: SubnetId,
}

/// The node's pool: the IPs whose verdict is [`IpVerdict::Pool`], in ENI order.
pub fn owned_pool(
    enis: &[Eni],
    first_interface_index: u32,
    cluster: &str,
    record: &IpRecord,
) -> Vec<OwnedIp> {
    enis.iter()
        .flat_map(|eni| eni.secondary_ips.iter().map(move |ip| (eni, *ip)))
        .filter(|(eni, ip)| verdict(eni, *ip, first_interface_index, cluster, record) == IpVerdict::Pool)
        .map(|(eni, ip)| OwnedIp { ip, eni: eni.id.clone(), subnet: eni.subnet.clone() })
        .collect()
}

/// Pod IPs the instance can hold at most for this cluster: the type's capacity from
/// the first usable index, less the slots of foreign ENIs there and the IPs others
/// hold on the primary ENI.
pub fn pod_capacity(
    enis: &[Eni],
    limits: &InstanceLimits,
    first_interface_index: u32,
    cluster: &str,
    record: &IpRecord,
) -> u32 {
    let per_eni = limits.ipv4_per_eni.saturating_sub(1);
    let taken_by_others: u32 = enis
        .iter()
        .filter(|e| e.device_index.unwrap_or(0) >= first_interface_index)
        .map(|e| match EniOwner::of(e, cluster) {
            EniOwner::Ours => 0,
            EniOwner::Foreign => per_eni,
            EniOwner::Primary => {
                e.secondary_ips.iter().filter(|ip| record.assigned.get(ip) != Some(&e.id)).count() as u32
            }
        })
        .sum();
    limits.pod_capacity(first_interface_index).saturating_sub(taken_by_others)
}

/// The primary ENI where pods use it (first usable index 0): the one IPs of other CNIs
/// can share with ours.
fn usable_primary<'a>(enis: &'a [Eni], first_interface_index: u32, cluster: &str) -> Option<&'a Eni> {
    enis.iter().find(|e| {
        first_interface_index == 0
            && e.state == EniState::InUse
            && EniOwner::of(e, cluster) == EniOwner::Primary
    })
}

/// Every secondary IP of the usable primary ENI, ours and others', as `spec.primaryEniIps`
/// records it with the pool; `None` where pods do not use the primary ENI.
pub fn primary_eni_ips(
    enis: &[Eni],
    first_interface_index: u32,
    cluster: &str,
) -> Option<BTreeSet<Ipv4Addr>> {
    usable_primary(enis, first_interface_index, cluster).map(|e| e.secondary_ips.iter().copied().collect())
}

/// After a failover: the IPs on the primary ENI that were not there when the pool was last
/// published (`seen`) are the old leader's assigns that it died before recording, so they
/// join the record. Another CNI's IPs were there already (in `seen`, not in the pool) and stay
/// out. Called only until this process has published the node itself; an IP another CNI
/// assigns on the same ENI while no operator runs is taken as ours (one CNI per node).
pub fn recover_failover_assigns(
    record: &mut IpRecord,
    enis: &[Eni],
    first_interface_index: u32,
    cluster: &str,
    seen: &BTreeSet<Ipv4Addr>,
) {
    let Some(primary) = usable_primary(enis, first_interface_index, cluster) else { return };
    for ip in primary.secondary_ips.iter().filter(|ip| !seen.contains(ip) && !record.cooling.contains(ip)) {
        record.assigned.entry(*ip).or_insert_with(|| primary.id.clone());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use eni_ipam_api::{InstanceId, InstanceType, VpcId, Zone};
    use eni_ipam_cloud::tag;

    use super::*;

    const CLUSTER: &str = "blue";

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, last)
    }

    fn eni(id: &str, index: u32, cluster_tag: Option<&str>, ips: &[u8]) -> Eni {
        let mut tags = BTreeMap::new();
        if let Some(cluster) = cluster_tag {
            tags.insert(tag::CLUSTER.to_owned(), cluster.to_owned());
            tags.insert(tag::CREATED_BY.to_owned(), tag::CREATOR.to_owned());
        }
        Eni {
            id: EniId::from(id),
            subnet: SubnetId::from("subnet-a"),
            vpc: VpcId::from("vpc-1"),
            zone: Zone::from("zone-a"),
            mac: String::new(),
            instance: Some(InstanceId::from("i-new")),
            device_index: Some(index),
            state: EniState::InUse,
            primary_ip: ip(index as u8 + 200),
            secondary_ips: ips.iter().map(|n| ip(*n)).collect(),
            tags,
        }
    }

    fn record(assigned: &[(u8, &str)], cooling: &[u8]) -> IpRecord {
        IpRecord {
            assigned: assigned.iter().map(|(n, e)| (ip(*n), EniId::from(*e))).collect(),
            cooling: cooling.iter().map(|n| ip(*n)).collect(),
        }
    }

    #[test]
    fn ip_ownership_table() {
        let primary = eni("eni-primary", 0, None, &[1, 2]);
        let ours = eni("eni-ours", 1, Some(CLUSTER), &[3]);
        let terway = eni("eni-terway", 2, None, &[4]);
        let other_cluster = eni("eni-green", 3, Some("green"), &[5]);
        let mut attaching = eni("eni-attaching", 4, Some(CLUSTER), &[6]);
        attaching.state = EniState::Attaching;
        let mut untagged_but_created_by_another_tool = eni("eni-half", 5, None, &[7]);
        untagged_but_created_by_another_tool.tags.insert(tag::CLUSTER.to_owned(), CLUSTER.to_owned());
        // (ENI, IP, first index, record, verdict, the case)
        let rows: Vec<(&Eni, u8, u32, IpRecord, IpVerdict, &str)> = vec![
            (
                &ours,
                3,
                0,
                record(&[], &[]),
                IpVerdict::Pool,
                "an IP on an ENI we tagged is ours, recorded or not",
            ),
            (
                &primary,
                1,
                0,
                record(&[(1, "eni-primary")], &[]),
                IpVerdict::Pool,
                "an IP we assigned on the primary ENI is ours",
            ),
            (
                &primary,
                2,
                0,
                record(&[(1, "eni-primary")], &[]),
                IpVerdict::NotAssignedByUs,
                "another CNI's IP on the primary ENI is not",
            ),
            (
                &primary,
                1,
                0,
                record(&[(1, "eni-old-primary")], &[]),
                IpVerdict::NotAssignedByUs,
                "a record on the same name's old instance's primary ENI proves nothing (node name reused)",
            ),
            (
                &primary,
                1,
                1,
                record(&[(1, "eni-primary")], &[]),
                IpVerdict::EniNotUsable,
                "the primary ENI below the first usable index serves no pod",
            ),
            (
                &terway,
                4,
                0,
                record(&[(4, "eni-terway")], &[]),
                IpVerdict::ForeignEni,
                "an untagged ENI at the first index or above is another CNI's, even if recorded",
            ),
            (
                &other_cluster,
                5,
                0,
                record(&[], &[]),
                IpVerdict::ForeignEni,
                "another cluster's ENI is not ours",
            ),
            (
                &untagged_but_created_by_another_tool,
                7,
                0,
                record(&[], &[]),
                IpVerdict::ForeignEni,
                "our cluster tag without our creator tag is not ours",
            ),
            (
                &attaching,
                6,
                0,
                record(&[], &[]),
                IpVerdict::EniNotUsable,
                "an ENI still attaching serves no pod yet",
            ),
            (
                &ours,
                3,
                0,
                record(&[], &[3]),
                IpVerdict::Cooling,
                "an IP we released, shown again by a stale listing, is not taken back",
            ),
            (
                &primary,
                1,
                0,
                record(&[(1, "eni-primary")], &[1]),
                IpVerdict::Cooling,
                "...on the primary ENI too",
            ),
        ];
        for (eni, n, first, record, want, case) in rows {
            assert_eq!(verdict(eni, ip(n), first, CLUSTER, &record), want, "{case}");
        }
    }

    #[test]
    fn the_pool_holds_only_our_ips_and_capacity_leaves_out_the_others() {
        let enis = [
            eni("eni-primary", 0, None, &[1, 2, 3]),
            eni("eni-ours", 1, Some(CLUSTER), &[4, 5]),
            eni("eni-terway", 2, None, &[6]),
        ];
        let record = record(&[(2, "eni-primary")], &[5]);
        let pool: Vec<Ipv4Addr> = owned_pool(&enis, 0, CLUSTER, &record).into_iter().map(|p| p.ip).collect();
        assert_eq!(pool, [ip(2), ip(4)]);
        let limits = InstanceLimits { instance_type: InstanceType::from("t"), max_enis: 4, ipv4_per_eni: 6 };
        // 4 ENIs x 5 = 20, less 2 IPs others hold on the primary, less the foreign ENI's 5 slots.
        assert_eq!(pod_capacity(&enis, &limits, 0, CLUSTER, &record), 13);
        // From index 1 on, the primary does not count: 3 x 5 less the foreign ENI.
        assert_eq!(pod_capacity(&enis, &limits, 1, CLUSTER, &record), 10);
    }

    #[test]
    fn a_failover_recovers_the_old_leaders_unrecorded_assigns_and_nothing_of_another_cni() {
        // On the primary ENI: 1 ours and recorded, 2 another CNI's (there at the last
        // publish), 3 assigned by the old leader after that publish, 4 ours but cooling.
        let primary = eni("eni-primary", 0, None, &[1, 2, 3, 4]);
        let seen: BTreeSet<Ipv4Addr> = [ip(1), ip(2)].into();
        // (first index, record before, seen, IPs assigned after recovery, the case)
        type Row<'a> = (u32, IpRecord, Option<&'a BTreeSet<Ipv4Addr>>, Vec<u8>, &'a str);
        let rows: Vec<Row> = vec![
            (
                0,
                record(&[(1, "eni-primary")], &[4]),
                Some(&seen),
                vec![1, 3],
                "unrecorded new IP recovered, foreign and cooling not",
            ),
            (
                0,
                record(&[(1, "eni-primary")], &[]),
                None,
                vec![1],
                "never published with primaryEniIps: nothing recovered",
            ),
            (1, record(&[], &[]), Some(&seen), vec![], "the primary ENI serves no pod: nothing to recover"),
        ];
        for (first, mut record, seen, want, case) in rows {
            if let Some(seen) = seen {
                recover_failover_assigns(&mut record, std::slice::from_ref(&primary), first, CLUSTER, seen);
            }
            let got: Vec<u8> = record.assigned.keys().map(|a| a.octets()[3]).collect();
            assert_eq!(got, want, "{case}");
        }
        assert_eq!(
            primary_eni_ips(std::slice::from_ref(&primary), 0, CLUSTER),
            Some([1, 2, 3, 4].map(ip).into())
        );
        assert_eq!(primary_eni_ips(std::slice::from_ref(&primary), 1, CLUSTER), None);
    }
}
