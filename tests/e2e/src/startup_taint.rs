//! Row 0b, the startup taint: every node joins with the chart's startup taint (as
//! kubelet's `--register-with-taints` puts it), while no operator runs. A pod the
//! webhook leaves without the IP request (kube-system's, like the cluster DNS) could
//! go anywhere as far as the resource goes: the taint alone keeps it Pending. Each
//! node's agent removes the taint (through the stand-in, which holds it to the chart's
//! Node write policy) once its pool, datapath and device plugin are ready; a watcher
//! checks that no pod was ever bound to a node still tainted, and what the node had
//! when its taint went.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eni_ipam_kube_standin::{ENINODES, KubeStandin, NODES, PODS};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::cloud::CloudCounts;
use crate::kubelet::{RESOURCE, pod_key};
use crate::report::Row;
use crate::scenarios::{CONVERGE, Run};

/// What the watcher saw of one node's startup taint.
#[derive(Clone, Debug, Default)]
pub struct NodeTaint {
    /// The Node carried the taint when first seen.
    pub joined_tainted: bool,
    /// When the taint was first seen gone.
    pub removed_at: Option<Instant>,
    /// The Node's allocatable `eni-ipam.io/ip` then.
    pub allocatable_then: u64,
    /// Its ENINode's pool size then.
    pub pool_then: usize,
}

/// The watcher's log.
#[derive(Debug, Default)]
pub struct TaintLog {
    /// Per node.
    pub nodes: BTreeMap<String, NodeTaint>,
    /// When each pod was first seen bound.
    pub bound_at: BTreeMap<String, Instant>,
    /// Pods seen bound to a node that still had the taint, with the node.
    pub bound_while_tainted: Vec<(String, String)>,
}

/// Shared handle on the log.
pub type SharedTaintLog = Arc<Mutex<TaintLog>>;

fn has_taint(node: &Value, key: &str) -> bool {
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| t["key"] == key && t["effect"] == "NoSchedule")
}

/// Watches Nodes and pods every 50 ms for the taint `key`.
pub fn spawn(standin: KubeStandin, key: String) -> (JoinHandle<()>, SharedTaintLog) {
    let log = SharedTaintLog::default();
    let shared = log.clone();
    let task = tokio::spawn(async move {
        loop {
            // Pods first: a pod bound in this listing to a node still tainted in the later one
            // was bound while the taint was on (a taint never comes back here).
            let pods = standin.list(PODS);
            let nodes = standin.list(NODES);
            let now = Instant::now();
            record(&mut shared.lock().expect("taint log"), &standin, &key, &pods, &nodes, now);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (task, log)
}

/// One look: what changed for the taint `key` on `nodes`, and pods bound since.
fn record(
    log: &mut TaintLog,
    standin: &KubeStandin,
    key: &str,
    pods: &[Value],
    nodes: &[Value],
    now: Instant,
) {
    for node in nodes {
        let name = node["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let tainted = has_taint(node, key);
        let seen = log
            .nodes
            .entry(name.clone())
            .or_insert_with(|| NodeTaint { joined_tainted: tainted, ..Default::default() });
        if !tainted && seen.removed_at.is_none() {
            seen.removed_at = Some(now);
            seen.allocatable_then =
                node["status"]["allocatable"][RESOURCE].as_str().and_then(|q| q.parse().ok()).unwrap_or(0);
            seen.pool_then = standin
                .get(ENINODES, "", &name)
                .and_then(|e| e["spec"]["pool"].as_object().map(|p| p.len()))
                .unwrap_or(0);
        }
        for pod in pods.iter().filter(|p| p["spec"]["nodeName"].as_str() == Some(name.as_str())) {
            let pod = pod_key(pod);
            log.bound_at.entry(pod.clone()).or_insert(now);
            if tainted && !log.bound_while_tainted.iter().any(|(p, _)| *p == pod) {
                log.bound_while_tainted.push((pod, name.clone()));
            }
        }
    }
}

/// The pod without the IP request that waits for a node: kube-system's, as the cluster DNS.
pub const UNREQUESTED_POD: (&str, &str) = ("kube-system", "cluster-dns-0");

impl Run<'_> {
    /// Creates [`UNREQUESTED_POD`] through admission (the webhook leaves kube-system alone).
    pub(crate) async fn create_unrequested_pod(&mut self) {
        let (namespace, name) = UNREQUESTED_POD;
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "cluster-dns"}},
            "spec": {"containers": [{"name": "dns", "image": "registry.k8s.io/pause:3.10"}]}});
        self.bed.post_pod(pod).await;
    }

    /// Row 0b, after the fresh cluster: checks what the watcher saw and removes the
    /// unrequested pod (the later scenarios count only the webhook's pods).
    pub async fn startup_taint(&mut self) {
        let key = self
            .bed
            .chart
            .startup_taint()
            .expect("the chart renders the startup taint by default")
            .to_owned();
        let (namespace, name) = UNREQUESTED_POD;
        let unrequested = format!("{namespace}/{name}");
        let dns = self.bed.standin.get(PODS, namespace, name).expect("the unrequested pod");
        assert!(
            crate::kubelet::requested(&dns) == 0,
            "the webhook gave kube-system's pod no request: {}",
            dns["spec"]
        );
        self.bed.wait_all_running(CONVERGE).await;
        // The pods may all run on the nodes that lost their taint first: wait for the others.
        self.bed
            .wait_for("every node's agent to remove the startup taint", CONVERGE, |bed| {
                let log = bed.startup_taints.lock().expect("taint log");
                bed.nodes.iter().all(|n| log.nodes.get(&n.name).is_some_and(|t| t.removed_at.is_some()))
            })
            .await;
        let first_removal = self.check_taint_log(&key, &unrequested);
        // The pods that were waiting when the first taint went: creation to Running.
        let times = self.bed.times_to_running(|created| created < first_removal);
        let waited = times.len();
        let findings = self.audit_now().await;
        let row = Row::new(
            "0b startup taint",
            times,
            CloudCounts::default(),
            findings.leaked_enis.len(),
            findings.double_ips.len(),
            0,
        );
        self.say(&format!("startup taint: {waited} pods waited for the nodes' taints to go; none was bound to a tainted node"));
        self.say(&row.line());
        self.rows.push(row);
        self.bed.standin.delete(PODS, namespace, name);
        self.bed
            .wait_for("the unrequested pod to go", CONVERGE, |bed| {
                bed.nodes.iter().all(|n| !n.kubelet.running().contains_key(&unrequested))
            })
            .await;
    }

    /// What the watcher saw, checked; returns when the first taint went.
    fn check_taint_log(&self, key: &str, unrequested: &str) -> Instant {
        let log = self.bed.startup_taints.lock().expect("taint log");
        assert!(
            log.bound_while_tainted.is_empty(),
            "pods bound to a node still tainted: {:?}",
            log.bound_while_tainted
        );
        let mut first_removal = None::<Instant>;
        for node in &self.bed.nodes {
            let seen =
                log.nodes.get(&node.name).unwrap_or_else(|| panic!("the watcher never saw {}", node.name));
            assert!(seen.joined_tainted, "{} joined with the startup taint {key}", node.name);
            let removed =
                seen.removed_at.unwrap_or_else(|| panic!("{}'s agent never removed {key}", node.name));
            assert!(
                seen.allocatable_then > 0 && seen.pool_then > 0,
                "{}'s taint went with a pool ({}) and kubelet publishing {RESOURCE} ({})",
                node.name,
                seen.pool_then,
                seen.allocatable_then
            );
            first_removal = Some(first_removal.map_or(removed, |f| f.min(removed)));
            let taints = &self.bed.standin.get(NODES, "", &node.name).expect("the Node")["spec"]["taints"];
            assert_eq!(taints, &json!([]), "only the startup taint was on {}, and it went", node.name);
        }
        let first_removal = first_removal.expect("nodes");
        let bound = log.bound_at.get(unrequested).copied().expect("the unrequested pod was bound");
        assert!(bound >= first_removal, "the pod without the request waited for a node without the taint");
        first_removal
    }
}
