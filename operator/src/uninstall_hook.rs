//! `eni-ipam-operator uninstall prepare|finish`: what the chart's pre-delete and post-delete
//! hook Jobs run around `helm uninstall` (the handshake is in [`eni_ipam_api::uninstall_mark`]).
//!
//! - `prepare` (pre-delete, while everything still runs): requests the uninstall on every
//!   ENINode, then waits until the agent of every node that runs one has answered that it will
//!   clean its node when terminated. Helm deletes the DaemonSet only after this.
//! - `finish` (post-delete, the release's objects are gone): waits until no agent pod is left
//!   (each cleans its node as it exits), then deletes every ENINode. ENIs and their IPs are
//!   not touched: they stay attached for the pods that still use them, tagged for an admin.
//!
//! Neither step fails because of a node: a node that never answers (NotReady, partitioned)
//! is named in the log with what to run on it, and the uninstall goes on.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use eni_ipam_api::ENINode;
use eni_ipam_api::uninstall_mark::{UNINSTALL_REQUESTED, uninstall_armed, uninstall_requested};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

/// Where the agents run and how long to wait for them.
#[derive(Clone, Debug)]
pub struct HookConfig {
    /// Namespace of the agent pods.
    pub namespace: String,
    /// Label selector of the agent pods.
    pub agent_selector: String,
    /// Longest wait for the agents.
    pub timeout: Duration,
    /// Pause between two looks.
    pub poll: Duration,
    /// Written as the request's value (who asked).
    pub requested_by: String,
}

/// Where the uninstall stands on the nodes, from the agent pods and the ENINodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Nodes whose agent runs and has not answered yet.
    pub waiting: Vec<String>,
    /// Nodes whose agent runs without an ENINode: nothing carries the request to them.
    pub unreachable: Vec<String>,
    /// Nodes whose agent has answered.
    pub armed: Vec<String>,
}

/// Where the uninstall stands: `agent_nodes` run an agent pod, `eninodes` maps each ENINode
/// to its annotations.
pub fn progress(
    agent_nodes: &BTreeSet<String>,
    eninodes: &BTreeMap<String, BTreeMap<String, String>>,
) -> Progress {
    let mut progress = Progress::default();
    for node in agent_nodes {
        match eninodes.get(node) {
            None => progress.unreachable.push(node.clone()),
            Some(annotations) if uninstall_requested(annotations) && uninstall_armed(annotations) => {
                progress.armed.push(node.clone())
            }
            Some(_) => progress.waiting.push(node.clone()),
        }
    }
    progress
}

/// The pre-delete step: request, then wait for every running agent's answer.
pub async fn prepare(client: &Client, config: &HookConfig) -> Result<Progress, kube::Error> {
    let eninodes = eninode_api(client);
    let patch = json!({"metadata": {"annotations": {UNINSTALL_REQUESTED: config.requested_by}}});
    for eninode in eninodes.list(&ListParams::default()).await? {
        let name = eninode.name_any();
        if !uninstall_requested(eninode.annotations()) {
            eninodes.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
        }
    }
    let deadline = Instant::now() + config.timeout;
    loop {
        let now = progress(&agent_nodes(client, config).await?, &annotations_by_node(&eninodes).await?);
        if now.waiting.is_empty() || Instant::now() >= deadline {
            log_progress(&now);
            return Ok(now);
        }
        tracing::info!(waiting = ?now.waiting, armed = now.armed.len(), "waiting for the agents to answer the uninstall request");
        tokio::time::sleep(config.poll).await;
    }
}

/// The post-delete step: wait until the agent pods are gone, then delete every ENINode.
/// Returns the agent pods' nodes still there at the deadline and the ENINodes deleted.
pub async fn finish(client: &Client, config: &HookConfig) -> Result<(Vec<String>, Vec<String>), kube::Error> {
    let deadline = Instant::now() + config.timeout;
    let left = loop {
        let left = agent_nodes(client, config).await?;
        if left.is_empty() || Instant::now() >= deadline {
            break left;
        }
        tracing::info!(nodes = ?left, "waiting for the agent pods to exit (each cleans its node)");
        tokio::time::sleep(config.poll).await;
    };
    for node in &left {
        tracing::warn!(%node, "the agent pod is still there: run `eni-ipam-agent uninstall` on that node once it is gone");
    }
    let eninodes = eninode_api(client);
    let mut deleted = Vec::new();
    for eninode in eninodes.list(&ListParams::default()).await? {
        let name = eninode.name_any();
        match eninodes.delete(&name, &DeleteParams::default()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    tracing::info!(
        count = deleted.len(),
        "ENINodes deleted; ENIs and their IPs stay (see docs/operations.md)"
    );
    Ok((left.into_iter().collect(), deleted))
}

/// ENINodes as untyped objects: the hook reads and writes metadata only, and must work
/// whatever version of eni-ipam wrote their spec and status.
fn eninode_api(client: &Client) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &ApiResource::erase::<ENINode>(&()))
}

/// Nodes with an agent pod that is not finished (any phase but Succeeded and Failed).
async fn agent_nodes(client: &Client, config: &HookConfig) -> Result<BTreeSet<String>, kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &config.namespace);
    let list = pods.list(&ListParams::default().labels(&config.agent_selector)).await?;
    Ok(list
        .into_iter()
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or_default();
            !matches!(phase, "Succeeded" | "Failed")
        })
        .filter_map(|p| p.spec.and_then(|s| s.node_name))
        .collect())
}

async fn annotations_by_node(
    eninodes: &Api<DynamicObject>,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, kube::Error> {
    Ok(eninodes
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|e| (e.name_any(), e.annotations().clone()))
        .collect())
}

fn log_progress(progress: &Progress) {
    tracing::info!(armed = progress.armed.len(), "agents that will clean their node when terminated");
    for node in &progress.waiting {
        tracing::warn!(%node, "the agent did not answer in time: after the uninstall, run `eni-ipam-agent uninstall` on that node");
    }
    for node in &progress.unreachable {
        tracing::warn!(%node, "the agent runs without an ENINode: after the uninstall, run `eni-ipam-agent uninstall` on that node");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eni_ipam_api::uninstall_mark::UNINSTALL_ARMED;

    fn annotations(keys: &[&str]) -> BTreeMap<String, String> {
        keys.iter().map(|k| ((*k).to_owned(), "x".to_owned())).collect()
    }

    #[test]
    fn a_node_is_done_once_its_running_agent_has_answered_the_request() {
        let agents: BTreeSet<String> =
            ["armed", "waiting", "unanswered", "no-eninode"].map(String::from).into();
        let eninodes: BTreeMap<String, BTreeMap<String, String>> = [
            ("armed", annotations(&[UNINSTALL_REQUESTED, UNINSTALL_ARMED])),
            ("waiting", annotations(&[UNINSTALL_REQUESTED])),
            // An answer without a request (left from an earlier try) is no answer.
            ("unanswered", annotations(&[UNINSTALL_ARMED])),
            // No agent runs there: nobody to wait for.
            ("agentless", annotations(&[UNINSTALL_REQUESTED])),
        ]
        .into_iter()
        .map(|(n, a)| (n.to_owned(), a))
        .collect();
        let got = progress(&agents, &eninodes);
        assert_eq!(got.armed, ["armed"]);
        assert_eq!(got.waiting, ["unanswered", "waiting"]);
        assert_eq!(got.unreachable, ["no-eninode"]);
        assert_eq!(
            progress(&BTreeSet::new(), &eninodes),
            Progress::default(),
            "no agent: nothing to wait for"
        );
    }
}
