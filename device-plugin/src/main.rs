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

fn main() -> ExitCode {
    let cli = Cli::parse();
    eni_ipam_admin::process::init(cli.log.log_format, "info");
    eni_ipam_admin::process::run_to_exit("eni-ipam-device-plugin", run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let plugin = start(cli.config(), metrics.clone())?;
    let admin = serve_admin(cli.metrics_addr, metrics)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}; pick a free port", cli.metrics_addr))?;
    eni_ipam_admin::process::stop_requested().await;
    tracing::info!("stopping: removing our socket so kubelet drops the endpoint");
    plugin.stop();
    admin.abort();
    Ok(())
}
