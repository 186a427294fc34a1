//! The excess-IP release handshake under pod churn: the real controller and the
//! real agent code (its IPAM and its ENINode reporter, in process) against the
//! stand-in apiserver and the fake cloud. Every unassign call is checked, at the
//! moment it is made, against every agent's allocations.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_agent::ipam::Ipam;
use eni_ipam_agent::kube_side::Reporter;
use eni_ipam_agent::metrics::Metrics;
use eni_ipam_agent::pool::{CapacityRule, NodePool, SubnetMap};
use eni_ipam_agent::state::StateStore;
use eni_ipam_api::agent_api::AllocateRequest;
use eni_ipam_api::{EniId, VpcId};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, RetryPolicy};
use eni_ipam_kube_standin::{ENINODES, KubeStandin};
use eni_ipam_operator::metrics::OperatorMetrics;
use eni_ipam_operator::simulate::cloud_setup;
use rand::{Rng, SeedableRng};
use serde_json::json;

const NODES: usize = 4;

mod common;

use common::observed::Observed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ip_in_use_is_ever_unassigned_while_pods_churn() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (url, standin) = KubeStandin::start().await;
    let profile = common::fast_profile();
    let cloud = Arc::new(FakeCloud::new(profile.clone(), VpcId::from("vpc-churn"), 11));
    let fleet = cloud_setup::launch(&cloud, NODES as u32, "m5.large", 8).unwrap();
    common::add_nodes(&standin, &fleet.instances, 0, "vpc-churn", 3);
    let agents: Arc<Mutex<Vec<Arc<Ipam>>>> = Arc::new(Mutex::new(Vec::new()));
    let unassigned = Arc::new(AtomicU64::new(0));
    let violations = Arc::new(Mutex::new(Vec::new()));
    // Every unassign is checked, as it is made, against what every agent hands out.
    let check = {
        let (agents, unassigned, violations) = (agents.clone(), unassigned.clone(), violations.clone());
        move |_: &EniId, ips: &[Ipv4Addr]| {
            for agent in agents.lock().unwrap().iter() {
                let used = agent.used();
                for ip in ips {
                    if let Some(pod) = used.get(&ip.to_string()) {
                        violations.lock().unwrap().push(format!("{ip} unassigned while {pod} holds it"));
                    }
                }
            }
            unassigned.fetch_add(ips.len() as u64, Ordering::Relaxed);
        }
    };
    let guard = Arc::new(CallGuard::for_profile(profile, 0.95, RetryPolicy::cloud_default(3)));
    let provider = Arc::new(Observed {
        inner: FakeProvider::new(cloud.clone(), guard),
        on_create: None,
        on_unassign: Some(Box::new(check)),
        lag: Default::default(),
    });
    let client = common::client(&url);
    let mut config = common::run_config("churn", "vpc-churn", 4, 3);
    config.controller.release_delay = Duration::ZERO;
    config.resync_interval = Duration::from_secs(2);
    let controller =
        common::Running::start(client.clone(), provider, config, Arc::new(OperatorMetrics::default()));

    // One agent per node: its IPAM, its reporter (status.used and release answers), and pods coming and going.
    let dir = tempfile::tempdir().unwrap();
    let mut churners = Vec::new();
    for i in 0..NODES {
        let name = format!("node-{i:03}");
        let store = StateStore::new(dir.path().join(format!("{name}.json")));
        let (ipam, _) = Ipam::open(&name, store, NodePool::default(), None).unwrap();
        let ipam = Arc::new(ipam);
        agents.lock().unwrap().push(ipam.clone());
        let reporter = Reporter::new(client.clone(), name.clone(), Duration::from_millis(50))
            .with_resync(Duration::from_millis(100));
        tokio::spawn(reporter.run(
            ipam.clone(),
            Arc::new(Metrics::default()),
            SubnetMap::default(),
            CapacityRule::default(),
        ));
        let (cloud, seed) = (cloud.clone(), i as u64);
        churners.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut pods: Vec<String> = Vec::new();
            let (mut serial, mut handed_out, mut refused) = (0u32, 0u32, 0u32);
            for _round in 0..60 {
                let want = rng.random_range(0..=12usize);
                while pods.len() > want {
                    let pod = pods.swap_remove(rng.random_range(0..pods.len()));
                    ipam.release(&pod, "eth0").unwrap();
                }
                while pods.len() < want {
                    serial += 1;
                    let pod = format!("{name}-pod-{serial}");
                    let request = AllocateRequest {
                        container_id: pod.clone(),
                        if_name: "eth0".into(),
                        pod_namespace: "default".into(),
                        pod_name: pod.clone(),
                        network: String::new(),
                    };
                    match ipam.allocate(&request) {
                        Ok(answer) => {
                            // What a pod gets is on its node's ENI in the cloud, right now.
                            let ip: Ipv4Addr = answer.ip.parse().unwrap();
                            let assigned = cloud.console().all_enis().any(|e| e.secondary_ips.contains(&ip));
                            assert!(assigned, "{pod} got {ip}, which is no longer assigned in the cloud");
                            handed_out += 1;
                            pods.push(pod);
                        }
                        Err(_) => {
                            refused += 1; // pool empty for now: the operator is growing it
                            break;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..150))).await;
            }
            (handed_out, refused)
        }));
    }
    let mut handed_out = 0;
    for churner in churners {
        handed_out += churner.await.unwrap().0;
    }
    // Let the last marks be answered and released.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let violations = violations.lock().unwrap().clone();
    assert!(violations.is_empty(), "IPs in use were unassigned: {violations:?}");
    let unassigned = unassigned.load(Ordering::Relaxed);
    assert!(handed_out > 100, "the churn handed out {handed_out} IPs");
    assert!(unassigned > 0, "the churn exercised releases (unassigned {unassigned})");
    // No IP in two pools, and every pool IP is on its ENI in the cloud.
    let mut owners = BTreeMap::new();
    for n in standin.list(ENINODES) {
        for ip in n["spec"]["pool"].as_object().unwrap().keys() {
            if let Some(other) = owners.insert(ip.clone(), n["metadata"]["name"].clone()) {
                let holder: Vec<_> = cloud
                    .console()
                    .all_enis()
                    .filter(|e| e.secondary_ips.contains(&ip.parse().unwrap()))
                    .map(|e| (e.id.clone(), e.instance.clone()))
                    .collect();
                panic!(
                    "{ip} in the pools of {other} and {}; the cloud has it on {holder:?}; {:#}",
                    n["metadata"]["name"],
                    json!(standin.list(ENINODES))
                );
            }
        }
    }
    eprintln!("churn: {handed_out} IPs handed out, {unassigned} unassigned through the handshake, 0 in use");
    controller.stop().await;
}

/// Pods leave a node and then nothing happens: no other pod, no resync for an hour. The pool
/// still comes back to its pre-allocation once the release delay is over (the end-to-end bed
/// found pools that stayed full: a node was looked at again only on the next change).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_shrinks_after_the_release_delay_with_nothing_else_happening() {
    let (url, standin) = KubeStandin::start().await;
    let profile = common::fast_profile();
    let cloud = Arc::new(FakeCloud::new(profile.clone(), VpcId::from("vpc-quiet"), 5));
    let fleet = cloud_setup::launch(&cloud, 1, "m5.large", 8).unwrap();
    common::add_nodes(&standin, &fleet.instances, 0, "vpc-quiet", 3);
    let guard = Arc::new(CallGuard::for_profile(profile, 0.95, RetryPolicy::cloud_default(5)));
    let provider = Arc::new(FakeProvider::new(cloud.clone(), guard));
    let client = common::client(&url);
    let mut config = common::run_config("quiet", "vpc-quiet", 2, 5);
    config.controller.release_delay = Duration::from_secs(1);
    config.resync_interval = Duration::from_secs(3600);
    let controller =
        common::Running::start(client.clone(), provider, config, Arc::new(OperatorMetrics::default()));
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::new(dir.path().join("node-000.json"));
    let (ipam, _) = Ipam::open("node-000", store, NodePool::default(), None).unwrap();
    let ipam = Arc::new(ipam);
    let reporter = Reporter::new(client.clone(), "node-000".into(), Duration::from_millis(50))
        .with_resync(Duration::from_millis(100));
    tokio::spawn(reporter.run(
        ipam.clone(),
        Arc::new(Metrics::default()),
        SubnetMap::default(),
        CapacityRule::default(),
    ));
    let pool_size =
        || standin.get(ENINODES, "", "node-000").unwrap()["spec"]["pool"].as_object().map_or(0, |p| p.len());

    // Ten pods, taken as the pool grows.
    let mut pods = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while pods < 10 {
        assert!(std::time::Instant::now() < deadline, "the pool did not grow to 10 pods + 3");
        let request = AllocateRequest {
            container_id: format!("c{pods}"),
            if_name: "eth0".into(),
            pod_namespace: "default".into(),
            pod_name: format!("p{pods}"),
            network: String::new(),
        };
        match ipam.allocate(&request) {
            Ok(_) => pods += 1,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // The pre-allocation is kept above the 10 pods.
    while pool_size() < 13 {
        assert!(std::time::Instant::now() < deadline, "the pool stayed at {} with 10 pods", pool_size());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = pool_size();
    for i in 0..10 {
        ipam.release(&format!("c{i}"), "eth0").unwrap();
    }
    let start = std::time::Instant::now();
    while pool_size() > 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the pool stayed at {} (from {grown}) with every pod gone",
            pool_size()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("pool {grown} -> 3 in {:?} after the last pod left (release delay 1 s)", start.elapsed());
    controller.stop().await;
}
