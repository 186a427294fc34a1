//! A scheduler that does what kube-scheduler's TaintToleration and NodeResourcesFit
//! filters do here: a pod goes only to a node whose NoSchedule and NoExecute taints
//! it all tolerates, and whose allocatable `eni-ipam.io/ip` exceeds what the pods bound
//! there request; among those, the one with the most left (spread). A pod that fits
//! nowhere stays Pending.

use std::collections::BTreeMap;
use std::time::Duration;

use eni_ipam_kube_standin::{KubeStandin, NODES, PODS};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::kubelet::{RESOURCE, pod_key, requested};

/// Where a pod requesting `want` can go: the node with the most room, if any has enough.
pub fn place(want: u64, room: &BTreeMap<String, i64>) -> Option<String> {
    room.iter()
        .filter(|(_, left)| **left >= want as i64)
        .max_by_key(|(name, left)| (**left, std::cmp::Reverse((*name).clone())))
        .map(|(name, _)| name.clone())
}

/// Whether `toleration` tolerates `taint`, as Kubernetes matches them: an empty key with
/// `Exists` tolerates every taint; otherwise the keys are equal and, with `Equal` (the
/// default operator), the values too; an empty effect tolerates every effect.
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let text = |v: &Value, field: &str| v[field].as_str().unwrap_or_default().to_owned();
    let (key, operator, effect) =
        (text(toleration, "key"), text(toleration, "operator"), text(toleration, "effect"));
    if !effect.is_empty() && effect != text(taint, "effect") {
        return false;
    }
    if operator == "Exists" {
        return key.is_empty() || key == text(taint, "key");
    }
    key == text(taint, "key") && text(toleration, "value") == text(taint, "value")
}

/// TaintToleration's filter: every NoSchedule and NoExecute taint of `node` is tolerated
/// by one of `pod`'s tolerations (PreferNoSchedule only scores).
pub fn taints_tolerated(node: &Value, pod: &Value) -> bool {
    let tolerations = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    node["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute")))
        .all(|taint| tolerations.iter().any(|t| tolerates(t, taint)))
}

/// Room per node: allocatable minus what bound, unfinished pods request.
pub fn room(nodes: &[Value], pods: &[Value]) -> BTreeMap<String, i64> {
    let mut room: BTreeMap<String, i64> = nodes
        .iter()
        .map(|n| {
            let allocatable =
                n["status"]["allocatable"][RESOURCE].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
            (n["metadata"]["name"].as_str().unwrap_or_default().to_owned(), allocatable)
        })
        .collect();
    for p in pods {
        let done = matches!(p["status"]["phase"].as_str(), Some("Failed" | "Succeeded"));
        if let (false, Some(node)) = (done, p["spec"]["nodeName"].as_str())
            && let Some(left) = room.get_mut(node)
        {
            *left -= requested(p) as i64;
        }
    }
    room
}

/// Runs the scheduler every 50 ms.
pub fn spawn(standin: KubeStandin) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let nodes = standin.list(NODES);
            let pods = standin.list(PODS);
            let mut room = room(&nodes, &pods);
            for pod in pods.iter().filter(|p| p["spec"]["nodeName"].is_null()) {
                let want = requested(pod);
                let open: BTreeMap<String, i64> = room
                    .iter()
                    .filter(|(name, _)| {
                        nodes
                            .iter()
                            .any(|n| n["metadata"]["name"] == name.as_str() && taints_tolerated(n, pod))
                    })
                    .map(|(name, left)| (name.clone(), *left))
                    .collect();
                if let Some(node) = place(want, &open) {
                    let key = pod_key(pod);
                    let (ns, name) = key.split_once('/').expect("a pod key");
                    if standin.merge_patch(PODS, ns, name, json!({"spec": {"nodeName": node}}), false).is_ok()
                    {
                        *room.get_mut(&node).expect("placed on a known node") -= want as i64;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row: a node's taints, a pod's tolerations, whether TaintToleration lets it on.
    #[test]
    fn a_pod_goes_only_where_it_tolerates_every_no_schedule_taint() {
        let startup = json!({"key": "eni-ipam.io/agent-not-ready", "effect": "NoSchedule"});
        let dedicated = json!({"key": "dedicated", "value": "db", "effect": "NoSchedule"});
        let prefer = json!({"key": "spot", "effect": "PreferNoSchedule"});
        let table: Vec<(&str, Vec<Value>, Vec<Value>, bool)> = vec![
            ("no taints", vec![], vec![], true),
            ("the startup taint, no toleration", vec![startup.clone()], vec![], false),
            (
                "tolerated by key and Exists",
                vec![startup.clone()],
                vec![
                    json!({"key": "eni-ipam.io/agent-not-ready", "operator": "Exists", "effect": "NoSchedule"}),
                ],
                true,
            ),
            (
                "tolerated by Exists without a key (the agent's)",
                vec![startup.clone(), dedicated.clone()],
                vec![json!({"operator": "Exists"})],
                true,
            ),
            (
                "Equal needs the value",
                vec![dedicated.clone()],
                vec![json!({"key": "dedicated", "operator": "Equal", "value": "web"})],
                false,
            ),
            (
                "Equal by default",
                vec![dedicated.clone()],
                vec![json!({"key": "dedicated", "value": "db"})],
                true,
            ),
            (
                "another effect tolerated only",
                vec![startup.clone()],
                vec![
                    json!({"key": "eni-ipam.io/agent-not-ready", "operator": "Exists", "effect": "NoExecute"}),
                ],
                false,
            ),
            (
                "one taint of two tolerated",
                vec![startup, dedicated],
                vec![json!({"key": "dedicated", "value": "db"})],
                false,
            ),
            ("PreferNoSchedule does not filter", vec![prefer], vec![], true),
        ];
        for (what, taints, tolerations, want) in table {
            let node = json!({"spec": {"taints": taints}});
            let pod = json!({"spec": {"tolerations": tolerations}});
            assert_eq!(taints_tolerated(&node, &pod), want, "{what}");
        }
    }

    #[test]
    fn a_pod_goes_only_where_a_slot_is_left_and_spreads() {
        let nodes = vec![
            json!({"metadata": {"name": "a"}, "status": {"allocatable": {RESOURCE: "2"}}}),
            json!({"metadata": {"name": "b"}, "status": {"allocatable": {RESOURCE: "1"}}}),
            json!({"metadata": {"name": "c"}, "status": {}}),
        ];
        let pod = |node: &str, phase: &str| {
            json!({"spec": {"nodeName": node, "containers": [{"resources": {"requests": {RESOURCE: "1"}}}]},
                   "status": {"phase": phase}})
        };
        let r = room(&nodes, &[pod("a", "Running"), pod("b", "Running"), pod("a", "Failed")]);
        assert_eq!(r, BTreeMap::from([("a".into(), 1), ("b".into(), 0), ("c".into(), 0)]));
        assert_eq!(place(1, &r).as_deref(), Some("a"));
        assert_eq!(place(2, &r), None, "no node has two slots left");
        let full = room(&nodes, &[pod("a", "Running"), pod("a", "Pending"), pod("b", "Running")]);
        assert_eq!(place(1, &full), None, "a full cluster leaves the pod Pending");
        assert_eq!(place(0, &full).as_deref(), Some("a"), "a pod without the request goes anywhere");
    }
}
