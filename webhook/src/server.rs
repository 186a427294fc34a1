//! The TLS listener: the router behind rustls, with the reloading
//! certificate. Used as is by `main`, the TLS tests and the load benchmark, so
//! all three exercise the same server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::metrics::WebhookMetrics;
use crate::router::{WebhookState, webhook_router};
use crate::tls_reload::ReloadingCertificate;

/// A connection that has not sent a whole first request by then is closed,
/// so idle or stalled connections cannot pile up.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The listener could not be opened.
#[derive(Debug, Error)]
#[error("listening for admission reviews on {addr} failed ({source}); pick a free address with --listen")]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// A running webhook listener.
#[derive(Debug)]
pub struct RunningWebhook {
    /// Where it listens (the real port when asked for port 0).
    pub local_addr: SocketAddr,
    handle: Handle<SocketAddr>,
    server: JoinHandle<std::io::Result<()>>,
    reloader: JoinHandle<()>,
}

/// Binds `listen` and serves `POST /mutate` over TLS, reloading the
/// certificate every `reload_interval`. Marks the webhook ready once bound.
pub async fn start_webhook(
    listen: SocketAddr,
    certificate: ReloadingCertificate,
    reload_interval: Duration,
    state: WebhookState,
) -> Result<RunningWebhook, ListenError> {
    let listen_error = |source| ListenError { addr: listen, source };
    let listener = std::net::TcpListener::bind(listen).map_err(listen_error)?;
    let local_addr = listener.local_addr().map_err(listen_error)?;
    let handle = Handle::new();
    let server = axum_server::tls_rustls::from_tcp_rustls(listener, certificate.config())
        .map_err(listen_error)?
        .first_request_timeout(FIRST_REQUEST_TIMEOUT)
        .handle(handle.clone());
    let metrics: Arc<WebhookMetrics> = state.metrics.clone();
    let app = webhook_router(state).into_make_service();
    let server = tokio::spawn(server.serve(app));
    let reloader = certificate.spawn_reloader(reload_interval, metrics.clone());
    metrics.set_ready(true);
    tracing::info!(addr = %local_addr, "serving admission reviews over TLS (POST /mutate)");
    Ok(RunningWebhook { local_addr, handle, server, reloader })
}

impl RunningWebhook {
    /// Stops accepting, lets requests in flight finish for up to `grace`, and
    /// waits for the listener to close.
    pub async fn shutdown(self, grace: Duration) {
        self.handle.graceful_shutdown(Some(grace));
        self.reloader.abort();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "webhook listener ended with an error"),
            Err(error) => tracing::warn!(%error, "webhook listener task failed"),
        }
    }

    /// Waits until the listener stops by itself (it only does on error).
    pub async fn wait(&mut self) -> std::io::Result<()> {
        match (&mut self.server).await {
            Ok(result) => result,
            Err(error) => Err(std::io::Error::other(error)),
        }
    }
}
