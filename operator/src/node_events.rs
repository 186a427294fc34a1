//! What the fleet reports about nodes, turned into metrics and Kubernetes
//! Events on the Node (`kubectl describe node` shows why it is short of IPs).
//! An Event is sent when a node's state changes, not on every pass.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;

use crate::fleet::NodeEvent;
use crate::metrics::OperatorMetrics;

/// The Event a node state calls for: (type, reason, note).
pub fn event_for(event: &NodeEvent) -> (EventType, &'static str, String) {
    match event {
        NodeEvent::Converged { ready: true, .. } => {
            (EventType::Normal, "PoolReady", "the IP pool is at its target".into())
        }
        NodeEvent::Converged { shortfall: Some(short), needed, .. } => (
            EventType::Warning,
            short.reason(),
            format!("{needed} IPs short ({}); see the ENINode's PoolReady condition", short.reason()),
        ),
        NodeEvent::Converged { needed, .. } => {
            (EventType::Normal, "Allocating", format!("{needed} IPs still to allocate"))
        }
        NodeEvent::Failed { error, .. } => (EventType::Warning, "AllocationFailed", error.clone()),
        NodeEvent::Refused { reason, message, .. } => (EventType::Warning, reason, message.clone()),
    }
}

fn node_of(event: &NodeEvent) -> &str {
    match event {
        NodeEvent::Converged { node, .. }
        | NodeEvent::Failed { node, .. }
        | NodeEvent::Refused { node, .. } => node,
    }
}

/// Drains the fleet's events: every one into the metrics, state changes into Events on the Node.
pub async fn report(
    mut events: mpsc::UnboundedReceiver<NodeEvent>,
    metrics: Arc<OperatorMetrics>,
    recorder: Option<Recorder>,
) {
    let mut last: HashMap<String, &'static str> = HashMap::new();
    while let Some(event) = events.recv().await {
        metrics.node_event(&event);
        let Some(recorder) = &recorder else { continue };
        let (type_, reason, note) = event_for(&event);
        let node = node_of(&event).to_owned();
        let changed = last.insert(node.clone(), reason) != Some(reason);
        if !changed {
            continue;
        }
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.clone()),
            ..ObjectReference::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "AllocateIPs".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            tracing::debug!(%node, error = %e, "could not publish an Event on the Node");
        }
    }
}

/// The Event reporter of this replica.
pub fn reporter(identity: &str) -> Reporter {
    Reporter { controller: "eni-ipam-operator".into(), instance: Some(identity.into()) }
}
