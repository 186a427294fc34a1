//! A pod whose sandbox dies without a CNI DEL (a runtime crash): the node's kubelet drops it
//! without running DEL and forgets it, and the pod object goes. Its IP must be freed once the
//! agent's grace is over, never before, and never the IP of a pod whose sandbox still runs
//! next to it. Counted from the ENINode's `status.used` (the agent's allocations as the
//! apiserver sees them), then the audit.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::SafetyRow;
use crate::audit::{Findings, Snapshot, audit};
use crate::bed::{Bed, GC_PERIOD, ours};
use crate::cloud::CloudKind;
use crate::node::LOST_POD_GRACE;

const GONE: &str = "lost-del-gone";
const ALIVE: &str = "lost-del-alive";

/// The IPs `status.used` of `node`'s ENINode lists, with their owners.
fn used(bed: &Bed, node: &str) -> BTreeMap<Ipv4Addr, String> {
    let eninode = bed.eninodes().remove(node).unwrap_or(Value::Null);
    eninode["status"]["used"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(ip, owner)| Some((ip.parse().ok()?, owner.as_str().unwrap_or_default().to_owned())))
        .collect()
}

/// Runs the scenario on node 0 of `bed`.
pub async fn run(bed: &mut Bed, progress: &(dyn Fn(&str) + Sync)) -> SafetyRow {
    let mut row = SafetyRow::new("pod gone without a CNI DEL");
    let node = bed.nodes[0].name.clone();
    progress(&format!("safety: lost DEL on {node}"));
    for name in [GONE, ALIVE] {
        bed.create_pod_on(name, &node, json!([])).await;
    }
    let key = |name: &str| format!("default/{name}");
    bed.wait_for("both lost-DEL pods Running", Duration::from_secs(60), |bed| {
        let ips = bed.pod_ips();
        ips.contains_key(&key(GONE)) && ips.contains_key(&key(ALIVE))
    })
    .await;
    let ips = bed.pod_ips();
    let (gone_ip, alive_ip) = (ips[&key(GONE)].1, ips[&key(ALIVE)].1);
    bed.wait_for("both IPs in status.used", Duration::from_secs(10), |bed| {
        let used = used(bed, &node);
        used.contains_key(&gone_ip) && used.contains_key(&alive_ip)
    })
    .await;

    let dropped = bed.nodes[0].kubelet.forget_without_del(&key(GONE));
    assert_eq!(dropped, Some(gone_ip), "the kubelet ran {GONE}'s sandbox");
    bed.delete_pod(GONE);
    let forgotten = Instant::now();
    let mut notes = Vec::new();
    let mut freed_after = None;
    let mut alive_lost = false;
    while forgotten.elapsed() < LOST_POD_GRACE + Duration::from_secs(20) {
        let used = used(bed, &node);
        alive_lost |= !used.contains_key(&alive_ip);
        if !used.contains_key(&gone_ip) {
            freed_after = Some(forgotten.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match freed_after {
        Some(after) if after < LOST_POD_GRACE => {
            notes.push(format!("freed {after:?} after, before the grace"))
        }
        Some(after) => {
            row.leaked_ips_freed = 1;
            notes.push(format!("freed {:.1} s after the sandbox died", after.as_secs_f64()));
        }
        None => row.leaked_ips_left = 1,
    }
    let alive_running = bed.pod_ips().get(&key(ALIVE)).map(|(_, ip)| *ip) == Some(alive_ip);
    if alive_lost || !alive_running {
        // An IP freed under a live sandbox is an IP two pods will hold.
        row.double_ips += 1;
        notes.push(format!("{ALIVE}'s IP left status.used or the pod stopped while its sandbox ran"));
    }

    bed.delete_pod(ALIVE);
    bed.wait_for("the lost-DEL pods gone", Duration::from_secs(30), |bed| {
        !bed.pod_ips().contains_key(&key(ALIVE)) && !used(bed, &node).contains_key(&alive_ip)
    })
    .await;
    let findings = settled_audit(bed).await;
    row.double_ips += findings.double_ips.len();
    if !findings.clean() {
        notes.push(format!("audit: {findings:?}"));
    }
    row.note = notes.join("; ");
    row
}

/// The audit once the cloud, the ENINodes and the pods agree (a GC pass included), or its
/// last findings.
async fn settled_audit(bed: &Bed) -> Findings {
    let first_pool_index = match bed.config.cloud {
        CloudKind::Alibaba => 1,
        CloudKind::Aws => 0,
    };
    let nodes: BTreeMap<String, String> =
        bed.nodes.iter().map(|n| (n.name.clone(), n.instance.id.clone())).collect();
    let start = Instant::now();
    loop {
        let pods = bed.pod_ips();
        let enis = bed.cloud.enis().await;
        let eninodes = bed.eninodes();
        let findings = audit(&Snapshot {
            enis: &enis,
            eninodes: &eninodes,
            nodes: &nodes,
            pods: &pods,
            ours: &ours,
            first_pool_index,
            foreign: &bed.foreign_ips,
        });
        if findings.clean() || start.elapsed() > GC_PERIOD * 2 + Duration::from_secs(30) {
            return findings;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
