//! One constructor for the working parts of the operator (resync task,
//! executor, fleet loop), shared by `run` and `simulate`: the simulator
//! drives exactly what a cluster runs, with only the node store and the
//! cloud swapped.

use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::VpcId;
use eni_ipam_cloud::{CloudProvider, RetryPolicy};
use tokio::sync::mpsc;

use crate::cluster_identity::ClusterIdentity;
use crate::executor::{Executor, ExecutorConfig};
use crate::fleet::{Fleet, FleetConfig, NodeEvent};
use crate::instances::InstancesCache;
use crate::knob_source::{NodeKnobs, SpecKnobs};
use crate::node_identity::{NodeDirectory, Unchecked};
use crate::node_store::NodeStore;
use crate::resync::{Listing, Resyncer};

/// How long the first resync request of a batch waits for others to join it.
pub const RESYNC_WINDOW: Duration = Duration::from_millis(100);

/// The settings `run` and `simulate` share.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// The cluster's id, written in every ENI tag (GC touches only ENIs with it).
    pub cluster: String,
    /// The kube-system namespace's UID, written next to it (`None` in `simulate`).
    pub cluster_uid: Option<String>,
    /// The cluster's VPC.
    pub vpc: VpcId,
    /// Nodes worked at once.
    pub workers: usize,
    /// A free IP is marked for release only after this long.
    pub release_delay: Duration,
    /// The cloud's first device index for pods, when no knob layer says.
    pub default_first_interface_index: u32,
    /// Seed of jitter and client tokens (vary it across replicas).
    pub seed: u64,
    /// Backoff for nodes whose work failed.
    pub requeue: RetryPolicy,
    /// How resync batches list the cloud (only the simulator's strategies change it).
    pub listing: Listing,
    /// Act on at most this many planned actions per pass (`None`: all).
    pub max_actions_per_pass: Option<usize>,
    /// Pause between passes.
    pub pass_pause: Duration,
}

impl ControllerConfig {
    /// The identity in ENI tags.
    pub fn identity(&self) -> ClusterIdentity {
        ClusterIdentity { id: self.cluster.clone(), uid: self.cluster_uid.clone() }
    }

    /// Ours: coalesced listing, every action of a plan at once, full-jitter
    /// requeue from 1 s up to 60 s.
    pub fn new(cluster: impl Into<String>, vpc: VpcId, workers: usize, seed: u64) -> Self {
        Self {
            cluster: cluster.into(),
            cluster_uid: None,
            vpc,
            workers,
            release_delay: Duration::from_secs(180),
            default_first_interface_index: 0,
            seed,
            requeue: RetryPolicy::new(
                Duration::from_secs(1),
                Duration::from_secs(60),
                u32::MAX,
                seed ^ 0xf1ee7,
            ),
            listing: Listing::Coalesced,
            max_actions_per_pass: None,
            pass_pause: Duration::ZERO,
        }
    }
}

/// The working parts, wired.
pub struct Controller {
    /// The fleet loop (not started: call `spawn_workers`).
    pub fleet: Arc<Fleet>,
    /// What happens to nodes.
    pub events: mpsc::UnboundedReceiver<NodeEvent>,
    /// The resync task.
    pub resync: Resyncer,
    /// The instances cache the executor plans from.
    pub cache: Arc<InstancesCache>,
}

impl Controller {
    /// Wires the parts over a cloud and a node store; every node's knobs come from its
    /// ENINode's spec over the built-in defaults, and no Node is checked (no apiserver).
    pub fn build(
        provider: Arc<dyn CloudProvider>,
        store: Arc<dyn NodeStore>,
        config: &ControllerConfig,
    ) -> Self {
        let knobs = Arc::new(SpecKnobs { first_interface_index: config.default_first_interface_index });
        Self::build_with_knobs(provider, store, config, knobs, Arc::new(Unchecked))
    }

    /// Wires the parts, with the nodes' knobs from `knobs` and their Nodes from `nodes`
    /// (an ENINode whose instance is not its Node's is refused).
    pub fn build_with_knobs(
        provider: Arc<dyn CloudProvider>,
        store: Arc<dyn NodeStore>,
        config: &ControllerConfig,
        knobs: Arc<dyn NodeKnobs>,
        nodes: Arc<dyn NodeDirectory>,
    ) -> Self {
        let cache = Arc::new(InstancesCache::new());
        let resync = Resyncer::spawn_with(
            provider.clone(),
            cache.clone(),
            config.vpc.clone(),
            RESYNC_WINDOW,
            config.listing,
        );
        let exec_config = ExecutorConfig {
            cluster: config.cluster.clone(),
            cluster_uid: config.cluster_uid.clone(),
            vpc: config.vpc.clone(),
            release_delay: config.release_delay,
            max_actions_per_pass: config.max_actions_per_pass,
            pass_pause: config.pass_pause,
            max_passes: if config.max_actions_per_pass.is_some() { 64 } else { 6 },
            ..ExecutorConfig::default()
        };
        let executor =
            Arc::new(Executor::new(provider, cache.clone(), resync.clone(), exec_config, config.seed));
        let fleet_config = FleetConfig { workers: config.workers, requeue: config.requeue.clone() };
        let (fleet, events) = Fleet::new(executor, store, knobs, nodes, fleet_config);
        Self { fleet, events, resync, cache }
    }
}
