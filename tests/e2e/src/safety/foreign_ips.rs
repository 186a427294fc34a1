//! A node migrated from another CNI: its ENIs already carry secondary IPs that aws-node
//! or Terway gave its pods, assigned straight at the cloud while the node runs (on EC2 on
//! the primary ENI, where our pool shares the ENI; on ECS on that CNI's own untagged ENI,
//! which the bed's fabric plugs into the node like any other). Pods of ours churn on the
//! node. None of those IPs may reach a pool or a pod, and every one must still sit on the
//! ENI it was assigned to at the end: counted from the ENINode's pool and the pods (sampled
//! all along) and from the cloud's listing, then the audit, which knows them as foreign.
//! The other CNI then leaves the node, so the next scenario finds the bed as it was.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::json;

use super::SafetyRow;
use crate::bed::Bed;

/// IPs another CNI assigns on the node.
const FOREIGN: u32 = 3;
/// Waves of pods, and pods per wave (the pool grows and shrinks around the foreign IPs).
const WAVES: usize = 3;
const PER_WAVE: usize = 3;

/// The foreign IPs `node`'s pool or its running pods hold now.
fn taken_now(bed: &Bed, node: &str, foreign: &BTreeSet<Ipv4Addr>) -> BTreeSet<Ipv4Addr> {
    let eninode = bed.eninodes().remove(node).unwrap_or_default();
    let pooled = eninode["spec"]["pool"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(ip, _)| ip.parse::<Ipv4Addr>().ok());
    let held = bed.pod_ips().into_values().map(|(_, ip)| ip);
    pooled.chain(held).filter(|ip| foreign.contains(ip)).collect()
}

/// Runs the scenario on the node of `bed` with the fewest ENIs.
pub async fn run(bed: &mut Bed, progress: &(dyn Fn(&str) + Sync)) -> SafetyRow {
    let mut row = SafetyRow::new("another CNI's IPs on a node");
    // The node with the fewest ENIs (the last of equals): on ECS the other CNI needs a free
    // device index, and earlier scenarios may have filled a node's.
    let enis = bed.cloud.enis().await;
    let attached = |instance: &str| {
        enis.iter().filter(|e| e.instance.as_ref().map(|i| i.as_str()) == Some(instance)).count()
    };
    let node = bed.nodes.iter().rev().min_by_key(|n| attached(&n.instance.id)).expect("the bed has nodes");
    let (node, instance) = (node.name.clone(), node.instance.id.clone());
    let advertised_before = advertised(bed, &node);
    let (eni, ips) = bed.cloud.assign_foreign(&instance, FOREIGN).await;
    let foreign: BTreeSet<Ipv4Addr> = ips.iter().copied().collect();
    assert_eq!(foreign.len(), FOREIGN as usize, "the cloud gave another CNI {FOREIGN} IPs on {eni}");
    bed.foreign_ips.extend(&foreign);
    progress(&format!(
        "  another CNI's IPs on {node}: {foreign:?} on {eni}; {WAVES} waves of {PER_WAVE} pods"
    ));

    let mut taken = BTreeSet::new();
    let mut served = 0;
    for wave in 0..WAVES {
        let pods: Vec<String> = (0..PER_WAVE).map(|k| format!("foreign-ips-{wave}-{k}")).collect();
        for pod in &pods {
            bed.create_pod_on(pod, &node, json!([])).await;
        }
        let key = |pod: &String| format!("default/{pod}");
        bed.wait_for("a wave of pods Running next to another CNI's IPs", Duration::from_secs(60), |bed| {
            taken.extend(taken_now(bed, &node, &foreign));
            let running = bed.pod_ips();
            pods.iter().all(|p| running.contains_key(&key(p)))
        })
        .await;
        served += pods.len();
        for pod in &pods {
            bed.delete_pod(pod);
        }
        bed.wait_for("the wave's pods gone", Duration::from_secs(30), |bed| {
            taken.extend(taken_now(bed, &node, &foreign));
            let running = bed.pod_ips();
            !pods.iter().any(|p| running.contains_key(&key(p)))
        })
        .await;
    }
    // The cloud: every foreign IP still on the ENI the other CNI put it on.
    let enis = bed.cloud.enis().await;
    let on_eni: BTreeSet<Ipv4Addr> = enis
        .iter()
        .find(|e| e.id == eni)
        .map(|e| e.secondary_ips.iter().copied().collect())
        .unwrap_or_default();
    let moved: BTreeSet<Ipv4Addr> = foreign.difference(&on_eni).copied().collect();
    let mut notes = vec![format!("{served} pods served on {node}, {FOREIGN} foreign IPs on {eni}")];
    if !taken.is_empty() {
        notes.push(format!("taken: {taken:?}"));
    }
    if !moved.is_empty() {
        notes.push(format!("gone from {eni}: {moved:?}"));
    }
    row.foreign_ips_taken = taken.union(&moved).count();

    row.note = notes.join("; ");
    // The audit knows the foreign IPs (`Bed::foreign_ips`): in a pool or a pod they fail it.
    row.double_ips = super::remove_pods_and_audit(bed, &row.scenario.clone(), &[], progress).await;

    // The other CNI leaves the node; the bed is as it was.
    bed.cloud.remove_foreign(&eni, &ips).await;
    for ip in &ips {
        bed.foreign_ips.remove(ip);
    }
    // Its ENI held a device slot (ECS) or IPs (EC2) of the node: the node's eni-ipam.io/ip
    // was lowered by them, and comes back once the operator's resync sees them gone; pods
    // pinned to the node before then would fail kubelet's admission, as on a cluster.
    let what = format!("{node}'s eni-ipam.io/ip back to {advertised_before} once the other CNI left");
    bed.wait_for(&what, Duration::from_secs(60), |bed| advertised(bed, &node) >= advertised_before).await;
    row
}

/// The `eni-ipam.io/ip` allocatable kubelet publishes on `node`'s Node.
fn advertised(bed: &Bed, node: &str) -> u64 {
    bed.standin
        .list(eni_ipam_kube_standin::NODES)
        .iter()
        .find(|n| n["metadata"]["name"] == node)
        .and_then(|n| n["status"]["allocatable"][crate::kubelet::RESOURCE].as_str()?.parse().ok())
        .unwrap_or(0)
}
