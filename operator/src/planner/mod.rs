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

use eni_ipam_api::{EniId, PoolKnobs, ReleaseState, SubnetId, Zone};
use eni_ipam_cloud::{BatchLimits, InstanceLimits, Subnet};

pub use crate::ownership::EniOwner;

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
    /// Whose it is: IPs are added only to ours and to the primary ENI, never to a
    /// foreign one (which still takes its device slot).
    pub owner: EniOwner,
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
    /// Where it is in the release handshake with the node's agent
    /// (`status.release`), if anywhere.
    pub release: Option<ReleaseState>,
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
    /// The pool: this cluster's secondary IPs on in-use ENIs from the first usable
    /// index (`crate::ownership`).
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
    /// IPs that could not be planned.
    pub fn missing(&self) -> u32 {
        match self {
            Shortfall::InstanceLimit { missing }
            | Shortfall::SubnetsExhausted { missing }
            | Shortfall::NoMatchingSubnet { missing } => *missing,
        }
    }

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
    /// IPs to mark for release (`status.release[ip] = marked`): the agent must
    /// stop handing them out and answer before the cloud call.
    pub mark: Vec<Ipv4Addr>,
    /// IPs whose release entry goes away: the agent said a pod holds them, or
    /// the pool needs them again.
    pub unmark: Vec<Ipv4Addr>,
    /// Marked IPs the agent has not answered yet.
    pub awaiting_agent: u32,
}

impl Plan {
    /// Anything to do: cloud actions or handshake writes.
    pub fn has_work(&self) -> bool {
        !self.actions.is_empty() || !self.mark.is_empty() || !self.unmark.is_empty()
    }
}

impl NodeSnapshot {
    /// IPs in the pool plus those on ENIs still attaching.
    pub fn available(&self) -> u32 {
        let attaching: u32 = self
            .enis
            .iter()
            .filter(|e| {
                !e.in_use && e.device_index >= self.first_interface_index && e.owner == EniOwner::Ours
            })
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
        return Plan { unmark: in_handshake(node).collect(), ..allocate(node, needed, available) };
    }
    let excess = excess_ips(available, used, &node.knobs);
    if excess > 0 {
        return release(node, excess, now);
    }
    Plan { unmark: in_handshake(node).collect(), ..Plan::default() }
}

/// How far the pool can grow now towards `target` IPs: the pool (and IPs on ENIs still
/// attaching) plus what the planner could add on the attached ENIs and on new ones, within the
/// instance type and the subnets' free addresses as the snapshot knows them; with why it
/// stops short, when it does. Other nodes drawing on the same subnets are not counted, so
/// this is what the node could get if it asked first.
pub fn reachable(node: &NodeSnapshot, target: u32) -> (u32, Option<Shortfall>) {
    let available = node.available();
    let wanted = target.saturating_sub(available);
    if wanted == 0 {
        return (available, None);
    }
    // The whole way to `target`, nothing above it: the knobs' ceiling and surplus do not apply.
    let knobs = PoolKnobs { max_above_watermark: 0, max_allocate: 0, ..node.knobs };
    let probe = allocate(&NodeSnapshot { knobs, ..node.clone() }, wanted, available);
    let missing = probe.shortfall.as_ref().map_or(0, Shortfall::missing);
    (available + wanted - missing, probe.shortfall)
}

/// Pool IPs with a release entry (all of them go back to the agent when nothing is excess).
fn in_handshake(node: &NodeSnapshot) -> impl Iterator<Item = Ipv4Addr> + '_ {
    node.pool.iter().filter(|p| p.release.is_some()).map(|p| p.ip)
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
    let mut usable: Vec<&EniView> = node
        .enis
        .iter()
        .filter(|e| e.in_use && e.device_index >= node.first_interface_index && e.owner.takes_ips())
        .collect();
    usable.sort_by_key(|e| e.device_index);
    // An attached ENI with slots its subnet cannot fill: the subnet, not the instance, is the limit.
    let mut subnet_bound = false;
    for eni in usable {
        if remaining == 0 {
            break;
        }
        let subnet_room = free.get(&eni.subnet).copied().unwrap_or(0);
        let eni_room = per_eni.saturating_sub(eni.secondary_ips);
        subnet_bound |= subnet_room < remaining.min(eni_room);
        let room = eni_room.min(subnet_room);
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
    let slots_out = |missing| match subnet_bound {
        true => Shortfall::SubnetsExhausted { missing },
        false => Shortfall::InstanceLimit { missing },
    };
    while remaining > 0 {
        if taken.len() as u32 >= node.limits.max_enis {
            shortfall = Some(slots_out(remaining));
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
            shortfall = Some(slots_out(remaining));
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
    let mut releasable: BTreeMap<&EniId, Vec<&PoolIp>> = BTreeMap::new();
    let mut waiting = 0;
    for ip in &node.pool {
        match ip.free_since {
            // The agent said a pod holds it: not a candidate, whatever the operator's view of `used`.
            _ if ip.release == Some(ReleaseState::DoNotRelease) => {}
            Some(since) if now.saturating_sub(since) >= node.release_delay => {
                releasable.entry(&ip.eni).or_default().push(ip)
            }
            Some(_) => waiting += 1,
            None => {}
        }
    }
    // IPs already in the handshake first (the choice stays put while the agent answers);
    // then empty the ENIs with the most free IPs, highest device index on a tie:
    // whole ENIs can then go, and the primary ENI is drained last.
    let index_of = |id: &EniId| node.enis.iter().find(|e| &e.id == id).map_or(0, |e| e.device_index);
    let marked = |ips: &[&PoolIp]| ips.iter().filter(|p| p.release.is_some()).count();
    let mut order: Vec<(&EniId, Vec<&PoolIp>)> = releasable.into_iter().collect();
    order.sort_by(|a, b| {
        (marked(&b.1), b.1.len(), index_of(b.0)).cmp(&(marked(&a.1), a.1.len(), index_of(a.0)))
    });
    let mut left = excess as usize;
    let mut plan = Plan { excess, ..Plan::default() };
    let mut chosen = BTreeSet::new();
    for (eni, mut ips) in order {
        if left == 0 {
            break;
        }
        // Answered IPs first (they can go now), then marked ones, then the lowest addresses.
        ips.sort_by_key(|p| {
            let rank = match p.release {
                Some(ReleaseState::Ready) => 0,
                Some(ReleaseState::Marked) => 1,
                _ => 2,
            };
            (rank, p.ip)
        });
        ips.truncate(left);
        left -= ips.len();
        // Only IPs the agent answered `ready` for go to the cloud; the others are marked first.
        let mut ready = Vec::new();
        for p in ips {
            chosen.insert(p.ip);
            match p.release {
                Some(ReleaseState::Ready) => ready.push(p.ip),
                Some(ReleaseState::Marked) => plan.awaiting_agent += 1,
                _ => plan.mark.push(p.ip),
            }
        }
        let per_call = node.batch.unassign_ips_per_call.unwrap_or(u32::MAX).max(1) as usize;
        for chunk in ready.chunks(per_call) {
            plan.actions.push(Action::Release { eni: eni.clone(), ips: chunk.to_vec() });
        }
    }
    // Marks the plan no longer wants (pods took the other free IPs) and refusals go back to the agent.
    plan.unmark = in_handshake(node).filter(|ip| !chosen.contains(ip)).collect();
    plan.release_waiting = waiting.min(left as u32);
    plan
}
