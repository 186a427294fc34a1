//! The pool planner: from a snapshot of one node (its pool, its ENIs, its
//! instance type's limits, the subnets, the knobs) decide what to do, as a
//! list of cloud actions. Pure: no I/O, no clock, no randomness; the
//! executor acts, this only decides.

mod pool_math;
mod subnet_choice;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use eni_ipam_api::{EniId, PoolKnobs, SubnetId, Zone};
use eni_ipam_cloud::{BatchLimits, InstanceLimits, Subnet};

pub use pool_math::{excess_ips, needed_ips};
pub use subnet_choice::{SubnetPick, SubnetSelector, pick_subnet};

/// An ENI attached to the node, as the planner needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EniView {
    /// Its id.
    pub id: EniId,
    /// Device index on the instance (0 is the primary ENI).
    pub device_index: u32,
    /// Its subnet.
    pub subnet: SubnetId,
    /// Secondary IPs it holds.
    pub secondary_ips: u32,
    /// `false` while the attachment is still in progress.
    pub in_use: bool,
}

/// One IP of the node's pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolIp {
    /// The address.
    pub ip: Ipv4Addr,
    /// The ENI it lives on.
    pub eni: EniId,
    /// `None` while a pod holds it; else since when it is free, on the
    /// operator's clock.
    pub free_since: Option<Duration>,
}

/// Everything the planner looks at for one node.
#[derive(Clone, Debug)]
pub struct NodeSnapshot {
    /// The node's zone.
    pub zone: Zone,
    /// Its instance type's limits.
    pub limits: InstanceLimits,
    /// ENIs from this device index on serve pods.
    pub first_interface_index: u32,
    /// The pool knobs.
    pub knobs: PoolKnobs,
    /// Attached (or attaching) ENIs.
    pub enis: Vec<EniView>,
    /// The pool: secondary IPs on in-use ENIs from the first usable index.
    pub pool: Vec<PoolIp>,
    /// Subnets of the VPC with free counts.
    pub subnets: Vec<Subnet>,
    /// Which subnets new ENIs may use.
    pub selector: SubnetSelector,
    /// Per-call limits of the cloud.
    pub batch: BatchLimits,
    /// A free IP is released only after being free this long.
    pub release_delay: Duration,
}

/// One cloud action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Add `count` secondary IPs to an attached ENI.
    Assign {
        /// The ENI.
        eni: EniId,
        /// How many (within the cloud's per-call limit).
        count: u32,
    },
    /// Create an ENI with `ips` secondary IPs and attach it at `device_index`.
    CreateEni {
        /// Subnet to create it in.
        subnet: SubnetId,
        /// Device index to attach it at.
        device_index: u32,
        /// Secondary IPs at creation (within the cloud's per-call limit).
        ips: u32,
    },
    /// Remove these secondary IPs from an ENI.
    Release {
        /// The ENI.
        eni: EniId,
        /// The addresses (within the cloud's per-call limit).
        ips: Vec<Ipv4Addr>,
    },
}

/// Why a node cannot get all the IPs it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// Every ENI the instance type allows is attached and full.
    InstanceLimit {
        /// IPs that could not be planned.
        missing: u32,
    },
    /// The matching subnets have no room left.
    SubnetsExhausted {
        /// IPs that could not be planned.
        missing: u32,
    },
    /// No subnet in the node's zone matches its selector.
    NoMatchingSubnet {
        /// IPs that could not be planned.
        missing: u32,
    },
}

impl Shortfall {
    /// A short reason, for conditions and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Shortfall::InstanceLimit { .. } => "InstanceLimitReached",
            Shortfall::SubnetsExhausted { .. } => "SubnetsExhausted",
            Shortfall::NoMatchingSubnet { .. } => "NoMatchingSubnet",
        }
    }
}

/// What the planner decided for one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// IPs the node lacks.
    pub needed: u32,
    /// IPs the node has too many of.
    pub excess: u32,
    /// The actions, in order.
    pub actions: Vec<Action>,
    /// Set when the needed IPs cannot all be planned.
    pub shortfall: Option<Shortfall>,
    /// Excess IPs that are free but not yet past the release delay.
    pub release_waiting: u32,
}

impl NodeSnapshot {
    /// IPs in the pool plus those on ENIs still attaching.
    pub fn available(&self) -> u32 {
        let attaching: u32 = self
            .enis
            .iter()
            .filter(|e| !e.in_use && e.device_index >= self.first_interface_index)
            .map(|e| e.secondary_ips)
            .sum();
        self.pool.len() as u32 + attaching
    }

    /// IPs of the pool that pods hold.
    pub fn used(&self) -> u32 {
        self.pool.iter().filter(|p| p.free_since.is_none()).count() as u32
    }

    /// Pod IPs the instance could hold at most.
    pub fn capacity(&self) -> u32 {
        self.limits.pod_capacity(self.first_interface_index)
    }
}

/// Decides what to do for one node at time `now` (operator clock).
pub fn plan(node: &NodeSnapshot, now: Duration) -> Plan {
    let (available, used) = (node.available(), node.used());
    let needed = needed_ips(available, used, &node.knobs);
    if needed > 0 {
        return allocate(node, needed, available);
    }
    let excess = excess_ips(available, used, &node.knobs);
    if excess > 0 {
        return release(node, excess, now);
    }
    Plan::default()
}

fn allocate(node: &NodeSnapshot, needed: u32, available: u32) -> Plan {
    let per_eni = node.limits.ipv4_per_eni.saturating_sub(1);
    let headroom = match node.knobs.max_allocate {
        0 => u32::MAX,
        max => max.saturating_sub(available),
    };
    let mut extra_left = node.knobs.max_above_watermark.min(headroom.saturating_sub(needed));
    let mut remaining = needed;
    let mut free: BTreeMap<SubnetId, u32> = node.subnets.iter().map(|s| (s.id.clone(), s.free_ips)).collect();
    let mut actions = Vec::new();

    // 1. Fill ENIs already attached, lowest device index first.
    let mut usable: Vec<&EniView> =
        node.enis.iter().filter(|e| e.in_use && e.device_index >= node.first_interface_index).collect();
    usable.sort_by_key(|e| e.device_index);
    for eni in usable {
        if remaining == 0 {
            break;
        }
        let subnet_room = free.get(&eni.subnet).copied().unwrap_or(0);
        let room = per_eni.saturating_sub(eni.secondary_ips).min(subnet_room);
        let take = remaining.min(room);
        if take == 0 {
            continue;
        }
        remaining -= take;
        let extra = if remaining == 0 { extra_left.min(room - take) } else { 0 };
        extra_left -= extra;
        let count = take + extra;
        *free.get_mut(&eni.subnet).expect("room came from here") -= count;
        for chunk in BatchLimits::chunks(count, node.batch.assign_ips_per_call) {
            actions.push(Action::Assign { eni: eni.id.clone(), count: chunk });
        }
    }

    // 2. New ENIs for the rest, while the instance type allows.
    let mut taken: BTreeSet<u32> = node.enis.iter().map(|e| e.device_index).collect();
    taken.insert(0);
    let mut shortfall = None;
    while remaining > 0 {
        if taken.len() as u32 >= node.limits.max_enis {
            shortfall = Some(Shortfall::InstanceLimit { missing: remaining });
            break;
        }
        let (subnet, subnet_room) = match pick_subnet(&node.subnets, &free, &node.selector, &node.zone) {
            SubnetPick::Chosen(id, room) => (id, room),
            SubnetPick::Exhausted => {
                shortfall = Some(Shortfall::SubnetsExhausted { missing: remaining });
                break;
            }
            SubnetPick::NoneMatches => {
                shortfall = Some(Shortfall::NoMatchingSubnet { missing: remaining });
                break;
            }
        };
        let device_index = (node.first_interface_index.max(1)..)
            .find(|i| !taken.contains(i))
            .expect("an unbounded range always has a free index");
        if device_index >= node.limits.max_enis {
            shortfall = Some(Shortfall::InstanceLimit { missing: remaining });
            break;
        }
        taken.insert(device_index);
        let room = per_eni.min(subnet_room - 1);
        let take = remaining.min(room);
        remaining -= take;
        // Surplus rides on an ENI being created anyway, never on one of its own.
        let extra = if remaining == 0 { extra_left.min(room - take) } else { 0 };
        extra_left -= extra;
        // What does not fit in one create call is assigned once the ENI is in use.
        let ips = (take + extra).min(node.batch.create_ips_per_call.unwrap_or(u32::MAX));
        *free.get_mut(&subnet).expect("picked from here") -= ips + 1;
        actions.push(Action::CreateEni { subnet, device_index, ips });
    }
    Plan { needed, actions, shortfall, ..Plan::default() }
}

fn release(node: &NodeSnapshot, excess: u32, now: Duration) -> Plan {
    let mut releasable: BTreeMap<&EniId, Vec<Ipv4Addr>> = BTreeMap::new();
    let mut waiting = 0;
    for ip in &node.pool {
        match ip.free_since {
            Some(since) if now.saturating_sub(since) >= node.release_delay => {
                releasable.entry(&ip.eni).or_default().push(ip.ip)
            }
            Some(_) => waiting += 1,
            None => {}
        }
    }
    // Empty the ENIs with the most free IPs first, highest device index on a tie:
    // whole ENIs can then go, and the primary ENI is drained last.
    let index_of = |id: &EniId| node.enis.iter().find(|e| &e.id == id).map_or(0, |e| e.device_index);
    let mut order: Vec<(&EniId, Vec<Ipv4Addr>)> = releasable.into_iter().collect();
    order.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| index_of(b.0).cmp(&index_of(a.0))));
    let mut left = excess as usize;
    let mut actions = Vec::new();
    for (eni, mut ips) in order {
        if left == 0 {
            break;
        }
        ips.sort();
        ips.truncate(left);
        left -= ips.len();
        let per_call = node.batch.unassign_ips_per_call.unwrap_or(u32::MAX).max(1) as usize;
        for chunk in ips.chunks(per_call) {
            actions.push(Action::Release { eni: eni.clone(), ips: chunk.to_vec() });
        }
    }
    Plan { excess, actions, release_waiting: waiting.min(left as u32), ..Plan::default() }
}
