//! The [`NodeStore`] of a cluster: reads ENINodes from the controller's
//! reflector cache and writes the operator's fields with server-side apply
//! under the field manager `eni-ipam-operator` (`spec.pool` on the main
//! resource, `status.enis`/`conditions`/`available`/`eniCount`/`effectiveIpam`/`ipLimit`
//! on `/status`; `status.shortfall` and `status.release` by merge patch).
//! A publish that would change nothing is not sent: every write wakes every
//! watcher of ENINodes.

use async_trait::async_trait;
use eni_ipam_api::{ENINode, ENINodeCondition, IpShortfall};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::node_store::{NodeStore, PoolUpdate, StoreError, apply_release_changes};

/// Field manager of every operator write.
pub const FIELD_MANAGER: &str = "eni-ipam-operator";

/// ENINodes in the apiserver, read through a reflector cache.
pub struct KubeNodeStore {
    api: Api<ENINode>,
    cache: Store<ENINode>,
}

impl KubeNodeStore {
    /// A store writing through `api` and reading `cache` (fed by a watcher on the same kind).
    pub fn new(api: Api<ENINode>, cache: Store<ENINode>) -> Self {
        Self { api, cache }
    }
}

fn same_condition(a: &ENINodeCondition, b: &ENINodeCondition) -> bool {
    a.type_ == b.type_ && a.status == b.status && a.reason == b.reason && a.message == b.message
}

/// The time now as RFC 3339 (seconds), as conditions and `status.shortfall` carry it.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    k8s_openapi::jiff::Timestamp::from_second(secs).map(|t| t.to_string()).unwrap_or_default()
}

#[async_trait]
impl NodeStore for KubeNodeStore {
    async fn get(&self, name: &str) -> Result<Option<ENINode>, StoreError> {
        Ok(self.cache.get(&ObjectRef::new(name)).map(|n| (*n).clone()))
    }

    async fn get_fresh(&self, name: &str) -> Result<Option<ENINode>, StoreError> {
        self.api.get_opt(name).await.map_err(|e| StoreError {
            node: name.into(),
            message: format!("reading it failed: {e}; check the apiserver's health"),
        })
    }

    async fn set_condition(&self, name: &str, condition: ENINodeCondition) -> Result<(), StoreError> {
        let Some(current) = self.cache.get(&ObjectRef::new(name)) else { return Ok(()) };
        let mut conditions = current.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
        let mut condition = condition;
        match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
            Some(old) if same_condition(old, &condition) => return Ok(()),
            Some(old) => {
                condition.last_transition_time =
                    if old.status == condition.status && !old.last_transition_time.is_empty() {
                        old.last_transition_time.clone()
                    } else {
                        now_rfc3339()
                    };
                *old = condition;
            }
            None => {
                condition.last_transition_time = now_rfc3339();
                conditions.push(condition);
            }
        }
        // A merge patch of the list: an apply of conditions alone would drop the
        // operator's other status fields (enis, available, eniCount).
        let body = json!({"status": {"conditions": conditions}});
        self.api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body)).await.map_err(|e| {
            StoreError {
                node: name.into(),
                message: format!(
                    "writing status.conditions failed: {e}; check the operator's RBAC for eninodes/status"
                ),
            }
        })?;
        Ok(())
    }

    async fn set_shortfall(&self, name: &str, shortfall: Option<IpShortfall>) -> Result<(), StoreError> {
        let Some(current) = self.cache.get(&ObjectRef::new(name)) else { return Ok(()) };
        if current.status.as_ref().and_then(|s| s.shortfall.as_ref()) == shortfall.as_ref() {
            return Ok(());
        }
        // A merge patch, set or null: the apply of the other status fields never carries it,
        // so it is never dropped by an apply and can be cleared by the same patch.
        let body = json!({"status": {"shortfall": shortfall}});
        self.api.patch_status(name, &PatchParams::default(), &Patch::Merge(&body)).await.map_err(|e| {
            StoreError {
                node: name.into(),
                message: format!(
                    "writing status.shortfall failed: {e}; check the operator's RBAC for eninodes/status"
                ),
            }
        })?;
        Ok(())
    }

    async fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.cache.state().iter().filter_map(|n| n.metadata.name.clone()).collect())
    }

    async fn publish(&self, name: &str, update: PoolUpdate) -> Result<(), StoreError> {
        let err = |what: &str, e: kube::Error| StoreError {
            node: name.into(),
            message: format!(
                "{what} failed: {e}; check the operator's RBAC for eninodes and the apiserver's health"
            ),
        };
        let current = self.cache.get(&ObjectRef::new(name));
        let status = current.as_ref().and_then(|n| n.status.clone()).unwrap_or_default();
        let pool_same = current.as_ref().is_some_and(|n| {
            n.spec.pool == update.pool
                && n.spec.pool_instance_id == update.pool_instance
                && n.spec.primary_eni_ips == update.primary_eni_ips
        });
        let old_condition = status.conditions.iter().find(|c| c.type_ == update.condition.type_);
        let condition_same = old_condition.is_some_and(|c| same_condition(c, &update.condition));
        let effective_same = update.effective.is_none() || status.effective_ipam == update.effective;
        let status_same = condition_same
            && effective_same
            && status.enis == update.enis
            && status.available == update.pool.len() as u32
            && status.eni_count == update.enis.len() as u32
            && (update.ip_limit.is_none() || status.ip_limit == update.ip_limit);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if !pool_same {
            let mut body = json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode",
                "spec": {"pool": update.pool, "poolInstanceId": update.pool_instance}});
            if let Some(ips) = &update.primary_eni_ips {
                body["spec"]["primaryEniIps"] = json!(ips);
            }
            self.api
                .patch(name, &params, &Patch::Apply(&body))
                .await
                .map_err(|e| err("writing spec.pool", e))?;
            tracing::debug!(node = name, ips = update.pool.len(), pool = ?update.pool.keys().collect::<Vec<_>>(), "published spec.pool");
        }
        if !status_same {
            let mut condition = update.condition.clone();
            condition.last_transition_time = match old_condition {
                Some(c) if c.status == condition.status && !c.last_transition_time.is_empty() => {
                    c.last_transition_time.clone()
                }
                _ => now_rfc3339(),
            };
            let mut body = json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode", "status": {
                "enis": update.enis,
                "conditions": [condition],
                "available": update.pool.len(),
                "eniCount": update.enis.len(),
            }});
            // Always in the apply once known (the last good value when the update has none):
            // a field this manager stops applying would be removed.
            if let Some(effective) = update.effective.as_ref().or(status.effective_ipam.as_ref()) {
                body["status"]["effectiveIpam"] = json!(effective);
            }
            if let Some(limit) = update.ip_limit.or(status.ip_limit) {
                body["status"]["ipLimit"] = json!(limit);
            }
            self.api
                .patch_status(name, &params, &Patch::Apply(&body))
                .await
                .map_err(|e| err("writing status", e))?;
        }
        if status.shortfall != update.shortfall {
            self.set_shortfall(name, update.shortfall.clone()).await?;
        }
        let mut release = status.release.clone();
        if apply_release_changes(&mut release, &update.release) {
            // A merge patch, not an apply: the agent owns its answers (it applied them), and
            // only a merge patch may drop an entry another field manager owns.
            let changes: serde_json::Map<String, serde_json::Value> = update
                .release
                .iter()
                .map(|(ip, state)| (ip.clone(), state.map_or(serde_json::Value::Null, |s| json!(s))))
                .collect();
            let body = json!({"status": {"release": changes}});
            self.api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&body))
                .await
                .map_err(|e| err("writing status.release", e))?;
            tracing::debug!(node = name, changes = update.release.len(), "published release marks");
        }
        Ok(())
    }
}
