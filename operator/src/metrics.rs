//! The operator's Prometheus metrics (`eni_ipam_*`) and its admin endpoints
//! on `--metrics-addr`. Counters and histograms are fed as things happen
//! (cloud attempts through [`CallObserver`], node work, resyncs, GC); the IP
//! and node gauges are computed from the ENINode cache at scrape time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_admin::Admin;
use eni_ipam_api::ENINode;
use eni_ipam_cloud::{Api, AttemptResult, CallObserver};
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::fleet::NodeEvent;
use crate::instances::InstancesCache;
use crate::planner::Shortfall;

/// `op` and `result` of a cloud attempt.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// The cloud API (EC2 names; Alibaba calls map onto them).
    pub op: &'static str,
    /// `ok`, `throttled` or `error`.
    pub result: &'static str,
}

/// One label `op`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    /// The cloud API.
    pub op: &'static str,
}

/// One label `result`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// One label `kind`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// `bulk` or `instance`.
    pub kind: &'static str,
}

/// IP state (`available`, `used`, `needed`), cluster-wide.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// The state.
    pub state: &'static str,
}

/// IP state per subnet.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetLabels {
    /// The subnet id.
    pub subnet: String,
    /// `available` or `used`.
    pub state: &'static str,
}

/// One label `subnet`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubnetLabel {
    /// The subnet id.
    pub subnet: String,
}

/// Node category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabel {
    /// `ok`, `deficit` or `at-capacity`.
    pub category: &'static str,
}

/// Where a node stands after its last work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeState {
    category: &'static str,
    needed: u32,
}

/// Every metric of the operator.
pub struct OperatorMetrics {
    registry: Registry,
    api_calls: Family<ApiLabels, Counter>,
    api_latency: Family<OpLabel, Histogram>,
    limiter_wait: Family<OpLabel, Histogram>,
    eni_creations: Family<ResultLabel, Counter>,
    allocations: Family<ResultLabel, Counter>,
    allocation_duration: Histogram,
    resyncs: Family<KindLabel, Counter>,
    resync_duration: Family<KindLabel, Histogram>,
    gc_deleted: Counter,
    ips: Family<StateLabel, Gauge>,
    subnet_ips: Family<SubnetLabels, Gauge>,
    subnet_free: Family<SubnetLabel, Gauge>,
    nodes: Family<CategoryLabel, Gauge>,
    leader: Gauge,
    knob_config_refused: Gauge,
    node_states: Mutex<HashMap<String, NodeState>>,
    eninodes: Mutex<Option<Store<ENINode>>>,
    cloud: Mutex<Option<Arc<InstancesCache>>>,
    ready: AtomicBool,
}

fn seconds_buckets() -> impl Iterator<Item = f64> {
    // 1 ms .. ~65 s
    exponential_buckets(0.001, 2.0, 17)
}

impl Default for OperatorMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("eni_ipam");
        let api_calls = Family::<ApiLabels, Counter>::default();
        registry.register("cloud_api_calls", "Cloud API attempts by operation and result", api_calls.clone());
        let api_latency =
            Family::<OpLabel, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        registry.register("cloud_api_latency_seconds", "Cloud API attempt latency", api_latency.clone());
        let limiter_wait =
            Family::<OpLabel, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        registry.register(
            "rate_limiter_wait_seconds",
            "Time a cloud call waited for the client-side rate limiter",
            limiter_wait.clone(),
        );
        let eni_creations = Family::<ResultLabel, Counter>::default();
        registry.register("eni_creations", "ENI creation attempts", eni_creations.clone());
        let allocations = Family::<ResultLabel, Counter>::default();
        registry.register("allocation_ops", "Nodes worked (converged or failed)", allocations.clone());
        let allocation_duration = Histogram::new(seconds_buckets());
        registry.register(
            "allocation_duration_seconds",
            "Time to work one node to its target",
            allocation_duration.clone(),
        );
        let resyncs = Family::<KindLabel, Counter>::default();
        registry.register("resyncs", "Cloud state resyncs by kind (bulk = VPC-wide list)", resyncs.clone());
        let resync_duration =
            Family::<KindLabel, Histogram>::new_with_constructor(|| Histogram::new(seconds_buckets()));
        registry.register("resync_duration_seconds", "Resync duration by kind", resync_duration.clone());
        let gc_deleted = Counter::default();
        registry.register("gc_deleted_enis", "Leaked or orphaned ENIs deleted by GC", gc_deleted.clone());
        let ips = Family::<StateLabel, Gauge>::default();
        registry.register("ips", "Pool IPs in the cluster: available, used, needed", ips.clone());
        let subnet_ips = Family::<SubnetLabels, Gauge>::default();
        registry.register("subnet_ips", "Pool IPs per subnet: available, used", subnet_ips.clone());
        let subnet_free = Family::<SubnetLabel, Gauge>::default();
        registry.register(
            "subnet_free_ips",
            "Free addresses per subnet as the cloud last said (leader only)",
            subnet_free.clone(),
        );
        let nodes = Family::<CategoryLabel, Gauge>::default();
        registry.register("nodes", "Nodes by category: ok, deficit, at-capacity, refused", nodes.clone());
        let leader = Gauge::default();
        registry.register(
            "operator_leader",
            "Whether this replica leads and so calls the cloud (1) or stands by (0)",
            leader.clone(),
        );
        let knob_config_refused = Gauge::default();
        registry.register(
            "knob_config_refused",
            "Whether the knobs ConfigMap's current version was refused (1; the last good one stays in force) or taken (0)",
            knob_config_refused.clone(),
        );
        Self {
            registry,
            api_calls,
            api_latency,
            limiter_wait,
            eni_creations,
            allocations,
            allocation_duration,
            resyncs,
            resync_duration,
            gc_deleted,
            ips,
            subnet_ips,
            subnet_free,
            nodes,
            leader,
            knob_config_refused,
            node_states: Mutex::new(HashMap::new()),
            eninodes: Mutex::new(None),
            cloud: Mutex::new(None),
            ready: AtomicBool::new(false),
        }
    }
}

impl CallObserver for OperatorMetrics {
    fn attempt(&self, api: Api, result: AttemptResult, latency: Duration, limiter_wait: Duration) {
        let op = api.aws_name();
        self.api_calls.get_or_create(&ApiLabels { op, result: result.as_str() }).inc();
        self.api_latency.get_or_create(&OpLabel { op }).observe(latency.as_secs_f64());
        self.limiter_wait.get_or_create(&OpLabel { op }).observe(limiter_wait.as_secs_f64());
        if api == Api::CreateNetworkInterface {
            let result = if result == AttemptResult::Ok { "ok" } else { "error" };
            self.eni_creations.get_or_create(&ResultLabel { result }).inc();
        }
    }
}

impl OperatorMetrics {
    /// Records what the fleet reports about a node.
    pub fn node_event(&self, event: &NodeEvent) {
        let (node, state, ok, took) = match event {
            NodeEvent::Converged { node, ready, shortfall, needed, took } => {
                let category = match shortfall {
                    Some(Shortfall::InstanceLimit { .. }) => "at-capacity",
                    Some(_) => "deficit",
                    None if *ready => "ok",
                    None => "deficit",
                };
                (node, NodeState { category, needed: *needed }, true, *took)
            }
            NodeEvent::Refused { node, .. } => {
                self.node_states
                    .lock()
                    .expect("metrics lock")
                    .insert(node.clone(), NodeState { category: "refused", needed: 0 });
                return;
            }
            NodeEvent::Failed { node, took, .. } => {
                let needed = self.node_states.lock().expect("metrics lock").get(node).map_or(0, |s| s.needed);
                (node, NodeState { category: "deficit", needed }, false, *took)
            }
        };
        self.allocations.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
        self.allocation_duration.observe(took.as_secs_f64());
        self.node_states.lock().expect("metrics lock").insert(node.clone(), state);
    }

    /// Records one resync.
    pub fn resync(&self, bulk: bool, took: Duration) {
        let kind = if bulk { "bulk" } else { "instance" };
        self.resyncs.get_or_create(&KindLabel { kind }).inc();
        self.resync_duration.get_or_create(&KindLabel { kind }).observe(took.as_secs_f64());
    }

    /// Records ENIs deleted by a GC pass.
    pub fn gc_deleted(&self, count: usize) {
        self.gc_deleted.inc_by(count as u64);
    }

    /// Whether this replica leads; a standby is ready (it serves health and waits).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
        if !leading {
            self.node_states.lock().expect("metrics lock").clear();
            *self.cloud.lock().expect("metrics lock") = None;
        }
    }

    /// Whether the knobs ConfigMap's current version was refused.
    pub fn set_knob_config_refused(&self, refused: bool) {
        self.knob_config_refused.set(i64::from(refused));
    }

    /// The ENINode cache the IP gauges are computed from, once it holds a full list.
    pub fn set_eninodes(&self, store: Option<Store<ENINode>>) {
        *self.eninodes.lock().expect("metrics lock") = store;
    }

    /// The leader's instances cache (subnet free counts come from it).
    pub fn set_cloud_cache(&self, cache: Arc<InstancesCache>) {
        *self.cloud.lock().expect("metrics lock") = Some(cache);
    }

    /// The controller is up: watching, and leading or standing by.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    fn refresh_gauges(&self) {
        let nodes =
            self.eninodes.lock().expect("metrics lock").as_ref().map(|s| s.state()).unwrap_or_default();
        let (mut available, mut used) = (0i64, 0i64);
        let mut per_subnet: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for node in &nodes {
            let in_use = node.status.as_ref().map(|s| &s.used);
            for (ip, entry) in &node.spec.pool {
                let slot = per_subnet.entry(entry.subnet.to_string()).or_default();
                slot.0 += 1;
                available += 1;
                if in_use.is_some_and(|u| u.contains_key(ip)) {
                    slot.1 += 1;
                    used += 1;
                }
            }
        }
        let states = self.node_states.lock().expect("metrics lock");
        let needed: i64 = states.values().map(|s| i64::from(s.needed)).sum();
        self.ips.get_or_create(&StateLabel { state: "available" }).set(available);
        self.ips.get_or_create(&StateLabel { state: "used" }).set(used);
        self.ips.get_or_create(&StateLabel { state: "needed" }).set(needed);
        self.subnet_ips.clear();
        for (subnet, (avail, in_use)) in per_subnet {
            self.subnet_ips
                .get_or_create(&SubnetLabels { subnet: subnet.clone(), state: "available" })
                .set(avail);
            self.subnet_ips.get_or_create(&SubnetLabels { subnet, state: "used" }).set(in_use);
        }
        self.subnet_free.clear();
        if let Some(cache) = self.cloud.lock().expect("metrics lock").as_ref() {
            for subnet in cache.subnets() {
                self.subnet_free
                    .get_or_create(&SubnetLabel { subnet: subnet.id.to_string() })
                    .set(subnet.free_ips.into());
            }
        }
        for category in ["ok", "deficit", "at-capacity", "refused"] {
            let n = states.values().filter(|s| s.category == category).count();
            self.nodes.get_or_create(&CategoryLabel { category }).set(n as i64);
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        self.refresh_gauges();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

impl Admin for OperatorMetrics {
    fn metrics_text(&self) -> String {
        self.encode()
    }

    fn readiness(&self) -> Result<&'static str, &'static str> {
        if self.ready.load(Ordering::Relaxed) {
            Ok("watching ENINodes (leading or standing by)")
        } else {
            Err("not ready: the ENINode and Node caches are still loading; check the apiserver and RBAC")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_events_and_cloud_attempts_show_up_with_their_labels() {
        let m = OperatorMetrics::default();
        m.attempt(
            Api::CreateNetworkInterface,
            AttemptResult::Throttled,
            Duration::from_millis(20),
            Duration::ZERO,
        );
        m.attempt(
            Api::CreateNetworkInterface,
            AttemptResult::Ok,
            Duration::from_millis(30),
            Duration::from_secs(1),
        );
        m.node_event(&NodeEvent::Converged {
            node: "a".into(),
            ready: true,
            shortfall: None,
            needed: 0,
            took: Duration::from_millis(80),
        });
        m.node_event(&NodeEvent::Converged {
            node: "b".into(),
            ready: false,
            shortfall: Some(Shortfall::InstanceLimit { missing: 3 }),
            needed: 3,
            took: Duration::from_millis(80),
        });
        m.resync(true, Duration::from_millis(150));
        let text = m.encode();
        for line in [
            r#"eni_ipam_cloud_api_calls_total{op="CreateNetworkInterface",result="throttled"} 1"#,
            r#"eni_ipam_cloud_api_calls_total{op="CreateNetworkInterface",result="ok"} 1"#,
            r#"eni_ipam_eni_creations_total{result="ok"} 1"#,
            r#"eni_ipam_eni_creations_total{result="error"} 1"#,
            r#"eni_ipam_rate_limiter_wait_seconds_sum{op="CreateNetworkInterface"} 1.0"#,
            r#"eni_ipam_nodes{category="ok"} 1"#,
            r#"eni_ipam_nodes{category="at-capacity"} 1"#,
            r#"eni_ipam_nodes{category="deficit"} 0"#,
            r#"eni_ipam_ips{state="needed"} 3"#,
            r#"eni_ipam_allocation_ops_total{result="ok"} 2"#,
            r#"eni_ipam_resyncs_total{kind="bulk"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(m.readiness().is_err(), "not ready before the caches load");
        m.set_ready();
        assert!(m.readiness().is_ok());
    }
}
