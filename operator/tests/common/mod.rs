//! What the controller tests share: a fake cloud fast enough for real time,
//! and `run`'s settings for it.

#![allow(dead_code)] // each test binary uses its own part

pub mod executor_bed;
pub mod observed;

use std::time::Duration;

use eni_ipam_api::VpcId;
use eni_ipam_cloud::CloudProfile;
use eni_ipam_cloud::token_bucket::BucketSpec;
use eni_ipam_operator::controller::ControllerConfig;
use eni_ipam_operator::run::RunConfig;

/// An AWS-shaped profile whose quotas and delays do not slow a real-time test.
pub fn fast_profile() -> CloudProfile {
    let mut profile = CloudProfile::aws();
    for spec in profile.buckets.values_mut() {
        *spec = BucketSpec { burst: 100_000, per_second: 100_000.0 };
    }
    profile.attach_delay = Duration::from_millis(5);
    profile.read_latency = Duration::ZERO;
    profile.write_latency = Duration::ZERO;
    profile
}

/// `run`'s settings for a test: first device index 1, no leader election, no Events.
pub fn run_config(cluster: &str, vpc: &str, workers: usize, seed: u64) -> RunConfig {
    RunConfig {
        controller: ControllerConfig {
            default_first_interface_index: 1,
            ..ControllerConfig::new(cluster, VpcId::from(vpc), workers, seed)
        },
        resync_interval: Duration::from_secs(60),
        gc_interval: Duration::from_secs(600),
        gc_grace: Duration::from_secs(600),
        leader: None,
        node_events: false,
        knob_config: None,
    }
}

/// A kube client for the stand-in at `url`.
pub fn client(url: &str) -> kube::Client {
    kube::Client::try_from(kube::Config::new(url.parse().expect("the stand-in's URL"))).expect("a client")
}

/// A controller running in a task, stoppable.
pub struct Running {
    /// The controller's task.
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Resolves its shutdown future.
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    /// Starts `run_controller` in a task.
    pub fn start(
        client: kube::Client,
        provider: std::sync::Arc<dyn eni_ipam_cloud::CloudProvider>,
        config: RunConfig,
        metrics: std::sync::Arc<eni_ipam_operator::metrics::OperatorMetrics>,
    ) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(eni_ipam_operator::run::run_controller(
            client,
            provider,
            config,
            metrics,
            async move {
                let _ = stopped.await;
            },
        ));
        Self { task, stop: Some(stop) }
    }

    /// A clean stop (the Lease is released), and the controller's result checked.
    pub async fn stop(mut self) {
        self.stop.take().expect("not stopped yet").send(()).expect("the controller listens");
        (&mut self.task).await.expect("the task ends").expect("the controller ends cleanly");
    }
}

/// Nodes and their ENINodes in the stand-in, as kubelet and the agents would
/// create them: `node-<first + i>` (3 digits) for each instance, m5.large,
/// first interface index 1, `pre_allocate` IPs.
pub fn add_nodes(
    standin: &eni_ipam_kube_standin::KubeStandin,
    instances: &[(eni_ipam_api::InstanceId, eni_ipam_api::Zone)],
    first: usize,
    vpc: &str,
    pre_allocate: u32,
) {
    for (i, (instance, zone)) in instances.iter().enumerate() {
        let name = format!("node-{:03}", first + i);
        standin.create_node(&name, &format!("aws:///{zone}/{instance}"));
        let eninode = serde_json::json!({"metadata": {"name": name}, "spec": {
            "instanceId": instance.to_string(), "instanceType": "m5.large", "zone": zone.to_string(),
            "vpcId": vpc, "ipam": {"preAllocate": pre_allocate}, "firstInterfaceIndex": 1}});
        standin.create(eni_ipam_kube_standin::ENINODES, eninode).expect("the ENINode is created");
    }
}
