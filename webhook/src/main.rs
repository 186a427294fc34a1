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
    eni_ipam_admin::process::init(args.log.log_format, "info");
    eni_ipam_admin::process::run_to_exit("eni-ipam-webhook", run(args))
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
        _ = eni_ipam_admin::process::stop_requested() => {
            tracing::info!("shutting down: no new connections, finishing requests in flight");
            metrics.set_ready(false);
            webhook.shutdown(SHUTDOWN_GRACE).await;
        }
    }
    Ok(())
}
