//! Command line of `eni-ipam-device-plugin`. Every flag also comes from an
//! environment variable; the chart's tests parse its rendered args with this
//! very parser.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use eni_ipam_api::agent_api::DEFAULT_AGENT_SOCKET;
use eni_ipam_api::duration::{parse_duration, parse_interval};

use crate::Config;

/// eni-ipam kubelet device plugin: kubelet sees each node's reachable pod IPs
/// as the extended resource eni-ipam.io/ip.
#[derive(Debug, Parser)]
#[command(
    name = "eni-ipam-device-plugin",
    version,
    about,
    long_about = "eni-ipam kubelet device plugin. Registers with kubelet over the device plugin API v1beta1 \
and advertises --max-slots devices ip-0..ip-{n-1} of the extended resource (eni-ipam.io/ip). It reads the \
node's IP numbers from the agent's GET /v1/healthz every --poll-interval; the slots the node can really back \
with an IP are Healthy, the rest Unhealthy, so kubelet's allocatable follows the node's IP capacity without a \
restart.\n\nHealthy = min(max-slots, capacity - IPs held by pods without the request), where the pods without \
the request are found from kubelet's pod-resources API. If the agent is down or answers garbage, every slot is \
Unhealthy until it answers again."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: eni_ipam_admin::process::LogArgs,
    /// kubelet's device plugin folder (holds kubelet.sock; our socket goes there too).
    #[arg(long, env = "ENI_IPAM_DEVICE_PLUGIN_DIR", default_value = "/var/lib/kubelet/device-plugins")]
    pub device_plugin_dir: PathBuf,
    /// Extended resource to advertise, domain/name.
    #[arg(long, env = "ENI_IPAM_RESOURCE_NAME", default_value = "eni-ipam.io/ip")]
    pub resource_name: String,
    /// The eni-ipam agent's unix socket.
    #[arg(long, env = "ENI_IPAM_AGENT_SOCKET", default_value = DEFAULT_AGENT_SOCKET)]
    pub agent_socket: PathBuf,
    /// kubelet's pod-resources socket, to tell pods with the request from pods
    /// without it ("" to skip: every allocated IP is then taken as requested).
    #[arg(
        long,
        env = "ENI_IPAM_POD_RESOURCES_SOCKET",
        default_value = "/var/lib/kubelet/pod-resources/kubelet.sock"
    )]
    pub pod_resources_socket: String,
    /// Slots advertised (device ids ip-0..ip-{n-1}, stable): at least the most
    /// pods a node can run (kubelet's --max-pods).
    #[arg(long, env = "ENI_IPAM_MAX_SLOTS", default_value_t = 110)]
    pub max_slots: u32,
    /// How often to read the agent's numbers; a change reaches kubelet within one interval.
    #[arg(long, env = "ENI_IPAM_POLL_INTERVAL", default_value = "500ms", value_parser = parse_interval)]
    pub poll_interval: Duration,
    /// Bound on one agent answer; past it every slot is Unhealthy.
    #[arg(long, env = "ENI_IPAM_AGENT_TIMEOUT", default_value = "2s", value_parser = parse_interval)]
    pub agent_timeout: Duration,
    /// While the agent does not answer, the last slots it backed stay Healthy this long (an
    /// agent restart keeps its IPs and state); past it every slot is Unhealthy.
    #[arg(long, env = "ENI_IPAM_AGENT_GRACE", default_value = "15s", value_parser = parse_duration)]
    pub agent_grace: Duration,
    /// Bound on one call to kubelet (Register, pod-resources List).
    #[arg(long, env = "ENI_IPAM_KUBELET_TIMEOUT", default_value = "5s", value_parser = parse_interval)]
    pub kubelet_timeout: Duration,
    /// Admin server: /metrics, /healthz, /readyz.
    #[arg(long, env = "ENI_IPAM_METRICS_ADDR", default_value = "0.0.0.0:9465")]
    pub metrics_addr: SocketAddr,
}

impl Cli {
    /// The plugin configuration the flags describe.
    pub fn config(&self) -> Config {
        Config {
            device_plugin_dir: self.device_plugin_dir.clone(),
            resource_name: self.resource_name.clone(),
            agent_socket: self.agent_socket.clone(),
            pod_resources_socket: (!self.pod_resources_socket.is_empty())
                .then(|| PathBuf::from(&self.pod_resources_socket)),
            max_slots: self.max_slots,
            poll_interval: self.poll_interval,
            agent_timeout: self.agent_timeout,
            agent_grace: self.agent_grace,
            kubelet_timeout: self.kubelet_timeout,
        }
    }
}
