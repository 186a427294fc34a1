//! The admin endpoints every eni-ipam binary serves on its `--metrics-addr`:
//! `/metrics` (OpenMetrics text), `/healthz` (the process answers) and
//! `/readyz` (the component does its job), written once for all of them.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

pub mod process;

/// What a component exposes on its admin port.
pub trait Admin: Send + Sync + 'static {
    /// Its metrics, encoded as OpenMetrics text.
    fn metrics_text(&self) -> String;
    /// `Ok(what it serves)` when ready; `Err(what is missing and where to look)` when not.
    fn readiness(&self) -> Result<&'static str, &'static str>;
}

/// `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router<A: Admin>(admin: Arc<A>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<A>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<A>))
        .with_state(admin)
}

async fn metrics<A: Admin>(State(admin): State<Arc<A>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        admin.metrics_text(),
    )
}

/// The readiness answer, for components that also mount it elsewhere.
pub async fn readyz<A: Admin>(State(admin): State<Arc<A>>) -> impl IntoResponse {
    match admin.readiness() {
        Ok(what) => (StatusCode::OK, what),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
    }
}

/// Binds `addr` and serves the admin routes until the task is dropped.
pub async fn serve_admin<A: Admin>(
    addr: SocketAddr,
    admin: Arc<A>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening (/metrics, /healthz, /readyz)");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, admin_router(admin)).await {
            tracing::error!(%error, "admin server stopped");
        }
    }))
}

/// One GET through a router without a socket: (status, body). For the
/// components' tests of their admin routes.
pub async fn fetch(router: Router, path: &str) -> (StatusCode, String) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request =
        axum::http::Request::get(path).body(axum::body::Body::empty()).expect("a GET is a valid request");
    let response = router.oneshot(request).await.expect("routers are infallible");
    let status = response.status();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Probe(AtomicBool);

    impl Admin for Probe {
        fn metrics_text(&self) -> String {
            "eni_ipam_test_up 1\n# EOF\n".into()
        }
        fn readiness(&self) -> Result<&'static str, &'static str> {
            if self.0.load(Ordering::Relaxed) { Ok("serving") } else { Err("not yet; see the logs") }
        }
    }

    #[tokio::test]
    async fn the_three_endpoints_answer_from_the_component() {
        let probe = Arc::new(Probe(AtomicBool::new(false)));
        assert_eq!(fetch(admin_router(probe.clone()), "/metrics").await.1, "eni_ipam_test_up 1\n# EOF\n");
        assert_eq!(fetch(admin_router(probe.clone()), "/healthz").await.0, StatusCode::OK);
        let (status, text) = fetch(admin_router(probe.clone()), "/readyz").await;
        assert_eq!((status, text.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "not yet; see the logs"));
        probe.0.store(true, Ordering::Relaxed);
        assert_eq!(fetch(admin_router(probe), "/readyz").await.0, StatusCode::OK);
    }
}
