//! What must hold after any run, checked against the cloud's own state:
//! nothing the operator created is leaked, no IP is in two pools, and every
//! pool IP really sits on its ENI.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use eni_ipam_api::{ENINode, EniId, InstanceId};
use eni_ipam_cloud::Eni;
use serde::Serialize;

/// Invariant counts (all must be 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Invariants {
    /// ENIs tagged as ours that are detached, or attached to a node that does
    /// not list them.
    pub leaked_enis: u64,
    /// IPs in the pools of two or more nodes (each extra holder counts once).
    pub duplicate_ips: u64,
    /// Pool IPs the cloud does not have on the ENI the pool names.
    pub pool_mismatches: u64,
}

/// Checks the invariants.
pub fn check(cluster: &str, cloud_enis: &[Eni], nodes: &[ENINode]) -> Invariants {
    let node_of_instance: HashMap<&InstanceId, &ENINode> =
        nodes.iter().map(|n| (&n.spec.instance_id, n)).collect();
    let mut out = Invariants::default();
    for eni in cloud_enis.iter().filter(|e| e.is_ours(cluster)) {
        let listed = eni
            .instance
            .as_ref()
            .and_then(|i| node_of_instance.get(i))
            .and_then(|n| n.status.as_ref())
            .is_some_and(|s| s.enis.contains_key(eni.id.as_str()));
        if !listed {
            out.leaked_enis += 1;
        }
    }
    let on_eni: HashMap<(&EniId, Ipv4Addr), ()> =
        cloud_enis.iter().flat_map(|e| e.secondary_ips.iter().map(move |ip| ((&e.id, *ip), ()))).collect();
    let mut holders: BTreeMap<&str, u64> = BTreeMap::new();
    for node in nodes {
        for (ip, entry) in &node.spec.pool {
            *holders.entry(ip.as_str()).or_default() += 1;
            let real = ip.parse::<Ipv4Addr>().ok().is_some_and(|ip| on_eni.contains_key(&(&entry.eni, ip)));
            if !real {
                out.pool_mismatches += 1;
            }
        }
    }
    out.duplicate_ips = holders.values().map(|n| n - 1).sum();
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use eni_ipam_api::{ENINodeSpec, ENINodeStatus, EniStatus, PoolEntry, SubnetId, VpcId, Zone};
    use eni_ipam_cloud::{EniState, tag};

    use super::*;

    fn eni(id: &str, instance: Option<&str>, ours: bool, ips: &[u8]) -> Eni {
        let mut tags = BTreeMap::new();
        if ours {
            tags.insert(tag::CLUSTER.into(), "c".into());
            tags.insert(tag::CREATED_BY.into(), tag::CREATOR.into());
        }
        Eni {
            id: EniId::from(id),
            subnet: SubnetId::from("s"),
            vpc: VpcId::from("v"),
            zone: Zone::from("z"),
            mac: String::new(),
            instance: instance.map(InstanceId::from),
            device_index: instance.map(|_| 1),
            state: if instance.is_some() { EniState::InUse } else { EniState::Detached },
            primary_ip: Ipv4Addr::new(10, 0, 0, 1),
            secondary_ips: ips.iter().map(|n| Ipv4Addr::new(10, 0, 1, *n)).collect(),
            tags,
        }
    }

    fn node(name: &str, instance: &str, enis: &[&str], pool: &[(&str, &str)]) -> ENINode {
        let mut n = ENINode::new(
            name,
            ENINodeSpec { instance_id: InstanceId::from(instance), ..ENINodeSpec::default() },
        );
        n.spec.pool = pool
            .iter()
            .map(|(ip, e)| (ip.to_string(), PoolEntry { eni: EniId::from(*e), subnet: SubnetId::from("s") }))
            .collect();
        n.status = Some(ENINodeStatus {
            enis: enis.iter().map(|e| (e.to_string(), EniStatus::default())).collect(),
            ..ENINodeStatus::default()
        });
        n
    }

    #[test]
    fn a_clean_fleet_has_nothing_to_report() {
        let cloud = [eni("eni-1", Some("i-1"), true, &[5, 6]), eni("eni-x", None, false, &[])];
        let nodes = [node("n1", "i-1", &["eni-1"], &[("10.0.1.5", "eni-1"), ("10.0.1.6", "eni-1")])];
        assert_eq!(
            check("c", &cloud, &nodes),
            Invariants::default(),
            "ENIs not ours are none of our business"
        );
    }

    #[test]
    fn detached_or_unlisted_enis_of_ours_are_leaks() {
        let cloud = [
            eni("eni-1", None, true, &[]),
            eni("eni-2", Some("i-1"), true, &[]),
            eni("eni-3", Some("i-9"), true, &[]),
        ];
        let nodes = [node("n1", "i-1", &[], &[])];
        assert_eq!(check("c", &cloud, &nodes).leaked_enis, 3);
    }

    #[test]
    fn an_ip_in_two_pools_or_not_on_its_eni_is_caught() {
        let cloud = [eni("eni-1", Some("i-1"), true, &[5]), eni("eni-2", Some("i-2"), true, &[6])];
        let nodes = [
            node("n1", "i-1", &["eni-1"], &[("10.0.1.5", "eni-1")]),
            node("n2", "i-2", &["eni-2"], &[("10.0.1.5", "eni-2"), ("10.0.1.6", "eni-2")]),
        ];
        let found = check("c", &cloud, &nodes);
        assert_eq!((found.duplicate_ips, found.pool_mismatches), (1, 1));
    }
}
