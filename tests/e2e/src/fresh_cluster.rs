//! Scenario 0: a fresh cluster. Every node joins (kubelet, agent, device
//! plugin) while no operator runs: no node has a pool and no pod can get an
//! IP. Then the chart's pods start the way the chart starts them: the webhook
//! and two operator replicas, each in a node's network namespace with the
//! command line the chart renders. Pods created while no pool exists wait;
//! every node reaches its pool and they run. Nothing here may need a pod IP
//! before the operator has given one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::bed::{Bed, ours};
use crate::node::Node;
use crate::scenarios::{CONVERGE, Run};

/// The IPv4 addresses of the network namespace at `netns` (`/proc/<pid>/ns/net` or a named one).
fn addresses_in(netns: &Path) -> BTreeSet<Ipv4Addr> {
    let output = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(["--", "ip", "-4", "-o", "addr", "show"])
        .output()
        .expect("run ip in a network namespace");
    assert!(
        output.status.success(),
        "ip addr in {}: {}",
        netns.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .collect()
}

/// (device, inode) of a namespace file: equal for two handles of one namespace.
fn namespace_id(path: &Path) -> (u64, u64) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (meta.dev(), meta.ino())
}

/// Asserts that process `pid` (`what`) runs on `node`'s host network: its network
/// namespace is the node's, not the bed's own, and the only addresses it has are the
/// node's (loopback aside, none of the host's).
fn assert_on_host_network_of(what: &str, pid: u32, node: &Node) {
    let own = Path::new("/proc").join(pid.to_string()).join("ns/net");
    assert_eq!(
        namespace_id(&own),
        namespace_id(&node.netns),
        "{what} runs in {}'s network namespace",
        node.name
    );
    assert_ne!(
        namespace_id(&own),
        namespace_id(Path::new("/proc/self/ns/net")),
        "{what} does not run in the bed's (root) network namespace"
    );
    let seen = addresses_in(&own);
    assert!(seen.contains(&node.address), "{what} has {}'s address {}: {seen:?}", node.name, node.address);
    let host: BTreeSet<Ipv4Addr> = addresses_in(Path::new("/proc/self/ns/net"));
    let shared: Vec<&Ipv4Addr> = seen.intersection(&host).filter(|a| !a.is_loopback()).collect();
    assert!(shared.is_empty(), "{what} has addresses of the host, not only the node's: {shared:?}");
}

fn pool_size(bed: &Bed, node: &str) -> usize {
    bed.eninodes().get(node).and_then(|n| n["spec"]["pool"].as_object().map(|p| p.len())).unwrap_or(0)
}

impl Run<'_> {
    /// Scenario 0: a fresh cluster, no pool anywhere; the chart's pods start as the chart
    /// starts them, every node reaches its pool, and pods created before that run.
    pub async fn fresh_cluster(&mut self) {
        let since = Instant::now();
        let calls = self.bed.cloud_counts();
        let nodes = self.bed.config.nodes;
        self.say(&format!("fresh cluster: {nodes} nodes join, with no operator and no webhook"));
        self.bed.join(nodes).await;
        self.bed
            .wait_for("every agent to register its ENINode", Duration::from_secs(30), |bed| {
                bed.eninodes().len() == nodes
            })
            .await;
        for node in &self.bed.nodes {
            assert_eq!(
                pool_size(self.bed, &node.name),
                0,
                "{} has no pool before any operator runs",
                node.name
            );
        }
        let enis = self.bed.cloud.enis().await;
        let early: Vec<String> = enis
            .iter()
            .filter(|e| ours(e) || !e.secondary_ips.is_empty())
            .map(|e| e.id.to_string())
            .collect();
        assert!(early.is_empty(), "no pod IP exists in the cloud before the operator runs: {early:?}");

        tokio::task::block_in_place(|| self.bed.start_webhook());
        // Pods come before any pool (the cluster's DNS would): admitted, not running. One has
        // no IP request (kube-system's): only the nodes' startup taint keeps it unplaced (row 0b).
        self.create_pods(nodes).await;
        self.create_unrequested_pod().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(self.bed.phases().get("Running"), None, "no pod runs while no node has a pool");

        self.say("fresh cluster: the webhook and two operators start as the chart starts them");
        self.bed.start_operators();
        tokio::task::block_in_place(|| self.bed.wait_operators_listening());
        for (what, pid, node) in self.bed.control_plane() {
            assert_on_host_network_of(&what, pid, node);
        }
        let pre = self.bed.config.knobs.pre_allocate as usize;
        let took = self
            .bed
            .wait_for("every node to reach its pool", CONVERGE, |bed| {
                bed.nodes.iter().all(|n| pool_size(bed, &n.name) >= pre)
            })
            .await;
        self.say(&format!(
            "fresh cluster: every node has its pool of {pre} {took:?} after the operators started"
        ));
        assert!(self.bed.leader().is_some(), "an operator holds the Lease");
        // The leader answers on its node's address, at the port the chart gives it.
        assert!(
            self.bed.leader_metrics().await.is_some(),
            "the leader's metrics answer on its node's address"
        );
        self.finish("0 fresh cluster", since, calls, 0).await;
    }
}
