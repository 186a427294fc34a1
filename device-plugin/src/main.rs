//! eni-ipam-device-plugin: registers with kubelet and advertises one
//! `eni-ipam.io/ip` device per pod IP slot, healthy as far as the node can
//! really give IPs (see `counting.rs`). Wiring only; the logic is in the lib.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use eni_ipam_device_plugin::cli::Cli;
use eni_ipam_device_plugin::metrics::{Metrics, serve_admin};
use eni_ipam_device_plugin::start;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("eni-ipam-device-plugin: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let plugin = start(cli.config(), metrics.clone())?;
    let admin = serve_admin(cli.metrics_addr, metrics)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}; pick a free port", cli.metrics_addr))?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("stopping: removing our socket so kubelet drops the endpoint");
    plugin.stop();
    admin.abort();
    Ok(())
}
