//! The executor's memory of the IPs it handled, between a cloud call and the
//! ENINode that records it: assigns on primary ENIs until every view of the
//! ENINode holds them (the publish after the assign can fail, and a node's view
//! taken before the publish can still be at work after it), and releases still
//! cooling down (the cloud's listings lag its writes). Read through [`IpLedger::record`] into the
//! ownership decision (`crate::ownership`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use eni_ipam_api::{EniId, InstanceId};

use crate::ownership::IpRecord;

/// What the executor assigned on primary ENIs and released.
#[derive(Debug, Default)]
pub struct IpLedger {
    /// Per instance, IPs assigned on its primary ENI that a view of `spec.pool` may not
    /// hold yet, with when (operator clock).
    assigned: HashMap<InstanceId, BTreeMap<Ipv4Addr, (EniId, Duration)>>,
    /// IPs released, with when (operator clock).
    released: BTreeMap<Ipv4Addr, Duration>,
    /// Instances whose pool this process has worked out and published at least once.
    published_here: HashSet<InstanceId>,
}

impl IpLedger {
    /// The record of one instance at `now`: its published pool plus the assigns younger
    /// than `cooldown` or not published yet, and the releases younger than `cooldown`.
    /// Forgets assigns the published pool holds once they are past the cooldown (no view
    /// of the ENINode older than the publish is still in use by then), and releases past it.
    ///
    /// An assign is not forgotten the moment one view shows it published: views reach the
    /// executor from several tasks, and one taken before the publish (a pass that started
    /// earlier) would then lose the IP, which on a primary ENI is nobody's for good.
    pub fn record(
        &mut self,
        instance: &InstanceId,
        published: &BTreeMap<Ipv4Addr, EniId>,
        now: Duration,
        cooldown: Duration,
    ) -> IpRecord {
        self.released.retain(|_, at| now.saturating_sub(*at) < cooldown);
        let mut assigned = published.clone();
        if let Some(pending) = self.assigned.get_mut(instance) {
            pending
                .retain(|ip, (eni, at)| published.get(ip) != Some(eni) || now.saturating_sub(*at) < cooldown);
            assigned.extend(pending.iter().map(|(ip, (eni, _))| (*ip, eni.clone())));
        }
        IpRecord { assigned, cooling: self.released.keys().copied().collect() }
    }

    /// The cloud assigned `ips` on `eni` of `instance` (its primary ENI when `on_primary`) at `now`.
    pub fn assigned(
        &mut self,
        instance: &InstanceId,
        eni: &EniId,
        ips: &[Ipv4Addr],
        on_primary: bool,
        now: Duration,
    ) {
        for ip in ips {
            // Assigned afresh by the cloud: whatever a listing showed before is over.
            self.released.remove(ip);
        }
        if on_primary {
            self.assigned
                .entry(instance.clone())
                .or_default()
                .extend(ips.iter().map(|ip| (*ip, (eni.clone(), now))));
        }
    }

    /// This process is about to publish the pool of `instance`: from now on its own
    /// ledger, not an earlier leader's, knows what it assigned there.
    pub fn published_here(&mut self, instance: &InstanceId) {
        self.published_here.insert(instance.clone());
    }

    /// Whether [`Self::published_here`] was called for `instance`.
    pub fn was_published_here(&self, instance: &InstanceId) -> bool {
        self.published_here.contains(instance)
    }

    /// A release of `ips` the cloud refused: they never left, so they do not cool down.
    pub fn release_failed(&mut self, ips: &[Ipv4Addr]) {
        for ip in ips {
            self.released.remove(ip);
        }
    }

    /// The cloud released (or is about to release) `ips` at `now`.
    pub fn released(&mut self, ips: &[Ipv4Addr], now: Duration) {
        for ip in ips {
            self.released.insert(*ip, now);
            for pending in self.assigned.values_mut() {
                pending.remove(ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_remembers_until_every_view_holds_the_ip_and_releases_until_the_cooldown() {
        let (i, eni) = (InstanceId::from("i-1"), EniId::from("eni-primary"));
        let ip = |n| Ipv4Addr::new(10, 0, 0, n);
        let secs = Duration::from_secs;
        let cooldown = secs(60);
        let mut ledger = IpLedger::default();
        ledger.assigned(&i, &eni, &[ip(1), ip(2)], true, Duration::ZERO);
        let none = BTreeMap::new();
        let record = ledger.record(&i, &none, Duration::ZERO, cooldown);
        assert_eq!(record.assigned.keys().copied().collect::<Vec<_>>(), [ip(1), ip(2)], "not published yet");
        let published = BTreeMap::from([(ip(1), eni.clone())]);
        ledger.record(&i, &published, secs(1), cooldown);
        // A view taken before the publish (a pass that started earlier) still finds both.
        let record = ledger.record(&i, &none, secs(2), cooldown);
        assert_eq!(
            record.assigned.keys().copied().collect::<Vec<_>>(),
            [ip(1), ip(2)],
            "published once, but an older view of the ENINode may still be at work"
        );
        ledger.record(&i, &published, secs(61), cooldown);
        let record = ledger.record(&i, &none, secs(62), cooldown);
        assert_eq!(
            record.assigned.keys().copied().collect::<Vec<_>>(),
            [ip(2)],
            "published and past the cooldown: the ENINode keeps it"
        );
        ledger.released(&[ip(2)], secs(70));
        let record = ledger.record(&i, &none, secs(129), cooldown);
        assert!(record.assigned.is_empty() && record.cooling.contains(&ip(2)));
        assert!(ledger.record(&i, &none, secs(130), cooldown).cooling.is_empty(), "cooled down");
        ledger.released(&[ip(3)], secs(130));
        ledger.assigned(&i, &EniId::from("eni-ours"), &[ip(3)], false, secs(131));
        assert!(ledger.record(&i, &none, secs(131), cooldown).cooling.is_empty(), "assigned afresh");
    }

    #[test]
    fn an_ip_released_by_one_node_and_assigned_to_another_stays_the_other_nodes() {
        let (a, b) = (InstanceId::from("i-a"), InstanceId::from("i-b"));
        let (primary_a, primary_b) = (EniId::from("eni-a"), EniId::from("eni-b"));
        let seven = Ipv4Addr::new(10, 0, 0, 7);
        let cooldown = Duration::from_secs(60);
        let none = BTreeMap::new();
        let mut ledger = IpLedger::default();
        // The executor cools an IP before it asks the cloud to release it, so the cloud's
        // next assign of it (to node b) comes after, whatever order the tasks resume in.
        ledger.released(&[seven], Duration::from_secs(1));
        ledger.assigned(&b, &primary_b, &[seven], true, Duration::from_secs(1));
        let record = ledger.record(&b, &none, Duration::from_secs(2), cooldown);
        assert_eq!(record.assigned.get(&seven), Some(&primary_b), "node b's fresh assign is kept");
        assert!(record.cooling.is_empty(), "and not cooling");
        // A release the cloud refused: the IP never left node a, so it does not cool.
        ledger.assigned(&a, &primary_a, &[Ipv4Addr::new(10, 0, 0, 8)], true, Duration::from_secs(2));
        ledger.released(&[Ipv4Addr::new(10, 0, 0, 8)], Duration::from_secs(3));
        ledger.release_failed(&[Ipv4Addr::new(10, 0, 0, 8)]);
        assert!(ledger.record(&a, &none, Duration::from_secs(4), cooldown).cooling.is_empty());
    }
}
