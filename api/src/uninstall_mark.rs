//! The uninstall handshake, carried by annotations on each ENINode.
//!
//! 1. The chart's pre-delete hook sets [`UNINSTALL_REQUESTED`] on every ENINode.
//! 2. A node's agent that reads it on its own ENINode *arms*: when it is next terminated it
//!    removes what it installed on the node instead of keeping it, and it says so with
//!    [`UNINSTALL_ARMED`]. If the request goes away, the agent disarms and drops its answer.
//! 3. The hook waits until every node that runs an agent has answered (or its deadline
//!    passes), then Helm deletes the DaemonSet and every agent exits armed.
//!
//! An agent terminated without the request (a restart, an upgrade, an eviction) keeps its
//! datapath, its CNI configuration and its state: pods keep their traffic.

use std::collections::BTreeMap;

/// Set by the pre-delete hook: eni-ipam is being removed from the cluster.
pub const UNINSTALL_REQUESTED: &str = "eni-ipam.io/uninstall-requested";

/// Set by the node's agent: it saw the request and will clean the node when terminated.
pub const UNINSTALL_ARMED: &str = "eni-ipam.io/uninstall-armed";

/// Whether an ENINode's annotations request the uninstall.
pub fn uninstall_requested(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(UNINSTALL_REQUESTED)
}

/// Whether an ENINode's agent has answered the request.
pub fn uninstall_armed(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(UNINSTALL_ARMED)
}
