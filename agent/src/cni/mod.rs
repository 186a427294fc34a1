//! The `eni-ipam-cni` plugin: CNI spec 1.0/1.1 commands from env + stdin,
//! answers and errors in the spec's JSON. Runs as the main plugin (veth into
//! the pod netns) or as the `ipam` plugin of another main plugin.

pub mod agent_client;
pub mod link;
pub mod plugin;
pub mod spec;
