//! The cluster-wide knob configuration the operator watches (the chart renders it
//! from `pool.*`, `eni.*` and `nodePools` into a ConfigMap): defaults for every
//! node, then node-pool overrides chosen by node labels. Parsing rejects what no
//! node could use, naming the field, so a bad edit never replaces a good config.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eninode::MAX_FIRST_INTERFACE_INDEX;
use crate::ids::{SecurityGroupId, SubnetId};
use crate::knobs::{PoolKnobs, PoolOverrides};

/// The ConfigMap key holding the configuration (YAML).
pub const CONFIG_KEY: &str = "knobs.yaml";

/// The Node labels a `nodePools` selector entry is looked up in: Karpenter's node pool,
/// an EKS managed node group, an ACK node pool.
pub const NODE_POOL_LABELS: [&str; 3] =
    ["karpenter.sh/nodepool", "eks.amazonaws.com/nodegroup", "alibabacloud.com/nodepool-id"];

/// The Node label of the instance type.
pub const INSTANCE_TYPE_LABEL: &str = "node.kubernetes.io/instance-type";

/// Cluster-wide knobs: `defaults` for every node, then each matching entry of
/// `nodePools` in list order (a later entry wins over an earlier one, field by field).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnobConfig {
    /// What every node gets unless an override or its ENINode says otherwise.
    #[serde(default)]
    pub defaults: KnobLayer,
    /// Overrides for the nodes their selector matches, applied in this order.
    #[serde(default)]
    pub node_pools: Vec<NodePoolOverride>,
}

/// The knobs one layer sets; anything unset falls through to the layer below.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnobLayer {
    /// Pool knobs.
    #[serde(default)]
    pub pool: PoolLayer,
    /// Where new ENIs go.
    #[serde(default)]
    pub eni: EniLayer,
}

/// Pool knobs of a layer, and the first usable device index (the chart's `pool.*`).
/// Spelled out rather than a flattened [`PoolOverrides`], so an error names the field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolLayer {
    /// Free IPs to keep ready for new pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_allocate: Option<u32>,
    /// The pool's floor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_allocate: Option<u32>,
    /// The pool's ceiling; 0 means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allocate: Option<u32>,
    /// Extra IPs taken when allocating anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_above_watermark: Option<u32>,
    /// First ENI device index whose IPs pods may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_interface_index: Option<u32>,
}

impl PoolLayer {
    /// The pool knobs this layer sets.
    pub fn knobs(&self) -> PoolOverrides {
        PoolOverrides {
            pre_allocate: self.pre_allocate,
            min_allocate: self.min_allocate,
            max_allocate: self.max_allocate,
            max_above_watermark: self.max_above_watermark,
        }
    }

    /// A layer of an ENINode's own spec: `spec.ipam` and `spec.firstInterfaceIndex`.
    pub fn of(knobs: PoolOverrides, first_interface_index: Option<u32>) -> Self {
        Self {
            pre_allocate: knobs.pre_allocate,
            min_allocate: knobs.min_allocate,
            max_allocate: knobs.max_allocate,
            max_above_watermark: knobs.max_above_watermark,
            first_interface_index,
        }
    }
}

/// Where new ENIs of a layer go. An empty list set here still counts as set (it means "any").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EniLayer {
    /// Subnets new ENIs may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_ids: Option<Vec<SubnetId>>,
    /// Tags a subnet must carry to be used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_tags: Option<BTreeMap<String, String>>,
    /// Security groups of new ENIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<SecurityGroupId>>,
}

/// Knobs for the nodes `selector` matches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolOverride {
    /// A name for people and for `status.effectiveIpam.sources` (`nodePool/<name>`).
    pub name: String,
    /// Which nodes: every criterion given must hold.
    pub selector: NodeSelector,
    /// Pool knobs for those nodes.
    #[serde(default)]
    pub pool: PoolLayer,
    /// Where their new ENIs go.
    #[serde(default)]
    pub eni: EniLayer,
}

/// Which nodes an override is for. Every criterion given must hold; within a list, any entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// Instance types (`node.kubernetes.io/instance-type`, else the ENINode's `spec.instanceType`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<String>,
    /// Node pool names, looked up in the labels [`NODE_POOL_LABELS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_pools: Vec<String>,
    /// Labels the Node must carry with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Label requirements, as in a Kubernetes label selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelRequirement>,
}

/// One requirement on a label, as in a Kubernetes label selector.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelRequirement {
    /// The label key.
    pub key: String,
    /// How the label is compared.
    pub operator: LabelOperator,
    /// The values (In, NotIn); none for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LabelOperator {
    /// The label has one of the values.
    In,
    /// The label is missing or has none of the values.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is missing.
    DoesNotExist,
}

/// A configuration that cannot be used: the field (as a path in the YAML) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct KnobConfigError {
    /// Where, e.g. `nodePools[1].pool.minAllocate` (empty: the document itself).
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

fn error(field: impl Into<String>, message: impl Into<String>) -> KnobConfigError {
    KnobConfigError { field: field.into(), message: message.into() }
}

impl NodeSelector {
    /// Whether a node of `instance_type` with `labels` is selected.
    pub fn matches(&self, instance_type: &str, labels: &BTreeMap<String, String>) -> bool {
        let instance_type = labels.get(INSTANCE_TYPE_LABEL).map_or(instance_type, String::as_str);
        (self.instance_types.is_empty() || self.instance_types.iter().any(|t| t == instance_type))
            && (self.node_pools.is_empty()
                || NODE_POOL_LABELS
                    .iter()
                    .filter_map(|key| labels.get(*key))
                    .any(|pool| self.node_pools.contains(pool)))
            && self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    fn is_empty(&self) -> bool {
        self.instance_types.is_empty()
            && self.node_pools.is_empty()
            && self.match_labels.is_empty()
            && self.match_expressions.is_empty()
    }
}

impl LabelRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            LabelOperator::In => value.is_some_and(|v| self.values.contains(v)),
            LabelOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            LabelOperator::Exists => value.is_some(),
            LabelOperator::DoesNotExist => value.is_none(),
        }
    }
}

impl KnobConfig {
    /// Parses and checks the YAML of the ConfigMap key [`CONFIG_KEY`]. An unknown key, a
    /// value of the wrong type or knobs no node can satisfy are errors naming the field.
    pub fn parse(yaml: &str) -> Result<Self, KnobConfigError> {
        let document: Value = if yaml.trim().is_empty() {
            Value::Object(Default::default())
        } else {
            serde_saphyr::from_str(yaml).map_err(|e| error("", format!("not valid YAML: {e}")))?
        };
        let config: KnobConfig = serde_path_to_error::deserialize(&document).map_err(|e| {
            let path = e.path().to_string();
            error(if path == "." { String::new() } else { path }, e.into_inner().to_string())
        })?;
        let understood = serde_json::to_value(&config).expect("the knob configuration serializes");
        if let Some(path) = unknown_key(&document, &understood, String::new()) {
            return Err(error(
                path,
                "unknown key; see docs/operations.md (Knobs) for the keys of the knob configuration",
            ));
        }
        config.validate()?;
        Ok(config)
    }

    /// The checks beyond types: knobs each layer leaves impossible, selectors that cannot work.
    pub fn validate(&self) -> Result<(), KnobConfigError> {
        let defaults = self.defaults.pool.knobs().over(PoolKnobs::default());
        check_layer("defaults.pool", &self.defaults.pool, defaults)?;
        let mut names = BTreeSet::new();
        for (i, entry) in self.node_pools.iter().enumerate() {
            let at = format!("nodePools[{i}]");
            if entry.name.trim().is_empty() {
                return Err(error(format!("{at}.name"), "empty; give every override a name"));
            }
            if !names.insert(entry.name.as_str()) {
                return Err(error(format!("{at}.name"), format!("{:?} is used twice", entry.name)));
            }
            let at = format!("{at} ({})", entry.name);
            if entry.selector.is_empty() {
                return Err(error(
                    format!("{at}.selector"),
                    "selects every node; give instanceTypes, nodePools, matchLabels or matchExpressions, \
                     or put these knobs in defaults",
                ));
            }
            for (j, req) in entry.selector.match_expressions.iter().enumerate() {
                let field = format!("{at}.selector.matchExpressions[{j}]");
                let wants_values = matches!(req.operator, LabelOperator::In | LabelOperator::NotIn);
                if req.key.is_empty() {
                    return Err(error(field, "key is empty"));
                }
                if wants_values == req.values.is_empty() {
                    return Err(error(
                        field,
                        format!(
                            "operator {:?} {} values",
                            req.operator,
                            if wants_values { "needs" } else { "takes no" }
                        ),
                    ));
                }
            }
            check_layer(&format!("{at}.pool"), &entry.pool, entry.pool.knobs().over(defaults))?;
        }
        Ok(())
    }
}

fn check_layer(at: &str, layer: &PoolLayer, merged: PoolKnobs) -> Result<(), KnobConfigError> {
    if let Some(index) = layer.first_interface_index.filter(|i| *i > MAX_FIRST_INTERFACE_INDEX) {
        return Err(error(
            format!("{at}.firstInterfaceIndex"),
            format!("{index} is above {MAX_FIRST_INTERFACE_INDEX}: no instance type has that many ENIs"),
        ));
    }
    merged.validate().map_err(|e| error(at, format!("{e} (with the layers below applied)")))
}

/// The first key of `given` (ignoring `null`s) that did not survive the round trip
/// through the types, as a path.
fn unknown_key(given: &Value, understood: &Value, at: String) -> Option<String> {
    match (given, understood) {
        (Value::Object(given), Value::Object(understood)) => given.iter().find_map(|(key, value)| {
            let path = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
            match understood.get(key) {
                None if value.is_null() => None,
                None => Some(path),
                Some(known) => unknown_key(value, known, path),
            }
        }),
        (Value::Array(given), Value::Array(understood)) => given
            .iter()
            .zip(understood)
            .enumerate()
            .find_map(|(i, (g, u))| unknown_key(g, u, format!("{at}[{i}]"))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(yaml: &str) -> KnobConfigError {
        KnobConfig::parse(yaml).expect_err("the configuration is refused")
    }

    #[test]
    fn a_full_configuration_parses() {
        let config = KnobConfig::parse(
            r#"
defaults:
  pool: {preAllocate: 8, minAllocate: 0, maxAllocate: 0, maxAboveWatermark: 0, firstInterfaceIndex: null}
  eni: {subnetIds: [], subnetTags: {"kubernetes.io/role/pods": "1"}, securityGroups: [sg-1]}
nodePools:
  - name: gpu
    selector:
      instanceTypes: [p4d.24xlarge]
      nodePools: [gpu]
      matchLabels: {team: ml}
      matchExpressions: [{key: spot, operator: DoesNotExist}]
    pool: {preAllocate: 2}
    eni: {subnetIds: [subnet-gpu]}
"#,
        )
        .unwrap();
        assert_eq!(config.defaults.pool.pre_allocate, Some(8));
        assert_eq!(config.defaults.pool.first_interface_index, None);
        assert_eq!(config.defaults.eni.subnet_ids, Some(vec![]));
        assert_eq!(config.node_pools[0].pool.pre_allocate, Some(2));
        assert_eq!(config.node_pools[0].eni.security_groups, None);
        assert_eq!(KnobConfig::parse("").unwrap(), KnobConfig::default());
    }

    #[test]
    fn bad_configurations_name_the_field() {
        for (yaml, field, says) in [
            ("defaults: [", "", "not valid YAML"),
            ("defaults: {pool: {preAllocate: many}}", "defaults.pool.preAllocate", "invalid type"),
            ("defaults: {pool: {preAlocate: 3}}", "defaults.pool.preAlocate", "unknown key"),
            (
                "nodePools: [{name: a, selector: {instanceType: [m5.large]}}]",
                "nodePools[0].selector.instanceType",
                "unknown key",
            ),
            (
                "nodePools: [{name: a, selector: {nodePools: [x]}, pool: {}, extra: 1}]",
                "nodePools[0].extra",
                "unknown key",
            ),
            (
                "defaults: {pool: {minAllocate: 20, maxAllocate: 10}}",
                "defaults.pool",
                "min-allocate (20) is greater than max-allocate (10)",
            ),
            (
                "defaults: {pool: {maxAllocate: 4}}",
                "defaults.pool",
                "pre-allocate (8) is greater than max-allocate (4)",
            ),
            (
                "defaults: {pool: {maxAllocate: 10}}\nnodePools: [{name: big, selector: {nodePools: [big]}, pool: {minAllocate: 12}}]",
                "nodePools[0] (big).pool",
                "min-allocate (12)",
            ),
            ("defaults: {pool: {firstInterfaceIndex: 99}}", "defaults.pool.firstInterfaceIndex", "above 15"),
            ("nodePools: [{name: a, selector: {}}]", "nodePools[0] (a).selector", "selects every node"),
            ("nodePools: [{name: '', selector: {nodePools: [x]}}]", "nodePools[0].name", "empty"),
            (
                "nodePools: [{name: a, selector: {nodePools: [x]}}, {name: a, selector: {nodePools: [z]}}]",
                "nodePools[1].name",
                "used twice",
            ),
            (
                "nodePools: [{name: a, selector: {matchExpressions: [{key: k, operator: In}]}}]",
                "nodePools[0] (a).selector.matchExpressions[0]",
                "needs values",
            ),
            (
                "nodePools: [{name: a, selector: {matchExpressions: [{key: k, operator: Like}]}}]",
                "nodePools[0].selector.matchExpressions[0].operator",
                "unknown variant",
            ),
        ] {
            let err = parse_err(yaml);
            assert_eq!(err.field, field, "{yaml}: {err}");
            assert!(err.message.contains(says), "{yaml}: {err}");
        }
    }

    #[test]
    fn selectors_match_like_kubernetes_label_selectors() {
        let labels: BTreeMap<String, String> = [
            ("karpenter.sh/nodepool", "gpu"),
            ("node.kubernetes.io/instance-type", "p4d.24xlarge"),
            ("team", "ml"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let selector = |yaml: &str| serde_saphyr::from_str::<NodeSelector>(yaml).unwrap();
        for (yaml, instance_type, selected) in [
            ("{instanceTypes: [p4d.24xlarge]}", "m5.large", true),
            ("{instanceTypes: [m5.large]}", "m5.large", false),
            ("{nodePools: [cpu, gpu]}", "", true),
            ("{nodePools: [cpu]}", "", false),
            ("{matchLabels: {team: ml}}", "", true),
            ("{matchLabels: {team: web}}", "", false),
            ("{matchExpressions: [{key: team, operator: In, values: [ml, web]}]}", "", true),
            ("{matchExpressions: [{key: team, operator: NotIn, values: [ml]}]}", "", false),
            ("{matchExpressions: [{key: spot, operator: NotIn, values: [true]}]}", "", true),
            ("{matchExpressions: [{key: team, operator: Exists}]}", "", true),
            ("{matchExpressions: [{key: team, operator: DoesNotExist}]}", "", false),
            ("{nodePools: [gpu], matchLabels: {team: web}}", "", false),
        ] {
            assert_eq!(selector(yaml).matches(instance_type, &labels), selected, "{yaml}");
        }
        let unlabelled = BTreeMap::new();
        assert!(selector("{instanceTypes: [m5.large]}").matches("m5.large", &unlabelled));
    }
}
