//! Whether an ENINode may be worked: its `spec.instanceId` must be the instance its
//! Node runs on (the Node's `spec.providerID`). An ENINode pointed at another
//! instance (a compromised or confused agent, a node name that came back on a new
//! VM before its agent adopted the ENINode) would have the operator assign and
//! release IPs on somebody else's instance; one without a Node has nobody to serve.
//! Either is refused before any cloud call: a condition on the ENINode, an Event,
//! no requeue (a Node event brings the ENINode back when the Node is fixed).

use eni_ipam_api::InstanceId;

/// What the operator knows of the Node named like an ENINode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeSeen {
    /// Nothing to check against (`simulate` has no Nodes).
    NotChecked,
    /// No Node of that name in the cache.
    Missing,
    /// The Node, with the instance its `spec.providerID` names (`None`: none readable).
    Runs(Option<InstanceId>),
}

/// Why an ENINode is not worked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The condition's reason.
    pub reason: &'static str,
    /// What is wrong and what to do, naming the objects.
    pub message: String,
}

/// Where the operator looks Nodes up.
pub trait NodeDirectory: Send + Sync {
    /// The Node named `name`.
    fn seen(&self, name: &str) -> NodeSeen;
}

/// No Nodes to look at: every ENINode is taken at its word (`simulate`, tests).
pub struct Unchecked;

impl NodeDirectory for Unchecked {
    fn seen(&self, _name: &str) -> NodeSeen {
        NodeSeen::NotChecked
    }
}

/// The decision for ENINode `name` naming `instance`.
pub fn check(name: &str, instance: &InstanceId, node: &NodeSeen) -> Result<(), Refusal> {
    match node {
        NodeSeen::NotChecked => Ok(()),
        NodeSeen::Runs(Some(actual)) if actual == instance => Ok(()),
        NodeSeen::Missing => Err(Refusal {
            reason: "NodeNotFound",
            message: format!(
                "ENINode {name} has no Node {name}: its pool is not worked until the Node exists; \
                 delete the ENINode if the node is gone for good"
            ),
        }),
        NodeSeen::Runs(None) => Err(Refusal {
            reason: "NodeWithoutProviderID",
            message: format!(
                "Node {name} has no readable spec.providerID, so ENINode {name}'s instance {instance} \
                 cannot be checked: not worked; the cloud controller manager or kubelet --provider-id sets it"
            ),
        }),
        NodeSeen::Runs(Some(actual)) => Err(Refusal {
            reason: "InstanceMismatch",
            message: format!(
                "ENINode {name} names instance {instance}, but Node {name} runs on {actual} \
                 (spec.providerID): not worked; the agent on {actual} adopts the ENINode, or fix \
                 spec.instanceId"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_table() {
        let i = |s: &str| InstanceId::from(s);
        // (the ENINode's instance, the Node, the refusal's reason (None: worked), the case)
        let rows = [
            ("i-1", NodeSeen::Runs(Some(i("i-1"))), None, "the Node runs on the ENINode's instance: worked"),
            (
                "i-1",
                NodeSeen::Runs(Some(i("i-2"))),
                Some("InstanceMismatch"),
                "an ENINode pointed at another instance is refused",
            ),
            (
                "i-old",
                NodeSeen::Runs(Some(i("i-new"))),
                Some("InstanceMismatch"),
                "a name back on a new VM, not adopted yet: the old instance is not worked",
            ),
            ("i-1", NodeSeen::Missing, Some("NodeNotFound"), "an ENINode without a Node is refused"),
            (
                "i-1",
                NodeSeen::Runs(None),
                Some("NodeWithoutProviderID"),
                "a Node without a providerID proves nothing",
            ),
            ("i-1", NodeSeen::NotChecked, None, "no Nodes to check against (simulate): worked"),
        ];
        for (instance, node, want, case) in rows {
            let got = check("node-a", &i(instance), &node);
            assert_eq!(got.as_ref().err().map(|r| r.reason), want, "{case}");
            if let Err(refusal) = got {
                assert!(
                    refusal.message.contains("node-a"),
                    "the message names the objects: {}",
                    refusal.message
                );
            }
        }
    }
}
