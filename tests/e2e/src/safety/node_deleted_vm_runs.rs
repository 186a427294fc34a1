//! A Node deleted while its VM runs (an admin's `kubectl delete node`, a
//! lagging watch): the cloud says the instance runs, so its ENIs stay attached
//! through several GC passes; when the Node comes back the node works again (a
//! new pod there gets an IP and answers a pod on another node).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use eni_ipam_kube_standin::NODES;
use eni_ipam_netns_testbed::echo::{self, EchoServer};
use serde_json::{Value, json};

use super::{SafetyRow, remove_pods_and_audit};
use crate::bed::{Bed, GC_PERIOD};
use crate::scenarios::CONVERGE;

/// Pods pinned to the node: on EC2 (pool from the primary ENI, 9 secondary IPs on
/// m5.large) 7 used + 3 pre-allocated need a second ENI, so the node has one of ours
/// for GC to (wrongly) take; on ECS (pool from index 1) it has two.
const PINNED: usize = 7;

/// The ENIs attached to `instance`: id -> device index.
async fn attached(bed: &Bed, instance: &str) -> BTreeMap<String, u32> {
    bed.cloud
        .enis()
        .await
        .into_iter()
        .filter(|e| e.instance.as_ref().is_some_and(|i| i.as_str() == instance))
        .map(|e| (e.id.to_string(), e.device_index.unwrap_or_default()))
        .collect()
}

/// The Node as it was, without what the apiserver sets, to create it again.
fn recreatable(mut node: Value) -> Value {
    if let Some(meta) = node["metadata"].as_object_mut() {
        for field in ["uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"] {
            meta.remove(field);
        }
    }
    node
}

/// Runs the scenario on the bed's last node (no operator or webhook runs there).
pub async fn run(bed: &mut Bed, progress: &(dyn Fn(&str) + Sync)) -> SafetyRow {
    let mut row = SafetyRow::new("node deleted, VM runs");
    let victim = bed.nodes.len() - 1;
    let (name, instance) = (bed.nodes[victim].name.clone(), bed.nodes[victim].instance.id.clone());
    progress(&format!("node deleted, VM runs: {PINNED} pods on {name}, then its Node goes"));
    let mut pods = Vec::new();
    for n in 0..PINNED {
        let pod = format!("g-vm-{n}");
        bed.create_pod_on(&pod, &name, json!([])).await;
        pods.push(pod);
    }
    bed.wait_all_running(CONVERGE).await;
    let start = Instant::now();
    let mut before = attached(bed, &instance).await;
    while before.values().all(|index| *index == 0) && start.elapsed() < CONVERGE {
        tokio::time::sleep(Duration::from_millis(500)).await;
        before = attached(bed, &instance).await;
    }
    assert!(
        before.values().any(|index| *index > 0),
        "{name} never got an ENI besides its primary: {before:?}"
    );

    let node = bed.standin.get(NODES, "", &name).expect("the Node exists");
    assert!(bed.standin.delete_node(&name));
    // Three GC passes at least (one every GC_PERIOD / 2 .. GC_PERIOD * 3 / 2), past the grace.
    let watch_until = Instant::now() + GC_PERIOD * 4;
    let mut lost = BTreeMap::new();
    while Instant::now() < watch_until {
        let now = attached(bed, &instance).await;
        for (eni, index) in &before {
            if now.get(eni) != Some(index) {
                lost.insert(eni.clone(), now.get(eni).copied());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    row.live_enis_detached = lost.len();
    progress(&format!(
        "node deleted, VM runs: {} ENIs of {name} watched for {:?} without its Node, {} detached",
        before.len(),
        GC_PERIOD * 4,
        lost.len()
    ));

    bed.standin.create(NODES, recreatable(node)).expect("create the Node again");
    let (peer, fresh) = ("g-vm-peer".to_owned(), "g-vm-back".to_owned());
    bed.create_pod_on(&peer, &bed.nodes[0].name.clone(), json!([])).await;
    bed.create_pod_on(&fresh, &name, json!([])).await;
    pods.extend([peer.clone(), fresh.clone()]);
    bed.wait_all_running(CONVERGE).await;
    let find = |node: usize, pod: &str| {
        bed.nodes[node].kubelet.running().into_iter().find(|(k, _)| k.ends_with(pod)).map(|(_, p)| p)
    };
    let (from, to) =
        (find(0, &peer).expect("the peer pod runs"), find(victim, &fresh).expect("the new pod runs"));
    let server = EchoServer::udp(&to.netns, to.ip);
    let sent = tokio::task::block_in_place(|| {
        echo::udp_echo_client(&from.netns, server.addr, 5, 56, Duration::from_millis(50))
    });
    assert_eq!(sent.received, 5, "a new pod on {name} ({}) answers {} once its Node is back", to.ip, from.ip);

    row.double_ips = remove_pods_and_audit(bed, &row.scenario.clone(), &pods, progress).await;
    row.note =
        format!("{} ENIs on the VM kept; a new pod there answered once its Node was back", before.len());
    row
}
