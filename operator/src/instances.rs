//! The instances cache: what the operator last heard from the cloud about
//! every instance's ENIs, the subnets and the instance-type limits. Filled
//! by resyncs (bulk or per instance), read by the executor to build the
//! planner's snapshots.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::RwLock;

use eni_ipam_api::{EniId, InstanceId, SubnetId};
use eni_ipam_cloud::{Eni, InstanceLimits, Subnet};

#[derive(Debug, Default)]
struct Cache {
    by_instance: HashMap<InstanceId, Vec<Eni>>,
    /// ENIs attached to no instance (GC looks at these).
    unattached: BTreeMap<EniId, Eni>,
    subnets: BTreeMap<SubnetId, Subnet>,
    limits: HashMap<String, InstanceLimits>,
    eni_count: usize,
    /// A VPC-wide listing has filled it at least once.
    filled: bool,
    /// Counts the cloud's answers to our own writes applied here (see [`InstancesCache::apply_assigned`]).
    generation: u64,
    /// Per instance: the generation of the last answer applied to it. A listing sent
    /// before that does not show the write, and must not undo it.
    answered: HashMap<InstanceId, u64>,
}

impl Cache {
    /// Instances with an answer applied after `generation`; forgets the older ones.
    fn answered_after(&mut self, generation: u64) -> std::collections::HashSet<InstanceId> {
        self.answered.retain(|_, at| *at > generation);
        self.answered.keys().cloned().collect()
    }
}

/// Shared, synchronously locked (never held across an await).
#[derive(Debug, Default)]
pub struct InstancesCache {
    inner: RwLock<Cache>,
}

impl InstancesCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Cache> {
        self.inner.read().expect("instances cache lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Cache> {
        self.inner.write().expect("instances cache lock")
    }

    /// Replaces everything with a full VPC listing.
    pub fn replace_all(&self, enis: Vec<Eni>) {
        let now = self.generation();
        self.replace_all_listed_at(enis, now);
    }

    /// Replaces everything with a full VPC listing sent when the cache was at
    /// `generation`: instances with a write answered since keep what the cache holds.
    pub fn replace_all_listed_at(&self, enis: Vec<Eni>, generation: u64) {
        let mut cache = self.write();
        let newer = cache.answered_after(generation);
        let kept: Vec<(InstanceId, Vec<Eni>)> =
            newer.iter().filter_map(|id| Some((id.clone(), cache.by_instance.get(id)?.clone()))).collect();
        cache.by_instance.clear();
        cache.unattached.clear();
        cache.filled = true;
        for eni in enis {
            match eni.instance.clone() {
                Some(instance) if newer.contains(&instance) => {}
                Some(instance) => cache.by_instance.entry(instance).or_default().push(eni),
                None => {
                    cache.unattached.insert(eni.id.clone(), eni);
                }
            }
        }
        cache.by_instance.extend(kept);
        cache.eni_count = cache.by_instance.values().map(Vec::len).sum::<usize>() + cache.unattached.len();
    }

    /// Replaces what is known of these instances with a per-instance listing.
    pub fn replace_instances(&self, instances: &[InstanceId], enis: Vec<Eni>) {
        let now = self.generation();
        self.replace_instances_listed_at(instances, enis, now);
    }

    /// Replaces what is known of these instances with a per-instance listing sent
    /// when the cache was at `generation` (instances with a write answered since are kept).
    pub fn replace_instances_listed_at(&self, instances: &[InstanceId], enis: Vec<Eni>, generation: u64) {
        let mut cache = self.write();
        let newer = cache.answered_after(generation);
        for id in instances.iter().filter(|id| !newer.contains(id)) {
            let old = cache.by_instance.remove(id).map_or(0, |v| v.len());
            cache.eni_count -= old;
            cache.by_instance.insert(id.clone(), Vec::new());
        }
        for eni in enis {
            if eni.instance.as_ref().is_some_and(|i| newer.contains(i)) {
                continue;
            }
            cache.eni_count += 1;
            if cache.unattached.remove(&eni.id).is_some() {
                cache.eni_count -= 1;
            }
            if let Some(instance) = eni.instance.clone() {
                cache.by_instance.entry(instance).or_default().push(eni);
            }
        }
    }

    /// Where the cache is in the stream of applied answers: take it before sending a
    /// listing, and hand it to `replace_*_listed_at` with the listing.
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Applies the cloud's answer to an assign (the addresses it assigned) to the
    /// ENI, so that no listing is needed to see it. `false` when the cache does not
    /// hold that ENI on that instance (a listing must then tell).
    pub fn apply_assigned(&self, instance: &InstanceId, eni: &EniId, ips: &[Ipv4Addr]) -> bool {
        let mut cache = self.write();
        let Some(on) =
            cache.by_instance.get_mut(instance).and_then(|enis| enis.iter_mut().find(|e| &e.id == eni))
        else {
            return false;
        };
        for ip in ips {
            if !on.secondary_ips.contains(ip) {
                on.secondary_ips.push(*ip);
            }
        }
        cache.generation += 1;
        let generation = cache.generation;
        cache.answered.insert(instance.clone(), generation);
        true
    }

    /// Whether a VPC-wide listing ever filled the cache (a restarted operator's is empty).
    pub fn is_filled(&self) -> bool {
        self.read().filled
    }

    /// Whether the instance was ever listed.
    pub fn knows(&self, instance: &InstanceId) -> bool {
        self.read().by_instance.contains_key(instance)
    }

    /// The ENIs of an instance, by device index.
    pub fn enis_of(&self, instance: &InstanceId) -> Vec<Eni> {
        let mut enis = self.read().by_instance.get(instance).cloned().unwrap_or_default();
        enis.sort_by_key(|e| e.device_index);
        enis
    }

    /// ENIs known to be attached to no instance.
    pub fn unattached(&self) -> Vec<Eni> {
        self.read().unattached.values().cloned().collect()
    }

    /// ENIs known in all.
    pub fn eni_count(&self) -> usize {
        self.read().eni_count
    }

    /// Replaces the subnets.
    pub fn set_subnets(&self, subnets: Vec<Subnet>) {
        self.write().subnets = subnets.into_iter().map(|s| (s.id.clone(), s)).collect();
    }

    /// The subnets.
    pub fn subnets(&self) -> Vec<Subnet> {
        self.read().subnets.values().cloned().collect()
    }

    /// The CIDR of a listed subnet.
    pub fn subnet_cidr(&self, subnet: &SubnetId) -> Option<String> {
        self.read().subnets.get(subnet).map(|s| s.cidr.clone())
    }

    /// Accounts IPs taken from (positive) or given back to (negative) a subnet
    /// until the next subnet listing says the truth.
    pub fn adjust_subnet_free(&self, subnet: &SubnetId, delta: i64) {
        if let Some(s) = self.write().subnets.get_mut(subnet) {
            s.free_ips = (i64::from(s.free_ips) - delta).clamp(0, i64::from(u32::MAX)) as u32;
        }
    }

    /// The cloud said the subnet is full: it is, until the next subnet listing.
    pub fn mark_subnet_full(&self, subnet: &SubnetId) {
        if let Some(s) = self.write().subnets.get_mut(subnet) {
            s.free_ips = 0;
        }
    }

    /// Stores instance-type limits.
    pub fn set_limits(&self, limits: Vec<InstanceLimits>) {
        let mut cache = self.write();
        for l in limits {
            cache.limits.insert(l.instance_type.0.clone(), l);
        }
    }

    /// The instance types whose limits are cached.
    pub fn limit_types(&self) -> Vec<eni_ipam_api::InstanceType> {
        let mut types: Vec<_> =
            self.read().limits.keys().map(|t| eni_ipam_api::InstanceType::from(t.as_str())).collect();
        types.sort();
        types
    }

    /// Limits of an instance type, if known.
    pub fn limits(&self, instance_type: &str) -> Option<InstanceLimits> {
        self.read().limits.get(instance_type).cloned()
    }
}

#[cfg(test)]
mod tests {
    use eni_ipam_api::{VpcId, Zone};
    use eni_ipam_cloud::EniState;

    use super::*;

    fn eni(id: &str, instance: &str, ips: &[u8]) -> Eni {
        Eni {
            id: EniId::from(id),
            subnet: SubnetId::from("s"),
            vpc: VpcId::from("v"),
            zone: Zone::from("z"),
            mac: String::new(),
            instance: Some(InstanceId::from(instance)),
            device_index: Some(0),
            state: EniState::InUse,
            primary_ip: Ipv4Addr::new(10, 0, 0, 1),
            secondary_ips: ips.iter().map(|n| Ipv4Addr::new(10, 0, 1, *n)).collect(),
            tags: BTreeMap::new(),
        }
    }

    fn ips_of(cache: &InstancesCache, instance: &str) -> Vec<Ipv4Addr> {
        cache.enis_of(&InstanceId::from(instance)).into_iter().flat_map(|e| e.secondary_ips).collect()
    }

    #[test]
    fn an_applied_assign_survives_listings_sent_before_it_and_yields_to_later_ones() {
        let (a, b) = (InstanceId::from("i-a"), InstanceId::from("i-b"));
        // (listing kind, listed before the answer, IPs of i-a the cache shows after it)
        let cases: [(&str, bool, usize); 4] =
            [("vpc", true, 2), ("vpc", false, 3), ("instances", true, 2), ("instances", false, 3)];
        for (kind, before, want) in cases {
            let cache = InstancesCache::new();
            cache.replace_all(vec![eni("eni-a", "i-a", &[]), eni("eni-b", "i-b", &[])]);
            let sent_at = cache.generation();
            assert!(cache.apply_assigned(
                &a,
                &EniId::from("eni-a"),
                &[Ipv4Addr::new(10, 0, 1, 1), Ipv4Addr::new(10, 0, 1, 2)]
            ));
            let listed_at = if before { sent_at } else { cache.generation() };
            // The listing: i-a with three IPs if it saw the assign and more, none if not.
            let a_ips: &[u8] = if before { &[] } else { &[1, 2, 3] };
            let listing = vec![eni("eni-a", "i-a", a_ips), eni("eni-b", "i-b", &[9])];
            match kind {
                "vpc" => cache.replace_all_listed_at(listing, listed_at),
                _ => cache.replace_instances_listed_at(&[a.clone(), b.clone()], listing, listed_at),
            }
            assert_eq!(ips_of(&cache, "i-a").len(), want, "{kind} listing, sent before the answer: {before}");
            assert_eq!(ips_of(&cache, "i-b").len(), 1, "{kind}: other instances take the listing");
            assert_eq!(cache.eni_count(), 2, "{kind}");
        }
    }

    #[test]
    fn an_answer_for_an_eni_the_cache_does_not_hold_asks_for_a_listing() {
        let cache = InstancesCache::new();
        cache.replace_all(vec![eni("eni-a", "i-a", &[])]);
        assert!(!cache.apply_assigned(
            &InstanceId::from("i-a"),
            &EniId::from("eni-x"),
            &[Ipv4Addr::new(10, 0, 1, 1)]
        ));
        assert!(!cache.apply_assigned(
            &InstanceId::from("i-x"),
            &EniId::from("eni-a"),
            &[Ipv4Addr::new(10, 0, 1, 1)]
        ));
        assert_eq!(cache.generation(), 0);
    }
}
