//! The eni-ipam operator: decides (planner) and acts (executor) to keep every
//! node's pool of ENI IPs at its target, and simulates a fleet doing so.

pub mod account_args;
pub mod alibaba_args;
pub mod cli;
pub mod cluster_identity;
pub mod controller;
pub mod executor;
pub mod fleet;
pub mod gc;
pub mod instances;
pub mod ip_ledger;
pub mod knob_source;
pub mod knob_watch;
pub mod kube_store;
pub mod leader;
pub mod metrics;
pub mod node_events;
pub mod node_identity;
pub mod node_store;
pub mod ownership;
pub mod planner;
pub mod reaction;
pub mod resync;
pub mod run;
pub mod shortfall;
pub mod simulate;
pub mod sizing;
pub mod uninstall_hook;
pub mod work_queue;
