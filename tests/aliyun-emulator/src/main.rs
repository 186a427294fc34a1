//! `eni-ipam-aliyun-emulator --listen 127.0.0.1:PORT`: see the library docs.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use eni_ipam_aliyun_emulator::args::Args;
use eni_ipam_aliyun_emulator::server::router;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let emulator = Arc::new(args.build()?);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Tests read this line to learn the port.
    println!("listening on http://{addr}");
    std::io::stdout().flush()?;
    tracing::info!(%addr, region = %args.region, "emulator up");
    let app = router(emulator.clone());
    axum::serve(listener, app).with_graceful_shutdown(shutdown()).await.context("serving")?;
    if let Some(path) = &args.dump_file {
        std::fs::write(path, serde_json::to_vec_pretty(&emulator.dump())?)
            .with_context(|| format!("writing the state dump {}", path.display()))?;
    }
    Ok(())
}

async fn shutdown() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
