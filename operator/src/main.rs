//! `eni-ipam-operator`: wiring only. Parses flags, sets up logging and the
//! runtime, and hands over to the library.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use clap::error::ErrorKind;
use eni_ipam_api::VpcId;
use eni_ipam_cloud::alibaba::AlibabaProvider;
use eni_ipam_cloud::{CallGuard, CloudKind, CloudProfile, RetryPolicy};
use eni_ipam_cloud_aws::{AwsConfig, AwsProvider};
use eni_ipam_operator::cli::{Cli, Command, RunArgs, RunCloud, SimulateArgs, UninstallStep};
use eni_ipam_operator::simulate::bench::{BenchConfig, run_bench};
use eni_ipam_operator::simulate::{self, Backend};
use indicatif::{ProgressBar, ProgressStyle};

/// Exit code for bad flags and impossible settings.
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => e.exit(),
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => return usage_error(first_line(&e.render().to_string())),
    };
    // The simulator reports what went wrong in its counts; RUST_LOG=info shows each event.
    // The controller logs at info; kube's client builder would repeat our own connect error.
    let default_level = if matches!(cli.command, Command::Run(_) | Command::Uninstall(_)) {
        "info,kube_client::client::builder=off"
    } else {
        "error"
    };
    let log_format = match &cli.command {
        Command::Run(args) => args.log.log_format,
        Command::Simulate(args) => args.log.log_format,
        Command::Capacity(args) => args.log.log_format,
        Command::Uninstall(UninstallStep::Prepare(args) | UninstallStep::Finish(args)) => args.log.log_format,
    };
    eni_ipam_admin::process::init(log_format, default_level);
    match cli.command {
        Command::Simulate(args) => simulate_command(&args),
        Command::Run(args) => run_command(&args),
        Command::Uninstall(step) => uninstall_command(&step),
        Command::Capacity(args) => capacity_command(&args),
    }
}

/// `capacity`: pod IPs, maxPods and the node-template tag per instance type.
fn capacity_command(args: &eni_ipam_operator::sizing::args::CapacityArgs) -> ExitCode {
    use eni_ipam_operator::sizing::source::{CapacityError, LimitsSource, capacity_rows, connect};
    use eni_ipam_operator::sizing::{default_first_interface_index, table};
    if args.endpoint.as_deref().is_some_and(|url| !url.contains("://")) {
        return usage_error(format!(
            "--endpoint '{}' is not a URL: give the scheme too, e.g. http://127.0.0.1:5000",
            args.endpoint.as_deref().unwrap_or_default()
        ));
    }
    let first = args.first_interface_index.unwrap_or_else(|| default_first_interface_index(args.cloud));
    let asked: Vec<eni_ipam_api::InstanceType> =
        args.instance_types.iter().map(|t| t.trim()).filter(|t| !t.is_empty()).map(Into::into).collect();
    let work = async {
        let source = if args.asks_cloud() { connect(args).await? } else { LimitsSource::Profile(args.cloud) };
        let rows = capacity_rows(&source, &asked, first, args.host_network_pods).await?;
        Ok::<_, anyhow::Error>((source.describe(), rows))
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(work));
    let (from, rows) = match result {
        Ok(done) => done,
        Err(e) if e.downcast_ref::<CapacityError>().is_some_and(CapacityError::is_usage) => {
            return usage_error(one_line(&e));
        }
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        let report = serde_json::json!({
            "cloud": args.cloud,
            "source": from,
            "hostNetworkPods": args.host_network_pods,
            "instanceTypes": rows,
        });
        println!("{}", serde_json::to_string_pretty(&report).expect("the report serializes"));
    } else {
        print!("{}", table(&rows));
        println!("\n{} host-network pods counted in MAX PODS; limits from {from}.", args.host_network_pods);
    }
    ExitCode::SUCCESS
}

/// `uninstall prepare|finish`: the chart's pre-delete and post-delete hooks.
fn uninstall_command(step: &UninstallStep) -> ExitCode {
    use eni_ipam_operator::uninstall_hook::{HookConfig, finish, prepare};
    let (UninstallStep::Prepare(args) | UninstallStep::Finish(args)) = step;
    let config = HookConfig {
        namespace: args.agent_namespace.clone(),
        agent_selector: args.agent_selector.clone(),
        timeout: args.timeout,
        poll: std::time::Duration::from_secs(1),
        requested_by: args.requested_by.clone(),
    };
    let work = async {
        let client = kube_client(args.kubeconfig.as_deref()).await?;
        match step {
            UninstallStep::Prepare(_) => prepare(&client, &config).await.map(drop)?,
            UninstallStep::Finish(_) => finish(&client, &config).await.map(drop)?,
        }
        Ok::<(), anyhow::Error>(())
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(work));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `run`: connect to the apiserver and the cloud, then run the controller until SIGINT/SIGTERM.
fn run_command(args: &RunArgs) -> ExitCode {
    if args.cloud != RunCloud::Fake && args.vpc.is_none() {
        return usage_error("--vpc (or ENI_IPAM_VPC) is required with --cloud aws or alibaba".into());
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error chain on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    use anyhow::Context;
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration found (set --kubeconfig or KUBECONFIG, or run in a pod)")?,
    };
    let url = config.cluster_url.clone();
    let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
    client
        .apiserver_version()
        .await
        .with_context(|| format!("apiserver {url} is unreachable; check the kubeconfig and the network"))?;
    Ok(client)
}

async fn run_async(args: &RunArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
    use eni_ipam_operator::controller::ControllerConfig;
    use eni_ipam_operator::metrics::OperatorMetrics;
    use eni_ipam_operator::run::{RunConfig, run_controller};
    let leader = args.leader.config();
    if let Some(leader) = &leader {
        leader.validate().map_err(anyhow::Error::msg)?;
    }
    // Without an apiserver there is nothing to serve: say so in one line and exit.
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(OperatorMetrics::default());
    eni_ipam_admin::serve_admin(args.metrics_addr, metrics.clone())
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}", args.metrics_addr))?;
    let vpc = VpcId::from(args.vpc.clone().unwrap_or_else(|| "vpc-fake".into()));
    let shared = &args.controller;
    let seed = shared.process_seed();
    let retry = RetryPolicy::cloud_default(seed);
    let profile = match args.cloud {
        RunCloud::Fake | RunCloud::Aws => CloudProfile::aws(),
        RunCloud::Alibaba => CloudProfile::alibaba(),
    };
    let first_index = profile.default_first_interface_index;
    let guard = Arc::new(CallGuard::for_profile(profile.clone(), shared.limiter_margin, retry));
    guard.observe(metrics.clone());
    let provider: Arc<dyn eni_ipam_cloud::CloudProvider> = match args.cloud {
        RunCloud::Fake => {
            let cloud = Arc::new(FakeCloud::new(profile, vpc.clone(), seed));
            Arc::new(FakeProvider::new(cloud, guard))
        }
        RunCloud::Aws => {
            let mut aws = AwsConfig::for_region(&args.account.aws_region);
            aws.endpoint = args.aws_endpoint.clone();
            Arc::new(AwsProvider::connect(aws, guard, &vpc).await?)
        }
        RunCloud::Alibaba => {
            let alibaba = args
                .account
                .alibaba
                .config(&args.account.alibaba_region, args.alibaba_endpoint.as_deref())?;
            tracing::info!(identity = alibaba.credentials.kind(), ecs = %alibaba.ecs_endpoint(), vpc = %alibaba.vpc_endpoint(), "Alibaba Cloud");
            Arc::new(AlibabaProvider::new(alibaba, guard)?)
        }
    };
    let uid = eni_ipam_operator::cluster_identity::kube_system_uid(&client).await?;
    let identity = eni_ipam_operator::cluster_identity::establish(
        args.cluster_id.as_deref(),
        &uid,
        provider.as_ref(),
        &vpc,
    )
    .await?;
    let config = RunConfig {
        controller: ControllerConfig {
            release_delay: args.excess_ip_release_delay,
            default_first_interface_index: first_index,
            cluster_uid: identity.uid.clone(),
            ..ControllerConfig::new(&identity.id, vpc, shared.parallel_alloc_workers, seed)
        },
        resync_interval: shared.resync_interval,
        gc_interval: args.eni_gc_interval,
        gc_grace: args.eni_gc_grace,
        leader,
        node_events: args.node_events,
        knob_config: args.knob_config.clone(),
    };
    tracing::info!(cloud = ?args.cloud, cluster = %identity.id, cluster_uid = %uid, leader_elect = args.leader.leader_elect, "controller starting");
    run_controller(client, provider, config, metrics, async {
        let signal = eni_ipam_admin::process::stop_requested().await;
        tracing::info!(?signal, "stopping: releasing the lease if held");
    })
    .await
}

/// `simulate --bench`: every strategy, size and profile; tables, JSON, SVG.
fn bench_command(args: &SimulateArgs, runtime: &tokio::runtime::Runtime, bar: &ProgressBar) -> ExitCode {
    let config = BenchConfig {
        seed: args.controller.simulation_seed(),
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
    let mut aws = AwsConfig::for_region(&args.account.aws_region);
    aws.endpoint = Some(url.to_owned());
    let provider = AwsProvider::connect(aws, guard.clone(), &vpc).await?;
    Ok(Backend::Endpoint { provider: Arc::new(provider), guard, vpc })
}

/// clap's message without its usage and tips, on one line.
/// The Alibaba provider at `url` (also the STS endpoint unless given apart).
fn alibaba_backend(args: &SimulateArgs, url: &str, config: &simulate::SimConfig) -> anyhow::Result<Backend> {
    let vpc = VpcId::from(args.vpc.clone().unwrap_or_default());
    let retry = RetryPolicy::cloud_default(config.seed);
    let guard = Arc::new(CallGuard::for_profile(CloudProfile::alibaba(), config.limiter_margin, retry));
    let alibaba = args.account.alibaba.config(&args.account.alibaba_region, Some(url))?;
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
    if args.pods.pods {
        bar.finish_and_clear();
        return pods_command(args, config, &runtime, virtual_time);
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
    publish(&report.table(), &report, args.json.as_deref())
}

/// `simulate --pods`: the pod simulation, old and new capacity side by side.
fn pods_command(
    args: &SimulateArgs,
    fleet: simulate::SimConfig,
    runtime: &tokio::runtime::Runtime,
    virtual_time: bool,
) -> ExitCode {
    let config = match args.pods.config(fleet) {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    let report = match runtime.block_on(simulate::pods::run(&config, virtual_time)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: pod simulation failed: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    publish(&report.table(), &report, args.json.as_deref())
}

/// Prints a report's table and writes its JSON to `json`, if asked.
fn publish(table: &str, report: &impl serde::Serialize, json: Option<&std::path::Path>) -> ExitCode {
    print!("{table}");
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report).expect("the report serializes");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("error: cannot write the JSON report to {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
