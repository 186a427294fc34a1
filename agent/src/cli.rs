//! Command line of `eni-ipam-agent`. Every flag also comes from an environment
//! variable, as the DaemonSet sets them; the chart's tests parse its rendered
//! args with this very parser.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, CommandFactory, Parser, Subcommand};
use eni_ipam_api::CapacityMode;
use eni_ipam_api::duration::{parse_duration, parse_interval};
use eni_ipam_api::knob_args::KnobArgs;

use crate::kube_side::SpecDefaults;
use crate::pool::CapacityRule;
use eni_ipam_datapath::{AttachMode, DEFAULT_PIN_DIR, Ipv4Prefix};

/// What `main` runs: the agent (flags only, as the DaemonSet runs it) or a one-off task.
#[derive(Debug)]
pub enum Invocation {
    /// The agent.
    Agent(Box<Cli>),
    /// A task of [`AgentTasks`].
    Task(AgentCommand),
}

impl Invocation {
    /// Parses `argv`: a first argument naming a task selects [`AgentTasks`], anything else
    /// the agent's own flags ([`Cli`]), so the agent's required flags never bind a task.
    pub fn try_parse_from<I, T>(argv: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv: Vec<std::ffi::OsString> = argv.into_iter().map(Into::into).collect();
        let task = argv
            .get(1)
            .and_then(|a| a.to_str())
            .is_some_and(|first| AgentTasks::command().get_subcommands().any(|c| c.get_name() == first));
        if task {
            Ok(Self::Task(AgentTasks::try_parse_from(argv)?.command))
        } else {
            Ok(Self::Agent(Box::new(Cli::try_parse_from(argv)?)))
        }
    }
}

/// The agent binary's one-off tasks (`eni-ipam-agent TASK --help`).
#[derive(Parser, Debug)]
#[command(name = "eni-ipam-agent", version)]
pub struct AgentTasks {
    /// The task.
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// One-off tasks of the agent binary.
#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// Remove from this node what the agent installed, and nothing else.
    ///
    /// Removes the eBPF datapath (TCX links, pinned programs and maps), the veths and routes
    /// of its pods, its ip rules and route tables, the nft table `ip eni_ipam`, the CNI
    /// configuration and plugin, its state and socket. Safe to run twice;
    /// run it with the agent stopped, with the paths the agent used.
    Uninstall(UninstallArgs),
}

/// `eni-ipam-agent uninstall`.
#[derive(Args, Debug, Clone)]
pub struct UninstallArgs {
    #[command(flatten)]
    pub log: eni_ipam_admin::process::LogArgs,
    /// Where the agent put things (the same flags as the agent's).
    #[command(flatten)]
    pub paths: NodePaths,
}

/// Everything the agent and its chart's install step put on the node, by path. The agent
/// takes the same flags, so its uninstall-on-termination removes what it installed.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct NodePaths {
    /// The API socket.
    #[arg(long, env = "ENI_IPAM_SOCKET", default_value = eni_ipam_api::DEFAULT_AGENT_SOCKET)]
    pub socket: PathBuf,
    /// Where allocations are persisted before every answer.
    #[arg(long, env = "ENI_IPAM_STATE_FILE", default_value = "/var/lib/eni-ipam/state.json")]
    pub state_file: PathBuf,
    /// bpffs directory where the datapath's programs, maps and links are pinned.
    #[arg(long, env = "ENI_IPAM_BPF_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pub bpf_pin_dir: PathBuf,
    /// Host folder of CNI network configurations where our conflist was installed.
    #[arg(long, env = "ENI_IPAM_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// File name of our conflist in --cni-conf-dir.
    #[arg(long, env = "ENI_IPAM_CNI_CONF_FILE", default_value = "05-eni-ipam.conflist")]
    pub cni_conf_file: String,
    /// Host folder of CNI plugin binaries where eni-ipam-cni was installed.
    #[arg(long, env = "ENI_IPAM_CNI_BIN_DIR", default_value = "/opt/cni/bin")]
    pub cni_bin_dir: PathBuf,
}

/// The eni-ipam node agent.
#[derive(Parser, Debug)]
#[command(
    name = "eni-ipam-agent",
    version,
    about = "eni-ipam node agent: hands pool IPs to pods over a unix socket",
    after_help = "Tasks: `eni-ipam-agent uninstall --help` (remove what the agent installed on this node)."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: eni_ipam_admin::process::LogArgs,
    /// This node's name (the ENINode has the same name).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// What the agent puts on the node (socket, state, pins, CNI files).
    #[command(flatten)]
    pub paths: NodePaths,
    /// Group (name or gid) that may call the socket besides root; the socket is mode 0660.
    #[arg(long, env = "ENI_IPAM_SOCKET_GROUP")]
    pub socket_group: Option<String>,
    /// Serve the pool from this JSON file instead of the ENINode (standalone and tests); reloaded on SIGHUP.
    #[arg(long, env = "ENI_IPAM_POOL_FILE")]
    pub pool_file: Option<PathBuf>,
    /// File listing the container ids the runtime runs (one a line); on start, IPs of others are freed.
    #[arg(long, env = "ENI_IPAM_LIVE_CONTAINERS_FILE")]
    pub live_containers_file: Option<PathBuf>,
    /// kubelet's pod-resources socket: the IP of a pod kubelet no longer runs (its CNI DEL
    /// never came) is freed once the pod has been missing for --lost-pod-grace. Empty (the
    /// default; the chart sets it): such IPs stay allocated until a DEL or a CNI GC.
    #[arg(long, env = "ENI_IPAM_POD_RESOURCES_SOCKET", default_value = "")]
    pub pod_resources_socket: String,
    /// How long a pod must be missing from every kubelet listing before its IP is freed.
    #[arg(long, env = "ENI_IPAM_LOST_POD_GRACE", default_value = "2m", value_parser = parse_interval)]
    pub lost_pod_grace: Duration,
    /// How long an IP freed from a lost pod is not handed out again (the old sandbox may still
    /// use it); 0 for none.
    #[arg(long, env = "ENI_IPAM_LOST_POD_COOLDOWN", default_value = "1m", value_parser = parse_duration)]
    pub lost_pod_cooldown: Duration,
    /// Admin address for /metrics, /healthz, /readyz.
    #[arg(long, env = "ENI_IPAM_METRICS_ADDR", default_value = "0.0.0.0:9966")]
    pub metrics_addr: String,
    /// Least time between two writes of ENINode status.used (bursts are coalesced), e.g. 1s, 500ms.
    #[arg(long, env = "ENI_IPAM_NODE_UPDATE_RATE", default_value = "1s", value_parser = parse_interval)]
    pub ipam_node_update_rate: Duration,
    /// How often the ENINode is re-read for pool changes and release marks when nothing changes locally.
    #[arg(long, env = "ENI_IPAM_ENINODE_RESYNC", default_value = "5s", value_parser = parse_interval)]
    pub eninode_resync: Duration,
    /// Override of a pool subnet's CIDR and gateway, which otherwise come from the ENINode (the operator
    /// writes them per ENI): SUBNET_ID=CIDR[,GATEWAY] (repeat; gateway defaults to the first host).
    #[arg(long = "subnet", env = "ENI_IPAM_SUBNETS", value_delimiter = ' ')]
    pub subnets: Vec<String>,
    /// The pod IPs the device plugin advertises: `instance-limit`, what this instance can hold
    /// (the ENINode's `status.ipLimit`, lowered to `status.shortfall.obtainable` while the operator
    /// cannot grow the pool); `pool`, the IPs the pool holds now. Both are capped by maxAllocate
    /// and never below the pool.
    #[arg(
        long = "capacity-mode",
        env = "ENI_IPAM_CAPACITY_MODE",
        default_value = "instance-limit",
        value_parser = PossibleValuesParser::new(CapacityMode::NAMES).try_map(|name| name.parse::<CapacityMode>())
    )]
    pub capacity_mode: CapacityMode,
    /// A fixed number of pod IPs to advertise instead of --capacity-mode's (capped by maxAllocate,
    /// lowered by the operator's shortfall); 0 = none.
    #[arg(long, env = "ENI_IPAM_CAPACITY", default_value_t = 0)]
    pub capacity: u32,
    /// Key of the NoSchedule taint the node registers with (kubelet's --register-with-taints,
    /// Karpenter's startupTaints) and the agent removes once the node's pool has an IP, its
    /// datapath is loaded and kubelet publishes --startup-taint-resource; "" never touches the
    /// Node's taints.
    #[arg(long, env = "ENI_IPAM_STARTUP_TAINT", default_value = crate::startup_taint::DEFAULT_KEY)]
    pub startup_taint: String,
    /// The extended resource kubelet must publish on the Node (allocatable above 0: the device
    /// plugin registered) before the startup taint goes; "" where no device plugin runs.
    #[arg(long, env = "ENI_IPAM_STARTUP_TAINT_RESOURCE", default_value = eni_ipam_api::DEFAULT_RESOURCE_NAME)]
    pub startup_taint_resource: String,
    /// The kube-apiserver URL (default: in-cluster or kubeconfig).
    #[arg(long, env = "ENI_IPAM_KUBE_URL")]
    pub kube_url: Option<String>,
    /// Pool knobs written into the ENINode when the agent creates it, only those given: there
    /// they win over the cluster-wide knobs (the operator's knobs ConfigMap), so leave them
    /// unset unless every node of this DaemonSet must differ from the cluster (an existing
    /// ENINode keeps its own, so a per-node edit survives restarts).
    #[command(flatten)]
    pub knobs: KnobArgs,
    /// Subnet new ENIs of this node may use, written into a new ENINode (repeat; none: the
    /// cluster-wide knobs decide).
    #[arg(long = "eni-subnet", env = "ENI_IPAM_ENI_SUBNETS", value_delimiter = ' ')]
    pub eni_subnets: Vec<String>,
    /// Tag a subnet must carry to be used for new ENIs: KEY=VALUE (repeat).
    #[arg(long = "eni-subnet-tag", env = "ENI_IPAM_ENI_SUBNET_TAGS", value_delimiter = ' ', value_parser = parse_tag)]
    pub eni_subnet_tags: Vec<(String, String)>,
    /// Security group of new ENIs, written into a new ENINode (repeat; Alibaba needs one).
    #[arg(long = "eni-security-group", env = "ENI_IPAM_ENI_SECURITY_GROUPS", value_delimiter = ' ')]
    pub eni_security_groups: Vec<String>,
    /// Pod datapath: `ebpf` loads (or adopts after a restart) the eBPF programs and keeps their
    /// maps equal to the IPAM; `none` leaves pods to the kernel's policy routing alone (hosts
    /// without eBPF). Both keep the node's policy routing (see --node-routing).
    #[arg(long, env = "ENI_IPAM_DATAPATH", value_enum, default_value_t = DatapathMode::Ebpf)]
    pub datapath: DatapathMode,
    /// Extra destinations pods reach through the node's own stack instead of their ENI
    /// (externalIPs, load-balancer IPs), besides the service ranges and the node's addresses:
    /// CIDR, repeat or separate by spaces. Only with `--datapath=ebpf`.
    #[arg(long = "host-route", env = "ENI_IPAM_HOST_ROUTES", value_delimiter = ' ', value_parser = parse_prefix)]
    pub host_routes: Vec<Ipv4Prefix>,
    /// The cluster's service range (the apiserver's --service-cluster-ip-range): CIDR, repeat or
    /// separate by spaces. The eBPF datapath sends pods' traffic to it through the node's
    /// stack; needed with `--datapath=ebpf` when the cluster serves no ServiceCIDR (before 1.33).
    #[arg(long = "service-cidr", env = "ENI_IPAM_SERVICE_CIDRS", value_delimiter = ' ', value_parser = parse_prefix)]
    pub service_cidrs: Vec<Ipv4Prefix>,
    /// Destinations pods may not reach, e.g. the cloud's instance metadata service
    /// (169.254.169.254/32 on AWS, 100.100.100.200/32 on Alibaba Cloud): CIDR, repeat or
    /// separate by spaces. Pods' packets to them are dropped in the nft table `ip eni_ipam`
    /// (the eBPF datapath hands them to the stack); the node and hostNetwork pods still
    /// reach them. Needs --node-routing.
    #[arg(long = "block-pod-destination", env = "ENI_IPAM_BLOCK_POD_DESTINATIONS", value_delimiter = ' ', value_parser = parse_prefix)]
    pub blocked_destinations: Vec<Ipv4Prefix>,
    /// Policy routing per ENI and pod, the nft table `ip eni_ipam` and the sysctls it needs, in
    /// the agent's network namespace (the node's). `false` leaves the node's routing alone: only
    /// where something else keeps pod traffic on its ENI.
    #[arg(long, env = "ENI_IPAM_NODE_ROUTING", default_value_t = true, action = clap::ArgAction::Set)]
    pub node_routing: bool,
    /// How the eBPF programs attach to TC hooks: `tcx` (pinned links, Linux >= 6.6), `netlink`
    /// (clsact qdisc and tc filters, Linux >= 5.10), `auto` (tcx when the kernel has it).
    /// Only with `--datapath=ebpf`.
    #[arg(
        long = "tc-attach",
        env = "ENI_IPAM_TC_ATTACH",
        default_value = "auto",
        value_parser = PossibleValuesParser::new(AttachMode::NAMES).try_map(|name| name.parse::<AttachMode>())
    )]
    pub tc_attach: AttachMode,
}

impl Cli {
    /// The lost-pod reconciler's settings, when --pod-resources-socket is given.
    pub fn lost_pods(&self) -> Option<crate::lost_pods::LostPodsConfig> {
        (!self.pod_resources_socket.is_empty()).then(|| crate::lost_pods::LostPodsConfig {
            socket: PathBuf::from(&self.pod_resources_socket),
            grace: self.lost_pod_grace,
            cooldown: self.lost_pod_cooldown,
            timeout: Duration::from_secs(5),
        })
    }

    /// How the startup taint is removed, unless `--startup-taint=""`.
    pub fn startup_taint(&self) -> Option<crate::startup_taint::StartupTaint> {
        (!self.startup_taint.is_empty()).then(|| crate::startup_taint::StartupTaint {
            node: self.node_name.clone(),
            key: self.startup_taint.clone(),
            resource: (!self.startup_taint_resource.is_empty()).then(|| self.startup_taint_resource.clone()),
        })
    }

    /// How the capacity the device plugin advertises is counted.
    pub fn capacity_rule(&self) -> CapacityRule {
        CapacityRule { mode: self.capacity_mode, fixed: self.capacity }
    }

    /// What a new ENINode's spec gets from these flags.
    pub fn spec_defaults(&self) -> SpecDefaults {
        SpecDefaults {
            knobs: self.knobs.overrides(),
            first_interface_index: self.knobs.first_interface_index,
            subnet_ids: self.eni_subnets.iter().map(|s| s.as_str().into()).collect(),
            subnet_tags: self.eni_subnet_tags.iter().cloned().collect(),
            security_groups: self.eni_security_groups.iter().map(|s| s.as_str().into()).collect(),
        }
    }
}

fn parse_tag(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not a tag like kubernetes.io/role/pods=1 (KEY=VALUE)")),
    }
}

/// Which datapath forwards pod traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathMode {
    /// eBPF programs on pod veths and ENIs (production).
    Ebpf,
    /// No eBPF: the kernel routes pod traffic by the agent's policy routing.
    None,
}

fn parse_prefix(text: &str) -> Result<Ipv4Prefix, String> {
    let bad = || format!("{text:?} is not an IPv4 CIDR like 10.96.0.0/12");
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    Ipv4Prefix::new(addr.parse().map_err(|_| bad())?, len.parse().map_err(|_| bad())?).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_needs_none_of_the_agents_flags_and_the_agent_runs_no_task() {
        let task =
            Invocation::try_parse_from(["eni-ipam-agent", "uninstall", "--bpf-pin-dir", "/p"]).unwrap();
        let Invocation::Task(AgentCommand::Uninstall(args)) = task else { panic!("{task:?}") };
        assert_eq!(args.paths.bpf_pin_dir, PathBuf::from("/p"));
        assert_eq!(args.paths.cni_conf_file, "05-eni-ipam.conflist");
        let agent = Invocation::try_parse_from(["eni-ipam-agent", "--node-name", "n1"]).unwrap();
        let Invocation::Agent(cli) = agent else { panic!("{agent:?}") };
        assert_eq!(cli.node_name, "n1");
        assert!(Invocation::try_parse_from(["eni-ipam-agent"]).is_err(), "the agent needs --node-name");
        assert!(Invocation::try_parse_from(["eni-ipam-agent", "uninstall", "--node-name", "n1"]).is_err());
    }

    #[test]
    fn the_capacity_follows_the_instance_limit_unless_told() {
        let parse = |extra: &[&str]| {
            let argv = [&["eni-ipam-agent", "--node-name", "n1"][..], extra].concat();
            Invocation::try_parse_from(argv).map(|invocation| match invocation {
                Invocation::Agent(cli) => cli.capacity_rule(),
                task => panic!("{task:?}"),
            })
        };
        assert_eq!(parse(&[]).unwrap(), CapacityRule { mode: CapacityMode::InstanceLimit, fixed: 0 });
        assert_eq!(parse(&["--capacity-mode", "pool"]).unwrap().mode, CapacityMode::Pool);
        assert_eq!(parse(&["--capacity", "29"]).unwrap().fixed, 29);
        let error = parse(&["--capacity-mode", "limit"]).unwrap_err().to_string();
        assert!(error.contains("[possible values: instance-limit, pool]"), "{error}");
    }

    #[test]
    fn the_tc_attach_mode_is_auto_unless_named() {
        let parse = |extra: &[&str]| {
            let argv = [&["eni-ipam-agent", "--node-name", "n1"][..], extra].concat();
            Invocation::try_parse_from(argv).map(|invocation| match invocation {
                Invocation::Agent(cli) => cli.tc_attach,
                task => panic!("{task:?}"),
            })
        };
        assert_eq!(parse(&[]).unwrap(), AttachMode::Auto);
        assert_eq!(parse(&["--tc-attach", "netlink"]).unwrap(), AttachMode::Netlink);
        assert_eq!(parse(&["--tc-attach=tcx"]).unwrap(), AttachMode::Tcx);
        let error = parse(&["--tc-attach", "tc"]).unwrap_err().to_string();
        assert!(error.contains("[possible values: auto, tcx, netlink]"), "{error}");
    }
}
