//! A node name back on a new VM: the old VM is terminated, its Node deleted, and a new
//! instance registers a Node of the same name (new providerID, a fresh disk) whose agent
//! finds the old ENINode. The pool must reset to the new instance's ENIs: the ENINode
//! names the new instance for its pool, holds none of the old instance's addresses, and a
//! pod there gets an address of the new instance and answers a ping from another node.
//! Counted from the ENINode, the pods and the cloud; then the audit.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::SafetyRow;
use crate::bed::Bed;

const POD: &str = "node-name-reused";

fn pool_of(eninode: &Value) -> BTreeSet<Ipv4Addr> {
    eninode["spec"]["pool"].as_object().into_iter().flatten().filter_map(|(ip, _)| ip.parse().ok()).collect()
}

/// Every address the cloud shows on `instance`'s ENIs.
async fn addresses_of(bed: &Bed, instance: &str) -> BTreeSet<Ipv4Addr> {
    bed.cloud
        .enis()
        .await
        .into_iter()
        .filter(|e| e.instance.as_ref().map(|i| i.as_str()) == Some(instance))
        .flat_map(|e| std::iter::once(e.primary_ip).chain(e.secondary_ips))
        .collect()
}

/// Whether `ip` answers a ping from node `from`'s host network within `within`.
fn answers_ping(bed: &Bed, from: usize, ip: Ipv4Addr, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        let ok = Command::new("nsenter")
            .arg(format!("--net={}", bed.nodes[from].netns.display()))
            .args(["ping", "-c", "1", "-W", "1", &ip.to_string()])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return true;
        }
    }
    false
}

/// Runs the scenario on the last node of `bed`.
pub async fn run(bed: &mut Bed, progress: &(dyn Fn(&str) + Sync)) -> SafetyRow {
    let mut row = SafetyRow::new("node name reused by a new VM");
    let i = bed.nodes.len() - 1;
    let name = bed.nodes[i].name.clone();
    let old_instance = bed.nodes[i].instance.id.clone();
    let old_ips = addresses_of(bed, &old_instance).await;
    let old_pool = pool_of(&bed.eninodes().remove(&name).unwrap_or_default());
    progress(&format!(
        "  {name}: VM {old_instance} replaced ({} addresses, pool of {})",
        old_ips.len(),
        old_pool.len()
    ));
    bed.replace_instance(i).await;
    let new_instance = bed.nodes[i].instance.id.clone();

    let reset = bed
        .wait_for("the ENINode's pool reset to the new instance", Duration::from_secs(40), |bed| {
            let eninode = bed.eninodes().remove(&name).unwrap_or_default();
            let pool = pool_of(&eninode);
            eninode["spec"]["instanceId"] == new_instance.as_str()
                && eninode["spec"]["poolInstanceId"] == new_instance.as_str()
                && !pool.is_empty()
                && pool.is_disjoint(&old_ips)
        })
        .await;
    bed.create_pod_on(POD, &name, json!([])).await;
    let key = format!("default/{POD}");
    bed.wait_for("a pod on the reused node name Running", Duration::from_secs(60), |bed| {
        bed.pod_ips().contains_key(&key)
    })
    .await;
    let ip = bed.pod_ips()[&key].1;
    let new_ips = addresses_of(bed, &new_instance).await;
    let pool = pool_of(&bed.eninodes().remove(&name).unwrap_or_default());
    let stale: BTreeSet<Ipv4Addr> =
        pool.iter().chain([&ip]).filter(|a| old_ips.contains(a) || !new_ips.contains(a)).copied().collect();
    // An old instance's address served, or one not on the new VM, is one the subnet may
    // give to another VM: an address two hold.
    row.double_ips = stale.len();
    let ping = tokio::task::block_in_place(|| answers_ping(bed, 0, ip, Duration::from_secs(10)));
    let mut notes = vec![format!(
        "pool reset in {:.1} s; {POD} got {ip} on {new_instance} and {} a ping from {}",
        reset.as_secs_f64(),
        if ping { "answered" } else { "did NOT answer" },
        bed.nodes[0].name
    )];
    if !stale.is_empty() {
        notes.push(format!("not the new VM's: {stale:?}"));
    }
    if !ping {
        row.live_enis_detached += 1;
    }

    bed.delete_pod(POD);
    bed.wait_for("the pod gone", Duration::from_secs(30), |bed| !bed.pod_ips().contains_key(&key)).await;
    let run = crate::scenarios::Run::new(bed, crate::scenarios::Size::new(false), progress);
    let findings = run.settle().await;
    row.double_ips += findings.double_ips.len();
    if !findings.clean() {
        notes.push(format!("audit: {findings:?}"));
    }
    row.note = notes.join("; ");
    assert!(findings.clean() || !row.clean(), "{}: the audit after settling: {findings:#?}", row.scenario);
    row
}
