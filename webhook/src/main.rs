//! `eni-ipam-webhook`: wiring only. Parses flags, sets up logging, loads the
//! certificate and hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use clap::error::ErrorKind;
use eni_ipam_webhook::cli::{USAGE_EXIT_CODE, WebhookArgs, one_line_flag_error};
use eni_ipam_webhook::metrics::{WebhookMetrics, serve_admin};
use eni_ipam_webhook::tls_reload::{RELOAD_INTERVAL, ReloadingCertificate};
use eni_ipam_webhook::{WebhookState, start_webhook};
use tracing_subscriber::EnvFilter;

/// Requests in flight get this long to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let args = match WebhookArgs::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) => {
            eprintln!("{}", one_line_flag_error(&e));
            return ExitCode::from(USAGE_EXIT_CODE);
        }
    };
    // One TLS provider for the whole process (see notes/dependencies.md).
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("eni-ipam-webhook: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("eni-ipam-webhook: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: WebhookArgs) -> anyhow::Result<()> {
    let metrics = Arc::new(WebhookMetrics::new());
    let policy = Arc::new(args.policy());
    let certificate = ReloadingCertificate::load(args.certificate_files()).await?;
    let _admin = serve_admin(args.metrics_addr, metrics.clone()).await.with_context(|| {
        format!(
            "listening for /metrics on {} failed; pick a free address with --metrics-addr",
            args.metrics_addr
        )
    })?;
    tracing::info!(
        resource = policy.resource_name(),
        excluded_namespaces = ?args.exclude_namespaces.names().collect::<Vec<_>>(),
        "admission policy"
    );
    let mut webhook = start_webhook(
        args.listen,
        certificate,
        RELOAD_INTERVAL,
        WebhookState { policy, metrics: metrics.clone() },
    )
    .await?;
    tokio::select! {
        result = webhook.wait() => {
            result.context("the TLS listener stopped; restart the webhook")?;
        }
        () = shutdown_signal() => {
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            metrics.set_ready(false);
            webhook.shutdown(SHUTDOWN_GRACE).await;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops the webhook gracefully");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
