//! eni-ipam-agent: the per-node DaemonSet process. Wires the state file, the
//! pool source, the unix-socket API, the admin port and (with a cluster) the
//! ENINode registration and status reporter. Decisions live in the library.

use std::sync::Arc;

use anyhow::Context;
use eni_ipam_agent::cli::{AgentCommand, Cli, DatapathMode, Invocation};
use eni_ipam_agent::endpoints::{self, Endpoints};
use eni_ipam_agent::ipam::Ipam;
use eni_ipam_agent::metrics::{Metrics, admin_router};
use eni_ipam_agent::node_network::NodeNetwork;
use eni_ipam_agent::pool::{NodePool, SubnetMap, parse_subnet_flag};
use eni_ipam_agent::server::{ApiState, bind_socket, resolve_group, router};
use eni_ipam_agent::service_ranges::{self, HostRoutes};
use eni_ipam_agent::state::StateStore;
use eni_ipam_agent::uninstall_mark::UninstallArming;
use eni_ipam_agent::{kube_side, live_containers, uninstall};
use eni_ipam_datapath::Datapath;

/// Loads or adopts the datapath; errors say how to run without it.
fn start_datapath(cli: &Cli) -> anyhow::Result<Option<Datapath>> {
    if cli.datapath == DatapathMode::None {
        tracing::info!("--datapath=none: pod traffic is routed by the kernel's policy routing");
        return Ok(None);
    }
    let pin_dir = &cli.paths.bpf_pin_dir;
    let datapath = Datapath::load_or_adopt_with(pin_dir, cli.tc_attach).with_context(|| {
        format!(
            "cannot start the eBPF datapath (pins under {}, --tc-attach={}); fix the node or run with \
             --datapath=none",
            pin_dir.display(),
            cli.tc_attach
        )
    })?;
    Ok(Some(datapath))
}

/// The node's policy routing, unless `--node-routing=false`.
fn start_node_network(cli: &Cli) -> anyhow::Result<Option<NodeNetwork>> {
    if !cli.node_routing {
        if !cli.blocked_destinations.is_empty() {
            anyhow::bail!(
                "--block-pod-destination needs --node-routing (the drop is in the agent's nft table): \
                 drop --node-routing=false, or block those destinations by other means and drop the flag"
            );
        }
        tracing::warn!("--node-routing=false: the node's rules, tables and nft table are left alone");
        return Ok(None);
    }
    let network = NodeNetwork::open(cli.blocked_destinations.clone())
        .context("cannot open netlink for the node's policy routing")?;
    Ok(Some(network))
}

/// How often the service ranges and the node's addresses are read again.
const HOST_ROUTES_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

fn main() -> std::process::ExitCode {
    let invocation = Invocation::try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit());
    match invocation {
        Invocation::Task(AgentCommand::Uninstall(args)) => {
            eni_ipam_admin::process::init(args.log.log_format, "info");
            match uninstall_command(&args.paths) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("eni-ipam-agent uninstall: {error:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Invocation::Agent(cli) => {
            eni_ipam_admin::process::init(cli.log.log_format, "info");
            eni_ipam_admin::process::run_to_exit("eni-ipam-agent", run(*cli))
        }
    }
}

/// `eni-ipam-agent uninstall`: removes what the agent installed on this node.
fn uninstall_command(paths: &eni_ipam_agent::cli::NodePaths) -> anyhow::Result<()> {
    match uninstall::uninstall_node(paths) {
        Ok(report) => {
            uninstall::log_report(&report);
            Ok(())
        }
        Err(error) => {
            uninstall::log_report(&error.report);
            Err(error.into())
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let started = tokio::time::Instant::now();
    let subnets: SubnetMap = cli.subnets.iter().map(|s| parse_subnet_flag(s)).collect::<Result<_, _>>()?;
    let live = match &cli.live_containers_file {
        Some(path) => Some(
            live_containers::read_list(path)
                .with_context(|| format!("cannot read the live-container list {}", path.display()))?,
        ),
        None => None,
    };
    let pool_cache = cli.paths.state_file.with_file_name("pool-cache.json");
    let mut kube = None;
    let pool = match &cli.pool_file {
        Some(path) => {
            let mut pool = NodePool::from_file(path)?;
            if cli.capacity > 0 {
                pool.capacity = cli.capacity;
            }
            pool
        }
        None => {
            // Serve at once from the last pool seen (retried ADDs, DELs, healthz), even while the
            // apiserver is unreachable; registration and the reporter catch up in the background.
            let cached = NodePool::from_file(&pool_cache).unwrap_or_default();
            kube = Some(kube_side::client(cli.kube_url.as_deref()).await?);
            cached
        }
    };
    let store = StateStore::new(&cli.paths.state_file);
    let (ipam, reconciliation) = Ipam::open(&cli.node_name, store, pool, live.as_ref())?;
    for key in &reconciliation.gone {
        tracing::info!(node = %cli.node_name, %key, "freed the IP of a container the runtime no longer runs");
    }
    for key in &reconciliation.outside_pool {
        tracing::warn!(node = %cli.node_name, %key, "a pod holds an IP that is no longer in the pool");
    }
    let ipam = Arc::new(ipam);
    if cli.datapath == DatapathMode::Ebpf && kube.is_none() && cli.service_cidrs.is_empty() {
        anyhow::bail!("{}", service_ranges::MISSING);
    }
    let datapath = start_datapath(&cli)?;
    let with_datapath = datapath.is_some();
    let mut host_routes = with_datapath.then(|| {
        // Blocked destinations go to the stack too, where the nft table drops pods' packets.
        let extras = cli.host_routes.iter().chain(&cli.blocked_destinations).copied().collect();
        HostRoutes::new(cli.service_cidrs.clone(), extras, kube.clone())
    });
    let endpoints = Arc::new(Endpoints::new(ipam.clone(), datapath, start_node_network(&cli)?));
    // Before the reconcile: an upgrade swaps the new programs in at its end, and they must find
    // the service ranges in their maps by then.
    if let Some(routes) = host_routes.as_mut() {
        routes.refresh(&endpoints).await.map_err(anyhow::Error::msg)?;
    }
    endpoints::log_start(
        &endpoints.reconcile().context("cannot reconcile the node's networking with the IPAM state")?,
    );
    let metrics = Arc::new(Metrics::new(with_datapath.then(|| endpoints.clone())));

    let gid = cli.socket_group.as_deref().map(resolve_group).transpose()?;
    let listener = bind_socket(&cli.paths.socket, gid)?;
    let refresh_endpoints = endpoints.clone();
    if let Some(config) = cli.lost_pods() {
        tracing::info!(socket = %config.socket.display(), grace = ?config.grace, cooldown = ?config.cooldown,
            "freeing the IPs of pods kubelet no longer runs");
        tokio::spawn(eni_ipam_agent::lost_pods::run(config, endpoints.clone(), metrics.clone()));
    }
    let api = router(ApiState { ipam: ipam.clone(), endpoints, metrics: metrics.clone() });
    let admin = tokio::net::TcpListener::bind(&cli.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}", cli.metrics_addr))?;
    tracing::info!(node = %cli.node_name, socket = %cli.paths.socket.display(), metrics = %cli.metrics_addr, "agent serving");

    let arming = Arc::new(UninstallArming::default());
    if let (Some(client), Some(taint)) = (kube.clone(), cli.startup_taint()) {
        // Only now: the datapath is loaded and the node's networking reconciled (or the agent
        // has stopped), and the socket listens.
        let (ipam, metrics) = (ipam.clone(), metrics.clone());
        tokio::spawn(async move {
            let pool_ips = || ipam.health().ipam.available;
            if let Some(after) = taint.run(client, pool_ips, started).await {
                metrics.startup_taint_removed(after);
            }
        });
    }
    if let Some(client) = kube {
        let reporter =
            kube_side::Reporter::new(client.clone(), cli.node_name.clone(), cli.ipam_node_update_rate)
                .with_resync(cli.eninode_resync)
                .with_pool_cache(pool_cache)
                .with_uninstall_arming(arming.clone())
                .with_registration(cli.spec_defaults());
        let (ipam, metrics, node_name, capacity) =
            (ipam.clone(), metrics.clone(), cli.node_name.clone(), cli.capacity_rule());
        let defaults = cli.spec_defaults();
        tokio::spawn(async move {
            let node = kube_side::register(&client, &node_name, &defaults).await;
            ipam.set_pool(NodePool::from_eninode(&node, &subnets, capacity));
            reporter.run(ipam, metrics, subnets, capacity).await;
        });
    }
    if let Some(path) = cli.pool_file.clone() {
        let ipam = ipam.clone();
        let capacity = cli.capacity;
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
                return;
            };
            while hup.recv().await.is_some() {
                match NodePool::from_file(&path) {
                    Ok(mut pool) => {
                        if capacity > 0 {
                            pool.capacity = capacity;
                        }
                        ipam.set_pool(pool);
                        tracing::info!(pool_file = %path.display(), "pool reloaded");
                    }
                    Err(e) => tracing::error!("{e}"),
                }
            }
        });
    }
    let admin_app = admin_router(ipam.clone(), metrics.clone());
    tokio::spawn(async move { axum::serve(admin, admin_app).await });
    let refresh = async move {
        match host_routes {
            Some(routes) => routes.run(refresh_endpoints, HOST_ROUTES_REFRESH).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        served = axum::serve(listener, api) => served.context("agent socket server stopped")?,
        failed = refresh => anyhow::bail!("{}", failed.err().unwrap_or_default()),
        signal = eni_ipam_admin::process::stop_requested() => tracing::info!(?signal, "stopping"),
    }
    if arming.is_armed() {
        // helm uninstall: the ENINode asked for it before the DaemonSet went away.
        tracing::warn!(node = %cli.node_name, "uninstall requested on the ENINode: removing what the agent installed");
        return uninstall_command(&cli.paths);
    }
    // A restart or an upgrade: the pinned datapath keeps forwarding, the next agent adopts it.
    Ok(())
}
