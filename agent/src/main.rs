//! eni-ipam-agent: the per-node DaemonSet process. Wires the state file, the
//! pool source, the unix-socket API, the admin port and (with a cluster) the
//! ENINode registration and status reporter. Decisions live in the library.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use eni_ipam_agent::endpoints::{self, Endpoints};
use eni_ipam_agent::ipam::Ipam;
use eni_ipam_agent::metrics::{Metrics, admin_router};
use eni_ipam_agent::pool::{NodePool, SubnetMap, parse_subnet_flag};
use eni_ipam_agent::server::{ApiState, bind_socket, resolve_group, router};
use eni_ipam_agent::state::StateStore;
use eni_ipam_agent::{kube_side, live_containers};
use eni_ipam_datapath::{DEFAULT_PIN_DIR, Datapath, Ipv4Prefix};

/// The eni-ipam node agent.
#[derive(Parser, Debug)]
#[command(
    name = "eni-ipam-agent",
    version,
    about = "eni-ipam node agent: hands pool IPs to pods over a unix socket"
)]
struct Cli {
    /// This node's name (the ENINode has the same name).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The API socket.
    #[arg(long, env = "ENI_IPAM_SOCKET", default_value = eni_ipam_api::DEFAULT_AGENT_SOCKET)]
    socket: PathBuf,
    /// Group (name or gid) that may call the socket besides root; the socket is mode 0660.
    #[arg(long, env = "ENI_IPAM_SOCKET_GROUP")]
    socket_group: Option<String>,
    /// Where allocations are persisted before every answer.
    #[arg(long, env = "ENI_IPAM_STATE_FILE", default_value = "/var/lib/eni-ipam/state.json")]
    state_file: PathBuf,
    /// Serve the pool from this JSON file instead of the ENINode (standalone and tests); reloaded on SIGHUP.
    #[arg(long, env = "ENI_IPAM_POOL_FILE")]
    pool_file: Option<PathBuf>,
    /// File listing the container ids the runtime runs (one a line); on start, IPs of others are freed.
    #[arg(long, env = "ENI_IPAM_LIVE_CONTAINERS_FILE")]
    live_containers_file: Option<PathBuf>,
    /// Admin address for /metrics, /healthz, /readyz.
    #[arg(long, env = "ENI_IPAM_METRICS_ADDR", default_value = "0.0.0.0:9966")]
    metrics_addr: String,
    /// Least time between two writes of ENINode status.used (bursts are coalesced), e.g. 1s, 500ms.
    #[arg(long, env = "ENI_IPAM_NODE_UPDATE_RATE", default_value = "1s", value_parser = parse_duration)]
    ipam_node_update_rate: Duration,
    /// How often the ENINode is re-read for pool changes and release marks when nothing changes locally.
    #[arg(long, env = "ENI_IPAM_ENINODE_RESYNC", default_value = "5s", value_parser = parse_duration)]
    eninode_resync: Duration,
    /// Subnet CIDR and gateway of a pool subnet: SUBNET_ID=CIDR[,GATEWAY] (repeat; gateway defaults to the first host).
    #[arg(long = "subnet", env = "ENI_IPAM_SUBNETS", value_delimiter = ' ')]
    subnets: Vec<String>,
    /// Pod IPs this node could reach in total (instance-type and subnet limits); 0 = the pool size.
    #[arg(long, env = "ENI_IPAM_CAPACITY", default_value_t = 0)]
    capacity: u32,
    /// The kube-apiserver URL (default: in-cluster or kubeconfig).
    #[arg(long, env = "ENI_IPAM_KUBE_URL")]
    kube_url: Option<String>,
    /// Pod datapath: `ebpf` loads (or adopts after a restart) the eBPF programs and keeps their
    /// maps equal to the IPAM; `none` leaves pods to kernel routing (hosts without eBPF, tests).
    #[arg(long, env = "ENI_IPAM_DATAPATH", value_enum, default_value_t = DatapathMode::Ebpf)]
    datapath: DatapathMode,
    /// bpffs directory where the datapath's programs, maps and links are pinned.
    #[arg(long, env = "ENI_IPAM_BPF_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    bpf_pin_dir: PathBuf,
    /// Destination pods reach through the node's own stack instead of their ENI (node
    /// addresses, the service CIDR): CIDR, repeat or separate by spaces. Only with `--datapath=ebpf`.
    #[arg(long = "host-route", env = "ENI_IPAM_HOST_ROUTES", value_delimiter = ' ', value_parser = parse_prefix)]
    host_routes: Vec<Ipv4Prefix>,
}

/// Which datapath forwards pod traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum DatapathMode {
    /// eBPF programs on pod veths and ENIs (production).
    Ebpf,
    /// No datapath: the kernel routes pod traffic.
    None,
}

fn parse_prefix(text: &str) -> Result<Ipv4Prefix, String> {
    let bad = || format!("{text:?} is not an IPv4 CIDR like 10.96.0.0/12");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    Ipv4Prefix::new(addr.parse().map_err(|_| bad())?, len.parse().map_err(|_| bad())?).ok_or_else(bad)
}

/// Loads or adopts the datapath and sets its host routes; errors say how to run without it.
fn start_datapath(cli: &Cli) -> anyhow::Result<Option<Datapath>> {
    if cli.datapath == DatapathMode::None {
        tracing::info!("--datapath=none: pod traffic is left to kernel routing");
        return Ok(None);
    }
    let pin_dir = &cli.bpf_pin_dir;
    let mut datapath = Datapath::load_or_adopt(pin_dir).with_context(|| {
        format!(
            "cannot start the eBPF datapath (pins under {}); fix the node or run with --datapath=none",
            pin_dir.display()
        )
    })?;
    datapath.set_host_routes(&cli.host_routes).context("cannot set the datapath's host routes")?;
    Ok(Some(datapath))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 1s, 500ms or 2m");
    let (number, unit) =
        text.find(|c: char| !c.is_ascii_digit()).map(|i| text.split_at(i)).ok_or_else(bad)?;
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    };
    if d.is_zero() { Err(format!("{text:?} must be more than zero")) } else { Ok(d) }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // One line with the cause chain; no backtrace for a configuration mistake.
            eprintln!("eni-ipam-agent: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let subnets: SubnetMap = cli.subnets.iter().map(|s| parse_subnet_flag(s)).collect::<Result<_, _>>()?;
    let live = match &cli.live_containers_file {
        Some(path) => Some(
            live_containers::read_list(path)
                .with_context(|| format!("cannot read the live-container list {}", path.display()))?,
        ),
        None => None,
    };
    let pool_cache = cli.state_file.with_file_name("pool-cache.json");
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
    let store = StateStore::new(&cli.state_file);
    let (ipam, reconciliation) = Ipam::open(&cli.node_name, store, pool, live.as_ref())?;
    for key in &reconciliation.gone {
        tracing::info!(node = %cli.node_name, %key, "freed the IP of a container the runtime no longer runs");
    }
    for key in &reconciliation.outside_pool {
        tracing::warn!(node = %cli.node_name, %key, "a pod holds an IP that is no longer in the pool");
    }
    let ipam = Arc::new(ipam);
    let datapath = start_datapath(&cli)?;
    let with_datapath = datapath.is_some();
    let endpoints = Arc::new(Endpoints::new(ipam.clone(), datapath));
    endpoints::log_start(
        &endpoints.reconcile().context("cannot reconcile the datapath with the IPAM state")?,
    );
    let metrics = Arc::new(Metrics::new(with_datapath.then(|| endpoints.clone())));

    let gid = cli.socket_group.as_deref().map(resolve_group).transpose()?;
    let listener = bind_socket(&cli.socket, gid)?;
    let api = router(ApiState { ipam: ipam.clone(), endpoints, metrics: metrics.clone() });
    let admin = tokio::net::TcpListener::bind(&cli.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on --metrics-addr {}", cli.metrics_addr))?;
    tracing::info!(node = %cli.node_name, socket = %cli.socket.display(), metrics = %cli.metrics_addr, "agent serving");

    if let Some(client) = kube {
        let reporter =
            kube_side::Reporter::new(client.clone(), cli.node_name.clone(), cli.ipam_node_update_rate)
                .with_resync(cli.eninode_resync)
                .with_pool_cache(pool_cache);
        let (ipam, metrics, node_name, capacity) =
            (ipam.clone(), metrics.clone(), cli.node_name.clone(), cli.capacity);
        tokio::spawn(async move {
            let node = kube_side::register(&client, &node_name).await;
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
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        served = axum::serve(listener, api) => served.context("agent socket server stopped")?,
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: stopping"),
    }
    Ok(())
}
