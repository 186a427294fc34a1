//! Which subnet a new ENI goes into.

use std::collections::BTreeMap;

use eni_ipam_api::{SubnetId, Zone};
use eni_ipam_cloud::Subnet;

/// Where a node may take subnets from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubnetSelector {
    /// Only these ids (empty: any).
    pub ids: Vec<SubnetId>,
    /// Only subnets carrying all these tags (empty: any).
    pub tags: BTreeMap<String, String>,
}

impl SubnetSelector {
    /// Whether a subnet in `zone` may be used.
    pub fn admits(&self, subnet: &Subnet, zone: &Zone) -> bool {
        &subnet.zone == zone
            && (self.ids.is_empty() || self.ids.contains(&subnet.id))
            && self.tags.iter().all(|(k, v)| subnet.tags.get(k) == Some(v))
    }
}

/// The outcome of looking for a subnet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubnetPick {
    /// This one, with this many free IPs.
    Chosen(SubnetId, u32),
    /// Subnets match, but none has room for an ENI and one secondary IP.
    Exhausted,
    /// No subnet in the node's zone matches the selector.
    NoneMatches,
}

/// The matching subnet with the most free IPs (ties: lowest id, so plans are
/// reproducible); `free` holds the counts as this plan has consumed them.
pub fn pick_subnet(
    subnets: &[Subnet],
    free: &BTreeMap<SubnetId, u32>,
    selector: &SubnetSelector,
    zone: &Zone,
) -> SubnetPick {
    let best = subnets
        .iter()
        .filter(|s| selector.admits(s, zone))
        .map(|s| (free.get(&s.id).copied().unwrap_or(s.free_ips), &s.id))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
    match best {
        None => SubnetPick::NoneMatches,
        // An ENI needs its own primary IP plus at least one for pods.
        Some((room, _)) if room < 2 => SubnetPick::Exhausted,
        Some((room, id)) => SubnetPick::Chosen(id.clone(), room),
    }
}
