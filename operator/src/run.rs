//! `eni-ipam-operator run`: the controller a cluster runs. It watches ENINodes
//! (the agent registers them), keeps each node's `spec.pool` at the planner's
//! target through the same fleet loop and executor the simulator drives, and
//! resyncs the whole VPC on a timer.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeSet;

use eni_ipam_api::{ENINode, InstanceId, VpcId};
use eni_ipam_cloud::{CloudProvider, RetryPolicy};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::Store;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Api, Client};

use crate::executor::{Executor, ExecutorConfig};
use crate::fleet::{Fleet, FleetConfig};
use crate::gc::Gc;
use crate::instances::InstancesCache;
use crate::kube_store::KubeNodeStore;
use crate::resync::Resyncer;

/// Settings of `run`, shared by the CLI and the tests.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Cluster name written in every ENI tag (and the only ENIs GC may touch).
    pub cluster: String,
    /// The cluster's VPC.
    pub vpc: VpcId,
    /// Nodes worked at once.
    pub workers: usize,
    /// Period of the VPC-wide bulk resync.
    pub resync_interval: Duration,
    /// First device index for pods when the ENINode does not say.
    pub default_first_interface_index: u32,
    /// A free IP is marked for release only after this long.
    pub release_delay: Duration,
    /// Seed of jitter and client tokens.
    pub seed: u64,
    /// Mean period of ENI garbage collection (jittered).
    pub gc_interval: Duration,
    /// A tagged ENI detached this long is deleted.
    pub gc_grace: Duration,
}

/// Runs the controller until `shutdown` resolves or the ENINode watch ends.
pub async fn run_controller(
    client: Client,
    provider: Arc<dyn CloudProvider>,
    config: RunConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let api: Api<ENINode> = Api::all(client.clone());
    let cache = Arc::new(InstancesCache::new());
    let resync =
        Resyncer::spawn(provider.clone(), cache.clone(), config.vpc.clone(), Duration::from_millis(100));
    let exec_config = ExecutorConfig {
        cluster: config.cluster.clone(),
        vpc: config.vpc.clone(),
        release_delay: config.release_delay,
        ..ExecutorConfig::default()
    };
    let executor = Arc::new(Executor::new(provider.clone(), cache, resync, exec_config, config.seed));
    let (reader, writer) = reflector::store::<ENINode>();
    let store = Arc::new(KubeNodeStore::new(api.clone(), reader.clone()));
    let fleet_config = FleetConfig {
        workers: config.workers,
        default_first_interface_index: config.default_first_interface_index,
        requeue: RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(60), u32::MAX, config.seed),
    };
    let (fleet, mut events) = Fleet::new(executor, store, fleet_config);
    // Node events feed metrics later; drain them so the channel stays small.
    let drain = tokio::spawn(async move { while events.recv().await.is_some() {} });
    let mut tasks = fleet.spawn_workers();
    tasks.push(fleet.spawn_bulk_resync(config.resync_interval));
    tasks.push(drain);
    let (nodes, node_writer) = reflector::store::<Node>();
    let node_stream =
        reflector(node_writer, watcher::watcher(Api::<Node>::all(client), watcher::Config::default()))
            .default_backoff()
            .for_each(|ev| async move {
                if let Err(e) = ev {
                    tracing::warn!(error = %e, "Node watch failed; retrying with backoff");
                }
            });
    tasks.push(tokio::spawn(node_stream));
    tasks.push(tokio::spawn(gc_loop(provider, config.clone(), reader.clone(), nodes)));
    let stream = reflector(writer, watcher::watcher(api, watcher::Config::default())).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut shutdown = std::pin::pin!(shutdown);
    let result = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            ev = stream.next() => match ev {
                Some(Ok(Event::Apply(node))) => fleet.consider(&node),
                // The cache takes a (re-)list in at its end: consider every node then.
                Some(Ok(Event::InitDone)) => {
                    for node in reader.state() {
                        fleet.consider(&node);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "ENINode watch failed; retrying with backoff"),
                None => break Err(anyhow::anyhow!("the ENINode watch ended")),
            }
        }
    };
    fleet.close();
    for t in tasks {
        t.abort();
    }
    result
}

/// The instance id at the end of a Node's `spec.providerID` (`aws:///zone/i-…`, `cn-hangzhou.i-…`).
fn instance_of(node: &Node) -> Option<InstanceId> {
    let id = node.spec.as_ref()?.provider_id.as_deref()?;
    let last = id.rsplit(['/', '.']).next()?;
    (!last.is_empty()).then(|| InstanceId::from(last))
}

/// Every `gc_interval` (jittered), deletes this cluster's ENIs whose node is gone and
/// leaked ones past the grace. Never before both caches hold a full list: an empty
/// cache would make every node look gone.
async fn gc_loop(
    provider: Arc<dyn CloudProvider>,
    config: RunConfig,
    eninodes: Store<ENINode>,
    nodes: Store<Node>,
) {
    if eninodes.wait_until_ready().await.is_err() || nodes.wait_until_ready().await.is_err() {
        return;
    }
    let mut gc = Gc::new(&config.cluster, config.vpc.clone(), config.gc_grace);
    let jitter = RetryPolicy::new(config.gc_interval, config.gc_interval, u32::MAX, config.seed ^ 0x6c);
    loop {
        // Between half and one and a half intervals: replicas and restarts do not line up.
        tokio::time::sleep(config.gc_interval / 2 + jitter.jittered(0)).await;
        let node_names: BTreeSet<String> =
            nodes.state().iter().filter_map(|n| n.metadata.name.clone()).collect();
        let mut live: BTreeSet<InstanceId> = nodes.state().iter().filter_map(|n| instance_of(n)).collect();
        live.extend(
            eninodes
                .state()
                .iter()
                .filter(|e| e.metadata.name.as_ref().is_some_and(|n| node_names.contains(n)))
                .map(|e| e.spec.instance_id.clone()),
        );
        match gc.pass(provider.as_ref(), &live).await {
            Ok(r) if !r.deleted.is_empty() || !r.failed.is_empty() => {
                tracing::info!(deleted = r.deleted.len(), failed = r.failed.len(), "ENI GC pass")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "ENI GC pass failed to list the VPC's ENIs; next pass retries")
            }
        }
    }
}
