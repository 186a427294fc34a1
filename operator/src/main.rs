//! `eni-ipam-operator`: wiring only. Parses flags, sets up logging and the
//! runtime, and hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use clap::error::ErrorKind;
use eni_ipam_api::VpcId;
use eni_ipam_cloud::alibaba::{AlibabaConfig, AlibabaProvider, CredentialSource};
use eni_ipam_cloud::{CallGuard, CloudKind, CloudProfile, RetryPolicy};
use eni_ipam_cloud_aws::{AwsConfig, AwsProvider};
use eni_ipam_operator::cli::{Cli, Command, SimulateArgs};
use eni_ipam_operator::simulate::bench::{BenchConfig, run_bench};
use eni_ipam_operator::simulate::{self, Backend};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

/// Exit code for bad flags and impossible settings.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    // One TLS provider for every client in the process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => return usage_error(first_line(&e.render().to_string())),
    };
    // The simulator reports what went wrong in its counts; RUST_LOG=info shows each event.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("error")))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Simulate(args) => simulate_command(&args),
    }
}

/// `simulate --bench`: every strategy, size and profile; tables, JSON, SVG.
fn bench_command(args: &SimulateArgs, runtime: &tokio::runtime::Runtime, bar: &ProgressBar) -> ExitCode {
    let config = BenchConfig {
        seed: args.seed,
        memory_binary: std::env::current_exe().ok(),
        ..BenchConfig::default()
    };
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("static template"));
    let report = match runtime.block_on(run_bench(&config, &|step| bar.set_message(step.to_owned()))) {
        Ok(r) => r,
        Err(e) => {
            bar.finish_and_clear();
            eprintln!("error: benchmark failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    bar.finish_and_clear();
    print!("{}", report.tables());
    let written = std::fs::create_dir_all(&args.bench_out)
        .and_then(|()| {
            let json = serde_json::to_string_pretty(&report).expect("the report serializes");
            std::fs::write(args.bench_out.join("bench.json"), json + "\n")
        })
        .and_then(|()| std::fs::write(args.bench_out.join("bench.svg"), report.chart()));
    match written {
        Ok(()) => {
            println!("\nwrote {0}/bench.json and {0}/bench.svg", args.bench_out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: cannot write into {}: {e}", args.bench_out.display());
            ExitCode::FAILURE
        }
    }
}

/// The AWS provider at `url`, connected (one probe call, no retry storm).
async fn aws_backend(
    args: &SimulateArgs,
    url: &str,
    config: &simulate::SimConfig,
) -> anyhow::Result<Backend> {
    let vpc = VpcId::from(args.vpc.clone().unwrap_or_default());
    let profile = CloudProfile::aws();
    let retry = RetryPolicy::cloud_default(config.seed);
    let guard = Arc::new(CallGuard::for_profile(profile, config.limiter_margin, retry));
    let mut aws = AwsConfig::for_region(&args.aws_region);
    aws.endpoint = Some(url.to_owned());
    let provider = AwsProvider::connect(aws, guard.clone(), &vpc).await?;
    Ok(Backend::Endpoint { provider: Arc::new(provider), guard, vpc })
}

/// clap's message without its usage and tips, on one line.
/// The Alibaba provider at `url`, credentials from the environment.
fn alibaba_backend(args: &SimulateArgs, url: &str, config: &simulate::SimConfig) -> anyhow::Result<Backend> {
    let vpc = VpcId::from(args.vpc.clone().unwrap_or_default());
    let retry = RetryPolicy::cloud_default(config.seed);
    let guard = Arc::new(CallGuard::for_profile(CloudProfile::alibaba(), config.limiter_margin, retry));
    let alibaba = AlibabaConfig::new(args.alibaba_region.clone(), CredentialSource::Env).with_endpoint(url);
    let provider = AlibabaProvider::new(alibaba, guard.clone())?;
    Ok(Backend::Endpoint { provider: Arc::new(provider), guard, vpc })
}

fn first_line(text: &str) -> String {
    let message = text.split("\n\n").next().unwrap_or_default();
    let message = message.strip_prefix("error: ").unwrap_or(message);
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn usage_error(message: String) -> ExitCode {
    eprintln!("error: {message} (see --help)");
    ExitCode::from(USAGE)
}

fn simulate_command(args: &SimulateArgs) -> ExitCode {
    let config = args.config();
    if args.endpoint.is_some() && config.cloud == CloudKind::Alibaba && config.security_groups.is_empty() {
        return usage_error(
            "--cloud alibaba --endpoint needs --security-group: ECS creates no ENI without one".into(),
        );
    }
    if let Err(e) = config.validate() {
        return usage_error(e.to_string());
    }
    let mut runtime = tokio::runtime::Builder::new_current_thread();
    runtime.enable_all();
    // Virtual time only where the whole cloud is in-process.
    let virtual_time = !args.real_time && args.endpoint.is_none();
    if virtual_time {
        runtime.start_paused(true);
    }
    let runtime = match runtime.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = if args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(config.nodes))
    };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} nodes ready")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(format!("simulating {} on {}", config.nodes, config.cloud));
    if args.bench {
        return bench_command(args, &runtime, &bar);
    }
    let progress = |ready| bar.set_position(ready);
    let result = runtime.block_on(async {
        let backend = match &args.endpoint {
            None => Backend::Fake,
            Some(url) if config.cloud == CloudKind::Aws => aws_backend(args, url, &config).await?,
            Some(url) => alibaba_backend(args, url, &config)?,
        };
        simulate::run_on(&config, backend, virtual_time, &progress).await
    });
    bar.finish_and_clear();
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: simulation failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("error: cannot write the JSON report to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
