//! The eni-ipam operator: decides (planner) and acts (executor) to keep every
//! node's pool of ENI IPs at its target, and simulates a fleet doing so.

pub mod planner;
