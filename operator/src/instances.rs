//! The instances cache: what the operator last heard from the cloud about
//! every instance's ENIs, the subnets and the instance-type limits. Filled
//! by resyncs (bulk or per instance), read by the executor to build the
//! planner's snapshots.

use std::collections::{BTreeMap, HashMap};
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
        let mut cache = self.write();
        cache.by_instance.clear();
        cache.unattached.clear();
        cache.eni_count = enis.len();
        cache.filled = true;
        for eni in enis {
            match eni.instance.clone() {
                Some(instance) => cache.by_instance.entry(instance).or_default().push(eni),
                None => {
                    cache.unattached.insert(eni.id.clone(), eni);
                }
            }
        }
    }

    /// Replaces what is known of these instances with a per-instance listing.
    pub fn replace_instances(&self, instances: &[InstanceId], enis: Vec<Eni>) {
        let mut cache = self.write();
        for id in instances {
            let old = cache.by_instance.remove(id).map_or(0, |v| v.len());
            cache.eni_count -= old;
            cache.by_instance.insert(id.clone(), Vec::new());
        }
        cache.eni_count += enis.len();
        for eni in enis {
            if cache.unattached.remove(&eni.id).is_some() {
                cache.eni_count -= 1;
            }
            if let Some(instance) = eni.instance.clone() {
                cache.by_instance.entry(instance).or_default().push(eni);
            }
        }
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
