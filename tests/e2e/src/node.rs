//! One node of the bed: a network namespace (its ENIs are plugged in by the
//! VPC fabric), a management link to the host where the stand-in apiserver
//! listens (the node's primary network, as far as the agent is concerned),
//! and the real agent (eBPF datapath), device plugin and a test kubelet. The
//! namespace is the node's host network: the agent and the device plugin run
//! in it with the chart's ports, and so do the operator and the webhook
//! replicas the bed places on the node (`bed.rs`).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eni_ipam_netns_testbed::PinDir;
use eni_ipam_netns_testbed::netns::run;

use crate::cloud::Instance;
use crate::daemon::{Daemon, binary};
use crate::kubelet::{Cni, Kubelet};

/// How long a pod must be missing from its kubelet's pod-resources listing before the agent
/// frees its IP (`--lost-pod-grace`).
pub const LOST_POD_GRACE: Duration = Duration::from_secs(3);

/// Pool knobs every node's agent writes into its ENINode.
#[derive(Clone, Copy, Debug)]
pub struct Knobs {
    /// Free IPs kept ready.
    pub pre_allocate: u32,
    /// Most IPs in a pool.
    pub max_allocate: u32,
}

/// How a node's agent is started.
#[derive(Clone, Debug)]
pub struct AgentSetup {
    /// The agent's kubeconfig: the stand-in as seen from the node, with the bearer token the
    /// bed gave this node's agent (its service account's bound token, node name included).
    pub kubeconfig: PathBuf,
    /// Cloud flags (the security group of new ENIs).
    pub cloud_args: Vec<String>,
    /// Pool knobs.
    pub knobs: Knobs,
    /// `--metrics-addr` of the agent, as the chart renders it (host network).
    pub agent_metrics_addr: String,
    /// `--metrics-addr` of the device plugin, as the chart renders it (host network).
    pub device_plugin_metrics_addr: String,
    /// The datapath flags of the agent as the chart renders them (`--datapath`,
    /// `--tc-attach`, `--service-cidr`, `--host-route`, `--block-pod-destination`).
    pub datapath_args: Vec<String>,
    /// The startup taint flags of the agent as the chart renders them.
    pub startup_taint_args: Vec<String>,
}

/// A node.
pub struct Node {
    /// Node name.
    pub name: String,
    /// Its instance.
    pub instance: Instance,
    /// Its network namespace (`/var/run/netns/...`): the node's host network.
    pub netns: PathBuf,
    /// Its address on its primary network (the management link).
    pub address: Ipv4Addr,
    /// Its folder (state, sockets, logs).
    pub dir: PathBuf,
    /// Its kubelet.
    pub kubelet: Arc<Kubelet>,
    agent: Option<Daemon>,
    device_plugin: Option<Daemon>,
    setup: AgentSetup,
    pins: PinDir,
}

/// Gives the node namespace at `netns` a veth to the host (the bed's way to the apiserver
/// and the cloud): host side `host_ip/30`, node side the next address, of link scope. Returns the host side's link name and the node's address.
pub fn management_link(netns_name: &str, link: &str, host_ip: Ipv4Addr) -> (String, Ipv4Addr) {
    let node_ip = Ipv4Addr::from(u32::from(host_ip) + 1);
    let _ = Command::new("ip").args(["link", "del", link]).output();
    run("ip", &["link", "add", link, "type", "veth", "peer", "name", "mgmt", "netns", netns_name]);
    run("ip", &["addr", "add", &format!("{host_ip}/30"), "dev", link]);
    run("ip", &["link", "set", link, "up"]);
    // Link scope: the node's own traffic elsewhere (masquerade, replies, probes) takes its
    // primary ENI's address, as on a cloud node, which has no such link.
    run("ip", &["-n", netns_name, "addr", "add", &format!("{node_ip}/30"), "dev", "mgmt", "scope", "link"]);
    run("ip", &["-n", netns_name, "link", "set", "mgmt", "up"]);
    (link.to_owned(), node_ip)
}

impl Node {
    /// Starts the node's kubelet, agent and device plugin.
    pub fn start(
        name: &str,
        instance: Instance,
        netns: PathBuf,
        address: Ipv4Addr,
        dir: &Path,
        kubelet: Arc<Kubelet>,
        setup: AgentSetup,
    ) -> Self {
        std::fs::create_dir_all(dir).expect("create the node folder");
        let pins = PinDir::new(name);
        let mut node = Self {
            name: name.to_owned(),
            instance,
            netns,
            address,
            dir: dir.to_owned(),
            kubelet,
            agent: None,
            device_plugin: None,
            setup,
            pins,
        };
        node.start_agent();
        node.start_device_plugin();
        node
    }

    /// The agent's socket.
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("agent.sock")
    }

    /// How the kubelet runs the CNI plugin here.
    pub fn cni(netns: &Path, dir: &Path, conflist: &serde_json::Value) -> Cni {
        let ours = binary("eni-ipam-cni");
        let here = ours.parent().expect("a binary has a folder").to_owned();
        Cni {
            conflist: conflist.clone(),
            // Ours, and the standard plugins (portmap) where Debian's package puts them.
            bin_dirs: vec![here, PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            node_netns: netns.to_owned(),
            agent_socket: dir.join("agent.sock"),
        }
    }

    /// Starts the agent (again), telling it which containers still run, and waits for its socket.
    pub fn start_agent(&mut self) {
        if let Some(mut old) = self.agent.take() {
            old.kill();
        }
        let live = self.dir.join("live-containers");
        std::fs::write(&live, self.kubelet.containers().join("\n") + "\n").expect("write live containers");
        let _ = std::fs::remove_file(self.agent_socket());
        let knobs = self.setup.knobs;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(binary("eni-ipam-agent"))
            .args(["--node-name", &self.name])
            .env("KUBECONFIG", &self.setup.kubeconfig)
            .args(["--metrics-addr", &self.setup.agent_metrics_addr])
            .args(&self.setup.datapath_args)
            .args(&self.setup.startup_taint_args)
            .arg("--bpf-pin-dir")
            .arg(self.pins.path())
            .arg("--socket")
            .arg(self.agent_socket())
            .arg("--state-file")
            .arg(self.dir.join("state.json"))
            .arg("--live-containers-file")
            .arg(&live)
            // As the chart runs it (agent.lostPods), with test-short timings: the IP of a pod
            // this node's kubelet no longer runs is freed 3 s after, and cools down for 2 s.
            .arg("--pod-resources-socket")
            .arg(self.kubelet.pod_resources_socket())
            .args([
                "--lost-pod-grace",
                &format!("{}ms", LOST_POD_GRACE.as_millis()),
                "--lost-pod-cooldown",
                "2s",
            ])
            .args(["--ipam-node-update-rate", "200ms", "--eninode-resync", "1s"])
            .args(["--pre-allocate", &knobs.pre_allocate.to_string()])
            .args(["--max-allocate", &knobs.max_allocate.to_string()])
            .args(&self.setup.cloud_args)
            .env("RUST_LOG", "info");
        self.agent =
            Some(Daemon::spawn(&format!("agent of {}", self.name), command, &self.dir.join("agent.log")));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.agent_socket().exists() {
            let agent = self.agent.as_mut().expect("just started");
            assert!(agent.running(), "the agent of {} exited:\n{}", self.name, agent.tail(30));
            assert!(
                Instant::now() < deadline,
                "the agent of {} made no socket in 30 s:\n{}",
                self.name,
                agent.tail(30)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL the agent (a crash), leaving the datapath pinned.
    pub fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill();
        }
    }

    fn start_device_plugin(&mut self) {
        // On the node's network, as the chart runs it: its port shares the node with the others'.
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns.display()))
            .arg("--")
            .arg(binary("eni-ipam-device-plugin"))
            .arg("--device-plugin-dir")
            .arg(self.kubelet.device_plugin_dir())
            .arg("--agent-socket")
            .arg(self.agent_socket())
            .arg("--pod-resources-socket")
            .arg(self.kubelet.pod_resources_socket())
            .args(["--poll-interval", "200ms", "--max-slots", "110"])
            .args(["--metrics-addr", &self.setup.device_plugin_metrics_addr])
            .env("RUST_LOG", "info");
        self.device_plugin = Some(Daemon::spawn(
            &format!("device plugin of {}", self.name),
            command,
            &self.dir.join("device-plugin.log"),
        ));
    }

    /// Last lines of the agent's log.
    pub fn agent_log(&self, lines: usize) -> String {
        self.agent.as_ref().map(|a| a.tail(lines)).unwrap_or_default()
    }

    /// Whether every daemon of the node still runs.
    pub fn healthy(&mut self) -> bool {
        self.agent.as_mut().is_some_and(Daemon::running)
            && self.device_plugin.as_mut().is_some_and(Daemon::running)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kubelet.stop();
        if let Some(mut a) = self.agent.take() {
            a.kill();
        }
        if let Some(mut d) = self.device_plugin.take() {
            d.kill();
        }
    }
}
