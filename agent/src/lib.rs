//! eni-ipam node agent: local IPAM persisted before every answer, the unix-socket
//! API, the Kubernetes side (ENINode registration, `status.used`, the release
//! handshake) and the `eni-ipam-cni` plugin's library code.

pub mod allocator;
pub mod backoff;
pub mod cli;
pub mod cni;
pub mod datapath_metrics;
pub mod endpoints;
pub mod ipam;
pub mod kube_side;
pub mod live_containers;
pub mod lost_pods;
pub mod metrics;
pub mod netlink;
pub mod node_identity;
pub mod node_links;
pub mod node_netfilter;
pub mod node_network;
pub mod policy_routing;
pub mod pool;
pub mod server;
pub mod service_ranges;
pub mod startup_taint;
pub mod state;
pub mod uninstall;
pub mod uninstall_mark;
