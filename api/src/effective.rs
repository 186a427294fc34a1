//! The knobs a node is worked with, and where each came from: built-in
//! defaults < the cluster-wide defaults < matching node-pool overrides (in list
//! order) < the node's own ENINode spec. One pure function decides; the operator
//! writes its answer into `status.effectiveIpam`.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::eninode::ENINodeSpec;
use crate::ids::{SecurityGroupId, SubnetId};
use crate::knob_config::{EniLayer, KnobConfig, PoolLayer};
use crate::knobs::{KnobError, PoolKnobs, PoolOverrides};

/// The knobs the operator works a node with (`status.effectiveIpam`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveIpam {
    /// Free IPs kept ready for new pods.
    pub pre_allocate: u32,
    /// The pool's floor.
    pub min_allocate: u32,
    /// The pool's ceiling; 0 means no limit but the instance's.
    pub max_allocate: u32,
    /// Extra IPs taken when allocating anyway, if the ENI being filled has room.
    pub max_above_watermark: u32,
    /// First ENI device index whose IPs pods may use.
    pub first_interface_index: u32,
    /// Subnets new ENIs may use; empty means any subnet of the node's zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_ids: Vec<SubnetId>,
    /// Tags a subnet must carry to be used for new ENIs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subnet_tags: BTreeMap<String, String>,
    /// Security groups of new ENIs; empty means the VPC's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<SecurityGroupId>,
    /// Where each field's value came from: `builtin`, `cluster` (the knobs ConfigMap's
    /// defaults), `nodePool/<name>` (an override there) or `eniNode` (this ENINode's spec).
    #[serde(default)]
    pub sources: BTreeMap<String, String>,
    /// The node-pool overrides that select this node, in the order they were applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_pools: Vec<String>,
}

impl EffectiveIpam {
    /// The pool knobs.
    pub fn knobs(&self) -> PoolKnobs {
        PoolKnobs {
            pre_allocate: self.pre_allocate,
            min_allocate: self.min_allocate,
            max_allocate: self.max_allocate,
            max_above_watermark: self.max_above_watermark,
        }
    }

    /// Where `field` (as spelled in the resource) came from.
    pub fn source(&self, field: &str) -> &str {
        self.sources.get(field).map_or("", String::as_str)
    }
}

/// A layer a knob can come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnobSource {
    /// eni-ipam's own default (the cloud's for `firstInterfaceIndex`).
    Builtin,
    /// The cluster-wide defaults of the knobs ConfigMap.
    Cluster,
    /// A node-pool override of the knobs ConfigMap, by name.
    NodePool(String),
    /// The ENINode's own spec.
    EniNode,
}

impl fmt::Display for KnobSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KnobSource::Builtin => f.write_str("builtin"),
            KnobSource::Cluster => f.write_str("cluster"),
            KnobSource::NodePool(name) => write!(f, "nodePool/{name}"),
            KnobSource::EniNode => f.write_str("eniNode"),
        }
    }
}

/// What the selectors look at: the Node's labels (empty when the Node is not known).
#[derive(Clone, Copy, Debug)]
pub struct NodeFacts<'a> {
    /// The Node's labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// Layers that together leave the node with knobs it cannot satisfy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{problem} ({sources}); change one of those layers")]
pub struct KnobConflict {
    /// The broken rule, e.g. min-allocate above max-allocate.
    pub problem: KnobError,
    /// Where the values in conflict came from.
    pub sources: String,
}

/// The knobs of the node `spec` describes: `builtin` (eni-ipam's defaults, with the cloud's first
/// interface index), then `config`'s defaults, then every node pool of `config` whose selector
/// matches `facts`, in list order, then whatever the ENINode's own spec sets. Each field comes
/// from the last layer that sets it.
pub fn effective_ipam(
    builtin_first_interface_index: u32,
    config: &KnobConfig,
    facts: NodeFacts<'_>,
    spec: &ENINodeSpec,
) -> Result<EffectiveIpam, KnobConflict> {
    let mut out = Resolved::builtin(builtin_first_interface_index);
    out.apply(&KnobSource::Cluster, &config.defaults.pool, &config.defaults.eni);
    for entry in &config.node_pools {
        if entry.selector.matches(spec.instance_type.as_str(), facts.labels) {
            out.apply(&KnobSource::NodePool(entry.name.clone()), &entry.pool, &entry.eni);
            out.value.node_pools.push(entry.name.clone());
        }
    }
    let own_eni = EniLayer {
        subnet_ids: (!spec.subnet_ids.is_empty()).then(|| spec.subnet_ids.clone()),
        subnet_tags: (!spec.subnet_tags.is_empty()).then(|| spec.subnet_tags.clone()),
        security_groups: (!spec.security_groups.is_empty()).then(|| spec.security_groups.clone()),
    };
    let own_pool = PoolLayer::of(spec.ipam, spec.first_interface_index);
    out.apply(&KnobSource::EniNode, &own_pool, &own_eni);
    out.check()?;
    Ok(out.value)
}

/// An [`EffectiveIpam`] being built layer by layer.
struct Resolved {
    value: EffectiveIpam,
}

impl Resolved {
    fn builtin(first_interface_index: u32) -> Self {
        let knobs = PoolKnobs::default();
        let value = EffectiveIpam {
            pre_allocate: knobs.pre_allocate,
            min_allocate: knobs.min_allocate,
            max_allocate: knobs.max_allocate,
            max_above_watermark: knobs.max_above_watermark,
            first_interface_index,
            sources: FIELDS.iter().map(|f| ((*f).to_owned(), KnobSource::Builtin.to_string())).collect(),
            ..Default::default()
        };
        Self { value }
    }

    fn apply(&mut self, source: &KnobSource, pool: &PoolLayer, eni: &EniLayer) {
        let PoolOverrides { pre_allocate, min_allocate, max_allocate, max_above_watermark } = pool.knobs();
        let v = &mut self.value;
        let sources = &mut v.sources;
        set(sources, source, "preAllocate", &mut v.pre_allocate, pre_allocate);
        set(sources, source, "minAllocate", &mut v.min_allocate, min_allocate);
        set(sources, source, "maxAllocate", &mut v.max_allocate, max_allocate);
        set(sources, source, "maxAboveWatermark", &mut v.max_above_watermark, max_above_watermark);
        set(sources, source, "firstInterfaceIndex", &mut v.first_interface_index, pool.first_interface_index);
        set(sources, source, "subnetIds", &mut v.subnet_ids, eni.subnet_ids.clone());
        set(sources, source, "subnetTags", &mut v.subnet_tags, eni.subnet_tags.clone());
        set(sources, source, "securityGroups", &mut v.security_groups, eni.security_groups.clone());
    }

    fn check(&self) -> Result<(), KnobConflict> {
        let v = &self.value;
        let problem = match v.knobs().validate() {
            Ok(()) => return Ok(()),
            Err(problem) => problem,
        };
        let fields: &[&str] = match problem {
            KnobError::MinAboveMax { .. } => &["minAllocate", "maxAllocate"],
            KnobError::PreAboveMax { .. } => &["preAllocate", "maxAllocate"],
            KnobError::AboveCapacity { .. } => &[],
        };
        let sources =
            fields.iter().map(|f| format!("{f} from {}", v.source(f))).collect::<Vec<_>>().join(", ");
        Err(KnobConflict { problem, sources })
    }
}

/// Every field of [`EffectiveIpam`] that has a source, as spelled in the resource.
pub const FIELDS: [&str; 8] = [
    "preAllocate",
    "minAllocate",
    "maxAllocate",
    "maxAboveWatermark",
    "firstInterfaceIndex",
    "subnetIds",
    "subnetTags",
    "securityGroups",
];

fn set<T>(
    sources: &mut BTreeMap<String, String>,
    source: &KnobSource,
    field: &str,
    slot: &mut T,
    value: Option<T>,
) {
    if let Some(value) = value {
        *slot = value;
        sources.insert(field.to_owned(), source.to_string());
    }
}

#[cfg(test)]
#[path = "effective_table.rs"]
mod table;
