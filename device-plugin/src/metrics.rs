//! Prometheus metrics (`eni_ipam_device_plugin_*`) and the admin server:
//! `/metrics`, `/healthz` (the process answers), `/readyz` (registered with
//! kubelet).

use std::sync::atomic::{AtomicBool, Ordering};

use eni_ipam_admin::Admin;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label of a counted outcome; values are a small fixed set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok`, or a fixed error kind (`unreachable`, `timeout`, `error`, `malformed`, `failed`, `invalid`).
    pub result: &'static str,
}

/// Every metric of the device plugin, plus the readiness flag.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Slots reported Healthy (kubelet's allocatable).
    pub healthy_slots: Gauge,
    /// Slots advertised in total (`--max-slots`).
    pub advertised_slots: Gauge,
    /// The agent's last reported capacity.
    pub agent_capacity: Gauge,
    /// IPs held by pods kubelet does not count.
    pub held_outside_kubelet: Gauge,
    /// Agent polls by outcome.
    pub agent_polls: Family<ResultLabel, Counter>,
    /// pod-resources reads by outcome.
    pub pod_resources_reads: Family<ResultLabel, Counter>,
    /// Register calls to kubelet by outcome.
    pub registrations: Family<ResultLabel, Counter>,
    /// Allocate calls by outcome (`ok`, `invalid`).
    pub allocations: Family<ResultLabel, Counter>,
    /// Device lists published to ListAndWatch streams (one per change).
    pub device_list_updates: Counter,
    /// Times the plugin's own socket was bound (first bind and every rebind).
    pub socket_binds: Counter,
    registered: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics registered under the prefix `eni_ipam_device_plugin`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("eni_ipam_device_plugin");
        let metrics = Self {
            registry: Registry::default(),
            healthy_slots: Gauge::default(),
            advertised_slots: Gauge::default(),
            agent_capacity: Gauge::default(),
            held_outside_kubelet: Gauge::default(),
            agent_polls: Family::default(),
            pod_resources_reads: Family::default(),
            registrations: Family::default(),
            allocations: Family::default(),
            device_list_updates: Counter::default(),
            socket_binds: Counter::default(),
            registered: AtomicBool::new(false),
        };
        registry.register(
            "healthy_slots",
            "Slots reported Healthy to kubelet",
            metrics.healthy_slots.clone(),
        );
        registry.register("advertised_slots", "Slots advertised in total", metrics.advertised_slots.clone());
        registry.register(
            "agent_capacity",
            "Pod IPs the agent reports reachable",
            metrics.agent_capacity.clone(),
        );
        registry.register(
            "held_outside_kubelet",
            "IPs held by pods admitted without the resource request",
            metrics.held_outside_kubelet.clone(),
        );
        registry.register("agent_polls", "Agent healthz polls by result", metrics.agent_polls.clone());
        registry.register(
            "pod_resources_reads",
            "kubelet pod-resources List calls by result",
            metrics.pod_resources_reads.clone(),
        );
        registry.register(
            "registrations",
            "Register calls to kubelet by result",
            metrics.registrations.clone(),
        );
        registry.register("allocations", "Allocate calls by result", metrics.allocations.clone());
        registry.register(
            "device_list_updates",
            "Device lists published to ListAndWatch",
            metrics.device_list_updates.clone(),
        );
        registry.register("socket_binds", "Binds of the plugin's own socket", metrics.socket_binds.clone());
        Self { registry, ..metrics }
    }

    /// Counts one outcome in a family.
    pub fn count(family: &Family<ResultLabel, Counter>, result: &'static str) {
        family.get_or_create(&ResultLabel { result }).inc();
    }

    /// Marks whether kubelet currently knows this plugin.
    pub fn set_registered(&self, registered: bool) {
        self.registered.store(registered, Ordering::Relaxed);
    }

    /// Whether kubelet currently knows this plugin.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Admin for Metrics {
    fn metrics_text(&self) -> String {
        self.encode()
    }

    fn readiness(&self) -> Result<&'static str, &'static str> {
        if self.is_registered() {
            Ok("registered with kubelet")
        } else {
            Err("not registered with kubelet yet; see the device plugin's logs")
        }
    }
}

pub use eni_ipam_admin::{admin_router, serve_admin};

#[cfg(test)]
mod tests {

    use std::sync::Arc;

    use axum::http::StatusCode;

    use eni_ipam_admin::fetch;

    use super::*;

    #[tokio::test]
    async fn metrics_carry_the_prefix_and_readyz_follows_registration() {
        let metrics = Arc::new(Metrics::new());
        metrics.healthy_slots.set(27);
        Metrics::count(&metrics.agent_polls, "malformed");
        let (status, text) = fetch(admin_router(metrics.clone()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("eni_ipam_device_plugin_healthy_slots 27"), "{text}");
        assert!(text.contains("eni_ipam_device_plugin_agent_polls_total{result=\"malformed\"} 1"), "{text}");

        assert_eq!(fetch(admin_router(metrics.clone()), "/healthz").await.0, StatusCode::OK);
        assert_eq!(fetch(admin_router(metrics.clone()), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        metrics.set_registered(true);
        assert_eq!(fetch(admin_router(metrics), "/readyz").await.0, StatusCode::OK);
    }
}
