//! The simulated VPC: zones, subnets sized for the fleet, and the fleet's
//! instances launched (as an autoscaler would) before the operator sees them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use eni_ipam_api::{InstanceId, SubnetId, Zone};
use eni_ipam_cloud::fake::FakeCloud;
use eni_ipam_cloud::{CloudKind, CloudResult};

/// Zones of the simulated region.
pub fn zones(kind: CloudKind) -> Vec<Zone> {
    let names: &[&str] = match kind {
        CloudKind::Aws => &["us-east-1a", "us-east-1b"],
        CloudKind::Alibaba => &["cn-hangzhou-h", "cn-hangzhou-i"],
    };
    names.iter().map(|z| Zone::from(*z)).collect()
}

/// Subnets per zone.
const SUBNETS_PER_ZONE: u32 = 2;

/// The prefix length that gives every subnet room for its share of
/// `ips_needed` twice over, between /24 and /12.
pub fn subnet_prefix(ips_needed: u64, subnets: u32) -> u8 {
    let share = (ips_needed * 2).div_ceil(u64::from(subnets.max(1))) + 5;
    let bits = 64 - (share.max(1) - 1).leading_zeros();
    (32 - bits.clamp(8, 20)) as u8
}

/// A launched fleet: each instance with its zone.
pub struct LaunchedFleet {
    /// (instance, zone), in launch order.
    pub instances: Vec<(InstanceId, Zone)>,
}

/// Creates the subnets (in 10.0.0.0/8) and launches `nodes` instances,
/// round-robin over the zones.
pub fn launch(
    cloud: &FakeCloud,
    nodes: u32,
    instance_type: &str,
    ips_per_node: u32,
) -> CloudResult<LaunchedFleet> {
    let kind = cloud.profile().kind;
    let zones = zones(kind);
    let count = zones.len() as u32 * SUBNETS_PER_ZONE;
    let prefix = subnet_prefix(u64::from(nodes) * u64::from(ips_per_node + 2), count);
    let size = 1u32 << (32 - u32::from(prefix));
    let mut console = cloud.console();
    let mut by_zone: BTreeMap<&Zone, Vec<SubnetId>> = BTreeMap::new();
    for (i, zone) in zones.iter().cycle().take(count as usize).enumerate() {
        let base = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 0)) + i as u32 * size);
        let id = console.add_subnet(zone.clone(), base, prefix, BTreeMap::new());
        by_zone.entry(zone).or_default().push(id);
    }
    let mut instances = Vec::with_capacity(nodes as usize);
    for n in 0..nodes as usize {
        let zone = &zones[n % zones.len()];
        let subnet = &by_zone[zone][0];
        instances.push((console.launch_instance(instance_type, subnet)?, zone.clone()));
    }
    Ok(LaunchedFleet { instances })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_hold_the_fleet_twice_within_bounds() {
        assert_eq!(subnet_prefix(100, 4), 24, "never smaller than /24");
        // 1000 nodes x 10 IPs over 4 subnets: 5000 each -> /19 (8192).
        assert_eq!(subnet_prefix(10_000, 4), 19);
        assert_eq!(subnet_prefix(100_000_000, 4), 12, "never larger than /12");
    }
}
