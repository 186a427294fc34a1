//! Two clusters in one VPC, both installed with the default identity: the bed's
//! cluster A and a cluster B with its own apiserver (its own kube-system UID), two
//! VMs and two operator replicas started as the chart renders them (no clusterId).
//! Both churn (A: pods come and go; B: a pool grows, a Node is deleted while its VM
//! runs) while both GCs run; then neither cluster's ENIs were touched by the other:
//! same ids, attachments and tags, and B's addresses all still there.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use eni_ipam_chart_tests::{Helm, parse_documents};
use eni_ipam_cloud::{Eni, tag};
use eni_ipam_kube_standin::{CONFIGMAPS, ENINODES, KubeStandin, NAMESPACES, NODES};
use serde_json::{Value, json};

use super::{SafetyRow, remove_pods_and_audit};
use crate::bed::{Bed, GC_PERIOD, chart_values, host_address, ours};
use crate::chart::{self, ChartControlPlane, PodSupply};
use crate::daemon::Daemon;
use crate::scenarios::CONVERGE;

/// B's operators open their metrics here (A's use the chart's default on the same nodes).
const B_METRICS_PORT: u16 = 9476;
/// B's replicas run on these nodes' host networks.
const B_OPERATOR_NODES: [usize; 2] = [2, 0];

/// What must not change of an ENI when another cluster works.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    instance: Option<String>,
    device_index: Option<u32>,
    tags: BTreeMap<String, String>,
    ips: BTreeSet<Ipv4Addr>,
}

fn seen(enis: &[Eni], keep: impl Fn(&Eni) -> bool) -> BTreeMap<String, Seen> {
    enis.iter()
        .filter(|e| keep(e))
        .map(|e| {
            let seen = Seen {
                instance: e.instance.as_ref().map(ToString::to_string),
                device_index: e.device_index,
                tags: e.tags.clone(),
                ips: e.secondary_ips.iter().copied().collect(),
            };
            (e.id.to_string(), seen)
        })
        .collect()
}

/// ENIs of `before` gone, moved or re-tagged in `after`; with `keep_ips`, also those
/// that lost an address.
fn touched(before: &BTreeMap<String, Seen>, after: &BTreeMap<String, Seen>, keep_ips: bool) -> Vec<String> {
    before
        .iter()
        .filter(|(id, was)| match after.get(*id) {
            None => true,
            Some(now) => {
                now.instance != was.instance
                    || now.device_index != was.device_index
                    || now.tags != was.tags
                    || (keep_ips && !was.ips.is_subset(&now.ips))
            }
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Cluster B's ENINode for `instance`: A's node-0 spec (same VPC, subnets, security
/// groups) with B's instance, pool from index 1 so B's addresses sit on ENIs it tags.
fn b_eninode(template: &Value, name: &str, instance: &crate::cloud::Instance) -> Value {
    let mut spec = template["spec"].clone();
    let fields = spec.as_object_mut().expect("an ENINode spec");
    fields.remove("pool");
    fields.insert("instanceId".into(), instance.id.clone().into());
    fields.insert("instanceType".into(), instance.instance_type.clone().into());
    fields.insert("zone".into(), instance.zone.clone().into());
    fields.insert("firstInterfaceIndex".into(), 1.into());
    fields.insert("ipam".into(), json!({"preAllocate": 2, "maxAllocate": 10}));
    json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode", "metadata": {"name": name}, "spec": spec})
}

fn pool_len(standin: &KubeStandin, name: &str) -> usize {
    standin.get(ENINODES, "", name).and_then(|n| n["spec"]["pool"].as_object().map(|p| p.len())).unwrap_or(0)
}

/// The chart's values for cluster B's operator on node `n`: the bed's, but no clusterId.
fn b_values(bed: &Bed, n: usize) -> Vec<String> {
    let mut values: Vec<String> = chart_values(&bed.cloud, host_address(n), bed.config.datapath)
        .into_iter()
        .filter(|v| !v.starts_with("clusterId="))
        .collect();
    values.push(format!("operator.metricsPort={B_METRICS_PORT}"));
    values
}

/// The knobs ConfigMap helm installs with B's release (the operator watches it).
fn b_knobs(bed: &Bed) -> Value {
    let helm = Helm { release: "eni-ipam".into(), namespace: chart::NAMESPACE.into() };
    let values = b_values(bed, B_OPERATOR_NODES[0]);
    let sets: Vec<&str> = values.iter().map(String::as_str).collect();
    parse_documents(&helm.render(&[], &sets))
        .into_iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "eni-ipam-knobs")
        .expect("the chart renders the knobs ConfigMap")
}

/// Cluster B's operator replicas, as the chart renders them for B (no clusterId).
fn start_b_operators(bed: &Bed, b: &KubeStandin) -> Vec<Daemon> {
    let mut daemons = Vec::new();
    for (replica, n) in B_OPERATOR_NODES.into_iter().enumerate() {
        let host = host_address(n);
        let rendered = ChartControlPlane::render(&b_values(bed, n));
        let kubeconfig = bed.dir.join(format!("kubeconfig-b-{n}"));
        std::fs::write(&kubeconfig, b.kubeconfig_via(host.into())).expect("write B's kubeconfig");
        let identity = format!("b-operator-{replica}");
        let (secret, node_env) = (bed.cloud.secret(), bed.cloud.node_env());
        let supply =
            PodSupply { pod_name: &identity, secret: &secret, volumes: &bed.dir, node_env: &node_env };
        let extra = ["--kubeconfig".to_owned(), kubeconfig.display().to_string()];
        let command = chart::command(&rendered.operator, &bed.nodes[n].netns, &supply, &extra);
        daemons.push(Daemon::spawn(&identity, command, &bed.dir.join(format!("{identity}.log"))));
    }
    daemons
}

/// Runs the scenario (B's two VMs and ENIs stay in the VPC afterwards, B's operators stop).
pub async fn run(bed: &mut Bed, progress: &(dyn Fn(&str) + Sync)) -> SafetyRow {
    let mut row = SafetyRow::new("two clusters, one VPC");
    let (_, b) = KubeStandin::start_on(SocketAddr::from(([0, 0, 0, 0], 0))).await;
    let uid_b = b.get(NAMESPACES, "", "kube-system").expect("B's kube-system")["metadata"]["uid"]
        .as_str()
        .expect("a UID")
        .to_owned();
    let vms = bed.cloud.launch_elsewhere(2).await;
    let template = bed.eninodes().into_values().next().expect("an ENINode of A");
    let names: Vec<String> = (0..vms.len()).map(|i| format!("b-node-{i}")).collect();
    for (name, vm) in names.iter().zip(&vms) {
        b.create(
            NODES,
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"providerID": vm.provider_id}}),
        )
        .expect("create B's Node");
        b.create(ENINODES, b_eninode(&template, name, vm)).expect("create B's ENINode");
    }
    b.create(CONFIGMAPS, b_knobs(bed)).expect("create B's knobs ConfigMap");
    progress(&format!("two clusters: B (kube-system {uid_b}) starts two operators for {} VMs", vms.len()));
    let mut daemons = start_b_operators(bed, &b);
    let start = Instant::now();
    while names.iter().any(|n| pool_len(&b, n) < 2) {
        if start.elapsed() > CONVERGE {
            let logs: Vec<String> = daemons.iter().map(|d| format!("{}:\n{}", d.name, d.tail(20))).collect();
            panic!("cluster B's pools never filled:\n{}", logs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let is_b = |e: &Eni| e.tags.get(tag::CLUSTER).map(String::as_str) == Some(uid_b.as_str());
    let enis = bed.cloud.enis().await;
    let (a_before, b_before) = (seen(&enis, ours), seen(&enis, is_b));
    assert!(!b_before.is_empty(), "cluster B tagged ENIs with its kube-system UID");
    assert!(
        b_before.values().all(|s| s.tags.get(tag::CLUSTER_UID) == Some(&uid_b)),
        "B's ENIs carry B's UID"
    );

    // Churn in both, both GCs running.
    progress("two clusters: B's pool grows and a Node of B goes (its VM runs); A's pods come and go");
    let grown = &names[0];
    let mut spec = b.get(ENINODES, "", grown).expect("B's ENINode");
    spec["spec"]["ipam"]["preAllocate"] = 6.into();
    b.put(ENINODES, spec);
    assert!(b.delete_node(&names[1]));
    let pods: Vec<String> = (0..9).map(|i| format!("g-two-{i}")).collect();
    for pod in &pods {
        bed.create_pod(pod).await;
    }
    bed.wait_all_running(CONVERGE).await;
    for pod in &pods {
        bed.delete_pod(pod);
    }
    bed.wait_for("B's grown pool", CONVERGE, |_| pool_len(&b, grown) >= 6).await;
    tokio::time::sleep(GC_PERIOD * 3).await;

    let enis = bed.cloud.enis().await;
    let (a_after, b_after) = (seen(&enis, ours), seen(&enis, is_b));
    let b_touched = touched(&b_before, &b_after, true);
    let a_touched = touched(&a_before, &a_after, false);
    row.other_cluster_enis_touched = b_touched.len() + a_touched.len();
    row.live_enis_detached = b_touched.iter().filter(|id| b_before[*id].instance.is_some()).count();
    for daemon in &mut daemons {
        daemon.kill();
    }
    progress(&format!(
        "two clusters: B's {} ENIs ({} after its churn), A's {}; touched by the other: B {b_touched:?}, A {a_touched:?}",
        b_before.len(),
        b_after.len(),
        a_before.len()
    ));
    row.double_ips = remove_pods_and_audit(bed, &row.scenario.clone(), &pods, progress).await;
    row.note = format!(
        "B: {} ENIs, UID-tagged, pool grown to {}, Node deleted; A: {} ENIs, 9 pods churned",
        b_after.len(),
        pool_len(&b, grown),
        a_before.len()
    );
    row
}
