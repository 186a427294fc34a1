//! Replies of flows the node's netfilter NATed go through the node's stack, where conntrack
//! reverses the NAT: a pod reaches a Service's virtual IP (a real DNAT rule in the node's
//! namespace, as kube-proxy writes) with the backend on its node and on another node, over
//! TCP and UDP. Without the rule that marks NATed flows (so without `nat_learn` recording
//! them) the fast path hands the backend's replies straight to the client, which rejects them
//! (needs root and iptables).

mod common;

use eni_ipam_netns_testbed as testbed;

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use common::{POD_A, POD_A2, POD_B, two_nodes};
use eni_ipam_datapath::{Datapath, Ipv4Prefix, abi::NAT_MARK};
use testbed::{Netns, Testbed, echo};

const BACKEND_HERE: Ipv4Addr = POD_A2;
const BACKEND_THERE: Ipv4Addr = POD_B;
const SERVICE_CIDR: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 0);
const VIP_HERE: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 10);
const VIP_THERE: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 11);
const TIMEOUT: Duration = Duration::from_secs(2);

fn run(ns: &Netns, program: &str, args: &[&str]) {
    let output = ns.command(program).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {program} ({e}): the NAT tests need iptables (scripts/install-test-tools)")
    });
    assert!(
        output.status.success(),
        "`{program} {}` in {} failed: {}",
        args.join(" "),
        ns.name(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A kube-proxy-like DNAT of `vip:port` to `backend` in the node's `nat` table.
fn dnat(node: &Netns, proto: &str, vip: Ipv4Addr, port: u16, backend: SocketAddr) {
    let (vip, port, backend) = (vip.to_string(), port.to_string(), backend.to_string());
    let rule = ["-t", "nat", "-A", "PREROUTING", "-d", &vip, "-p", proto, "--dport", &port];
    run(node, "iptables", &[&rule[..], &["-j", "DNAT", "--to-destination", &backend]].concat());
}

/// The agent's rule: packets of flows conntrack NATed carry NAT_MARK when they leave.
fn mark_nat_flows(node: &Netns) {
    let mark = format!("{NAT_MARK:#x}");
    let rule = ["-t", "mangle", "-A", "POSTROUTING", "-m", "conntrack", "--ctstate", "SNAT,DNAT"];
    run(node, "iptables", &[&rule[..], &["-j", "MARK", "--or-mark", &mark]].concat());
}

fn node0(bed: &Testbed) -> &Datapath {
    bed.nodes[0].datapath.as_ref().expect("started")
}

#[test]
fn nated_replies_go_through_conntrack_once_learned() {
    let mut bed = two_nodes("natflows");
    for node in 0..2 {
        bed.install_kernel_routing(node);
    }
    bed.datapath(0).set_host_routes(&[Ipv4Prefix::new(SERVICE_CIDR, 16).unwrap()]).unwrap();
    let tcp_here = echo::EchoServer::tcp(&bed.pods[1].ns, BACKEND_HERE);
    let tcp_there = echo::EchoServer::tcp(&bed.pods[2].ns, BACKEND_THERE);
    let udp_here = echo::EchoServer::udp(&bed.pods[1].ns, BACKEND_HERE);
    let udp_there = echo::EchoServer::udp(&bed.pods[2].ns, BACKEND_THERE);
    let node = &bed.nodes[0].ns;
    dnat(node, "tcp", VIP_HERE, 80, tcp_here.addr);
    dnat(node, "tcp", VIP_THERE, 80, tcp_there.addr);
    dnat(node, "udp", VIP_HERE, 53, udp_here.addr);
    dnat(node, "udp", VIP_THERE, 53, udp_there.addr);
    let services = [(VIP_HERE, "on the node"), (VIP_THERE, "on another node")];
    let client = &bed.pods[0].ns;
    let tcp = |vip: Ipv4Addr| echo::tcp_echo_client(client, SocketAddr::from((vip, 80)), 64 << 10, TIMEOUT);
    let udp = |vip: Ipv4Addr| {
        echo::udp_echo_client(client, SocketAddr::from((vip, 53)), 3, 56, Duration::from_millis(10)).received
    };

    // Without the mark nothing is learned: the fast path hands the replies (from the
    // backend's own address) to the client, which does not know them.
    let backend_before = node0(&bed).endpoint_counters(BACKEND_HERE).unwrap();
    for (vip, backend) in services {
        assert!(
            tcp(vip).is_err(),
            "TCP to a Service with the backend {backend} cannot work without learning"
        );
        assert_eq!(udp(vip), 0, "UDP to a Service with the backend {backend} cannot work without learning");
    }
    assert_eq!(node0(&bed).nat_flows().unwrap(), vec![], "nothing NAT-marked left the node");
    let backend_after = node0(&bed).endpoint_counters(BACKEND_HERE).unwrap();
    assert!(
        backend_after.since(&backend_before).tx_packets > 0,
        "the replies of the backend on the node took the fast path"
    );

    mark_nat_flows(&bed.nodes[0].ns);
    let backend_before = node0(&bed).endpoint_counters(BACKEND_HERE).unwrap();
    for (vip, backend) in services {
        if let Err(error) = tcp(vip) {
            panic!("TCP to a Service with the backend {backend}: {error}");
        }
        assert_eq!(udp(vip), 3, "UDP to a Service with the backend {backend}");
    }
    let backend_after = node0(&bed).endpoint_counters(BACKEND_HERE).unwrap();
    assert_eq!(
        backend_after.since(&backend_before).tx_packets,
        0,
        "every reply of the backend on the node went through the stack"
    );
    let learned = node0(&bed).nat_flows().unwrap();
    for (backend, proto) in
        [(tcp_here.addr, 6), (tcp_there.addr, 6), (udp_here.addr, 17), (udp_there.addr, 17)]
    {
        let SocketAddr::V4(backend) = backend else { unreachable!("IPv4 servers") };
        let found = learned.iter().any(|(key, _)| {
            key.saddr.to_ne_bytes() == backend.ip().octets()
                && u16::from_be(key.sport) == backend.port()
                && key.daddr.to_ne_bytes() == POD_A.octets()
                && key.proto == proto
        });
        assert!(
            found,
            "the reply tuple from {backend} to {POD_A} (protocol {proto}) is learned: {learned:?}"
        );
    }
}
