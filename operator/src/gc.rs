//! Garbage collection of ENIs: an ENI tagged with this cluster whose node is
//! gone is detached and deleted; one that stays detached past the grace period
//! (a leak from a crash between create and attach) is deleted. An ENI without
//! our tags is never touched. Every call goes through the provider, hence the
//! CallGuard (limiter and full-jitter retry).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use eni_ipam_api::{EniId, InstanceId, VpcId};
use eni_ipam_cloud::{CloudProvider, CloudResult, EniQuery, EniState, list_all_enis, tag};
use tokio::time::Instant;

/// What one GC pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// ENIs deleted.
    pub deleted: Vec<EniId>,
    /// ENIs detached (from instances whose node is gone).
    pub detached: Vec<EniId>,
    /// ENIs whose deletion failed (retried next pass).
    pub failed: Vec<EniId>,
}

/// GC state across passes: since when each of our ENIs has been seen detached.
pub struct Gc {
    cluster: String,
    vpc: VpcId,
    grace: Duration,
    detached_since: HashMap<EniId, Instant>,
}

impl Gc {
    /// A collector for `cluster`'s ENIs in `vpc`.
    pub fn new(cluster: &str, vpc: VpcId, grace: Duration) -> Self {
        Self { cluster: cluster.into(), vpc, grace, detached_since: HashMap::new() }
    }

    /// One pass. `live` holds the instances of the cluster's current nodes.
    pub async fn pass(
        &mut self,
        provider: &dyn CloudProvider,
        live: &BTreeSet<InstanceId>,
    ) -> CloudResult<GcReport> {
        let (enis, _) = list_all_enis(provider, &EniQuery::Vpc(self.vpc.clone())).await?;
        let now = Instant::now();
        let mut report = GcReport::default();
        let mut seen = BTreeSet::new();
        let cluster = self.cluster.clone();
        for eni in enis.iter().filter(|e| e.is_ours(&cluster)) {
            seen.insert(eni.id.clone());
            let node_gone = eni.instance.as_ref().is_some_and(|i| !live.contains(i));
            if node_gone && eni.device_index != Some(0) {
                let node = eni.tags.get(tag::NODE).map(String::as_str).unwrap_or("?");
                tracing::info!(eni = %eni.id, node, "node gone: detaching and deleting its ENI");
                if let Err(e) = provider.detach_eni(&eni.id).await {
                    tracing::warn!(eni = %eni.id, error = %e, "detaching an ENI of a deleted node failed; next GC pass retries");
                    report.failed.push(eni.id.clone());
                    continue;
                }
                report.detached.push(eni.id.clone());
                self.delete(provider, &eni.id, &mut report).await;
                continue;
            }
            if eni.instance.is_none() && eni.state == EniState::Detached {
                let since = *self.detached_since.entry(eni.id.clone()).or_insert(now);
                if now.duration_since(since) >= self.grace {
                    tracing::info!(eni = %eni.id, "ENI detached past the grace period: deleting");
                    self.delete(provider, &eni.id, &mut report).await;
                }
            } else {
                self.detached_since.remove(&eni.id);
            }
        }
        self.detached_since.retain(|id, _| seen.contains(id));
        Ok(report)
    }

    async fn delete(&mut self, provider: &dyn CloudProvider, id: &EniId, report: &mut GcReport) {
        match provider.delete_eni(id).await {
            Ok(()) => {
                self.detached_since.remove(id);
                report.deleted.push(id.clone());
            }
            Err(e) => {
                tracing::warn!(eni = %id, error = %e, "deleting an ENI failed; next GC pass retries");
                report.failed.push(id.clone());
            }
        }
    }
}
