//! The fleet loop: a bounded pool of workers takes nodes from the
//! deficit-ordered queue, converges each through the executor, publishes the
//! result, and requeues failures after a full-jitter backoff (never a fixed
//! delay, so nodes that failed together do not retry together).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_api::{ENINode, ENINodeCondition, EffectiveIpam, KnobConflict, ReleaseState};
use eni_ipam_cloud::ErrorClass;
use eni_ipam_cloud::RetryPolicy;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::executor::{ExecError, Executor, NodeOutcome, NodeTarget};
use crate::knob_source::NodeKnobs;
use crate::kube_store::now_rfc3339;
use crate::node_identity::{self, NodeDirectory};
use crate::node_store::{NodeStore, PoolUpdate};
use crate::planner::{Shortfall, SubnetSelector};
use crate::shortfall::{growth_after_failure, next_shortfall, published_is_stale};
use crate::work_queue::WorkQueue;

/// What happened to a node, for whoever watches (simulator, metrics).
#[derive(Clone, Debug)]
pub enum NodeEvent {
    /// Worked to the end; `ready` when the pool is at target.
    Converged {
        /// The node.
        node: String,
        /// At target.
        ready: bool,
        /// Why not, if not.
        shortfall: Option<Shortfall>,
        /// IPs still missing (0 when ready).
        needed: u32,
        /// How long the work took.
        took: Duration,
    },
    /// Not worked: the ENINode's instance is not its Node's (`crate::node_identity`).
    /// Not retried; a Node event brings it back.
    Refused {
        /// The node.
        node: String,
        /// The condition's reason.
        reason: &'static str,
        /// What is wrong, in words.
        message: String,
    },
    /// Failed; retried after `retry_in`.
    Failed {
        /// The node.
        node: String,
        /// The error, in words.
        error: String,
        /// Backoff before the retry.
        retry_in: Duration,
        /// How long the work took until it failed.
        took: Duration,
    },
}

/// Settings of the fleet loop.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// Nodes worked at once.
    pub workers: usize,
    /// Backoff for requeues after failures.
    pub requeue: RetryPolicy,
}

/// The fleet loop.
pub struct Fleet {
    executor: Arc<Executor>,
    store: Arc<dyn NodeStore>,
    knobs: Arc<dyn NodeKnobs>,
    directory: Arc<dyn NodeDirectory>,
    queue: WorkQueue,
    config: FleetConfig,
    failures: Mutex<HashMap<String, u32>>,
    free_since: Mutex<HashMap<String, BTreeMap<Ipv4Addr, Duration>>>,
    /// Nodes with a re-check pending for when their free IPs pass the release delay.
    release_checks: Mutex<HashSet<String>>,
    events: mpsc::UnboundedSender<NodeEvent>,
}

impl Fleet {
    /// A fleet loop and the stream of its events.
    pub fn new(
        executor: Arc<Executor>,
        store: Arc<dyn NodeStore>,
        knobs: Arc<dyn NodeKnobs>,
        directory: Arc<dyn NodeDirectory>,
        config: FleetConfig,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<NodeEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let fleet = Self {
            executor,
            store,
            knobs,
            directory,
            queue: WorkQueue::new(),
            config,
            failures: Mutex::new(HashMap::new()),
            free_since: Mutex::new(HashMap::new()),
            release_checks: Mutex::new(HashSet::new()),
            events,
        };
        (Arc::new(fleet), rx)
    }

    /// Asks for a node to be worked, ordered by its deficit.
    pub fn enqueue(&self, node: &str, deficit: u32) {
        self.queue.push(node, deficit);
    }

    /// Starts the workers.
    pub fn spawn_workers(self: &Arc<Self>) -> Vec<JoinHandle<()>> {
        (0..self.config.workers.max(1))
            .map(|_| {
                let fleet = self.clone();
                tokio::spawn(async move {
                    while let Some(node) = fleet.queue.pop().await {
                        fleet.work(&node).await;
                        fleet.queue.done(&node);
                    }
                })
            })
            .collect()
    }

    /// Every `interval` (with a tenth of jitter), refreshes all cloud state in
    /// one paginated VPC-wide listing plus the subnets, then queues every
    /// node whose pool is off target by the fresh data.
    pub fn spawn_bulk_resync(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let fleet = self.clone();
        tokio::spawn(async move {
            loop {
                let jitter = fleet.config.requeue.jittered(0).as_secs_f64().min(1.0);
                tokio::time::sleep(interval.mul_f64(0.95 + 0.1 * jitter)).await;
                if let Err(e) = fleet.executor.bulk_resync().await {
                    tracing::warn!(error = %e, "bulk resync failed; next one in {interval:?}");
                    continue;
                }
                fleet.queue_off_target().await;
            }
        })
    }

    async fn queue_off_target(self: &Arc<Self>) {
        let names = match self.store.names().await {
            Ok(names) => names,
            Err(e) => return tracing::warn!(error = %e, "cannot list ENINodes"),
        };
        for name in names {
            if let Ok(Some(node)) = self.store.get(&name).await {
                self.consider(&node);
            }
        }
    }

    /// Queues a node (seen in a watch event) if its pool is off target by the cached cloud state;
    /// if its only work is a release waiting for the delay, queues it once the delay is over.
    pub fn consider(self: &Arc<Self>, node: &ENINode) {
        let Ok((target, effective)) = self.target(node) else {
            // Knobs that cannot be combined: the worker says so in the ENINode.
            return self.enqueue(node.metadata.name.as_deref().unwrap_or_default(), 0);
        };
        if effective_changed(node, &effective) {
            // Nothing to allocate, maybe, but the ENINode must show the knobs in force.
            return self.enqueue(&target.name, 0);
        }
        if let Some(deficit) = self.executor.needs_work(&target) {
            self.enqueue(&target.name, deficit);
        } else if self.growth_stale(node, &target) {
            // A subnet filled up or freed addresses: the ENINode must say so.
            self.enqueue(&target.name, 0);
        } else if self.executor.release_pending(&target) {
            self.check_release_later(&target.name);
        }
    }

    /// Whether the ENINode's `ipLimit` or shortfall differ from what the cache shows now.
    fn growth_stale(&self, node: &ENINode, target: &NodeTarget) -> bool {
        let Some((limit, growth)) = self.executor.growth_view(target) else { return false };
        let status = node.status.as_ref();
        published_is_stale(
            status.and_then(|s| s.ip_limit),
            status.and_then(|s| s.shortfall.as_ref()),
            limit,
            &growth,
        )
    }

    /// Queues `name` again when IPs found free now have passed the release delay (one timer a node).
    fn check_release_later(self: &Arc<Self>, name: &str) {
        if !self.release_checks.lock().expect("release checks lock").insert(name.to_owned()) {
            return;
        }
        let fleet = self.clone();
        let name = name.to_owned();
        let wait = self.executor.release_delay() + Duration::from_millis(100);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            fleet.release_checks.lock().expect("release checks lock").remove(&name);
            fleet.enqueue(&name, 0);
        });
    }

    /// Stops handing out work.
    pub fn close(&self) {
        self.queue.close();
    }

    async fn work(self: &Arc<Self>, name: &str) {
        let started = tokio::time::Instant::now();
        let node = match self.store.get(name).await {
            // An agent answer in the cache may be older than our last unmark: decide a
            // release on what the apiserver says now, never on the cache.
            Ok(Some(node)) if has_ready_answer(&node) => match self.store.get_fresh(name).await {
                Ok(Some(node)) => node,
                Ok(None) => return,
                Err(e) => return self.failed(name, e.to_string(), started),
            },
            Ok(Some(node)) => node,
            Ok(None) => return, // deleted meanwhile: GC's business
            Err(e) => return self.failed(name, e.to_string(), started),
        };
        // Before anything reaches the cloud: is this ENINode's instance its Node's?
        if let Err(refusal) = node_identity::check(name, &node.spec.instance_id, &self.directory.seen(name)) {
            tracing::warn!(node = name, reason = refusal.reason, "{}", refusal.message);
            self.failures.lock().expect("failures lock").remove(name);
            let condition = PoolUpdate::pool_ready(false, refusal.reason, refusal.message.clone());
            if let Err(e) = self.store.set_condition(name, condition).await {
                tracing::debug!(node = name, error = %e, "could not write the refusal condition");
            }
            let _ = self.events.send(NodeEvent::Refused {
                node: name.into(),
                reason: refusal.reason,
                message: refusal.message,
            });
            return;
        }
        let (target, effective) = match self.target(&node) {
            Ok(resolved) => resolved,
            Err(conflict) => {
                tracing::warn!(node = name, error = %conflict, "the node's knobs conflict; not working it");
                let condition = PoolUpdate::pool_ready(
                    false,
                    "InvalidKnobs",
                    format!("{conflict}: the knobs ConfigMap, a node-pool override or this ENINode's spec"),
                );
                if let Err(e) = self.store.set_condition(name, condition).await {
                    tracing::debug!(node = name, error = %e, "could not write the knob condition");
                }
                return;
            }
        };
        match self.executor.converge(&target).await {
            Ok(outcome) => {
                self.failures.lock().expect("failures lock").remove(name);
                self.track_free(name, &target, &outcome);
                if outcome.plan.release_waiting > 0 {
                    self.check_release_later(name);
                }
                let (ready, shortfall, needed) =
                    (outcome.ready(), outcome.plan.shortfall.clone(), outcome.plan.needed);
                if let Some(short) = &shortfall {
                    tracing::info!(node = name, reason = short.reason(), "node short of IPs");
                }
                let published = node.status.as_ref().and_then(|s| s.shortfall.as_ref());
                let update = PoolUpdate {
                    effective: Some(effective),
                    pool_instance: Some(target.instance.clone()),
                    ip_limit: Some(outcome.capacity),
                    shortfall: next_shortfall(published, &outcome.growth, &now_rfc3339()),
                    ..update_of(&outcome)
                };
                if let Err(e) = self.store.publish(name, update).await {
                    return self.failed(name, e.to_string(), started);
                }
                let took = started.elapsed();
                let _ = self.events.send(NodeEvent::Converged {
                    node: name.into(),
                    ready,
                    shortfall,
                    needed,
                    took,
                });
            }
            Err(e) => {
                // Say in the ENINode why the node is short, in words an admin can act on.
                let condition = failure_condition(&e);
                if let Err(store_error) = self.store.set_condition(name, condition).await {
                    tracing::debug!(node = name, error = %store_error, "could not write the failure condition");
                }
                // A refusal that more work does not lift stops the pool where it is: the
                // node's advertised capacity comes down to it.
                let published = node.status.as_ref().and_then(|s| s.shortfall.as_ref());
                let growth = growth_after_failure(&e, node.spec.pool.len() as u32);
                let shortfall = next_shortfall(published, &growth, &now_rfc3339());
                if shortfall.as_ref() != published
                    && let Err(store_error) = self.store.set_shortfall(name, shortfall).await
                {
                    tracing::debug!(node = name, error = %store_error, "could not write the shortfall");
                }
                self.failed(name, e.to_string(), started)
            }
        }
    }

    fn failed(self: &Arc<Self>, name: &str, error: String, started: tokio::time::Instant) {
        let attempt = {
            let mut failures = self.failures.lock().expect("failures lock");
            let n = failures.entry(name.to_owned()).or_default();
            *n += 1;
            *n - 1
        };
        let retry_in = self.config.requeue.jittered(attempt);
        let retry_ms = retry_in.as_millis() as u64;
        // One failure is routine in a cloud; a node that keeps failing is news.
        if attempt < 3 {
            tracing::info!(node = name, error = %error, attempt, retry_in_ms = retry_ms, "node not converged; retrying");
        } else {
            tracing::warn!(node = name, error = %error, attempt, retry_in_ms = retry_ms, "node not converged; retrying");
        }
        let took = started.elapsed();
        let _ = self.events.send(NodeEvent::Failed { node: name.into(), error, retry_in, took });
        let fleet = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(retry_in).await;
            fleet.enqueue(&name, 0);
        });
    }

    /// What the executor works the node towards, and the knobs that say so.
    fn target(&self, node: &ENINode) -> Result<(NodeTarget, EffectiveIpam), KnobConflict> {
        let effective = self.knobs.effective(node)?;
        let name = node.metadata.name.clone().unwrap_or_default();
        let spec = &node.spec;
        let used: BTreeSet<Ipv4Addr> = node
            .status
            .as_ref()
            .map(|s| s.used.keys().filter_map(|ip| ip.parse().ok()).collect())
            .unwrap_or_default();
        let free_since = self.observe_free(&name, spec.pool.keys(), &used);
        let release = node
            .status
            .as_ref()
            .map(|s| s.release.iter().filter_map(|(ip, state)| Some((ip.parse().ok()?, *state))).collect())
            .unwrap_or_default();
        let target = NodeTarget {
            name,
            instance: spec.instance_id.clone(),
            instance_type: spec.instance_type.clone(),
            zone: spec.zone.clone(),
            knobs: effective.knobs(),
            first_interface_index: effective.first_interface_index,
            selector: SubnetSelector {
                ids: effective.subnet_ids.clone(),
                tags: effective.subnet_tags.clone(),
            },
            security_groups: effective.security_groups.clone(),
            used,
            free_since,
            release,
            published: spec
                .pool
                .iter()
                .filter_map(|(ip, entry)| Some((ip.parse().ok()?, entry.eni.clone())))
                .collect(),
            primary_eni_ips: spec
                .primary_eni_ips
                .as_ref()
                .map(|ips| ips.iter().filter_map(|ip| ip.parse().ok()).collect()),
        };
        Ok((target, effective))
    }

    /// Remembers since when each pool IP is free, as seen in the ENINode now (not only after
    /// a converge: a node whose pods all went away must start its release delay then).
    fn observe_free<'a>(
        &self,
        name: &str,
        pool: impl Iterator<Item = &'a String>,
        used: &BTreeSet<Ipv4Addr>,
    ) -> BTreeMap<Ipv4Addr, Duration> {
        let now = self.executor.now();
        let mut all = self.free_since.lock().expect("free lock");
        let known = all.entry(name.to_owned()).or_default();
        let next: BTreeMap<Ipv4Addr, Duration> = pool
            .filter_map(|ip| ip.parse().ok())
            .filter(|ip| !used.contains(ip))
            .map(|ip| (ip, known.get(&ip).copied().unwrap_or(now)))
            .collect();
        *known = next.clone();
        next
    }

    /// Remembers since when each pool IP is free, for the release delay.
    fn track_free(&self, name: &str, target: &NodeTarget, outcome: &NodeOutcome) {
        let now = self.executor.now();
        let mut all = self.free_since.lock().expect("free lock");
        let known = all.entry(name.to_owned()).or_default();
        let mut next = BTreeMap::new();
        for ip in outcome.pool.keys().filter(|ip| !target.used.contains(ip)) {
            next.insert(*ip, known.get(ip).copied().unwrap_or(now));
        }
        *known = next;
    }
}

fn update_of(outcome: &NodeOutcome) -> PoolUpdate {
    let (ready, reason, message) = match &outcome.plan.shortfall {
        None if outcome.ready() => (true, "AtTarget", String::new()),
        None => (false, "Allocating", format!("{} IPs still to allocate", outcome.plan.needed)),
        Some(s @ Shortfall::InstanceLimit { missing }) => (
            false,
            s.reason(),
            format!(
                "{missing} IPs short: the instance type holds at most {} pod IPs; lower the pool knobs or use a larger type",
                outcome.capacity
            ),
        ),
        Some(s @ Shortfall::SubnetsExhausted { missing }) => (
            false,
            s.reason(),
            format!(
                "{missing} IPs short: the node's subnets are full; add subnets in its zone or free addresses"
            ),
        ),
        Some(s @ Shortfall::NoMatchingSubnet { missing }) => (
            false,
            s.reason(),
            format!(
                "{missing} IPs short: no subnet in the node's zone matches subnetIds/subnetTags; fix the selector"
            ),
        ),
    };
    PoolUpdate {
        pool: outcome.pool.iter().map(|(ip, entry)| (ip.to_string(), entry.clone())).collect(),
        enis: outcome.enis.clone(),
        condition: PoolUpdate::pool_ready(ready, reason, message),
        release: outcome.release.iter().map(|(ip, state)| (ip.to_string(), *state)).collect(),
        effective: None,
        pool_instance: None,
        ip_limit: None,
        shortfall: None,
        primary_eni_ips: outcome
            .primary_eni_ips
            .as_ref()
            .map(|ips| ips.iter().map(ToString::to_string).collect()),
    }
}

/// The `PoolReady=False` condition for a node whose work failed.
pub fn failure_condition(error: &ExecError) -> ENINodeCondition {
    let (reason, advice) = match error {
        ExecError::Cloud { source, .. } => match source.class {
            ErrorClass::Throttled => (
                "CloudThrottled",
                "the cloud API is throttling; the operator retries with backoff, lower --limiter-margin if this lasts",
            ),
            ErrorClass::Auth => (
                "CloudAuthError",
                "the cloud refused the credentials or permissions; check the operator's IAM/RAM policy",
            ),
            ErrorClass::Quota => (
                "CloudQuotaExceeded",
                "an account quota (ENIs or IPs per region) is reached; raise it with the cloud provider",
            ),
            ErrorClass::SubnetFull => {
                ("SubnetsExhausted", "the node's subnets are full; add subnets in its zone")
            }
            _ => ("CloudError", "a cloud call failed; the operator retries with backoff"),
        },
        ExecError::UnknownInstanceType { .. } => {
            ("UnknownInstanceType", "the cloud does not describe this instance type")
        }
        ExecError::InstanceNotFound { .. } => {
            ("InstanceNotFound", "check the node's providerID and the VPC id")
        }
        ExecError::AttachTimeout { .. } => {
            ("AttachTimeout", "an ENI stayed attaching; the cloud may be degraded")
        }
        ExecError::NotConverged { .. } => ("Allocating", "still converging; the operator retries"),
    };
    PoolUpdate::pool_ready(false, reason, format!("{error}: {advice}"))
}

/// The ENINode does not show `effective` yet (a knob changed, or it was never worked).
fn effective_changed(node: &ENINode, effective: &EffectiveIpam) -> bool {
    node.status.as_ref().and_then(|s| s.effective_ipam.as_ref()) != Some(effective)
}

/// The agent has answered `ready` for some IP: the next plan may release it.
fn has_ready_answer(node: &ENINode) -> bool {
    node.status.as_ref().is_some_and(|s| s.release.values().any(|state| *state == ReleaseState::Ready))
}
