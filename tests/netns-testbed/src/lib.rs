//! A VPC in network namespaces: a "router" namespace (the VPC fabric), "node" namespaces
//! with two ENIs each (veth pairs into the router), and pods (namespaces behind veths into
//! their node). The router routes each pod IP to the ENI that owns it, as the VPC knows
//! secondary IPs. Only private addresses inside namespaces this test bed creates are used;
//! the host's own namespace is never touched.
//!
//! Shared by the datapath's tests (which drive the `Datapath` library directly) and the
//! agent's (which run the agent and CNI binaries in a node namespace). Needs root and bpffs.

pub mod echo;
pub mod fabric;
pub mod frames;
pub mod netns;
pub mod source_check;
pub mod traffic;

use std::{collections::BTreeMap, net::Ipv4Addr};

use eni_ipam_datapath::{AttachMode, Datapath, DatapathObject, EndpointInfo, MacAddr};
pub use netns::{Netns, PinDir, require_root_and_bpffs};

pub const ENIS_PER_NODE: usize = 2;
/// Link-local next hop the pods route through (answered by a static neighbour entry).
const POD_GATEWAY: &str = "169.254.1.1";
/// Link-local next hop of the kernel-routing variant, resolved statically to the router.
const VPC_GATEWAY: &str = "169.254.255.1";

pub struct PodSpec {
    pub node: usize,
    pub eni: usize,
    pub ip: Ipv4Addr,
}

pub struct Pod {
    pub ns: Netns,
    pub ip: Ipv4Addr,
    pub node: usize,
    pub eni: usize,
    /// Host-side veth name in the node namespace.
    pub veth: String,
    pub endpoint: EndpointInfo,
}

pub struct Eni {
    pub name: String,
    pub ifindex: u32,
    pub mac: MacAddr,
    /// The router's end of the ENI, whose MAC is the gateway MAC.
    pub router_link: String,
    pub gateway_mac: MacAddr,
}

pub struct Node {
    /// Dropped first: the handle goes away before its namespace and pins.
    pub datapath: Option<Datapath>,
    pub ns: Netns,
    pub enis: Vec<Eni>,
    pub pins: PinDir,
}

pub struct Testbed {
    pub pods: Vec<Pod>,
    pub nodes: Vec<Node>,
    pub router: Netns,
    /// How [`Testbed::start_datapath`] attaches the programs: `ENI_IPAM_TEST_TC_ATTACH`
    /// (`auto`, `tcx`, `netlink`) or `auto`.
    pub attach_mode: AttachMode,
}

impl Testbed {
    /// Builds `nodes` nodes and the given pods; `tag` makes names unique within the process.
    pub fn new(tag: &str, nodes: usize, pods: &[PodSpec]) -> Self {
        require_root_and_bpffs();
        let prefix = format!("eni-{}-{tag}", std::process::id());
        let router = Netns::create(format!("{prefix}-router"));
        router.sysctl("net.ipv4.ip_forward", "1");
        let attach_mode = match std::env::var("ENI_IPAM_TEST_TC_ATTACH") {
            Ok(mode) => mode.parse().unwrap_or_else(|e| panic!("ENI_IPAM_TEST_TC_ATTACH: {e}")),
            Err(_) => AttachMode::Auto,
        };
        let mut bed = Self { pods: Vec::new(), nodes: Vec::new(), router, attach_mode };
        for n in 0..nodes {
            let ns = Netns::create(format!("{prefix}-node{n}"));
            let mut enis = Vec::new();
            for e in 0..ENIS_PER_NODE {
                let name = format!("eni{e}");
                let router_link = format!("n{n}e{e}");
                ns.veth_into(&name, &router_link, &bed.router);
                let (ifindex, mac) = ns.link(&name);
                let (_, gateway_mac) = bed.router.link(&router_link);
                enis.push(Eni { name, ifindex, mac, router_link, gateway_mac });
            }
            let pins = PinDir::new(&format!("{tag}-node{n}"));
            bed.nodes.push(Node { datapath: None, ns, enis, pins });
        }
        for (k, spec) in pods.iter().enumerate() {
            bed.add_pod(&prefix, k, spec);
        }
        bed
    }

    fn add_pod(&mut self, prefix: &str, k: usize, spec: &PodSpec) {
        let node = &self.nodes[spec.node];
        let ns = Netns::create(format!("{prefix}-pod{k}"));
        let veth = format!("vpod{k}");
        node.ns.ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", ns.name()]);
        node.ns.ip(&["link", "set", &veth, "up"]);
        let (veth_ifindex, veth_mac) = node.ns.link(&veth);
        let (_, pod_mac) = ns.link("eth0");
        let ip = spec.ip.to_string();
        ns.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", POD_GATEWAY, "dev", "eth0", "scope", "link"]);
        ns.ip(&["route", "add", "default", "via", POD_GATEWAY, "dev", "eth0"]);
        ns.permanent_neighbour(POD_GATEWAY, veth_mac, "eth0");
        self.assign_in_vpc(spec.ip, spec.node, spec.eni);
        let eni = &self.nodes[spec.node].enis[spec.eni];
        let endpoint = EndpointInfo {
            pod_veth_ifindex: veth_ifindex,
            pod_mac,
            eni_ifindex: eni.ifindex,
            eni_mac: eni.mac,
            gateway_mac: eni.gateway_mac,
        };
        self.pods.push(Pod { ns, ip: spec.ip, node: spec.node, eni: spec.eni, veth, endpoint });
    }

    /// The VPC fabric's side of a secondary IP: `ip` lives behind ENI `eni` of `node` (a route
    /// and a static neighbour entry in the router, as the VPC knows its ENIs' addresses).
    pub fn assign_in_vpc(&self, ip: Ipv4Addr, node: usize, eni: usize) {
        let eni = &self.nodes[node].enis[eni];
        self.router.ip(&["route", "replace", &format!("{ip}/32"), "dev", &eni.router_link]);
        self.router.permanent_neighbour(&ip.to_string(), eni.mac, &eni.router_link);
    }

    /// The node has resolved the VPC gateway `gateway` of ENI `eni` (as ARP would on a cloud
    /// node): a neighbour entry on the ENI link with the router end's MAC. The agent reads the
    /// gateway MAC of its endpoints from there.
    pub fn resolve_vpc_gateway(&self, node: usize, eni: usize, gateway: Ipv4Addr) {
        let n = &self.nodes[node];
        let eni = &n.enis[eni];
        n.ns.permanent_neighbour(&gateway.to_string(), eni.gateway_mac, &eni.name);
    }

    /// The endpoints the agent of `node` owns.
    pub fn desired(&self, node: usize) -> BTreeMap<Ipv4Addr, EndpointInfo> {
        self.pods.iter().filter(|p| p.node == node).map(|p| (p.ip, p.endpoint)).collect()
    }

    /// What the agent does on start: load (or adopt), attach to ENIs and pod veths, and
    /// reconcile the maps with its state.
    pub fn start_datapath(&mut self, node: usize) -> &mut Datapath {
        self.start_datapath_from(node, &eni_ipam_datapath::CURRENT)
    }

    /// [`Testbed::start_datapath`] with another build of the programs (upgrade tests).
    pub fn start_datapath_from(&mut self, node: usize, object: &'static DatapathObject) -> &mut Datapath {
        let desired = self.desired(node);
        let veths: Vec<u32> = desired.values().map(|e| e.pod_veth_ifindex).collect();
        let n = &mut self.nodes[node];
        let enis: Vec<u32> = n.enis.iter().map(|e| e.ifindex).collect();
        let pin_dir = n.pins.path().to_owned();
        let mode = self.attach_mode;
        let datapath = n.ns.run(move || {
            let mut datapath = Datapath::load_object(&pin_dir, mode, object).expect("load the datapath");
            for eni in enis {
                datapath.attach_eni(eni).expect("attach to ENI");
            }
            for veth in veths {
                datapath.attach_pod(veth).expect("attach to pod veth");
            }
            datapath.reconcile(&desired).expect("reconcile endpoints");
            datapath
        });
        n.datapath.insert(datapath)
    }

    pub fn datapath(&mut self, node: usize) -> &mut Datapath {
        self.nodes[node].datapath.as_mut().expect("start_datapath first")
    }

    /// Attaches (or detaches) the datapath of `node` to its ENIs and pod veths.
    pub fn set_ebpf_attached(&mut self, node: usize, attached: bool) {
        let veths: Vec<u32> = self.desired(node).values().map(|e| e.pod_veth_ifindex).collect();
        let n = &mut self.nodes[node];
        let enis: Vec<u32> = n.enis.iter().map(|e| e.ifindex).collect();
        let datapath = n.datapath.as_mut().expect("start_datapath first");
        n.ns.run(move || {
            for eni in enis {
                if attached { datapath.attach_eni(eni) } else { datapath.detach_eni(eni) }
                    .expect("(de)attach ENI");
            }
            for veth in veths {
                if attached { datapath.attach_pod(veth) } else { datapath.detach_pod(veth) }
                    .expect("(de)attach pod");
            }
        });
    }

    /// Configures kernel policy routing by source on `node` (the peers' way, and the agent's
    /// for what leaves the fast path): one table per ENI with a default route to the VPC
    /// gateway, `ip rule to <pod ip> lookup main` (pref 512: local pods first) and
    /// `ip rule from <pod ip> lookup <table of its ENI>` (pref 1536). It forwards everything
    /// when the eBPF programs are detached, and what they pass to the stack when attached.
    pub fn install_kernel_routing(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        n.ns.sysctl("net.ipv4.ip_forward", "1");
        for (e, eni) in n.enis.iter().enumerate() {
            let table = (100 + e).to_string();
            n.ns.permanent_neighbour(VPC_GATEWAY, eni.gateway_mac, &eni.name);
            n.ns.ip(&[
                "route",
                "add",
                "default",
                "via",
                VPC_GATEWAY,
                "dev",
                &eni.name,
                "onlink",
                "table",
                &table,
            ]);
        }
        for pod in self.pods.iter().filter(|p| p.node == node) {
            let ip = pod.ip.to_string();
            n.ns.ip(&["route", "add", &format!("{ip}/32"), "dev", &pod.veth]);
            n.ns.permanent_neighbour(&ip, pod.endpoint.pod_mac, &pod.veth);
            let table = (100 + pod.eni).to_string();
            n.ns.ip(&["rule", "add", "to", &ip, "lookup", "main", "priority", "512"]);
            n.ns.ip(&["rule", "add", "from", &ip, "lookup", &table, "priority", "1536"]);
        }
    }
}
