//! The startup taint: a node registers with `eni-ipam.io/agent-not-ready:NoSchedule`
//! (kubelet's `--register-with-taints`, or Karpenter's `startupTaints`) and the agent
//! takes it off once the node can give a pod an IP. Until then the scheduler places
//! no pod there (the agent's own DaemonSet tolerates every taint), and autoscalers
//! that know the taint as a startup taint count the node as coming, not as full.
//!
//! Ready means, all three:
//! - the pool has an IP (the operator has attached some, or the cached pool of the last run has);
//! - the datapath is loaded (this task starts only after the agent loaded or adopted it
//!   and reconciled the node's networking: a failure there stops the agent instead);
//! - kubelet publishes the resource: the Node's `status.allocatable[eni-ipam.io/ip]` is
//!   above zero. That is kubelet's view after the device plugin registered and reported
//!   Healthy slots, which is exactly what kube-scheduler reads; the device plugin's own
//!   word that it registered would not prove kubelet has published it yet.
//!
//! The removal is a JSON patch that tests the taint's index, key and effect before
//! removing it, so a concurrent change to the taints (another controller's) makes the
//! patch fail instead of removing the wrong entry; the agent then reads the Node again.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The taint's default key (`--startup-taint`).
pub const DEFAULT_KEY: &str = "eni-ipam.io/agent-not-ready";

/// The only effect the agent removes: NoSchedule, the one kube-scheduler filters on.
pub const EFFECT: &str = "NoSchedule";

/// The taint Karpenter (v1) registers nodes with until it has put the NodePool's taints,
/// startup taints among them, on the Node: while it is there, the startup taint may
/// still come.
pub const KARPENTER_UNREGISTERED: &str = "karpenter.sh/unregistered";

/// How often the Node is read while the taint is on (only during a node's start).
pub const POLL: Duration = Duration::from_secs(1);

/// What the node has, as far as the taint is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// IPs in the pool.
    pub pool_ips: u32,
    /// The datapath is loaded and the node's networking reconciled.
    pub datapath_loaded: bool,
    /// Whether to wait for kubelet to publish the resource (the device plugin runs).
    pub wait_for_resource: bool,
    /// The Node's allocatable of the resource.
    pub allocatable: u64,
}

/// Why the taint stays on: a fixed set (log field values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The pool has no IP yet.
    Pool,
    /// The datapath is not loaded.
    Datapath,
    /// kubelet publishes no allocatable of the resource yet.
    DevicePlugin,
    /// Karpenter has not registered the node yet: its startup taints may still come.
    Registration,
}

impl Waiting {
    /// The log field value.
    pub fn as_str(self) -> &'static str {
        match self {
            Waiting::Pool => "pool",
            Waiting::Datapath => "datapath",
            Waiting::DevicePlugin => "device-plugin",
            Waiting::Registration => "registration",
        }
    }
}

/// What to do with the Node's taints now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The taint is not there and will not come: nothing more to do.
    Done,
    /// Keep the taint (or wait for it to come) and look again.
    Wait(Waiting),
    /// Remove the taint at this index of `spec.taints`.
    Remove(usize),
}

/// The decision, from the Node's taints and the node's readiness.
pub fn decide(taints: &[Taint], key: &str, readiness: &Readiness) -> Step {
    let Some(index) = taints.iter().position(|t| t.key == key && t.effect == EFFECT) else {
        if taints.iter().any(|t| t.key == KARPENTER_UNREGISTERED) {
            return Step::Wait(Waiting::Registration);
        }
        return Step::Done;
    };
    if readiness.pool_ips == 0 {
        Step::Wait(Waiting::Pool)
    } else if !readiness.datapath_loaded {
        Step::Wait(Waiting::Datapath)
    } else if readiness.wait_for_resource && readiness.allocatable == 0 {
        Step::Wait(Waiting::DevicePlugin)
    } else {
        Step::Remove(index)
    }
}

/// The JSON patch removing the taint at `index` only if it still is `key` with effect NoSchedule.
pub fn removal_patch(index: usize, key: &str) -> Value {
    json!([
        {"op": "test", "path": format!("/spec/taints/{index}/key"), "value": key},
        {"op": "test", "path": format!("/spec/taints/{index}/effect"), "value": EFFECT},
        {"op": "remove", "path": format!("/spec/taints/{index}")},
    ])
}

/// A Kubernetes quantity of a countable resource ("8", "110"); anything else counts as 0.
pub fn whole_quantity(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

/// How the agent removes its node's startup taint.
#[derive(Clone, Debug)]
pub struct StartupTaint {
    /// The Node.
    pub node: String,
    /// The taint's key.
    pub key: String,
    /// The extended resource kubelet must publish first (None: do not wait for it).
    pub resource: Option<String>,
}

impl StartupTaint {
    /// The node's readiness given its pool size and the Node as read.
    fn readiness(&self, pool_ips: u32, node: &Node) -> Readiness {
        let allocatable = self
            .resource
            .as_ref()
            .and_then(|r| node.status.as_ref()?.allocatable.as_ref()?.get(r).map(|q| whole_quantity(&q.0)))
            .unwrap_or(0);
        Readiness { pool_ips, datapath_loaded: true, wait_for_resource: self.resource.is_some(), allocatable }
    }

    /// Reads the Node until the taint can go, removes it and returns how long after `started`;
    /// returns None at once when the Node has no such taint. `pool_ips` gives the pool's size
    /// at each look. Errors are logged and retried: the node stays tainted, the safe side.
    pub async fn run(
        &self,
        client: Client,
        pool_ips: impl Fn() -> u32,
        started: tokio::time::Instant,
    ) -> Option<Duration> {
        let nodes: Api<Node> = Api::all(client.clone());
        let mut last_wait = None;
        loop {
            let node = match nodes.get(&self.node).await {
                Ok(node) => node,
                Err(error) => {
                    tracing::warn!(node = %self.node, %error, "cannot read the Node for its startup taint");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
            match decide(&taints, &self.key, &self.readiness(pool_ips(), &node)) {
                Step::Done => {
                    if last_wait.is_none() {
                        tracing::info!(node = %self.node, taint = %self.key, "the Node has no startup taint");
                    }
                    return None;
                }
                Step::Wait(waiting) => {
                    if last_wait != Some(waiting) {
                        tracing::info!(node = %self.node, taint = %self.key, waiting = waiting.as_str(),
                            "keeping the startup taint");
                        last_wait = Some(waiting);
                    }
                }
                Step::Remove(index) => {
                    let patch: json_patch::Patch = serde_json::from_value(removal_patch(index, &self.key))
                        .expect("the removal patch is a JSON patch");
                    match nodes.patch(&self.node, &PatchParams::default(), &Patch::<()>::Json(patch)).await {
                        Ok(_) => {
                            let after = started.elapsed();
                            tracing::info!(node = %self.node, taint = %self.key, after = ?after,
                                "removed the startup taint: the node has a pool, its datapath and its device plugin");
                            self.record_event(&client, &node, after).await;
                            return Some(after);
                        }
                        // 422: the test failed (the taints changed under us); 409: a conflict. Read again.
                        Err(kube::Error::Api(status)) if matches!(status.code, 409 | 422) => {
                            tracing::info!(node = %self.node, code = status.code, "the Node's taints changed; reading it again");
                            continue;
                        }
                        Err(error) => {
                            tracing::warn!(node = %self.node, %error, "cannot remove the startup taint");
                        }
                    }
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// An Event on the Node (events.k8s.io/v1); a failure is only logged.
    async fn record_event(&self, client: &Client, node: &Node, after: Duration) {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
        let now =
            k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(k8s_openapi::jiff::Timestamp::now());
        let event = k8s_openapi::api::events::v1::Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}.startup-taint.", self.node)),
                ..Default::default()
            },
            event_time: Some(now),
            action: Some("RemoveStartupTaint".into()),
            reason: Some("StartupTaintRemoved".into()),
            type_: Some("Normal".into()),
            reporting_controller: Some("eni-ipam.io/agent".into()),
            reporting_instance: Some(format!("eni-ipam-agent-{}", self.node)),
            note: Some(format!(
                "removed taint {}:{EFFECT} {:.1}s after the agent started: the node has pod IPs, its datapath and \
                 its device plugin",
                self.key,
                after.as_secs_f64()
            )),
            regarding: Some(k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.node.clone()),
                uid: node.metadata.uid.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        if let Err(error) = events.create(&PostParams::default(), &event).await {
            tracing::warn!(node = %self.node, %error, "cannot record the startup taint's Event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, effect: &str) -> Taint {
        Taint { key: key.into(), effect: effect.into(), ..Default::default() }
    }

    const READY: Readiness =
        Readiness { pool_ips: 8, datapath_loaded: true, wait_for_resource: true, allocatable: 8 };

    /// Each row: the Node's taints, the node's state, what the agent does.
    #[test]
    fn the_taint_goes_only_when_pool_datapath_and_device_plugin_are_ready() {
        let ours = || taint(DEFAULT_KEY, EFFECT);
        let other = || taint("dedicated", EFFECT);
        let unregistered = || taint(KARPENTER_UNREGISTERED, "NoExecute");
        let with = |f: fn(&mut Readiness)| {
            let mut r = READY;
            f(&mut r);
            r
        };
        let table: Vec<(&str, Vec<Taint>, Readiness, Step)> = vec![
            ("ready: removed at its index", vec![other(), ours()], READY, Step::Remove(1)),
            ("no pool IP yet", vec![ours()], with(|r| r.pool_ips = 0), Step::Wait(Waiting::Pool)),
            (
                "datapath not loaded",
                vec![ours()],
                with(|r| r.datapath_loaded = false),
                Step::Wait(Waiting::Datapath),
            ),
            (
                "kubelet publishes no IP yet",
                vec![ours()],
                with(|r| r.allocatable = 0),
                Step::Wait(Waiting::DevicePlugin),
            ),
            (
                "without the device plugin, allocatable is not waited for",
                vec![ours()],
                with(|r| {
                    r.allocatable = 0;
                    r.wait_for_resource = false
                }),
                Step::Remove(0),
            ),
            ("no taint: nothing to do", vec![other()], READY, Step::Done),
            ("no taints at all", vec![], with(|r| r.pool_ips = 0), Step::Done),
            (
                "the same key with another effect is not ours",
                vec![taint(DEFAULT_KEY, "NoExecute")],
                READY,
                Step::Done,
            ),
            (
                "Karpenter has not put the startup taints on yet",
                vec![unregistered()],
                READY,
                Step::Wait(Waiting::Registration),
            ),
            (
                "Karpenter's and ours: ours goes when ready",
                vec![unregistered(), ours()],
                READY,
                Step::Remove(1),
            ),
        ];
        for (what, taints, readiness, want) in table {
            assert_eq!(decide(&taints, DEFAULT_KEY, &readiness), want, "{what}");
        }
    }

    #[test]
    fn the_patch_removes_the_taint_only_where_it_still_is() {
        let node = json!({"spec": {"taints": [
            {"key": "dedicated", "value": "db", "effect": "NoSchedule"},
            {"key": DEFAULT_KEY, "effect": "NoSchedule"},
            {"key": "x", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}]}});
        let patch: json_patch::Patch = serde_json::from_value(removal_patch(1, DEFAULT_KEY)).unwrap();
        let mut removed = node.clone();
        json_patch::patch(&mut removed, &patch).unwrap();
        assert_eq!(
            removed["spec"]["taints"],
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"},
                   {"key": "x", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}]),
            "only ours goes, the others stay as they were"
        );
        // The taints moved (another controller removed one first): the test fails, nothing changes.
        let mut moved = json!({"spec": {"taints": [{"key": DEFAULT_KEY, "effect": "NoSchedule"},
                                                    {"key": "x", "effect": "NoExecute"}]}});
        let before = moved.clone();
        assert!(json_patch::patch(&mut moved, &patch).is_err());
        assert_eq!(moved, before);
        // Same key, another effect at that index: refused too.
        let mut other_effect = json!({"spec": {"taints": [{"key": "a", "effect": "NoSchedule"},
                                                         {"key": DEFAULT_KEY, "effect": "NoExecute"}]}});
        assert!(json_patch::patch(&mut other_effect, &patch).is_err());
    }

    #[test]
    fn allocatable_is_read_as_a_whole_number() {
        assert_eq!(whole_quantity("8"), 8);
        assert_eq!(whole_quantity("0"), 0);
        assert_eq!(whole_quantity("1k"), 0, "not a count kubelet publishes for a device plugin");
    }
}
