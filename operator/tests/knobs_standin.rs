//! Cluster-wide knobs through `run` against the stand-in apiserver (no real
//! apiserver runs here) and the fake cloud: the knobs ConfigMap the chart renders
//! reaches every existing ENINode well within one resync, a node-pool override
//! follows the Node's labels, an ENINode's own spec.ipam still wins, and a bad
//! edit is refused with an Event naming the field while the last good knobs stay.

use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::VpcId;
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, CloudProvider, RetryPolicy};
use eni_ipam_kube_standin::{CONFIGMAPS, ENINODES, EVENTS, KubeStandin, NODES};
use eni_ipam_operator::metrics::OperatorMetrics;
use eni_ipam_operator::run::RunConfig;
use eni_ipam_operator::simulate::cloud_setup;
use serde_json::{Value, json};

mod common;

const NAMESPACE: &str = "eni-ipam";
const CONFIGMAP: &str = "eni-ipam-knobs";

fn knobs_configmap(yaml: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
           "metadata": {"name": CONFIGMAP, "namespace": NAMESPACE},
           "data": {"knobs.yaml": yaml}})
}

/// `(preAllocate, where it came from)` as the ENINode shows it, and its free pool IPs.
fn effective(standin: &KubeStandin, node: &str) -> (u64, String, usize) {
    let n = standin.get(ENINODES, "", node).expect("the ENINode exists");
    let effective = &n["status"]["effectiveIpam"];
    let pool = n["spec"]["pool"].as_object().map_or(0, |p| p.len());
    (
        effective["preAllocate"].as_u64().unwrap_or(0),
        effective["sources"]["preAllocate"].as_str().unwrap_or_default().to_owned(),
        pool,
    )
}

/// Waits until every `(node, preAllocate, source)` shows and each pool holds its preAllocate.
async fn wait_for(standin: &KubeStandin, want: &[(&str, u64, &str)], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let seen: Vec<_> = want.iter().map(|(node, _, _)| effective(standin, node)).collect();
        let done = want
            .iter()
            .zip(&seen)
            .all(|((_, pre, source), (p, s, pool))| p == pre && s == source && *pool as u64 >= *pre);
        if done {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "within {within:?}: wanted {want:?}, saw {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_knob_change_in_the_configmap_reaches_every_existing_eninode_within_one_resync() {
    let (url, standin) = KubeStandin::start().await;
    let profile = common::fast_profile();
    let cloud = Arc::new(FakeCloud::new(profile.clone(), VpcId::from("vpc-knobs"), 11));
    let fleet = cloud_setup::launch(&cloud, 6, "m5.large", 8).unwrap();
    // Nodes as the new agent registers them: identity only, no knobs in the spec, except
    // node-005 whose admin set its own preAllocate.
    for (i, (instance, zone)) in fleet.instances.iter().enumerate() {
        let name = format!("node-{i:03}");
        let pool = if i < 3 { "big" } else { "general" };
        standin
            .create(
                NODES,
                json!({"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"karpenter.sh/nodepool": pool}},
                "spec": {"providerID": format!("aws:///{zone}/{instance}")}}),
            )
            .unwrap();
        let mut spec = json!({"instanceId": instance.to_string(), "instanceType": "m5.large",
                              "zone": zone.to_string(), "vpcId": "vpc-knobs"});
        if i == 5 {
            spec["ipam"] = json!({"preAllocate": 3});
        }
        standin.create(ENINODES, json!({"metadata": {"name": name}, "spec": spec})).unwrap();
    }
    standin.create(CONFIGMAPS, knobs_configmap("defaults:\n  pool: {preAllocate: 4}\n")).unwrap();

    let guard = Arc::new(CallGuard::for_profile(profile, 0.95, RetryPolicy::cloud_default(5)));
    let provider: Arc<dyn CloudProvider> = Arc::new(FakeProvider::new(cloud.clone(), guard));
    let resync = Duration::from_secs(60);
    let config = RunConfig {
        knob_config: Some(format!("{NAMESPACE}/{CONFIGMAP}").parse().unwrap()),
        resync_interval: resync,
        ..common::run_config("test", "vpc-knobs", 4, 5)
    };
    let metrics = Arc::new(OperatorMetrics::default());
    let controller = common::Running::start(common::client(&url), provider, config, metrics.clone());
    let refused = || async {
        let (_, text) =
            eni_ipam_admin::fetch(eni_ipam_admin::admin_router(metrics.clone()), "/metrics").await;
        text.lines().find(|l| l.starts_with("eni_ipam_knob_config_refused ")).map(str::to_owned)
    };

    let first = [
        ("node-000", 4, "cluster"),
        ("node-001", 4, "cluster"),
        ("node-002", 4, "cluster"),
        ("node-003", 4, "cluster"),
        ("node-004", 4, "cluster"),
        ("node-005", 3, "eniNode"),
    ];
    wait_for(&standin, &first, Duration::from_secs(30)).await;
    assert_eq!(refused().await.as_deref(), Some("eni_ipam_knob_config_refused 0"));
    let managers = standin.managers(ENINODES, "", "node-000");
    assert!(
        managers["eni-ipam-operator"].iter().any(|p| p.starts_with("status.effectiveIpam")),
        "the operator owns status.effectiveIpam: {managers:?}"
    );

    // `helm upgrade` with a new pool.preAllocate and a node-pool override: the ConfigMap changes,
    // nothing else. Every existing node follows well before the next bulk resync.
    let started = tokio::time::Instant::now();
    standin.put(
        CONFIGMAPS,
        knobs_configmap(
            "defaults:\n  pool: {preAllocate: 10}\nnodePools:\n  - name: big\n    \
             selector: {nodePools: [big]}\n    pool: {preAllocate: 14}\n",
        ),
    );
    let second = [
        ("node-000", 14, "nodePool/big"),
        ("node-001", 14, "nodePool/big"),
        ("node-002", 14, "nodePool/big"),
        ("node-003", 10, "cluster"),
        ("node-004", 10, "cluster"),
        ("node-005", 3, "eniNode"),
    ];
    wait_for(&standin, &second, resync / 3).await;
    assert!(started.elapsed() < resync, "reached every node within one resync");
    let n0 = standin.get(ENINODES, "", "node-000").unwrap();
    assert_eq!(n0["status"]["effectiveIpam"]["nodePools"], json!(["big"]));
    assert_eq!(n0["status"]["effectiveIpam"]["sources"]["minAllocate"], "builtin");
    assert_eq!(n0["spec"].get("ipam"), None, "the operator never writes knobs into the spec");

    // A Node relabelled into the pool takes its override.
    standin
        .merge_patch(
            NODES,
            "",
            "node-003",
            json!({"metadata": {"labels": {"karpenter.sh/nodepool": "big"}}}),
            false,
        )
        .unwrap();
    wait_for(&standin, &[("node-003", 14, "nodePool/big")], resync / 3).await;

    // A bad edit: refused, named in a Warning Event on the ConfigMap, the last good knobs stay.
    standin.put(CONFIGMAPS, knobs_configmap("defaults:\n  pool: {minAllocate: 30, maxAllocate: 20}\n"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let warning = loop {
        let found = standin.list(EVENTS).into_iter().find(|e| {
            e["reason"] == "InvalidKnobConfig"
                && e["regarding"]["kind"] == "ConfigMap"
                && e["type"] == "Warning"
        });
        if let Some(event) = found {
            break event;
        }
        assert!(tokio::time::Instant::now() < deadline, "no InvalidKnobConfig Event on the ConfigMap");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let note = warning["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("ConfigMap eni-ipam/eni-ipam-knobs, key knobs.yaml, field defaults.pool")
            && note.contains("min-allocate (30) is greater than max-allocate (20)")
            && note.contains("keeps the last good knob configuration"),
        "{note}"
    );
    assert_eq!(warning["regarding"]["name"], CONFIGMAP);
    assert_eq!(
        refused().await.as_deref(),
        Some("eni_ipam_knob_config_refused 1"),
        "an admin can alert on it"
    );
    standin.put(CONFIGMAPS, knobs_configmap("defaults: [not, a, map"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let kept = [
        ("node-000", 14, "nodePool/big"),
        ("node-003", 14, "nodePool/big"),
        ("node-004", 10, "cluster"),
        ("node-005", 3, "eniNode"),
    ];
    wait_for(&standin, &kept, Duration::ZERO).await;
    controller.stop().await;
}
