//! Prometheus metrics and the admin endpoints (`/metrics`, `/healthz`,
//! `/readyz`) served on `--metrics-addr`.

use std::sync::Arc;

use axum::Router;
use eni_ipam_admin::Admin;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::datapath_metrics::DatapathCollector;
use crate::endpoints::Endpoints;
use crate::ipam::Ipam;

/// Labels of the IPAM call counter: a fixed small set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `allocate`, `release` or `endpoint`.
    pub op: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// The agent's metrics.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    allocated: Gauge,
    available: Gauge,
    status_patches: Counter,
    lost_pod_ips_freed: Counter,
    startup_taint_removals: Counter,
    startup_taint_removed_after: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Metrics {
    /// The agent's metrics (`eni_ipam_agent_*`) and, with a datapath, its per-endpoint
    /// counters (`eni_ipam_datapath_*`, see [`DatapathCollector`]).
    pub fn new(datapath: Option<Arc<Endpoints>>) -> Self {
        let mut root = Registry::default();
        if let Some(endpoints) = datapath {
            root.sub_registry_with_prefix("eni_ipam_datapath")
                .register_collector(Box::new(DatapathCollector(endpoints)));
        }
        let registry = root.sub_registry_with_prefix("eni_ipam_agent");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register("ipam_calls", "IPAM calls on the agent socket", calls.clone());
        let allocated = Gauge::default();
        registry.register("allocated_ips", "Pool IPs held by pods", allocated.clone());
        let available = Gauge::default();
        registry.register("pool_ips", "IPs in the node's pool", available.clone());
        let status_patches = Counter::default();
        registry.register("status_patches", "ENINode status.used writes", status_patches.clone());
        let lost_pod_ips_freed = Counter::default();
        registry.register(
            "lost_pod_ips_freed",
            "IPs freed because kubelet no longer ran their pod and no CNI DEL came",
            lost_pod_ips_freed.clone(),
        );
        let startup_taint_removals = Counter::default();
        registry.register(
            "startup_taint_removals",
            "Startup taints this agent removed from its Node",
            startup_taint_removals.clone(),
        );
        let startup_taint_removed_after = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "startup_taint_removed_after_seconds",
            "Seconds from the agent's start to its removal of the Node's startup taint (0: not removed by this run)",
            startup_taint_removed_after.clone(),
        );
        Self {
            registry: root,
            calls,
            allocated,
            available,
            status_patches,
            lost_pod_ips_freed,
            startup_taint_removals,
            startup_taint_removed_after,
        }
    }

    /// Counts one IPAM call.
    pub fn count_call(&self, op: &'static str, ok: bool) {
        self.calls.get_or_create(&CallLabels { op, result: if ok { "ok" } else { "error" } }).inc();
    }

    /// Counts one IP freed from a pod that went away without a CNI DEL.
    pub fn count_lost_pod_ip_freed(&self) {
        self.lost_pod_ips_freed.inc();
    }

    /// Records the removal of the Node's startup taint, `after` the agent started.
    pub fn startup_taint_removed(&self, after: std::time::Duration) {
        self.startup_taint_removals.inc();
        self.startup_taint_removed_after.set(after.as_secs_f64());
    }

    /// Counts one ENINode status write.
    pub fn count_status_patch(&self) {
        self.status_patches.inc();
    }

    /// The text exposition, with the pool gauges refreshed from `ipam`.
    pub fn encode(&self, ipam: &Ipam) -> String {
        let health = ipam.health();
        self.allocated.set(health.ipam.allocated.into());
        self.available.set(health.ipam.available.into());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// What the agent shows on its admin port: the metrics need the IPAM's gauges.
struct AgentAdmin {
    ipam: Arc<Ipam>,
    metrics: Arc<Metrics>,
}

impl Admin for AgentAdmin {
    fn metrics_text(&self) -> String {
        self.metrics.encode(&self.ipam)
    }

    fn readiness(&self) -> Result<&'static str, &'static str> {
        // The IPAM serves from its state file as soon as the process runs.
        Ok("serving pod IPs")
    }
}

/// `/metrics`, `/healthz` (process up) and `/readyz` (the IPAM serves).
pub fn admin_router(ipam: Arc<Ipam>, metrics: Arc<Metrics>) -> Router {
    eni_ipam_admin::admin_router(Arc::new(AgentAdmin { ipam, metrics }))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::pool::{NodePool, PoolIp};
    use crate::state::StateStore;

    #[tokio::test]
    async fn metrics_show_calls_and_pool_gauges() {
        let dir = tempfile::tempdir().unwrap();
        let entry = PoolIp {
            eni: "eni-1".into(),
            mac: String::new(),
            subnet_cidr: "10.0.0.0/24".into(),
            gateway: String::new(),
        };
        let pool = NodePool { ips: [("10.0.0.5".to_owned(), entry)].into(), ..Default::default() };
        let (ipam, _) = Ipam::open("n", StateStore::new(dir.path().join("s.json")), pool, None).unwrap();
        let metrics = Arc::new(Metrics::default());
        metrics.count_call("allocate", true);
        metrics.count_call("allocate", false);
        metrics.startup_taint_removed(std::time::Duration::from_millis(2500));
        let app = admin_router(Arc::new(ipam), metrics);
        let response = app
            .clone()
            .oneshot(Request::builder().uri("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text =
            String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
        assert!(text.contains(r#"eni_ipam_agent_ipam_calls_total{op="allocate",result="ok"} 1"#), "{text}");
        assert!(text.contains("eni_ipam_agent_pool_ips 1"), "{text}");
        assert!(text.contains("eni_ipam_agent_allocated_ips 0"), "{text}");
        assert!(text.contains("eni_ipam_agent_startup_taint_removals_total 1"), "{text}");
        assert!(text.contains("eni_ipam_agent_startup_taint_removed_after_seconds 2.5"), "{text}");
        for path in ["/healthz", "/readyz"] {
            let response =
                app.clone().oneshot(Request::builder().uri(path).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        }
    }
}
