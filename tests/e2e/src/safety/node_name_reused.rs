//! A node name back on a new VM: the old VM is terminated, its Node deleted, and a new
//! instance registers a Node of the same name (new providerID, a fresh disk) whose agent
//! finds the old ENINode. The pool must reset to the new instance's ENIs: the ENINode
//! names the new instance for its pool, no pool entry names an ENI of the old instance,
//! every pool address is on the new instance in the cloud (the cloud may give the new VM
//! addresses the old one had: judged by ENI, not by address), and a pod there gets an
//! address of the new instance and answers a ping from another node. Counted from the
//! ENINode, the pods and the cloud; then the audit.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::SafetyRow;
use crate::bed::Bed;

const POD: &str = "node-name-reused";

/// The pool of an ENINode: address -> ENI.
fn pool_of(eninode: &Value) -> BTreeMap<Ipv4Addr, String> {
    eninode["spec"]["pool"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(ip, at)| Some((ip.parse().ok()?, at["eni"].as_str().unwrap_or_default().to_owned())))
        .collect()
}

/// The ids of `instance`'s ENIs and every address on them, as the cloud shows them.
async fn enis_of(bed: &Bed, instance: &str) -> (BTreeSet<String>, BTreeSet<Ipv4Addr>) {
    let enis: Vec<_> = bed
        .cloud
        .enis()
        .await
        .into_iter()
        .filter(|e| e.instance.as_ref().map(|i| i.as_str()) == Some(instance))
        .collect();
    let ids = enis.iter().map(|e| e.id.to_string()).collect();
    let ips = enis.into_iter().flat_map(|e| std::iter::once(e.primary_ip).chain(e.secondary_ips)).collect();
    (ids, ips)
}

/// Whether `ip` answers a ping from node `from`'s host network within `within`.
fn answers_ping(bed: &Bed, from: usize, ip: Ipv4Addr, within: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        let answered = Command::new("nsenter")
            .arg(format!("--net={}", bed.nodes[from].netns.display()))
            .args(["ping", "-c", "1", "-W", "1", &ip.to_string()])
            .output()
            .is_ok_and(|o| o.status.success());
        if answered {
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
    let (old_enis, _) = enis_of(bed, &old_instance).await;
    let old_pool = pool_of(&bed.eninodes().remove(&name).unwrap_or_default());
    progress(&format!(
        "  {name}: VM {old_instance} replaced ({} ENIs, a pool of {})",
        old_enis.len(),
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
                && pool.values().all(|eni| !old_enis.contains(eni))
        })
        .await;
    bed.create_pod_on(POD, &name, json!([])).await;
    let key = format!("default/{POD}");
    bed.wait_for("a pod on the reused node name Running", Duration::from_secs(60), |bed| {
        bed.pod_ips().contains_key(&key)
    })
    .await;
    let ip = bed.pod_ips()[&key].1;
    let (new_enis, new_ips) = enis_of(bed, &new_instance).await;
    let pool = pool_of(&bed.eninodes().remove(&name).unwrap_or_default());
    // An address served that is not on the new VM's ENIs is one the subnet may give to
    // another VM: an address two hold.
    let mut stale: BTreeSet<Ipv4Addr> = pool
        .iter()
        .filter(|(a, eni)| !new_enis.contains(*eni) || !new_ips.contains(a))
        .map(|(a, _)| *a)
        .collect();
    if !new_ips.contains(&ip) {
        stale.insert(ip);
    }
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

    row.note = notes.join("; ");
    row.double_ips += super::remove_pods_and_audit(bed, &row.scenario.clone(), &[POD.into()], progress).await;
    row
}
