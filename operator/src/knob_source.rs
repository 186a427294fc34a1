//! Which knobs the fleet works each node with. `simulate` and tests take them
//! from the ENINode's spec over the built-in defaults ([`SpecKnobs`]); `run`
//! adds the cluster-wide configuration and node-pool overrides it watches, and
//! the Node's labels they select on ([`ClusterKnobs`]).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use eni_ipam_api::{ENINode, EffectiveIpam, KnobConfig, KnobConflict, NodeFacts, effective_ipam};
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{ObjectRef, Store};

/// The effective knobs of a node.
pub trait NodeKnobs: Send + Sync {
    /// What the node is worked with, or why its layers cannot be combined.
    fn effective(&self, node: &ENINode) -> Result<EffectiveIpam, KnobConflict>;
}

/// No cluster configuration: the ENINode's spec over the built-in defaults.
pub struct SpecKnobs {
    /// The cloud's default first interface index.
    pub first_interface_index: u32,
}

impl NodeKnobs for SpecKnobs {
    fn effective(&self, node: &ENINode) -> Result<EffectiveIpam, KnobConflict> {
        let labels = BTreeMap::new();
        effective_ipam(
            self.first_interface_index,
            &KnobConfig::default(),
            NodeFacts { labels: &labels },
            &node.spec,
        )
    }
}

/// The cluster's knobs: the last good configuration read from the knobs ConfigMap, node-pool
/// overrides selected by the labels in the Node cache, the ENINode's spec on top.
pub struct ClusterKnobs {
    first_interface_index: u32,
    /// `None` until a good configuration has been read.
    config: RwLock<Option<Arc<KnobConfig>>>,
    nodes: Store<Node>,
}

impl ClusterKnobs {
    /// Knobs over the Node cache `nodes`. `watched`: a ConfigMap will be read (until then
    /// nodes keep what they were last worked with); otherwise only the built-ins apply.
    pub fn new(first_interface_index: u32, nodes: Store<Node>, watched: bool) -> Self {
        let config = (!watched).then(|| Arc::new(KnobConfig::default()));
        Self { first_interface_index, config: RwLock::new(config), nodes }
    }

    /// Takes a good configuration; `true` if it differs from the one in use.
    pub fn replace(&self, config: KnobConfig) -> bool {
        let mut current = self.config.write().expect("knob config lock");
        if current.as_deref() == Some(&config) {
            return false;
        }
        *current = Some(Arc::new(config));
        true
    }

    /// The configuration in use, if a good one was read.
    pub fn current(&self) -> Option<Arc<KnobConfig>> {
        self.config.read().expect("knob config lock").clone()
    }
}

impl NodeKnobs for ClusterKnobs {
    fn effective(&self, node: &ENINode) -> Result<EffectiveIpam, KnobConflict> {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let labels =
            self.nodes.get(&ObjectRef::new(name)).and_then(|n| n.metadata.labels.clone()).unwrap_or_default();
        let facts = NodeFacts { labels: &labels };
        layered(self.first_interface_index, self.current().as_deref(), facts, node)
    }
}

/// With a configuration: the combination. Without one (none read yet, or only bad ones since
/// the operator started): what the node was last worked with, so a broken ConfigMap at start
/// changes nobody's pool; a node never worked gets the built-ins under its own spec.
fn layered(
    first_interface_index: u32,
    config: Option<&KnobConfig>,
    facts: NodeFacts<'_>,
    node: &ENINode,
) -> Result<EffectiveIpam, KnobConflict> {
    match (config, node.status.as_ref().and_then(|s| s.effective_ipam.as_ref())) {
        (Some(config), _) => effective_ipam(first_interface_index, config, facts, &node.spec),
        (None, Some(last)) => Ok(last.clone()),
        (None, None) => effective_ipam(first_interface_index, &KnobConfig::default(), facts, &node.spec),
    }
}

#[cfg(test)]
mod tests {
    use eni_ipam_api::{ENINodeSpec, ENINodeStatus};

    use super::*;

    #[test]
    fn without_a_good_configuration_a_node_keeps_what_it_was_last_worked_with() {
        let labels = BTreeMap::new();
        let facts = NodeFacts { labels: &labels };
        let mut node = ENINode::new("n", ENINodeSpec::default());
        let config = KnobConfig::parse("defaults: {pool: {preAllocate: 3}}").unwrap();
        let fresh = layered(0, None, facts, &node).unwrap();
        assert_eq!(
            (fresh.pre_allocate, fresh.source("preAllocate")),
            (8, "builtin"),
            "never worked: built-ins"
        );
        let worked = layered(0, Some(&config), facts, &node).unwrap();
        assert_eq!((worked.pre_allocate, worked.source("preAllocate")), (3, "cluster"));
        node.status = Some(ENINodeStatus { effective_ipam: Some(worked.clone()), ..Default::default() });
        assert_eq!(layered(0, None, facts, &node).unwrap(), worked, "the last published knobs stay");
        let newer = KnobConfig::parse("defaults: {pool: {preAllocate: 5}}").unwrap();
        assert_eq!(layered(0, Some(&newer), facts, &node).unwrap().pre_allocate, 5, "a good config wins");
    }
}
