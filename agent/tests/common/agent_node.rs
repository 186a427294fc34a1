//! One node of the test bed (two ENIs into the VPC router) with the real agent running in
//! it, pods added and deleted through the real eni-ipam-cni; shared by the root tests of
//! the datapath and of the policy routing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use eni_ipam_datapath::Datapath;
use eni_ipam_netns_testbed::{Netns, Testbed, echo};
use serde_json::{Value, json};

use super::{Agent, address_of, run_plugin};

/// An address of the VPC fabric itself (the router answers it), outside every pod subnet.
pub const VPC_HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 200, 1);
/// Pool IP per ENI of the node: ENI index -> (IP, subnet, gateway).
pub const POOL: [(Ipv4Addr, &str, Ipv4Addr); 2] = [
    (Ipv4Addr::new(10, 0, 0, 10), "10.0.0.0/24", Ipv4Addr::new(10, 0, 0, 1)),
    (Ipv4Addr::new(10, 0, 1, 10), "10.0.1.0/24", Ipv4Addr::new(10, 0, 1, 1)),
];
pub const METRICS_ADDR: &str = "127.0.0.1:9966";
/// The cluster's service range (no apiserver here: given by flag).
pub const SERVICE_CIDR: &str = "10.100.0.0/16";

/// One node of the test bed with the agent running in it on the eBPF datapath.
pub struct AgentNode {
    // Fields drop in this order: the agent first, then pods, namespaces and pins.
    pub agent: Agent,
    pub pods: BTreeMap<String, Netns>,
    pub bed: Testbed,
    _dir: tempfile::TempDir,
    tag: String,
}

impl AgentNode {
    pub fn start(tag: &str) -> Self {
        let mut node = Self::prepare(tag);
        node.agent.restart();
        node
    }

    /// The node and the agent's configuration, the agent not started yet.
    pub fn prepare(tag: &str) -> Self {
        Self::prepare_with(tag, true)
    }

    /// The node and the agent's configuration with the eBPF datapath (`ebpf`) or with
    /// `--datapath=none` (kernel policy routing alone), the agent not started yet.
    pub fn prepare_with(tag: &str, ebpf: bool) -> Self {
        let bed = Testbed::new(tag, 1, &[]);
        bed.router.own_address(VPC_HOST);
        let mut ips = serde_json::Map::new();
        for (eni, (ip, cidr, gateway)) in POOL.iter().enumerate() {
            bed.assign_in_vpc(*ip, 0, eni);
            if eni == 0 {
                // Given, as an admin may pin it.
                bed.resolve_vpc_gateway(0, eni, *gateway);
            } else {
                // Resolved by the agent over ARP: the router answers for it, as the VPC does.
                bed.router.own_address(gateway);
            }
            let mac = bed.nodes[0].enis[eni].mac.to_string();
            ips.insert(
                ip.to_string(),
                json!({"eni": format!("eni-{eni}"), "mac": mac, "subnetCidr": cidr, "gateway": gateway.to_string()}),
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let mut agent = Agent::configure(dir.path(), &json!({ "ips": ips }));
        agent.netns = Some(bed.nodes[0].ns.path());
        agent.metrics_addr = METRICS_ADDR.into();
        agent.datapath_args = if ebpf {
            vec![
                "--datapath".into(),
                "ebpf".into(),
                "--bpf-pin-dir".into(),
                bed.nodes[0].pins.path().display().to_string(),
                "--service-cidr".into(),
                SERVICE_CIDR.into(),
            ]
        } else {
            vec!["--datapath".into(), "none".into()]
        };
        Self { agent, pods: BTreeMap::new(), bed, _dir: dir, tag: tag.to_owned() }
    }

    pub fn config(&self) -> Value {
        json!({"cniVersion": "1.0.0", "name": "eni", "type": "eni-ipam-cni", "socket": self.agent.socket, "timeoutSeconds": 5})
    }

    /// CNI ADD of a new pod through the real plugin, run in the node namespace; its IP.
    pub fn add_pod(&mut self, container: &str) -> Ipv4Addr {
        let pod = Netns::create(format!("eni-{}-{}-{container}", std::process::id(), self.tag));
        self.pods.insert(container.to_owned(), pod);
        address_of(&self.cni("ADD", container).unwrap()).parse().unwrap()
    }

    pub fn del_pod(&mut self, container: &str) {
        self.cni("DEL", container);
    }

    /// Runs the plugin as the runtime would, in the node namespace; its output.
    pub fn cni(&self, command: &str, container: &str) -> Option<Value> {
        let pod = self.pods[container].path();
        let node = self.bed.nodes[0].ns.name();
        let run =
            run_plugin(command, container, pod.to_str().unwrap(), "eth0", &self.config(), Some(node), "");
        assert!(run.ok, "{command} {container}: {}\nagent log:\n{}", run.raw, self.agent_log());
        run.stdout
    }

    /// The ENI index owning `ip` in the pool.
    pub fn owning_eni(ip: Ipv4Addr) -> usize {
        POOL.iter().position(|(pool_ip, _, _)| *pool_ip == ip).expect("a pool IP")
    }

    /// Packets the router received from each of the node's ENIs.
    pub fn router_rx(&self) -> Vec<u64> {
        self.bed.nodes[0].enis.iter().map(|e| self.bed.router.rx_packets(&e.router_link)).collect()
    }

    /// GET /metrics on the agent's admin port, inside the node namespace.
    pub fn metrics(&self) -> String {
        self.bed.nodes[0].ns.run(|| {
            let mut stream = TcpStream::connect(METRICS_ADDR).expect("connect to the agent's admin port");
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n").unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            text
        })
    }

    /// The datapath as the agent pinned it, adopted by the test to look inside.
    pub fn pinned(&self) -> Datapath {
        Datapath::load_or_adopt(self.bed.nodes[0].pins.path()).expect("adopt the agent's pins")
    }

    /// `count` UDP echoes 10 ms apart from a pod to the VPC host, in the background; the echo
    /// server comes along (keep it until they are done).
    pub fn spawn_vpc_echoes(
        &self,
        container: &str,
        count: u64,
    ) -> (echo::EchoServer, std::thread::JoinHandle<echo::UdpSummary>) {
        let server = echo::EchoServer::udp(&self.bed.router, VPC_HOST);
        let interval = Duration::from_millis(10);
        let client =
            echo::spawn_udp_echo_client(&self.pods[container], server.addr, count as u32, 56, interval);
        (server, client)
    }

    /// Pod veth attachments: TCX link pins (`links/`) or tc filter records (`filters/`).
    pub fn pod_link_pins(&self) -> Vec<String> {
        let pins = self.bed.nodes[0].pins.path();
        let mut names: Vec<String> = ["links", "filters"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(pins.join(sub)).ok())
            .flat_map(|entries| entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()))
            .collect();
        names.retain(|n| n.starts_with("pod-"));
        names.sort();
        names
    }

    pub fn agent_log(&self) -> String {
        std::fs::read_to_string(self.agent.dir.join("agent.log")).unwrap_or_default()
    }
}
