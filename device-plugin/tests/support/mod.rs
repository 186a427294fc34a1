//! Stand-ins for kubelet and the agent, on real unix sockets in a temp folder.

#![allow(dead_code)] // each test uses a part

pub mod agent;
pub mod kubelet;

use std::path::Path;
use std::time::Duration;

use eni_ipam_device_plugin::Config;

/// The plugin's configuration for a test: the folder, the agent's socket,
/// and the production poll interval (500 ms), so measured delays are real.
pub fn config(dir: &Path, max_slots: u32) -> Config {
    Config {
        device_plugin_dir: dir.to_owned(),
        resource_name: "eni-ipam.io/ip".into(),
        agent_socket: dir.join("agent.sock"),
        pod_resources_socket: None,
        max_slots,
        poll_interval: Duration::from_millis(500),
        agent_timeout: Duration::from_secs(1),
        agent_grace: Duration::ZERO,
        kubelet_timeout: Duration::from_secs(2),
    }
}

/// A generous bound for anything that should happen within a poll or two.
pub const WITHIN: Duration = Duration::from_secs(5);
