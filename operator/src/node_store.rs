//! Where ENINodes live. In a cluster that is the apiserver (the controller
//! issue adds that adapter); the simulator and tests use the in-memory store.
//! The operator writes only `spec.pool` and its own status fields.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use eni_ipam_api::{
    ConditionStatus, ENINode, ENINodeCondition, EffectiveIpam, EniStatus, InstanceId, IpShortfall, PoolEntry,
    ReleaseState,
};

/// What the operator publishes for a node after working on it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolUpdate {
    /// `spec.pool`: IP -> ENI and subnet.
    pub pool: BTreeMap<String, PoolEntry>,
    /// `spec.poolInstanceId`: the instance the pool was built for.
    pub pool_instance: Option<InstanceId>,
    /// `spec.primaryEniIps`: every secondary IP on the primary ENI as published with the pool.
    pub primary_eni_ips: Option<Vec<String>>,
    /// `status.enis`.
    pub enis: BTreeMap<String, EniStatus>,
    /// The `PoolReady` condition.
    pub condition: ENINodeCondition,
    /// Changes to `status.release`: `Some(marked)` marks an IP, `None` drops its entry.
    pub release: BTreeMap<String, Option<ReleaseState>>,
    /// `status.effectiveIpam`: the knobs the node was worked with (`None`: leave it as is).
    pub effective: Option<EffectiveIpam>,
    /// `status.ipLimit`: pod IPs the instance can hold (`None`: leave it as is).
    pub ip_limit: Option<u32>,
    /// `status.shortfall` as it is to be (`None`: cleared).
    pub shortfall: Option<IpShortfall>,
}

impl PoolUpdate {
    /// The `PoolReady` condition for a node at (or short of) its target.
    pub fn pool_ready(ready: bool, reason: &str, message: String) -> ENINodeCondition {
        ENINodeCondition {
            type_: "PoolReady".into(),
            status: if ready { ConditionStatus::True } else { ConditionStatus::False },
            reason: reason.into(),
            message,
            last_transition_time: String::new(),
        }
    }
}

/// Error of a node store.
#[derive(Debug, thiserror::Error)]
#[error("ENINode {node}: {message}")]
pub struct StoreError {
    /// The node.
    pub node: String,
    /// What went wrong.
    pub message: String,
}

/// Read and write ENINodes.
#[async_trait]
pub trait NodeStore: Send + Sync {
    /// The ENINode of a node, if it exists (from a cache; may lag).
    async fn get(&self, name: &str) -> Result<Option<ENINode>, StoreError>;
    /// The ENINode as the store has it now (no cache): what release decisions read.
    async fn get_fresh(&self, name: &str) -> Result<Option<ENINode>, StoreError> {
        self.get(name).await
    }
    /// Publishes the operator's view of a node.
    async fn publish(&self, name: &str, update: PoolUpdate) -> Result<(), StoreError>;
    /// Names of every ENINode.
    async fn names(&self) -> Result<Vec<String>, StoreError>;
    /// Replaces the operator's condition only (work failed; the pool is unchanged).
    async fn set_condition(&self, name: &str, condition: ENINodeCondition) -> Result<(), StoreError>;
    /// Sets `status.shortfall` only (`None` clears it), when it differs.
    async fn set_shortfall(&self, name: &str, shortfall: Option<IpShortfall>) -> Result<(), StoreError>;
}

/// ENINodes in memory, with a count of writes (what an apiserver would see).
#[derive(Debug, Default)]
pub struct MemoryNodeStore {
    nodes: Mutex<BTreeMap<String, ENINode>>,
    writes: AtomicU64,
}

impl MemoryNodeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a node (as the agent registering it would).
    pub fn insert(&self, node: ENINode) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.nodes.lock().expect("store lock").insert(name, node);
    }

    /// Every node.
    pub fn all(&self) -> Vec<ENINode> {
        self.nodes.lock().expect("store lock").values().cloned().collect()
    }

    /// Replaces a node's `status.used` and `status.inUse`, as its agent's report
    /// would; returns the node as stored now (`None`: no such node).
    pub fn report_used(&self, name: &str, used: BTreeMap<String, String>) -> Option<ENINode> {
        let mut nodes = self.nodes.lock().expect("store lock");
        let node = nodes.get_mut(name)?;
        let status = node.status.get_or_insert_with(Default::default);
        if status.used != used {
            status.in_use = used.len() as u32;
            status.used = used;
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Some(node.clone())
    }

    /// Writes that changed something.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl NodeStore for MemoryNodeStore {
    async fn get(&self, name: &str) -> Result<Option<ENINode>, StoreError> {
        Ok(self.nodes.lock().expect("store lock").get(name).cloned())
    }

    async fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.nodes.lock().expect("store lock").keys().cloned().collect())
    }

    async fn set_condition(&self, name: &str, condition: ENINodeCondition) -> Result<(), StoreError> {
        let mut nodes = self.nodes.lock().expect("store lock");
        let Some(node) = nodes.get_mut(name) else { return Ok(()) };
        let status = node.status.get_or_insert_with(Default::default);
        if status.conditions.first() != Some(&condition) {
            status.conditions = vec![condition];
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn set_shortfall(&self, name: &str, shortfall: Option<IpShortfall>) -> Result<(), StoreError> {
        let mut nodes = self.nodes.lock().expect("store lock");
        let Some(node) = nodes.get_mut(name) else { return Ok(()) };
        let status = node.status.get_or_insert_with(Default::default);
        if status.shortfall != shortfall {
            status.shortfall = shortfall;
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn publish(&self, name: &str, update: PoolUpdate) -> Result<(), StoreError> {
        let mut nodes = self.nodes.lock().expect("store lock");
        let node = nodes.get_mut(name).ok_or_else(|| StoreError {
            node: name.into(),
            message: "not found; was the node deleted?".into(),
        })?;
        let status = node.status.get_or_insert_with(Default::default);
        let mut release = status.release.clone();
        apply_release_changes(&mut release, &update.release);
        let changed = node.spec.pool != update.pool
            || node.spec.pool_instance_id != update.pool_instance
            || node.spec.primary_eni_ips != update.primary_eni_ips
            || status.enis != update.enis
            || status.conditions.first() != Some(&update.condition)
            || status.release != release
            || update.effective.as_ref().is_some_and(|e| status.effective_ipam.as_ref() != Some(e))
            || update.ip_limit.is_some_and(|l| status.ip_limit != Some(l))
            || status.shortfall != update.shortfall;
        if !changed {
            // No-op writes are not sent: they would wake every watcher.
            return Ok(());
        }
        status.available = update.pool.len() as u32;
        status.eni_count = update.enis.len() as u32;
        status.enis = update.enis;
        status.conditions = vec![update.condition];
        status.release = release;
        if update.effective.is_some() {
            status.effective_ipam = update.effective;
        }
        if update.ip_limit.is_some() {
            status.ip_limit = update.ip_limit;
        }
        status.shortfall = update.shortfall;
        node.spec.pool = update.pool;
        node.spec.pool_instance_id = update.pool_instance;
        node.spec.primary_eni_ips = update.primary_eni_ips;
        self.writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Applies handshake changes to a `status.release` map; returns whether anything changed.
pub fn apply_release_changes(
    release: &mut BTreeMap<String, ReleaseState>,
    changes: &BTreeMap<String, Option<ReleaseState>>,
) -> bool {
    let before = release.clone();
    for (ip, change) in changes {
        match change {
            Some(state) => release.insert(ip.clone(), *state),
            None => release.remove(ip),
        };
    }
    *release != before
}
