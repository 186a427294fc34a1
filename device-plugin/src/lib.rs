//! eni-ipam's kubelet device plugin: advertises `eni-ipam.io/ip` devices, one
//! per pod IP slot, healthy as far as the node can really give IPs, so
//! kubelet's allocatable and kube-scheduler follow the node's IP capacity.
//!
//! - [`counting`]: the pure count (capacity -> healthy slots);
//! - [`agent_client`], [`pod_resources`]: where the numbers come from;
//! - [`poller`]: numbers -> device list, published on change;
//! - [`service`]: the `DevicePlugin` gRPC service;
//! - [`registration`], [`plugin`]: serving our socket and staying registered.

pub mod agent_client;
pub mod cli;
pub mod counting;
pub mod devices;
pub mod metrics;
pub mod plugin;
pub mod pod_resources;
pub mod poller;
pub mod proto;
pub mod registration;
pub mod service;
pub mod unix_channel;

pub use plugin::{Config, PluginError, RunningPlugin, endpoint_name, start};
