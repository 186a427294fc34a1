//! The local IPAM service: the pool, the allocations, and the rule that no
//! answer leaves before the state file holds it. Calls block on fsync; async
//! callers run them on the blocking pool.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use eni_ipam_api::{AllocateRequest, AllocateResponse, HealthzResponse};
use tokio::sync::watch;

use crate::allocator::{self, Allocation, AllocationKey, Decision, Exhausted, PodEndpoint, Reconciliation};
use crate::pool::{NodePool, PoolIp};
use crate::state::{IpamState, StateError, StateStore};

/// Why an IPAM call failed.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// No free IP.
    #[error("node {node} has no free IP for {key}: {reason}")]
    Exhausted { node: String, key: AllocationKey, reason: Exhausted },
    /// The request is missing something.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The container interface holds no IP (an endpoint registered before its ADD, or after its DEL).
    #[error(
        "node {node}: {key} holds no IP; the CNI plugin registers the pod's veth only after the IP was allocated"
    )]
    NotAllocated { node: String, key: AllocationKey },
    /// The state could not be persisted; nothing was changed.
    #[error("node {node}: {source}; nothing was allocated or released, retry once the disk is fixed")]
    Persist { node: String, source: StateError },
}

/// What [`Ipam::set_endpoint`] recorded.
#[derive(Clone, Debug)]
pub struct EndpointRecorded {
    /// The allocation, with the new endpoint.
    pub allocation: Allocation,
    /// The endpoint it replaced (a retried ADD made a new veth), if any.
    pub previous: Option<PodEndpoint>,
    /// The pool entry of the IP (`None` when the IP left the pool).
    pub pool_entry: Option<PoolIp>,
}

struct Inner {
    pool: NodePool,
    state: IpamState,
}

/// The node's IPAM.
pub struct Ipam {
    node: String,
    store: StateStore,
    inner: Mutex<Inner>,
    changes: watch::Sender<u64>,
}

impl Ipam {
    /// Loads the state, reconciles it against the pool and the live containers (freeing
    /// the IPs of containers that are gone, persisted before returning).
    pub fn open(
        node: impl Into<String>,
        store: StateStore,
        pool: NodePool,
        live_containers: Option<&BTreeSet<String>>,
    ) -> Result<(Self, Reconciliation), StateError> {
        let mut state = store.load()?;
        let reconciliation = allocator::reconcile(&pool, &state.allocations, live_containers);
        if !reconciliation.gone.is_empty() {
            for key in &reconciliation.gone {
                free(&mut state, key);
            }
            store.save(&state)?;
        }
        let (changes, _) = watch::channel(0);
        let ipam = Self { node: node.into(), store, inner: Mutex::new(Inner { pool, state }), changes };
        Ok((ipam, reconciliation))
    }

    /// The node this IPAM serves.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Gives the container interface an IP (the same one again for a retried request).
    pub fn allocate(&self, request: &AllocateRequest) -> Result<AllocateResponse, IpamError> {
        let key = checked_key(&request.container_id, &request.if_name)?;
        let mut inner = self.lock();
        let cooling = cooling_now(&inner.state, unix_now());
        let state = &inner.state;
        let ip = match allocator::decide(&inner.pool, &state.allocations, &state.released_at, &cooling, &key)
        {
            Decision::Existing(ip) => ip,
            Decision::Exhausted(reason) => {
                return Err(IpamError::Exhausted { node: self.node.clone(), key, reason });
            }
            Decision::Take(ip) => {
                let allocation = Allocation {
                    key: key.clone(),
                    ip: ip.clone(),
                    pod_namespace: request.pod_namespace.clone(),
                    pod_name: request.pod_name.clone(),
                    network: request.network.clone(),
                    allocated_at: unix_now(),
                    endpoint: None,
                };
                inner.state.allocations.insert(key.clone(), allocation);
                if let Err(source) = self.store.save(&inner.state) {
                    inner.state.allocations.remove(&key);
                    return Err(IpamError::Persist { node: self.node.clone(), source });
                }
                self.changes.send_modify(|n| *n += 1);
                ip
            }
        };
        let entry = inner.pool.ips.get(&ip).cloned().unwrap_or_else(|| PoolIp {
            eni: String::new(),
            mac: String::new(),
            subnet_cidr: format!("{ip}/32"),
            gateway: String::new(),
        });
        Ok(AllocateResponse {
            ip,
            eni: entry.eni,
            mac: entry.mac,
            subnet_cidr: entry.subnet_cidr,
            gateway: entry.gateway,
        })
    }

    /// Frees what the container interface holds; `Ok(None)` when it holds nothing (idempotent).
    pub fn release(&self, container_id: &str, if_name: &str) -> Result<Option<Allocation>, IpamError> {
        self.release_cooling(container_id, if_name, None)
    }

    /// [`Ipam::release`], and with `cool_until` (Unix seconds) the IP is not handed out again
    /// before then: for IPs taken back from pods that went away without a DEL.
    pub fn release_cooling(
        &self,
        container_id: &str,
        if_name: &str,
        cool_until: Option<u64>,
    ) -> Result<Option<Allocation>, IpamError> {
        let key = checked_key(container_id, if_name)?;
        let mut inner = self.lock();
        let before = inner.state.clone();
        let Some(freed) = free(&mut inner.state, &key) else { return Ok(None) };
        let now = unix_now();
        inner.state.cooling_until.retain(|_, until| *until > now);
        if let Some(until) = cool_until.filter(|until| *until > now) {
            inner.state.cooling_until.insert(freed.ip.clone(), until);
        }
        if let Err(source) = self.store.save(&inner.state) {
            inner.state = before;
            return Err(IpamError::Persist { node: self.node.clone(), source });
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(Some(freed))
    }

    /// Records the pod's host veth on its allocation, persisted before it returns.
    pub fn set_endpoint(
        &self,
        container_id: &str,
        if_name: &str,
        endpoint: PodEndpoint,
    ) -> Result<EndpointRecorded, IpamError> {
        let key = checked_key(container_id, if_name)?;
        let mut inner = self.lock();
        let Some(allocation) = inner.state.allocations.get_mut(&key) else {
            return Err(IpamError::NotAllocated { node: self.node.clone(), key });
        };
        let previous = allocation.endpoint.replace(endpoint.clone());
        if previous.as_ref() != Some(&endpoint)
            && let Err(source) = self.store.save(&inner.state)
        {
            inner.state.allocations.get_mut(&key).expect("held above").endpoint = previous;
            return Err(IpamError::Persist { node: self.node.clone(), source });
        }
        let allocation = inner.state.allocations[&key].clone();
        let pool_entry = inner.pool.ips.get(&allocation.ip).cloned();
        Ok(EndpointRecorded { allocation, previous, pool_entry })
    }

    /// The allocation of `container_id`/`if_name`.
    pub fn allocation_of(&self, container_id: &str, if_name: &str) -> Result<Allocation, IpamError> {
        let key = checked_key(container_id, if_name)?;
        let inner = self.lock();
        inner
            .state
            .allocations
            .get(&key)
            .cloned()
            .ok_or_else(|| IpamError::NotAllocated { node: self.node.clone(), key })
    }

    /// The pool entry of the IP allocated to `container_id`/`if_name`, if any.
    pub fn pool_entry_of(&self, container_id: &str, if_name: &str) -> Option<PoolIp> {
        let key = checked_key(container_id, if_name).ok()?;
        let inner = self.lock();
        let ip = &inner.state.allocations.get(&key)?.ip;
        inner.pool.ips.get(ip).cloned()
    }

    /// The pool entry of `ip`, if the IP is in the pool.
    pub fn pool_entry(&self, ip: &str) -> Option<PoolIp> {
        self.lock().pool.ips.get(ip).cloned()
    }

    /// MACs of the ENIs the pool's IPs live on (where known).
    pub fn pool_macs(&self) -> BTreeSet<String> {
        self.lock().pool.ips.values().map(|e| e.mac.clone()).filter(|m| !m.is_empty()).collect()
    }

    /// The distinct ENIs (with their subnet and gateway) of the pool.
    pub fn pool_enis(&self) -> BTreeSet<PoolIp> {
        self.lock().pool.ips.values().cloned().collect()
    }

    /// Every allocation, ordered by container id.
    pub fn list(&self) -> Vec<Allocation> {
        self.lock().state.allocations.values().cloned().collect()
    }

    /// IP -> owner, as `status.used` carries it.
    pub fn used(&self) -> BTreeMap<String, String> {
        self.lock().state.allocations.values().map(|a| (a.ip.clone(), a.owner())).collect()
    }

    /// The healthz numbers: allocated, pool size, reachable capacity.
    pub fn health(&self) -> HealthzResponse {
        let inner = self.lock();
        HealthzResponse::new(
            inner.state.allocations.len() as u32,
            inner.pool.ips.len() as u32,
            inner.pool.reachable_capacity(),
        )
    }

    /// Replaces the pool (a new ENINode spec or pool file).
    pub fn set_pool(&self, pool: NodePool) {
        let mut inner = self.lock();
        if inner.pool != pool {
            inner.pool = pool;
            self.changes.send_modify(|n| *n += 1);
        }
    }

    /// A receiver that wakes on every allocation, release or pool change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the state as last persisted or rolled back.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn checked_key(container_id: &str, if_name: &str) -> Result<AllocationKey, IpamError> {
    if container_id.trim().is_empty() {
        return Err(IpamError::Invalid("containerId is empty; pass the CNI_CONTAINERID of the pod".into()));
    }
    if if_name.trim().is_empty() {
        return Err(IpamError::Invalid(
            "ifName is empty; pass the CNI_IFNAME of the pod (usually eth0)".into(),
        ));
    }
    Ok(AllocationKey::new(container_id, if_name))
}

/// Seconds since the Unix epoch (cooldowns are persisted, so they are wall-clock times).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The IPs whose cooldown has not ended at `now`.
fn cooling_now(state: &IpamState, now: u64) -> BTreeSet<String> {
    state.cooling_until.iter().filter(|(_, until)| **until > now).map(|(ip, _)| ip.clone()).collect()
}

fn free(state: &mut IpamState, key: &AllocationKey) -> Option<Allocation> {
    let freed = state.allocations.remove(key)?;
    state.release_counter += 1;
    state.released_at.insert(freed.ip.clone(), state.release_counter);
    Some(freed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(container: &str) -> AllocateRequest {
        AllocateRequest {
            container_id: container.into(),
            if_name: "eth0".into(),
            pod_namespace: "default".into(),
            pod_name: format!("pod-{container}"),
            network: "eni-ipam".into(),
        }
    }

    #[test]
    fn every_answer_is_on_disk_before_it_is_returned() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.json"));
        let (ipam, _) = Ipam::open("node-a", store.clone(), NodePool::on_one_eni(3), None).unwrap();
        let a = ipam.allocate(&request("a")).unwrap();
        assert_eq!(store.load().unwrap().allocations[&AllocationKey::new("a", "eth0")].ip, a.ip);
        assert_eq!(ipam.allocate(&request("a")).unwrap(), a, "retried ADD, same answer");
        assert_eq!(a.gateway, "10.0.0.1");
        ipam.release("a", "eth0").unwrap().unwrap();
        assert!(store.load().unwrap().allocations.is_empty());
        assert_eq!(ipam.release("a", "eth0").unwrap(), None, "release is idempotent");
        assert_eq!(ipam.health(), HealthzResponse::new(0, 3, 3));
    }

    #[test]
    fn exhausted_pool_names_the_node_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let (ipam, _) =
            Ipam::open("node-a", StateStore::new(dir.path().join("s.json")), NodePool::on_one_eni(1), None)
                .unwrap();
        ipam.allocate(&request("a")).unwrap();
        let err = ipam.allocate(&request("b")).unwrap_err().to_string();
        assert!(err.contains("node node-a has no free IP for container b"), "{err}");
        assert!(err.contains("all 1 pool IPs are taken (1 held by pods"), "{err}");
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        std::fs::create_dir(path.parent().unwrap()).unwrap();
        let (ipam, _) = Ipam::open("node-a", StateStore::new(&path), NodePool::on_one_eni(2), None).unwrap();
        std::fs::remove_dir(path.parent().unwrap()).unwrap();
        let err = ipam.allocate(&request("a")).unwrap_err();
        assert!(matches!(err, IpamError::Persist { .. }), "{err}");
        assert!(ipam.list().is_empty());
    }

    #[test]
    fn restart_reloads_and_frees_containers_that_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.json"));
        let (ipam, _) = Ipam::open("node-a", store.clone(), NodePool::on_one_eni(3), None).unwrap();
        let a = ipam.allocate(&request("a")).unwrap();
        let b = ipam.allocate(&request("b")).unwrap();
        drop(ipam);
        let live: BTreeSet<String> = ["a".to_string()].into();
        let (ipam, rec) = Ipam::open("node-a", store.clone(), NodePool::on_one_eni(3), Some(&live)).unwrap();
        assert_eq!(rec.gone, [AllocationKey::new("b", "eth0")]);
        assert_eq!(ipam.allocate(&request("a")).unwrap(), a);
        assert_eq!(store.load().unwrap().allocations.len(), 1, "the freed IP is persisted");
        assert_ne!(ipam.allocate(&request("c")).unwrap().ip, b.ip, "just-freed IP is not reused first");
    }

    #[test]
    fn an_ip_freed_with_a_cooldown_is_not_handed_out_before_it_ends_even_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.json"));
        let (ipam, _) = Ipam::open("node-a", store.clone(), NodePool::on_one_eni(1), None).unwrap();
        let a = ipam.allocate(&request("a")).unwrap();
        ipam.release_cooling("a", "eth0", Some(unix_now() + 3600)).unwrap().unwrap();
        let err = ipam.allocate(&request("b")).unwrap_err().to_string();
        assert!(err.contains("1 freed from lost pods and cooling down"), "{err}");
        drop(ipam);
        let (ipam, _) = Ipam::open("node-a", store.clone(), NodePool::on_one_eni(1), None).unwrap();
        assert!(ipam.allocate(&request("b")).is_err(), "the cooldown is persisted");
        drop(ipam);
        let mut state = store.load().unwrap();
        assert_eq!(state.cooling_until.keys().collect::<Vec<_>>(), [&a.ip]);
        state.cooling_until.insert(a.ip.clone(), unix_now() - 1);
        store.save(&state).unwrap();
        let (ipam, _) = Ipam::open("node-a", store, NodePool::on_one_eni(1), None).unwrap();
        assert_eq!(ipam.allocate(&request("b")).unwrap().ip, a.ip, "handed out once the cooldown ended");
    }

    #[test]
    fn the_pod_veth_is_persisted_on_its_allocation() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path().join("state.json"));
        let (ipam, _) = Ipam::open("node-a", store.clone(), NodePool::on_one_eni(2), None).unwrap();
        let endpoint = PodEndpoint {
            host_veth: "eniabc".into(),
            host_veth_ifindex: 7,
            pod_mac: "0a:00:00:00:00:09".into(),
        };
        let err = ipam.set_endpoint("a", "eth0", endpoint.clone()).unwrap_err();
        assert!(matches!(err, IpamError::NotAllocated { .. }), "{err}");
        let a = ipam.allocate(&request("a")).unwrap();
        let recorded = ipam.set_endpoint("a", "eth0", endpoint.clone()).unwrap();
        let (allocation, entry) = (recorded.allocation, recorded.pool_entry);
        assert_eq!((allocation.ip.as_str(), entry.unwrap().eni.as_str()), (a.ip.as_str(), "eni-1"));
        assert_eq!(recorded.previous, None);
        let again = PodEndpoint { host_veth_ifindex: 8, ..endpoint.clone() };
        assert_eq!(ipam.set_endpoint("a", "eth0", again.clone()).unwrap().previous, Some(endpoint.clone()));
        ipam.set_endpoint("a", "eth0", endpoint.clone()).unwrap();
        let saved = store.load().unwrap();
        assert_eq!(saved.allocations[&AllocationKey::new("a", "eth0")].endpoint, Some(endpoint));
        ipam.release("a", "eth0").unwrap();
        assert!(matches!(
            ipam.set_endpoint("a", "eth0", allocation.endpoint.unwrap()),
            Err(IpamError::NotAllocated { .. })
        ));
    }

    #[test]
    fn empty_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (ipam, _) =
            Ipam::open("n", StateStore::new(dir.path().join("s.json")), NodePool::on_one_eni(1), None)
                .unwrap();
        assert!(matches!(ipam.allocate(&request("")), Err(IpamError::Invalid(_))));
        assert!(matches!(ipam.release("a", " "), Err(IpamError::Invalid(_))));
    }
}
