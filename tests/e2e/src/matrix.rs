//! The traffic matrix of issue 29, on one bed (one cloud, one datapath): the traffic a real
//! cluster carries besides pod to pod, with kube-proxy's rules (`kube_proxy.rs`), a DNS
//! server behind a ClusterIP (`dns.rs`), hostPort through the chained portmap plugin, an
//! outside client, and the VPC's source check counting what a real VPC would drop.
//!
//! Pods, pinned to nodes, each with an address of a secondary ENI (on EC2 pods are created
//! until one gets such an address): `client` and `near` on node 0, `far`, `dns` and
//! `hostport` on node 1; the outside client is `fabric::OUTSIDE_CLIENT` behind the VPC router. Each cell makes `rounds` TCP exchanges (connect, echo) and, where the target
//! speaks UDP, `rounds` UDP datagrams; it counts failed connections, datagrams not echoed,
//! and the source-check drops while it ran.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use eni_ipam_kube_standin::{ENDPOINTSLICES, SERVICES};
use eni_ipam_netns_testbed::netns::run_in;
use serde_json::{Value, json};

use crate::bed::Bed;
use crate::chart::arg_value;
use crate::daemon::Daemon;
use crate::dns;
use crate::node::Knobs;
use crate::probe::{Echo, tcp_exchange, udp_exchange};

/// The port every echo server listens on (pods and nodes).
pub const ECHO_PORT: u16 = 8080;
/// The hostPort of the `hostport` pod.
pub const HOST_PORT: u16 = 18080;
const NODE_PORT_CLUSTER: u16 = 30080;
const NODE_PORT_LOCAL: u16 = 30081;

/// One cell's numbers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cell {
    /// What was tried.
    pub name: String,
    /// TCP connections (and DNS lookups) tried.
    pub tried: u64,
    /// Of those, failed.
    pub failed: u64,
    /// UDP datagrams sent.
    pub datagrams: u64,
    /// Of those, not echoed.
    pub lost: u64,
    /// Packets the VPC's source check dropped meanwhile.
    pub source_drops: u64,
    /// The first failure, for the reader.
    pub first_error: String,
}

impl Cell {
    /// Whether everything went through.
    pub fn clean(&self) -> bool {
        self.failed == 0 && self.lost == 0 && self.source_drops == 0
    }
}

/// The matrix of one bed as a table.
pub fn table(title: &str, cells: &[Cell]) -> String {
    let mut out = format!("{title}\n");
    out += "| cell                                    | tried | failed | datagrams | lost | source-check drops | first failure |\n";
    out += "|-----------------------------------------|------:|-------:|----------:|-----:|-------------------:|---------------|\n";
    for c in cells {
        out += &format!(
            "| {:<39} | {:>5} | {:>6} | {:>9} | {:>4} | {:>18} | {} |\n",
            c.name, c.tried, c.failed, c.datagrams, c.lost, c.source_drops, c.first_error
        );
    }
    out
}

/// A ClusterIP Service `name` on port 80 (TCP and UDP) to the echo port of `backend`
/// (pod name, IP, node), with its EndpointSlice, as the endpoints controller writes it.
fn service(bed: &Bed, name: &str, ip: &str, backend: (&str, Ipv4Addr, &str), node_port: Option<(u16, &str)>) {
    let ports: Vec<Value> = ["TCP", "UDP"]
        .iter()
        .map(|p| {
            let mut port =
                json!({"name": p.to_lowercase(), "protocol": p, "port": 80, "targetPort": ECHO_PORT});
            if let Some((np, _)) = node_port {
                port["nodePort"] = json!(np);
            }
            port
        })
        .collect();
    let mut spec = json!({"clusterIP": ip, "clusterIPs": [ip], "ports": ports, "selector": {"app": backend.0}, "type": "ClusterIP"});
    if let Some((_, policy)) = node_port {
        spec["type"] = json!("NodePort");
        spec["externalTrafficPolicy"] = json!(policy);
    }
    create_service(bed, name, spec, backend, &[("tcp", "TCP", ECHO_PORT), ("udp", "UDP", ECHO_PORT)]);
}

fn create_service(
    bed: &Bed,
    name: &str,
    spec: Value,
    backend: (&str, Ipv4Addr, &str),
    ports: &[(&str, &str, u16)],
) {
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec});
    bed.standin.create(SERVICES, svc).unwrap_or_else(|e| panic!("create Service {name}: {e}"));
    let slice_ports: Vec<Value> =
        ports.iter().map(|(n, p, port)| json!({"name": n, "protocol": p, "port": port})).collect();
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": format!("{name}-e2e"), "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
        "endpoints": [{"addresses": [backend.1.to_string()], "conditions": {"ready": true}, "nodeName": backend.2}],
        "ports": slice_ports});
    bed.standin
        .create(ENDPOINTSLICES, slice)
        .unwrap_or_else(|e| panic!("create the EndpointSlice of {name}: {e}"));
}

/// Where a cell's traffic starts.
#[derive(Clone)]
struct From {
    netns: PathBuf,
    /// The source address to bind (a node's probe), if any.
    source: Option<Ipv4Addr>,
}

/// What runs on the bed for the matrix: echo servers and dnsmasq (stopped when dropped).
struct Running {
    _echo: Vec<Echo>,
    _dnsmasq: Daemon,
}

/// The primary (device index 0) address of `node`'s instance, as DHCP set it on the node.
fn primary_address(netns: &std::path::Path) -> Ipv4Addr {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "ip", "-4", "-o", "addr", "show", "dev", "eni0"])
        .output()
        .expect("ip addr in a node namespace");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!("the node at {} has no address on its primary ENI: {text}", netns.display())
        })
}

/// Pool knobs of a matrix bed: room for the pods that fill an EC2 primary ENI first.
pub const KNOBS: Knobs = Knobs { pre_allocate: 3, max_allocate: 24 };

/// Brings a bed with two nodes or more up for the matrix and runs every cell `rounds` times.
pub async fn run(bed: &mut Bed, rounds: u32, say: &(dyn Fn(&str) + Sync)) -> Vec<Cell> {
    assert!(bed.config.nodes >= 2, "the matrix needs two nodes");
    say(&format!("matrix {} on {}: nodes join", bed.config.datapath, bed.config.cloud));
    bed.join(bed.config.nodes).await;
    tokio::task::block_in_place(|| bed.start_webhook());
    bed.start_operators();
    let (n0, n1) = (bed.nodes[0].name.clone(), bed.nodes[1].name.clone());
    let echo_ports = json!([]);
    let host_ports = json!([{"containerPort": ECHO_PORT, "hostPort": HOST_PORT, "protocol": "TCP"},
        {"containerPort": ECHO_PORT, "hostPort": HOST_PORT, "protocol": "UDP"}]);
    let mut names = std::collections::BTreeMap::new();
    for (role, node, ports) in [
        ("client", 0, &echo_ports),
        ("near", 0, &echo_ports),
        ("far", 1, &echo_ports),
        ("dns", 1, &echo_ports),
        ("hostport", 1, &host_ports),
    ] {
        names.insert(role, on_secondary_eni(bed, role, node, ports).await);
    }
    let pod = |role: &str| {
        let node = if ["client", "near"].contains(&role) { 0 } else { 1 };
        let running = bed.nodes[node].kubelet.running();
        let key = format!("default/{}", names[role]);
        let p = running.get(&key).unwrap_or_else(|| panic!("pod {key} runs")).clone();
        (p.netns.path(), p.ip)
    };
    let (client, near, far, dns_pod, hostport) =
        (pod("client"), pod("near"), pod("far"), pod("dns"), pod("hostport"));
    let node_ns: Vec<PathBuf> = bed.nodes.iter().map(|n| n.netns.clone()).collect();
    let node_ip: Vec<Ipv4Addr> = node_ns.iter().map(|ns| primary_address(ns)).collect();
    let outside = bed.fabric().outside_client().path();

    // Services, as a cluster would have them.
    let ips = ["10.100.0.10", "10.100.0.11", "10.100.0.12", "10.100.0.20", "10.100.0.21"];
    service(bed, "near", ips[0], ("near", near.1, &n0), None);
    service(bed, "far", ips[1], ("far", far.1, &n1), None);
    service(bed, "self", ips[2], ("client", client.1, &n0), None);
    service(bed, "np-cluster", ips[3], ("far", far.1, &n1), Some((NODE_PORT_CLUSTER, "Cluster")));
    service(bed, "np-local", ips[4], ("far", far.1, &n1), Some((NODE_PORT_LOCAL, "Local")));
    let dns_ip: Ipv4Addr = "10.100.0.53".parse().expect("an address");
    let dns_spec = json!({"clusterIP": dns_ip.to_string(), "type": "ClusterIP", "selector": {"app": "dns"},
        "ports": [{"name": "dns", "protocol": "UDP", "port": 53}, {"name": "dns-tcp", "protocol": "TCP", "port": 53}]});
    create_service(
        bed,
        "kube-dns",
        dns_spec,
        ("dns", dns_pod.1, &n1),
        &[("dns", "UDP", 53), ("dns-tcp", "TCP", 53)],
    );
    let records: Vec<(String, Ipv4Addr)> = ["near", "far", "self"]
        .iter()
        .zip(ips)
        .map(|(name, ip)| (format!("{name}.default.svc.{}", dns::DOMAIN), ip.parse().expect("an address")))
        .collect();
    let far_name = records[1].0.clone();
    let far_ip = records[1].1;
    let mut echo = Vec::new();
    let nodes = [(node_ns[0].clone(), node_ip[0]), (node_ns[1].clone(), node_ip[1])];
    for (ns, ip) in [&client, &near, &far, &hostport, &nodes[0], &nodes[1]] {
        echo.push(tokio::task::block_in_place(|| Echo::start(ns, *ip, ECHO_PORT)));
    }
    let running =
        Running { _echo: echo, _dnsmasq: dns::dnsmasq(&dns_pod.0, &records, &bed.dir.join("dnsmasq.log")) };
    wait_for_kube_proxy(bed, &node_ns).await;

    let from_client = From { netns: client.0.clone(), source: None };
    let from_outside = From { netns: outside, source: None };
    let at = |ip: Ipv4Addr, port: u16| SocketAddrV4::new(ip, port);
    let cluster_ip = |i: usize| at(ips[i].parse().expect("an address"), 80);
    let plan: Vec<(&str, From, Vec<SocketAddrV4>)> = vec![
        ("pod->pod, same node", from_client.clone(), vec![at(near.1, ECHO_PORT)]),
        ("pod->pod, other node", from_client.clone(), vec![at(far.1, ECHO_PORT)]),
        ("pod->ClusterIP, backend same node", from_client.clone(), vec![cluster_ip(0)]),
        ("pod->ClusterIP, backend other node", from_client.clone(), vec![cluster_ip(1)]),
        ("pod->ClusterIP, backend itself", from_client.clone(), vec![cluster_ip(2)]),
        (
            "outside->NodePort, Cluster (both nodes)",
            from_outside.clone(),
            vec![at(node_ip[0], NODE_PORT_CLUSTER), at(node_ip[1], NODE_PORT_CLUSTER)],
        ),
        ("outside->NodePort, Local", from_outside.clone(), vec![at(node_ip[1], NODE_PORT_LOCAL)]),
        ("outside->hostPort", from_outside.clone(), vec![at(node_ip[1], HOST_PORT)]),
        (
            "node->pod (probe from node address)",
            From { netns: node_ns[0].clone(), source: Some(node_ip[0]) },
            vec![at(near.1, ECHO_PORT)],
        ),
        (
            "pod->node (own and other)",
            from_client.clone(),
            vec![at(node_ip[0], ECHO_PORT), at(node_ip[1], ECHO_PORT)],
        ),
    ];
    let mut cells = Vec::new();
    for (name, from, targets) in plan {
        let before = bed.source_check_drops();
        let mut cell = tokio::task::block_in_place(|| exchange(name, &from, &targets, rounds));
        cell.source_drops = bed.source_check_drops() - before;
        say(&format!(
            "  {name}: {}/{} failed, {}/{} lost, {} source-check drops",
            cell.failed, cell.tried, cell.lost, cell.datagrams, cell.source_drops
        ));
        cells.push(cell);
    }
    cells.extend(instance_metadata(bed, &client.0, &node_ns[0], say));
    let before = bed.source_check_drops();
    let mut cell = tokio::task::block_in_place(|| {
        lookups(&client.0, SocketAddrV4::new(dns_ip, 53), &far_name, far_ip, rounds)
    });
    cell.source_drops = bed.source_check_drops() - before;
    say(&format!(
        "  {}: {}/{} failed, {}/{} lost",
        cell.name, cell.failed, cell.tried, cell.lost, cell.datagrams
    ));
    cells.push(cell);
    drop(running);
    cells
}

/// The instance metadata service the chart keeps pods from (`--block-pod-destination`, for
/// the bed's cloud), served where the cloud serves it: by the VPC router, on port 80. Two
/// cells: the node (and so hostNetwork pods) is answered; a pod is refused (here a cell
/// counts the exchanges that got through as failed).
fn instance_metadata(
    bed: &Bed,
    pod: &std::path::Path,
    node: &std::path::Path,
    say: &(dyn Fn(&str) + Sync),
) -> Vec<Cell> {
    let blocked = arg_value(&bed.chart.agent_datapath_args, "--block-pod-destination")
        .expect("the chart blocks the instance metadata service by default (agent.blockInstanceMetadata)");
    let address: Ipv4Addr = blocked
        .strip_suffix("/32")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("--block-pod-destination={blocked} is not one address"));
    let router = bed.fabric().router().path();
    bed.fabric().router().own_address(address);
    let _server = tokio::task::block_in_place(|| Echo::start(&router, address, METADATA_PORT));
    let target = [SocketAddrV4::new(address, METADATA_PORT)];
    let node_cell = tokio::task::block_in_place(|| {
        exchange(
            "node->instance metadata (answered)",
            &From { netns: node.to_path_buf(), source: None },
            &target,
            REFUSED_ROUNDS,
        )
    });
    let pod_cell =
        tokio::task::block_in_place(|| refused("pod->instance metadata (refused)", pod, target[0]));
    for cell in [&node_cell, &pod_cell] {
        say(&format!(
            "  {}: {}/{} failed, {}/{} lost",
            cell.name, cell.failed, cell.tried, cell.lost, cell.datagrams
        ));
    }
    vec![node_cell, pod_cell]
}

/// The port the instance metadata service answers on.
const METADATA_PORT: u16 = 80;
/// Tries of a cell whose traffic must be refused (each waits out [`crate::probe::PATIENCE`]).
const REFUSED_ROUNDS: u32 = 2;

/// [`REFUSED_ROUNDS`] TCP and UDP exchanges from `from` that must all fail: one that gets an
/// answer counts as failed (TCP) or lost (UDP).
fn refused(name: &str, from: &std::path::Path, to: SocketAddrV4) -> Cell {
    let mut cell = Cell { name: name.to_owned(), ..Cell::default() };
    run_in(from, || {
        for round in 0..REFUSED_ROUNDS {
            cell.tried += 1;
            if tcp_exchange(None, to, round).is_ok() {
                cell.failed += 1;
                cell.first_error = format!("{to} answered over TCP: the block does not hold");
            }
            cell.datagrams += 1;
            if udp_exchange(None, to, round) {
                cell.lost += 1;
            }
        }
    });
    cell
}

/// Creates pods `role-0`, `role-1`, ... on node `node` until one runs with an address of a
/// secondary ENI (device index 1 and up: where a VPC's source check bites when the node's
/// stack routes by the main table), and returns its name. Pods that got an address of the
/// primary ENI stay (they hold those addresses), but those with `ports` (hostPorts) are
/// deleted. On ECS every pod address is on a secondary ENI; on EC2 the primary ENI's
/// addresses are used first.
async fn on_secondary_eni(bed: &Bed, role: &str, node: usize, ports: &Value) -> String {
    let node_name = bed.nodes[node].name.clone();
    for attempt in 0..24 {
        let name = format!("{role}-{attempt}");
        bed.create_pod_on(&name, &node_name, ports.clone()).await;
        bed.wait_all_running(Duration::from_secs(90)).await;
        let key = format!("default/{name}");
        let ip =
            bed.pod_ips().get(&key).map(|(_, ip)| *ip).unwrap_or_else(|| panic!("{key} runs with an IP"));
        let enis = bed.cloud.enis().await;
        let eni = enis.iter().find(|e| e.secondary_ips.contains(&ip));
        if eni.is_some_and(|e| e.device_index.unwrap_or(0) >= 1) {
            return name;
        }
        if ports.as_array().is_some_and(|p| !p.is_empty()) {
            bed.delete_pod(&name);
        }
    }
    panic!(
        "no pod on {node_name} got an address of a secondary ENI in 24 tries: raise the bed's max-allocate"
    );
}

/// Waits until kube-proxy's rules for every Service are on every node.
async fn wait_for_kube_proxy(bed: &Bed, nodes: &[PathBuf]) {
    bed.wait_for("kube-proxy's rules on every node", Duration::from_secs(20), |_| {
        nodes.iter().all(|ns| {
            let out = std::process::Command::new("nsenter")
                .arg(format!("--net={}", ns.display()))
                .args(["--", "iptables", "-w", "-t", "nat", "-S"])
                .output();
            out.is_ok_and(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.contains("10.100.0.53/32") && text.contains(&format!("--dport {NODE_PORT_LOCAL}"))
            })
        })
    })
    .await;
}

/// `rounds` TCP and UDP exchanges with each target, from `from`.
fn exchange(name: &str, from: &From, targets: &[SocketAddrV4], rounds: u32) -> Cell {
    let mut cell = Cell { name: name.to_owned(), ..Cell::default() };
    let from = from.clone();
    run_in(&from.netns.clone(), || {
        for round in 0..rounds {
            for to in targets {
                cell.tried += 1;
                if let Err(e) = tcp_exchange(from.source, *to, round) {
                    cell.failed += 1;
                    if cell.first_error.is_empty() {
                        cell.first_error = e;
                    }
                }
                cell.datagrams += 1;
                if !udp_exchange(from.source, *to, round) {
                    cell.lost += 1;
                }
            }
        }
    });
    cell
}

/// `rounds` lookups of `name` through the DNS Service over UDP and over TCP, each followed
/// by a TCP exchange with the address found.
fn lookups(client: &std::path::Path, server: SocketAddrV4, name: &str, want: Ipv4Addr, rounds: u32) -> Cell {
    let mut cell = Cell { name: "pod->DNS name (UDP and TCP 53)".into(), ..Cell::default() };
    run_in(client, || {
        for round in 0..rounds {
            let id = 0x4000 + round as u16;
            cell.datagrams += 1;
            if dns::resolve_udp(server.into(), name, id).map(|a| a.contains(&want)) != Ok(true) {
                cell.lost += 1;
            }
            cell.tried += 1;
            let found = dns::resolve_tcp(server.into(), name, id).and_then(|a| {
                let ip = a.first().copied().ok_or_else(|| format!("no A record for {name}"))?;
                tcp_exchange(None, SocketAddrV4::new(ip, 80), round)
            });
            if let Err(e) = found {
                cell.failed += 1;
                if cell.first_error.is_empty() {
                    cell.first_error = e;
                }
            }
        }
    });
    cell
}
