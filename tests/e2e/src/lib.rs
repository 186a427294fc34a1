//! eni-ipam end to end on one machine (issue 12): every part, real where it can
//! run here, put together and broken on purpose.
//!
//! - The cloud: the Alibaba emulator, or moto's EC2 behind the test bed's proxy.
//! - The cluster: the stand-in apiserver (no real kube-apiserver runs here),
//!   which calls the real webhook binary over TLS on every Pod create; a
//!   scheduler honouring `eni-ipam.io/ip`; a test kubelet per node.
//! - Nodes: network namespaces whose ENIs the VPC fabric plugs in as the
//!   cloud attaches them, each running the real agent (eBPF datapath), CNI
//!   plugin and device plugin binaries.
//! - The chart's own pods, started as the chart starts them once the nodes
//!   are up with no pool: the webhook and two operator replicas (binaries,
//!   leader election), each on a node's host network with the command line
//!   `helm template` renders (`chart.rs`, scenario 0 in `fresh_cluster.rs`).
//!
//! `scripts/local-cluster` runs it for a person to look at; the tests in
//! `tests/` run it sized down in `scripts/test`.

pub mod audit;
pub mod bed;
pub mod capacity;
pub mod chart;
pub mod cloud;
pub mod daemon;
pub mod dns;
pub mod fresh_cluster;
pub mod kube_proxy;
pub mod kubelet;
pub mod matrix;
pub mod node;
pub mod probe;
pub mod report;
pub mod safety;
pub mod scenarios;
pub mod scheduler;
pub mod startup_taint;
