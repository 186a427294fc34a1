//! Prometheus metrics (`eni_ipam_webhook_*`) and the admin server:
//! `/metrics`, `/healthz` (the process answers), `/readyz` (the TLS listener
//! is up with a loaded certificate).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use eni_ipam_admin::Admin;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a request to `/mutate` ended. A fixed set: metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// Allowed with a patch.
    Patched,
    /// Allowed unchanged on purpose (see the `skipped` counter for why).
    Skipped,
    /// Allowed unchanged with a warning: the pod could not be read.
    AllowedWithWarning,
    /// HTTP 400: not an AdmissionReview v1 with a uid.
    Malformed,
    /// HTTP 413: larger than any review kube-apiserver sends.
    TooLarge,
    /// HTTP 408: the body did not arrive in time.
    BodyTimeout,
}

impl RequestOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Patched => "patched",
            RequestOutcome::Skipped => "skipped",
            RequestOutcome::AllowedWithWarning => "allowed_with_warning",
            RequestOutcome::Malformed => "malformed",
            RequestOutcome::TooLarge => "too_large",
            RequestOutcome::BodyTimeout => "body_timeout",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

/// Every metric of the webhook, plus the readiness flag.
#[derive(Debug)]
pub struct WebhookMetrics {
    registry: Registry,
    requests: Family<OutcomeLabel, Counter>,
    skipped: Family<ReasonLabel, Counter>,
    request_duration: Histogram,
    tls_reloads: Family<ResultLabel, Counter>,
    ready: AtomicBool,
}

impl Default for WebhookMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WebhookMetrics {
    /// Metrics registered under the prefix `eni_ipam_webhook`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("eni_ipam_webhook");
        let requests = Family::<OutcomeLabel, Counter>::default();
        let skipped = Family::<ReasonLabel, Counter>::default();
        // 25 µs .. ~0.8 s: a review takes tens of µs; the top buckets catch
        // the 250 KB pods and a starved CPU.
        let request_duration = Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        let tls_reloads = Family::<ResultLabel, Counter>::default();
        registry.register("requests", "Admission requests by outcome", requests.clone());
        registry.register("skipped", "Reviews allowed unchanged on purpose, by reason", skipped.clone());
        registry.register(
            "request_duration_seconds",
            "Time from the request head to the answer, body read included",
            request_duration.clone(),
        );
        registry.register(
            "tls_reloads",
            "Certificate reloads from disk by result (ok, error)",
            tls_reloads.clone(),
        );
        Self { registry, requests, skipped, request_duration, tls_reloads, ready: AtomicBool::new(false) }
    }

    /// Counts one finished request and its duration.
    pub fn observe_request(&self, outcome: RequestOutcome, elapsed: Duration) {
        self.requests.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one review allowed unchanged on purpose.
    pub fn count_skip(&self, reason: &'static str) {
        self.skipped.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one certificate reload attempt.
    pub fn count_tls_reload(&self, ok: bool) {
        self.tls_reloads.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }

    /// Requests counted with `outcome` so far.
    pub fn requests_with(&self, outcome: RequestOutcome) -> u64 {
        self.requests.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).get()
    }

    /// Marks whether the TLS listener is serving.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the TLS listener is serving.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Admin for WebhookMetrics {
    fn metrics_text(&self) -> String {
        self.encode()
    }

    fn readiness(&self) -> Result<&'static str, &'static str> {
        if self.is_ready() {
            Ok("serving admission reviews over TLS")
        } else {
            Err("TLS listener not serving yet; see the webhook's logs")
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
    async fn metrics_carry_the_prefix_and_readyz_follows_the_listener() {
        let metrics = Arc::new(WebhookMetrics::new());
        metrics.observe_request(RequestOutcome::Patched, Duration::from_micros(80));
        metrics.count_skip("host_network");
        metrics.count_tls_reload(true);
        let (status, text) = fetch(admin_router(metrics.clone()), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("eni_ipam_webhook_requests_total{outcome=\"patched\"} 1"), "{text}");
        assert!(text.contains("eni_ipam_webhook_skipped_total{reason=\"host_network\"} 1"), "{text}");
        assert!(text.contains("eni_ipam_webhook_request_duration_seconds_count 1"), "{text}");
        assert!(text.contains("eni_ipam_webhook_tls_reloads_total{result=\"ok\"} 1"), "{text}");

        assert_eq!(fetch(admin_router(metrics.clone()), "/healthz").await.0, StatusCode::OK);
        assert_eq!(fetch(admin_router(metrics.clone()), "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        metrics.set_ready(true);
        assert_eq!(fetch(admin_router(metrics), "/readyz").await.0, StatusCode::OK);
    }
}
