//! Garbage collection of ENIs: only what is provably dead goes. [`decide`] is
//! the whole decision, a pure function over the cloud's listing of the VPC,
//! the cloud's word on instances, the instances Nodes name, since-when clocks
//! and this cluster's identity; [`Gc::pass`] gathers those and acts on the
//! verdicts. An ENI attached to an instance goes only once the cloud (not the
//! Node cache) says that instance is terminated or unknown, no Node names it,
//! and it stayed so past the grace; a detached one past the grace; an ENI
//! without this cluster's tags, another cluster's and a primary ENI never.
//! Every call goes through the provider, hence the CallGuard (limiter and
//! full-jitter retry).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use eni_ipam_api::{EniId, InstanceId, VpcId};
use eni_ipam_cloud::{
    CloudProvider, CloudResult, Eni, EniQuery, EniState, InstanceState, list_all_enis, tag,
};
use tokio::time::Instant;

use crate::cluster_identity::{Claim, ClusterIdentity};

/// Why an ENI stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Keep {
    /// Not created by eni-ipam (another CNI's, a human's).
    Untagged,
    /// Created by eni-ipam for another cluster.
    OtherCluster,
    /// Device index 0: the instance's own ENI.
    Primary,
    /// A Node names its instance.
    NodeNamesInstance,
    /// No Node names its instance, but the cloud says it runs (a deleted Node, a lagging watch).
    InstanceRunning,
    /// Its instance is stopped and may start again.
    InstanceStopped,
    /// The cloud's word on its instance is missing (the call failed): judged next pass.
    InstanceStateUnknown,
    /// Attaching or detaching without an instance: judged once it settles.
    InTransition,
    /// Dead, but not yet for the whole grace.
    WithinGrace,
}

/// What to do with one ENI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Attached to a dead instance past the grace: detach, then delete.
    DetachAndDelete,
    /// Detached past the grace: delete.
    Delete,
    /// Leave it.
    Keep(Keep),
}

/// Everything the decision looks at.
pub struct World<'a> {
    /// The cloud's listing of the VPC's ENIs.
    pub enis: &'a [Eni],
    /// The cloud's word on instances (an instance missing here was not asked, or the call failed).
    pub instances: &'a BTreeMap<InstanceId, InstanceState>,
    /// Instances the cluster's Nodes name.
    pub node_instances: &'a BTreeSet<InstanceId>,
    /// Since when each ENI has been seen dead (the previous decision's clocks).
    pub since: &'a HashMap<EniId, Instant>,
    /// Now.
    pub now: Instant,
    /// How long an ENI must stay dead before it goes.
    pub grace: Duration,
    /// This cluster.
    pub identity: &'a ClusterIdentity,
}

/// The verdicts, and the clocks for the next pass.
#[derive(Debug, Default)]
pub struct Decision {
    /// One verdict per listed ENI, in listing order.
    pub verdicts: Vec<(EniId, Verdict)>,
    /// Since when each dead (or settling) ENI has been seen so.
    pub since: HashMap<EniId, Instant>,
}

/// Our non-primary ENIs' instances that no Node names: the only ones worth
/// asking the cloud about (in a steady cluster, none).
pub fn instances_to_ask(
    enis: &[Eni],
    identity: &ClusterIdentity,
    node_instances: &BTreeSet<InstanceId>,
) -> Vec<InstanceId> {
    let ask: BTreeSet<InstanceId> = enis
        .iter()
        .filter(|e| identity.claim(e) == Claim::Ours && e.device_index != Some(0))
        .filter_map(|e| e.instance.clone())
        .filter(|i| !node_instances.contains(i))
        .collect();
    ask.into_iter().collect()
}

/// The GC decision for every ENI of the listing.
pub fn decide(world: &World) -> Decision {
    let mut out = Decision::default();
    for eni in world.enis {
        let verdict = verdict(world, eni, &mut out.since);
        out.verdicts.push((eni.id.clone(), verdict));
    }
    out
}

fn verdict(world: &World, eni: &Eni, since: &mut HashMap<EniId, Instant>) -> Verdict {
    match world.identity.claim(eni) {
        Claim::Ours => {}
        Claim::Untagged => return Verdict::Keep(Keep::Untagged),
        Claim::OtherCluster => return Verdict::Keep(Keep::OtherCluster),
    }
    if eni.device_index == Some(0) {
        return Verdict::Keep(Keep::Primary);
    }
    let mut dead_past_grace = || {
        let first_seen = *world.since.get(&eni.id).unwrap_or(&world.now);
        since.insert(eni.id.clone(), first_seen);
        world.now.saturating_duration_since(first_seen) >= world.grace
    };
    match &eni.instance {
        Some(instance) if world.node_instances.contains(instance) => Verdict::Keep(Keep::NodeNamesInstance),
        Some(instance) => match world.instances.get(instance) {
            None => Verdict::Keep(Keep::InstanceStateUnknown),
            Some(InstanceState::Running) => Verdict::Keep(Keep::InstanceRunning),
            Some(InstanceState::Stopped) => Verdict::Keep(Keep::InstanceStopped),
            Some(InstanceState::Terminated | InstanceState::Gone) => {
                if dead_past_grace() {
                    Verdict::DetachAndDelete
                } else {
                    Verdict::Keep(Keep::WithinGrace)
                }
            }
        },
        None if eni.state == EniState::Detached => {
            if dead_past_grace() {
                Verdict::Delete
            } else {
                Verdict::Keep(Keep::WithinGrace)
            }
        }
        None => {
            // Settling (a detach under way): its clock, if any, runs on.
            if let Some(first_seen) = world.since.get(&eni.id) {
                since.insert(eni.id.clone(), *first_seen);
            }
            Verdict::Keep(Keep::InTransition)
        }
    }
}

/// What one GC pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// ENIs deleted.
    pub deleted: Vec<EniId>,
    /// ENIs detached (from dead instances).
    pub detached: Vec<EniId>,
    /// ENIs whose detach or delete failed (judged again next pass).
    pub failed: Vec<EniId>,
    /// This cluster's ENIs kept, with why.
    pub kept: BTreeMap<EniId, Keep>,
}

/// GC state across passes: the since-when clocks.
pub struct Gc {
    identity: ClusterIdentity,
    vpc: VpcId,
    grace: Duration,
    since: HashMap<EniId, Instant>,
}

impl Gc {
    /// A collector for `identity`'s ENIs in `vpc`.
    pub fn new(identity: ClusterIdentity, vpc: VpcId, grace: Duration) -> Self {
        Self { identity, vpc, grace, since: HashMap::new() }
    }

    /// One pass. `node_instances` holds the instances the cluster's Nodes name.
    pub async fn pass(
        &mut self,
        provider: &dyn CloudProvider,
        node_instances: &BTreeSet<InstanceId>,
    ) -> CloudResult<GcReport> {
        let (enis, _) = list_all_enis(provider, &EniQuery::Vpc(self.vpc.clone())).await?;
        let ask = instances_to_ask(&enis, &self.identity, node_instances);
        let instances = if ask.is_empty() {
            BTreeMap::new()
        } else {
            provider.instance_states(&ask).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, instances = ask.len(), "cannot read instance states; ENIs on instances without a Node are kept this pass");
                BTreeMap::new()
            })
        };
        let decision = decide(&World {
            enis: &enis,
            instances: &instances,
            node_instances,
            since: &self.since,
            now: Instant::now(),
            grace: self.grace,
            identity: &self.identity,
        });
        self.since = decision.since;
        let by_id: HashMap<&EniId, &Eni> = enis.iter().map(|e| (&e.id, e)).collect();
        let mut report = GcReport::default();
        for (id, verdict) in decision.verdicts {
            let node = by_id.get(&id).and_then(|e| e.tags.get(tag::NODE)).map(String::as_str).unwrap_or("?");
            match verdict {
                Verdict::Keep(Keep::Untagged | Keep::OtherCluster) => {}
                Verdict::Keep(why) => {
                    if why == Keep::InstanceRunning {
                        tracing::warn!(eni = %id, node, "no Node names this ENI's instance but the cloud says it runs: kept");
                    }
                    report.kept.insert(id, why);
                }
                Verdict::DetachAndDelete => {
                    tracing::info!(eni = %id, node, "the cloud says this ENI's instance is gone, past the grace: detaching and deleting");
                    if let Err(e) = provider.detach_eni(&id).await {
                        tracing::warn!(eni = %id, error = %e, "detaching an ENI of a gone instance failed; next GC pass retries");
                        report.failed.push(id);
                        continue;
                    }
                    report.detached.push(id.clone());
                    self.delete(provider, &id, &mut report).await;
                }
                Verdict::Delete => {
                    tracing::info!(eni = %id, node, "ENI detached past the grace: deleting");
                    self.delete(provider, &id, &mut report).await;
                }
            }
        }
        Ok(report)
    }

    async fn delete(&mut self, provider: &dyn CloudProvider, id: &EniId, report: &mut GcReport) {
        match provider.delete_eni(id).await {
            Ok(()) => {
                self.since.remove(id);
                report.deleted.push(id.clone());
            }
            Err(e) => {
                tracing::warn!(eni = %id, error = %e, "deleting an ENI failed; next GC pass retries");
                report.failed.push(id.clone());
            }
        }
    }
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
