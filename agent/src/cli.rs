//! Command line of `eni-ipam-agent`. Every flag also comes from an environment
//! variable, as the DaemonSet sets them; the chart's tests parse its rendered
//! args with this very parser.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// The eni-ipam node agent.
#[derive(Parser, Debug)]
#[command(
    name = "eni-ipam-agent",
    version,
    about = "eni-ipam node agent: hands pool IPs to pods over a unix socket"
)]
pub struct Cli {
    /// This node's name (the ENINode has the same name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The API socket.
    #[arg(long, env = "ENI_IPAM_SOCKET", default_value = eni_ipam_api::DEFAULT_AGENT_SOCKET)]
    pub socket: PathBuf,
    /// Group (name or gid) that may call the socket besides root; the socket is mode 0660.
    #[arg(long, env = "ENI_IPAM_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Where allocations are persisted before every answer.
    #[arg(long, env = "ENI_IPAM_STATE_FILE", default_value = "/var/lib/eni-ipam/state.json")]
    pub state_file: PathBuf,
    /// Serve the pool from this JSON file instead of the ENINode (standalone and tests); reloaded on SIGHUP.
    #[arg(long, env = "ENI_IPAM_POOL_FILE")]
    pub pool_file: Option<PathBuf>,
    /// File listing the container ids the runtime runs (one a line); on start, IPs of others are freed.
    #[arg(long, env = "ENI_IPAM_LIVE_CONTAINERS_FILE")]
    pub live_containers_file: Option<PathBuf>,
    /// Admin address for /metrics, /healthz, /readyz.
    #[arg(long, env = "ENI_IPAM_METRICS_ADDR", default_value = "0.0.0.0:9966")]
    pub metrics_addr: String,
    /// Least time between two writes of ENINode status.used (bursts are coalesced), e.g. 1s, 500ms.
    #[arg(long, env = "ENI_IPAM_NODE_UPDATE_RATE", default_value = "1s", value_parser = parse_duration)]
    pub ipam_node_update_rate: Duration,
    /// How often the ENINode is re-read for pool changes and release marks when nothing changes locally.
    #[arg(long, env = "ENI_IPAM_ENINODE_RESYNC", default_value = "5s", value_parser = parse_duration)]
    pub eninode_resync: Duration,
    /// Subnet CIDR and gateway of a pool subnet: SUBNET_ID=CIDR[,GATEWAY] (repeat; gateway defaults to the first host).
    #[arg(long = "subnet", env = "ENI_IPAM_SUBNETS", value_delimiter = ' ')]
    pub subnets: Vec<String>,
    /// Pod IPs this node could reach in total (instance-type and subnet limits); 0 = the pool size.
    #[arg(long, env = "ENI_IPAM_CAPACITY", default_value_t = 0)]
    pub capacity: u32,
    /// The kube-apiserver URL (default: in-cluster or kubeconfig).
    #[arg(long, env = "ENI_IPAM_KUBE_URL")]
    pub kube_url: Option<String>,
}

/// `500ms`, `1s`, `2m`: a whole, positive number and a unit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
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
