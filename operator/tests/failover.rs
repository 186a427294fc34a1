//! Two operator replicas against the stand-in apiserver and one fake cloud:
//! only the Lease holder calls the cloud; when it dies (its task dropped, no
//! release, as a crash), the standby takes over within a lease duration and
//! the next retry, works the nodes that appeared meanwhile, and no IP ends
//! up in two pools.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::VpcId;
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, CloudProvider, RetryPolicy};
use eni_ipam_kube_standin::{ENINODES, KubeStandin, LEASES};
use eni_ipam_operator::leader::LeaderConfig;
use eni_ipam_operator::metrics::OperatorMetrics;
use eni_ipam_operator::simulate::cloud_setup;
use serde_json::json;
use tokio::time::Instant;

mod common;

const LEASE: Duration = Duration::from_secs(2);
const RETRY: Duration = Duration::from_millis(300);

struct Replica {
    identity: String,
    guard: Arc<CallGuard>,
    metrics: Arc<OperatorMetrics>,
    running: common::Running,
}

impl Replica {
    fn start(url: &str, cloud: &Arc<FakeCloud>, identity: &str, seed: u64) -> Self {
        let guard =
            Arc::new(CallGuard::for_profile(common::fast_profile(), 0.95, RetryPolicy::cloud_default(seed)));
        let provider: Arc<dyn CloudProvider> = Arc::new(FakeProvider::new(cloud.clone(), guard.clone()));
        let mut config = common::run_config("ha", "vpc-ha", 8, seed);
        config.leader = Some(LeaderConfig {
            namespace: "kube-system".into(),
            lease_name: "eni-ipam-operator".into(),
            identity: identity.into(),
            lease_duration: LEASE,
            renew_deadline: Duration::from_millis(1500),
            retry_period: RETRY,
        });
        let metrics = Arc::new(OperatorMetrics::default());
        guard.observe(metrics.clone());
        let running = common::Running::start(common::client(url), provider, config, metrics.clone());
        Self { identity: identity.into(), guard, metrics, running }
    }

    fn cloud_calls(&self) -> u64 {
        self.guard.counts().values().map(|c| c.sent).sum()
    }

    fn leads(&self) -> bool {
        self.metrics.encode().lines().any(|l| l == "eni_ipam_operator_leader 1")
    }
}

fn ready(standin: &KubeStandin) -> usize {
    standin.list(ENINODES).iter().filter(|n| n["status"]["conditions"][0]["status"] == "True").count()
}

async fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_calls_the_cloud_and_the_standby_takes_over_when_it_dies() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (url, standin) = KubeStandin::start().await;
    let cloud = Arc::new(FakeCloud::new(common::fast_profile(), VpcId::from("vpc-ha"), 5));
    let first = cloud_setup::launch(&cloud, 60, "m5.large", 8).unwrap();
    common::add_nodes(&standin, &first.instances, 0, "vpc-ha", 6);

    let a = Replica::start(&url, &cloud, "replica-a", 11);
    let b = Replica::start(&url, &cloud, "replica-b", 22);
    wait_for("a leader", Duration::from_secs(10), || a.leads() || b.leads()).await;
    let (mut leader, standby) = if a.leads() { (a, b) } else { (b, a) };
    wait_for("60 nodes ready", Duration::from_secs(60), || ready(&standin) == 60).await;
    assert!(
        !standby.leads(),
        "one leader at a time: {}",
        standby.metrics.encode().lines().filter(|l| l.contains("leader")).collect::<Vec<_>>().join(" / ")
    );
    assert!(leader.cloud_calls() > 0, "the leader did the work");
    assert_eq!(standby.cloud_calls(), 0, "a standby calls no cloud API");

    // The leader dies: its task is dropped mid-term, without releasing the Lease.
    leader.running.task.abort();
    let _ = (&mut leader.running.task).await;
    drop(leader.running.stop.take());
    let killed = Instant::now();
    let more = cloud_setup::launch(&cloud, 20, "m5.large", 8).unwrap();
    common::add_nodes(&standin, &more.instances, 60, "vpc-ha", 6);
    // Takeover: the standby must see no renewal for a lease duration, then win at its next try.
    let bound = LEASE + RETRY.mul_f64(1.2) + Duration::from_secs(1);
    wait_for("the standby to lead", bound, || standby.leads()).await;
    let took_over = killed.elapsed();
    let lease = standin.get(LEASES, "kube-system", "eni-ipam-operator").expect("the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], json!(standby.identity), "the standby holds the Lease");
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "one change of holder: {lease}");
    wait_for("80 nodes ready after failover", Duration::from_secs(60), || ready(&standin) == 80).await;
    eprintln!("failover: standby led {took_over:?} after the leader died (lease {LEASE:?}, retry {RETRY:?})");
    assert!(standby.cloud_calls() > 0, "the new leader does the work");

    // Nothing assigned twice: every pool IP is in one pool and on that node's ENI in the cloud.
    let mut owner = BTreeMap::new();
    for n in standin.list(ENINODES) {
        let name = n["metadata"]["name"].as_str().unwrap().to_owned();
        let instance = n["spec"]["instanceId"].as_str().unwrap().to_owned();
        for ip in n["spec"]["pool"].as_object().unwrap().keys() {
            assert!(owner.insert(ip.clone(), name.clone()).is_none(), "{ip} is in two pools");
            let parsed: std::net::Ipv4Addr = ip.parse().unwrap();
            let on = cloud
                .console()
                .all_enis()
                .find(|e| e.secondary_ips.contains(&parsed))
                .and_then(|e| e.instance.as_ref().map(|i| i.to_string()));
            assert_eq!(
                on.as_deref(),
                Some(instance.as_str()),
                "{ip} of {name} is not on its instance in the cloud"
            );
        }
    }
    standby.running.stop().await;
    let lease = standin.get(LEASES, "kube-system", "eni-ipam-operator").expect("the Lease");
    assert!(lease["spec"]["holderIdentity"].is_null(), "a clean stop releases the Lease: {lease}");
}
