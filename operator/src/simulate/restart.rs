//! Restart storm: a converged fleet, then everything restarts at once (the
//! thundering herd). Counts the cloud calls and the ENINode writes of the first
//! minute after the restart, against one minute of the steady state before
//! it, for our operator and for node-side daemons with and without jittered
//! retries.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{ENINode, ENINodeSpec, InstanceType, VpcId};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{CallGuard, CloudKind, CloudProfile, CloudProvider, RetryPolicy};
use serde::Serialize;
use tokio::time::Instant;

use super::cloud_setup;
use crate::controller::{Controller, ControllerConfig};
use crate::fleet::NodeEvent;
use crate::node_store::MemoryNodeStore;
use crate::resync::Listing;

/// Who restarts, and how it retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restarter {
    /// Our operator: one process, a fresh cache, a shared limiter, coalesced resyncs.
    Ours,
    /// A daemon on every node re-lists its own instance; full-jitter retries.
    DaemonsWithJitter,
    /// The same daemons; retries 10 s, 20 s, ... 5 min without jitter.
    DaemonsWithoutJitter,
}

impl Restarter {
    /// All of them, ours first.
    pub const ALL: [Restarter; 3] =
        [Restarter::Ours, Restarter::DaemonsWithJitter, Restarter::DaemonsWithoutJitter];

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Restarter::Ours => "ours",
            Restarter::DaemonsWithJitter => "node daemons, full jitter",
            Restarter::DaemonsWithoutJitter => "node daemons, no jitter",
        }
    }
}

/// What one restart storm measured.
#[derive(Clone, Debug, Serialize)]
pub struct RestartStorm {
    /// Cloud profile.
    pub cloud: String,
    /// Nodes.
    pub nodes: u32,
    /// Who restarted.
    pub restarter: Restarter,
    /// Cloud calls a minute in the steady state (our operator's bulk resync).
    pub steady_calls_per_min: f64,
    /// ENINode writes a minute in the steady state.
    pub steady_writes_per_min: f64,
    /// Cloud calls the cloud saw in the first minute after the restart (throttled ones included).
    pub restart_calls_first_min: u64,
    /// Of those, answered "throttled".
    pub restart_throttled_first_min: u64,
    /// ENINode writes in the first minute after the restart.
    pub restart_writes_first_min: u64,
    /// `restart_calls_first_min / steady_calls_per_min`.
    pub ratio_to_steady: f64,
    /// Time until every node was worked again (its state re-read), seconds.
    pub all_resynced_s: Option<f64>,
}

fn calls_and_throttled(cloud: &FakeCloud) -> (u64, u64) {
    let counts = cloud.counts();
    (counts.values().map(|c| c.calls).sum(), counts.values().map(|c| c.throttled).sum())
}

/// A fleet of `nodes` at its pre-allocation, a steady minute measured, then a restart.
/// Runs on the caller's clock (virtual time in the simulator and tests).
pub async fn restart_storm(
    kind: CloudKind,
    nodes: u32,
    restarter: Restarter,
    seed: u64,
) -> anyhow::Result<RestartStorm> {
    let profile = CloudProfile::of(kind);
    let vpc = VpcId::from("vpc-restart");
    let cloud = Arc::new(FakeCloud::new(profile.clone(), vpc.clone(), seed));
    let instance_type = profile.default_instance_type;
    let knobs = eni_ipam_api::PoolKnobs::default();
    let fleet = cloud_setup::launch(&cloud, nodes, instance_type, knobs.pre_allocate)?;
    let store = Arc::new(MemoryNodeStore::new());
    let first_index = profile.default_first_interface_index;
    let names: Vec<String> = (0..nodes).map(|n| format!("node-{n:05}")).collect();
    for (name, (instance, zone)) in names.iter().zip(&fleet.instances) {
        let spec = ENINodeSpec {
            instance_id: instance.clone(),
            instance_type: InstanceType::from(instance_type),
            zone: zone.clone(),
            vpc_id: vpc.clone(),
            ipam: eni_ipam_api::PoolOverrides::all(knobs),
            first_interface_index: Some(first_index),
            security_groups: vec!["sg-restart".into()],
            ..ENINodeSpec::default()
        };
        store.insert(ENINode::new(name, spec));
    }
    let ours = |seed: u64| {
        let guard = Arc::new(CallGuard::for_profile(profile.clone(), 0.95, RetryPolicy::cloud_default(seed)));
        let provider: Arc<dyn CloudProvider> = Arc::new(FakeProvider::new(cloud.clone(), guard));
        let config = ControllerConfig {
            default_first_interface_index: first_index,
            ..ControllerConfig::new("restart", vpc.clone(), 64, seed)
        };
        Controller::build(provider, store.clone(), &config)
    };

    // 1. Converge.
    let mut first = ours(seed);
    let workers = first.fleet.spawn_workers();
    for name in &names {
        first.fleet.enqueue(name, knobs.pre_allocate);
    }
    wait_worked(&mut first.events, names.len(), Duration::from_secs(3600)).await;
    // 2. Steady state: the running operator's bulk resync over ten minutes.
    let resync = first.fleet.spawn_bulk_resync(Duration::from_secs(60));
    let (calls_before, _) = calls_and_throttled(&cloud);
    let writes_before = store.writes();
    tokio::time::sleep(Duration::from_secs(600)).await;
    let (calls_after, _) = calls_and_throttled(&cloud);
    let steady_calls = (calls_after - calls_before) as f64 / 10.0;
    let steady_writes = (store.writes() - writes_before) as f64 / 10.0;
    first.fleet.close();
    resync.abort();
    for w in workers {
        w.abort();
    }
    drop(first);

    // 3. Everything restarts at once: every node is worked again with an empty cache.
    let mut again = match restarter {
        Restarter::Ours => ours(seed ^ 0x5eed),
        Restarter::DaemonsWithJitter | Restarter::DaemonsWithoutJitter => {
            let retry = if restarter == Restarter::DaemonsWithJitter {
                RetryPolicy::cloud_default(seed)
            } else {
                RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(300), 8, seed).without_jitter()
            };
            // No shared limiter: each daemon has its own, and the cloud sees them all.
            let guard = Arc::new(CallGuard::new(profile.clone(), BTreeMap::new(), retry.clone()));
            let provider: Arc<dyn CloudProvider> = Arc::new(FakeProvider::new(cloud.clone(), guard));
            let config = ControllerConfig {
                default_first_interface_index: first_index,
                listing: Listing::PerInstance,
                requeue: retry,
                ..ControllerConfig::new("restart", vpc.clone(), names.len(), seed)
            };
            Controller::build(provider, store.clone(), &config)
        }
    };
    let (calls_before, throttled_before) = calls_and_throttled(&cloud);
    let writes_before = store.writes();
    let start = Instant::now();
    let workers = again.fleet.spawn_workers();
    for name in &names {
        again.fleet.enqueue(name, knobs.pre_allocate);
    }
    // The first minute's counts are taken on the clock, whatever the nodes are doing then.
    let snapshot = {
        let (cloud, store) = (cloud.clone(), store.clone());
        tokio::spawn(async move {
            tokio::time::sleep_until(start + Duration::from_secs(60)).await;
            (calls_and_throttled(&cloud), store.writes())
        })
    };
    let worked = tokio::time::timeout(
        Duration::from_secs(4 * 3600),
        wait_worked(&mut again.events, names.len(), Duration::MAX),
    )
    .await;
    let all_resynced = worked.is_ok().then(|| start.elapsed().as_secs_f64());
    let ((calls, throttled), writes) = snapshot.await?;
    let restart_calls = calls - calls_before;
    again.fleet.close();
    for w in workers {
        w.abort();
    }
    Ok(RestartStorm {
        cloud: kind.to_string(),
        nodes,
        restarter,
        steady_calls_per_min: steady_calls,
        steady_writes_per_min: steady_writes,
        restart_calls_first_min: restart_calls,
        restart_throttled_first_min: throttled - throttled_before,
        restart_writes_first_min: writes - writes_before,
        ratio_to_steady: restart_calls as f64 / steady_calls.max(1.0),
        all_resynced_s: all_resynced,
    })
}

/// Waits until `count` nodes have converged (failures are retried by the fleet).
async fn wait_worked(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<NodeEvent>,
    count: usize,
    within: Duration,
) {
    let deadline = Instant::now().checked_add(within);
    let mut worked = std::collections::HashSet::new();
    while worked.len() < count {
        let next = match deadline {
            Some(d) => tokio::time::timeout_at(d, events.recv()).await.ok().flatten(),
            None => events.recv().await,
        };
        match next {
            Some(NodeEvent::Converged { node, .. }) => {
                worked.insert(node);
            }
            Some(NodeEvent::Failed { .. } | NodeEvent::Refused { .. }) => {}
            None => return,
        }
    }
}
