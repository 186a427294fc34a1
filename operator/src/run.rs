//! `eni-ipam-operator run`: the controller a cluster runs. Every replica
//! watches ENINodes and Nodes (reflector caches) and serves health and
//! metrics; only the leader of the Lease works: it keeps each node's
//! `spec.pool` at the planner's target through the same fleet loop and
//! executor the simulator drives, resyncs the VPC on a timer and collects
//! leaked ENIs. A leader that loses its Lease drops all of that at once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_api::{ENINode, InstanceId};
use eni_ipam_cloud::{CloudProvider, RetryPolicy};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use kube::{Api, Client, ResourceExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::controller::{Controller, ControllerConfig};
use crate::fleet::Fleet;
use crate::gc::Gc;
use crate::knob_source::{ClusterKnobs, NodeKnobs};
use crate::knob_watch::{KnobConfigRef, KnobWatch};
use crate::kube_store::KubeNodeStore;
use crate::leader::{LeaderConfig, LeaderElector};
use crate::metrics::OperatorMetrics;
use crate::node_events;
use crate::node_identity::{NodeDirectory, NodeSeen};

/// Settings of `run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// What `run` shares with `simulate`.
    pub controller: ControllerConfig,
    /// Period of the VPC-wide bulk resync.
    pub resync_interval: Duration,
    /// Mean period of ENI garbage collection (jittered).
    pub gc_interval: Duration,
    /// A tagged ENI detached this long is deleted.
    pub gc_grace: Duration,
    /// Leader election (`None`: this replica always leads).
    pub leader: Option<LeaderConfig>,
    /// Publish Kubernetes Events on Nodes.
    pub node_events: bool,
    /// The knobs ConfigMap to watch (`None`: every node's knobs are its ENINode's spec over
    /// the built-in defaults).
    pub knob_config: Option<KnobConfigRef>,
}

/// The caches every replica keeps.
#[derive(Clone)]
struct Caches {
    eninodes: Store<ENINode>,
    nodes: Store<Node>,
    /// `true` once both hold a full list.
    loaded: watch::Receiver<bool>,
}

impl Caches {
    /// Waits until both caches hold a full list (`false`: the controller is stopping).
    async fn wait_loaded(&self) -> bool {
        self.loaded.clone().wait_for(|l| *l).await.is_ok()
    }
}

/// Runs the controller until `shutdown` resolves or the ENINode watch ends.
pub async fn run_controller(
    client: Client,
    provider: Arc<dyn CloudProvider>,
    config: RunConfig,
    metrics: Arc<OperatorMetrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stopping = stop_rx.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (mut leading, election) = match &config.leader {
        Some(leader) => {
            let mut stop = stop_rx.clone();
            let (rx, task) = LeaderElector::new(client.clone(), leader.clone()).spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
            });
            (rx, task)
        }
        None => {
            // Always leading: a sender that lives as long as the controller.
            let (tx, rx) = watch::channel(true);
            (rx, tokio::spawn(async move { tx.closed().await }))
        }
    };
    // If this future is dropped (the process dies), the election dies with it:
    // no more renewals, so a standby takes over after one lease duration.
    let mut election = AbortOnDrop(vec![election]);

    let api: Api<ENINode> = Api::all(client.clone());
    let (eninodes, writer) = reflector::store::<ENINode>();
    let (nodes, node_writer) = reflector::store::<Node>();
    metrics.set_eninodes(Some(eninodes.clone()));
    let knobs = Arc::new(ClusterKnobs::new(
        config.controller.default_first_interface_index,
        nodes.clone(),
        config.knob_config.is_some(),
    ));
    let (knobs_loaded_tx, knobs_loaded) = watch::channel(config.knob_config.is_none());
    let (knobs_changed_tx, mut knobs_changed) = watch::channel(0u64);
    let (loaded_tx, loaded) = watch::channel(false);
    let caches = Caches { eninodes: eninodes.clone(), nodes: nodes.clone(), loaded };
    // The fleet of the current term, if this replica leads: watch events go to it.
    let current: Arc<Mutex<Option<Arc<Fleet>>>> = Arc::new(Mutex::new(None));
    let mut background = JoinSet::new();
    if let Some(at) = config.knob_config.clone() {
        let identity = config.leader.as_ref().map_or("eni-ipam-operator", |l| l.identity.as_str());
        let watch = KnobWatch {
            knobs: knobs.clone(),
            loaded: knobs_loaded_tx,
            changed: knobs_changed_tx,
            recorder: Some(Recorder::new(client.clone(), node_events::reporter(identity))),
            leading: leading.clone(),
            metrics: metrics.clone(),
        };
        background.spawn(watch.run(client.clone(), at));
    }
    {
        // A Node's labels choose its node-pool overrides: a label change re-plans its ENINode.
        let (current, eninodes) = (current.clone(), eninodes.clone());
        background.spawn(
            reflector(
                node_writer,
                watcher::watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
                    .modify(trim_node),
            )
            .default_backoff()
            .for_each(move |ev| {
                match ev {
                    Ok(Event::Apply(node)) => {
                        let fleet = current.lock().expect("fleet lock").clone();
                        let eninode = eninodes.get(&ObjectRef::new(&node.name_any()));
                        if let (Some(fleet), Some(eninode)) = (fleet, eninode) {
                            fleet.consider(&eninode);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "Node watch failed; retrying with backoff"),
                }
                std::future::ready(())
            }),
        );
    }
    {
        // One waiter only: kube-runtime's Store wakes just the last of several
        // concurrent `wait_until_ready` callers. Everyone else watches `loaded`.
        let (eninodes, nodes, metrics, loaded) =
            (eninodes.clone(), nodes.clone(), metrics.clone(), loaded_tx);
        let mut knobs_loaded = knobs_loaded;
        background.spawn(async move {
            if eninodes.wait_until_ready().await.is_ok()
                && nodes.wait_until_ready().await.is_ok()
                && knobs_loaded.wait_for(|l| *l).await.is_ok()
            {
                metrics.set_ready();
                let _ = loaded.send(true);
            }
        });
    }

    let mut term: Option<JoinSet<()>> = None;
    let stream = reflector(writer, watcher::watcher(api, watcher::Config::default()).modify(trim_eninode))
        .default_backoff();
    let mut stream = std::pin::pin!(stream);
    let result = loop {
        let lead = *leading.borrow_and_update();
        if lead && term.is_none() {
            metrics.set_leader(true);
            term = Some(start_term(&client, &provider, &config, &caches, &metrics, &current, &knobs));
        } else if !lead && let Some(mut stopped) = term.take() {
            // Lost the Lease: no cloud call from here on. Dropping the tasks cancels
            // in-flight work at its next await.
            if let Some(fleet) = current.lock().expect("fleet lock").take() {
                fleet.close();
            }
            stopped.abort_all();
            metrics.set_leader(false);
            tracing::warn!("not the leader any more: stopped allocating, resyncing and collecting");
        }
        tokio::select! {
            _ = stopping.wait_for(|s| *s) => break Ok(()),
            changed = leading.changed() => {
                if changed.is_err() {
                    // The election task ended (it only does at shutdown): stop leading.
                    leading = watch::channel(false).1;
                }
            }
            Ok(()) = knobs_changed.changed() => {
                // A new knob configuration: every node may have new targets.
                if let Some(fleet) = current.lock().expect("fleet lock").as_ref() {
                    for node in eninodes.state() {
                        fleet.consider(&node);
                    }
                }
            }
            ev = stream.next() => match ev {
                Some(Ok(Event::Apply(node))) => {
                    if let Some(fleet) = current.lock().expect("fleet lock").as_ref() {
                        fleet.consider(&node);
                    }
                }
                // The cache takes a (re-)list in at its end: consider every node then.
                Some(Ok(Event::InitDone)) => {
                    if let Some(fleet) = current.lock().expect("fleet lock").as_ref() {
                        for node in eninodes.state() {
                            fleet.consider(&node);
                        }
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::warn!(error = %e, "ENINode watch failed; retrying with backoff"),
                None => break Err(anyhow::anyhow!("the ENINode watch ended")),
            }
        }
    };
    if let Some(fleet) = current.lock().expect("fleet lock").take() {
        fleet.close();
    }
    drop(term);
    // Lets the election release the Lease (it saw the shutdown too).
    drop(leading);
    if let Some(task) = election.0.pop() {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    result
}

/// Starts a term as leader: the fleet, the bulk resync, GC and the node reports.
/// Everything runs in the returned set; dropping it ends the term.
fn start_term(
    client: &Client,
    provider: &Arc<dyn CloudProvider>,
    config: &RunConfig,
    caches: &Caches,
    metrics: &Arc<OperatorMetrics>,
    current: &Arc<Mutex<Option<Arc<Fleet>>>>,
    knobs: &Arc<ClusterKnobs>,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let (client, provider, config, caches, metrics, current) =
        (client.clone(), provider.clone(), config.clone(), caches.clone(), metrics.clone(), current.clone());
    let knobs: Arc<dyn NodeKnobs> = knobs.clone();
    tasks.spawn(async move {
        // Never plan from a partial cache: wait for both full lists.
        if !caches.wait_loaded().await {
            return;
        }
        let store = Arc::new(KubeNodeStore::new(Api::all(client.clone()), caches.eninodes.clone()));
        let Controller { fleet, events, resync, cache } = Controller::build_with_knobs(
            provider.clone(),
            store,
            &config.controller,
            knobs,
            Arc::new(caches.nodes.clone()),
        );
        metrics.set_cloud_cache(cache);
        let observer = metrics.clone();
        resync.observe(Arc::new(move |bulk, took| observer.resync(bulk, took)));
        let identity = config.leader.as_ref().map_or("eni-ipam-operator", |l| l.identity.as_str());
        let recorder =
            config.node_events.then(|| Recorder::new(client.clone(), node_events::reporter(identity)));
        let mut handles = fleet.spawn_workers();
        handles.push(fleet.spawn_bulk_resync(config.resync_interval));
        handles.push(tokio::spawn(node_events::report(events, metrics.clone(), recorder)));
        handles.push(tokio::spawn(gc_loop(provider, config.clone(), caches.clone(), metrics)));
        let _term = AbortOnDrop(handles);
        *current.lock().expect("fleet lock") = Some(fleet.clone());
        tracing::info!(nodes = caches.eninodes.state().len(), "leading: working every ENINode");
        for node in caches.eninodes.state() {
            fleet.consider(&node);
        }
        // The term lasts until this task is aborted; `_term` then stops every task of it.
        std::future::pending::<()>().await;
    });
    tasks
}

/// What the Node cache keeps: the name, the labels (node-pool overrides select
/// on them) and the providerID (GC's "is this instance a live node"). A full
/// Node (status, images, managed fields) is tens of kilobytes; 20,000 of them
/// would be most of our memory.
fn trim_node(node: &mut Node) {
    node.status = None;
    node.metadata.annotations = None;
    node.metadata.managed_fields = None;
    let provider_id = node.spec.as_ref().and_then(|s| s.provider_id.clone());
    node.spec = Some(k8s_openapi::api::core::v1::NodeSpec { provider_id, ..Default::default() });
}

/// What the ENINode cache keeps: everything but the managed fields (server-side
/// apply lists every pool IP there once more).
fn trim_eninode(node: &mut ENINode) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
}

/// Aborts its tasks when dropped (a `JoinHandle` alone would let them run on).
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The Node cache as the fleet's directory: an ENINode is worked only when its
/// instance is the one its Node runs on.
impl NodeDirectory for Store<Node> {
    fn seen(&self, name: &str) -> NodeSeen {
        match self.get(&ObjectRef::new(name)) {
            None => NodeSeen::Missing,
            Some(node) => NodeSeen::Runs(instance_of(&node)),
        }
    }
}

/// The instance id at the end of a Node's `spec.providerID` (`aws:///zone/i-…`, `cn-hangzhou.i-…`).
fn instance_of(node: &Node) -> Option<InstanceId> {
    let id = node.spec.as_ref()?.provider_id.as_deref()?;
    let last = id.rsplit(['/', '.']).next()?;
    (!last.is_empty()).then(|| InstanceId::from(last))
}

/// Every `gc_interval` (jittered), one GC pass ([`crate::gc`]): the instances
/// Nodes name (a Node's providerID, and the instance of an ENINode whose Node
/// exists) veto deletion; the cloud's word on the others decides. Runs only
/// once both caches hold a full list.
async fn gc_loop(
    provider: Arc<dyn CloudProvider>,
    config: RunConfig,
    caches: Caches,
    metrics: Arc<OperatorMetrics>,
) {
    let mut gc = Gc::new(config.controller.identity(), config.controller.vpc.clone(), config.gc_grace);
    let jitter =
        RetryPolicy::new(config.gc_interval, config.gc_interval, u32::MAX, config.controller.seed ^ 0x6c);
    loop {
        // Between half and one and a half intervals: replicas and restarts do not line up.
        tokio::time::sleep(config.gc_interval / 2 + jitter.jittered(0)).await;
        let node_names: BTreeSet<String> =
            caches.nodes.state().iter().filter_map(|n| n.metadata.name.clone()).collect();
        let mut live: BTreeSet<InstanceId> =
            caches.nodes.state().iter().filter_map(|n| instance_of(n)).collect();
        live.extend(
            caches
                .eninodes
                .state()
                .iter()
                .filter(|e| e.metadata.name.as_ref().is_some_and(|n| node_names.contains(n)))
                .map(|e| e.spec.instance_id.clone()),
        );
        match gc.pass(provider.as_ref(), &live).await {
            Ok(r) => {
                metrics.gc_deleted(r.deleted.len());
                if !r.deleted.is_empty() || !r.failed.is_empty() {
                    tracing::info!(
                        deleted = r.deleted.len(),
                        failed = r.failed.len(),
                        kept = r.kept.len(),
                        "ENI GC pass"
                    );
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "ENI GC pass failed to list the VPC's ENIs; next pass retries")
            }
        }
    }
}
