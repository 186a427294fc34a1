//! Resyncs of cloud state, coalesced. Callers ask "refresh instance X" (after
//! a change, or when its node appears) and wait; requests that arrive while
//! a batch is gathered or under way are served together, by whichever is
//! fewer calls: per-instance lists (as many ids per call as the cloud takes)
//! or one paginated VPC-wide list. Never one list per subnet.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{InstanceId, VpcId};
use eni_ipam_cloud::{CloudProvider, CloudResult, EniQuery, list_all_enis};
use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};

use crate::instances::InstancesCache;

enum Request {
    Instance(InstanceId, oneshot::Sender<CloudResult<()>>),
    Bulk(oneshot::Sender<CloudResult<()>>),
}

/// How a batch was served (for the report and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ResyncCounts {
    /// Batches served by a VPC-wide list.
    pub bulk: u64,
    /// Batches served by per-instance lists.
    pub per_instance: u64,
    /// Instance refreshes asked for.
    pub requests: u64,
}

/// How batches are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Listing {
    /// Ours: per-instance lists or one VPC-wide list, whichever is fewer calls.
    #[default]
    Coalesced,
    /// Every batch lists the ENIs of every subnet, one paginated list per
    /// subnet (a strategy some IPAMs use; kept for the simulator to compare).
    PerSubnet,
    /// Every instance on its own, as daemons on each node do (simulator only).
    PerInstance,
}

/// Told about every resync: VPC-wide or not, and how long it took.
pub type ResyncObserver = Arc<dyn Fn(bool, Duration) + Send + Sync>;

/// Handle to the resync task.
#[derive(Clone)]
pub struct Resyncer {
    tx: mpsc::UnboundedSender<Request>,
    counts: Arc<std::sync::Mutex<ResyncCounts>>,
    observer: Arc<std::sync::OnceLock<ResyncObserver>>,
}

impl Resyncer {
    /// Starts the task. `window` is how long the first request of a batch
    /// waits for company.
    pub fn spawn(
        provider: Arc<dyn CloudProvider>,
        cache: Arc<InstancesCache>,
        vpc: VpcId,
        window: Duration,
    ) -> Self {
        Self::spawn_with(provider, cache, vpc, window, Listing::Coalesced)
    }

    /// Starts the task with a listing strategy.
    pub fn spawn_with(
        provider: Arc<dyn CloudProvider>,
        cache: Arc<InstancesCache>,
        vpc: VpcId,
        window: Duration,
        listing: Listing,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let counts = Arc::new(std::sync::Mutex::new(ResyncCounts::default()));
        let observer = Arc::new(std::sync::OnceLock::new());
        let task = Task {
            provider,
            cache,
            vpc,
            window,
            counts: counts.clone(),
            listing,
            observer: observer.clone(),
        };
        tokio::spawn(task.run(rx));
        Self { tx, counts, observer }
    }

    /// Reports every resync to `observer` from now on (once).
    pub fn observe(&self, observer: ResyncObserver) {
        let _ = self.observer.set(observer);
    }

    /// Refreshes one instance's ENIs (maybe along with others').
    pub async fn instance(&self, id: &InstanceId) -> CloudResult<()> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Request::Instance(id.clone(), done)).expect("resync task runs as long as its handles");
        wait.await.expect("resync task answers every request")
    }

    /// Refreshes everything: all ENIs of the VPC and the subnets.
    pub async fn bulk(&self) -> CloudResult<()> {
        let (done, wait) = oneshot::channel();
        self.tx.send(Request::Bulk(done)).expect("resync task runs as long as its handles");
        wait.await.expect("resync task answers every request")
    }

    /// Counts so far.
    pub fn counts(&self) -> ResyncCounts {
        *self.counts.lock().expect("counts lock")
    }
}

/// The resync task's state.
struct Task {
    provider: Arc<dyn CloudProvider>,
    cache: Arc<InstancesCache>,
    vpc: VpcId,
    window: Duration,
    counts: Arc<std::sync::Mutex<ResyncCounts>>,
    listing: Listing,
    observer: Arc<std::sync::OnceLock<ResyncObserver>>,
}

impl Task {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let Task { provider, cache, vpc, window, counts, listing, observer } = self;
        // When the last batch was done: a request after a quiet spell goes at once.
        let mut last_done: Option<tokio::time::Instant> = None;
        while let Some(first) = rx.recv().await {
            if last_done.is_some_and(|done| done.elapsed() < window) {
                // Requests are flowing (polls, refreshes after changes): wait for company.
                tokio::time::sleep(window).await;
            } else {
                // The first after a quiet spell: nothing is flowing to wait for, so only
                // what asked in the same instant (a fleet appearing at once) joins it.
                tokio::task::yield_now().await;
            }
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
            }
            let started = tokio::time::Instant::now();
            // Answers to our writes applied after this are newer than the listing.
            let generation = cache.generation();
            let mut instances = BTreeSet::new();
            let mut bulk = false;
            for r in &batch {
                match r {
                    Request::Instance(id, _) => {
                        instances.insert(id.clone());
                    }
                    Request::Bulk(_) => bulk = true,
                }
            }
            let limits = provider.batch_limits();
            let per_instance_calls = instances.len().div_ceil(limits.instances_per_list.max(1) as usize);
            let bulk_calls =
                (cache.eni_count() + instances.len()).div_ceil(limits.max_page_size as usize).max(1);
            let vpc_wide = match listing {
                Listing::PerSubnet => true,
                Listing::PerInstance => bulk,
                // An empty cache (a start or restart) is filled by one VPC-wide listing,
                // not by the instances that happen to ask first.
                Listing::Coalesced => bulk || !cache.is_filled() || bulk_calls < per_instance_calls,
            };
            let result = if listing == Listing::PerSubnet {
                counts.lock().expect("counts lock").bulk += 1;
                per_subnet_resync(provider.as_ref(), &cache, &vpc, generation).await
            } else if vpc_wide {
                counts.lock().expect("counts lock").bulk += 1;
                // Subnets are refreshed on asked-for bulk resyncs only, not when a
                // VPC listing is merely the cheaper way to serve instance requests.
                bulk_resync(provider.as_ref(), &cache, &vpc, bulk, generation).await
            } else {
                counts.lock().expect("counts lock").per_instance += 1;
                let ids: Vec<InstanceId> = instances.into_iter().collect();
                let per_call = if listing == Listing::PerInstance { 1 } else { limits.instances_per_list };
                instance_resync(provider.as_ref(), &cache, &ids, per_call, generation).await
            };
            if let Some(observe) = observer.get() {
                observe(vpc_wide, started.elapsed());
            }
            counts.lock().expect("counts lock").requests += batch.len() as u64;
            last_done = Some(tokio::time::Instant::now());
            for r in batch {
                let done = match r {
                    Request::Instance(_, d) | Request::Bulk(d) => d,
                };
                let _ = done.send(result.clone());
            }
        }
    }
}

async fn bulk_resync(
    provider: &dyn CloudProvider,
    cache: &InstancesCache,
    vpc: &VpcId,
    with_subnets: bool,
    generation: u64,
) -> CloudResult<()> {
    let (enis, _calls) = list_all_enis(provider, &EniQuery::Vpc(vpc.clone())).await?;
    cache.replace_all_listed_at(enis, generation);
    if with_subnets {
        cache.set_subnets(provider.list_subnets(vpc).await?);
    }
    Ok(())
}

async fn per_subnet_resync(
    provider: &dyn CloudProvider,
    cache: &InstancesCache,
    vpc: &VpcId,
    generation: u64,
) -> CloudResult<()> {
    let subnets = provider.list_subnets(vpc).await?;
    let mut all = Vec::new();
    for subnet in &subnets {
        all.extend(list_all_enis(provider, &EniQuery::Subnet(subnet.id.clone())).await?.0);
    }
    cache.replace_all_listed_at(all, generation);
    cache.set_subnets(subnets);
    Ok(())
}

async fn instance_resync(
    provider: &dyn CloudProvider,
    cache: &InstancesCache,
    ids: &[InstanceId],
    per_call: u32,
    generation: u64,
) -> CloudResult<()> {
    let lists = ids.chunks(per_call.max(1) as usize).map(|chunk| async move {
        let (enis, _) = list_all_enis(provider, &EniQuery::Instances(chunk.to_vec())).await?;
        cache.replace_instances_listed_at(chunk, enis, generation);
        Ok(())
    });
    join_all(lists).await.into_iter().collect()
}
