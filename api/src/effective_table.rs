//! How the layers combine, one row per rule. The same cluster configuration
//! serves every row; rows differ by the node's labels and its own ENINode spec.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

/// The cloud's default first interface index in these rows (Alibaba's).
const CLOUD_FIRST_INDEX: u32 = 1;

const CLUSTER: &str = r#"
defaults:
  pool: {preAllocate: 10, maxAllocate: 50}
  eni: {securityGroups: [sg-cluster]}
nodePools:
  - name: gpu
    selector: {nodePools: [gpu]}
    pool: {preAllocate: 2, minAllocate: 4}
    eni: {subnetIds: [subnet-gpu]}
  - name: big-gpu
    selector: {instanceTypes: [p4d.24xlarge], nodePools: [gpu]}
    pool: {preAllocate: 6}
  - name: team-ml
    selector: {matchLabels: {team: ml}}
    eni: {subnetIds: []}
"#;

struct Row {
    rule: &'static str,
    /// The knobs ConfigMap (`""`: none, so only the built-in defaults).
    config: &'static str,
    instance_type: &'static str,
    labels: &'static [(&'static str, &'static str)],
    /// What the ENINode's own spec sets besides its identity.
    own: Value,
    /// field -> (value, where it came from)
    expect: &'static [(&'static str, &'static str, &'static str)],
}

fn resolve(row: &Row) -> Result<EffectiveIpam, KnobConflict> {
    let config = KnobConfig::parse(row.config).expect("the rows' configuration is valid");
    let labels: BTreeMap<String, String> =
        row.labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let mut spec =
        json!({"instanceId": "i-1", "instanceType": row.instance_type, "zone": "z-a", "vpcId": "vpc-1"});
    spec.as_object_mut().unwrap().extend(row.own.as_object().unwrap().clone());
    let spec: ENINodeSpec = serde_json::from_value(spec).expect("a valid ENINode spec");
    effective_ipam(CLOUD_FIRST_INDEX, &config, NodeFacts { labels: &labels }, &spec)
}

#[test]
fn how_defaults_node_pool_overrides_and_the_eninode_combine() {
    let rows = [
        Row {
            rule: "nothing configured anywhere: eni-ipam's own defaults and the cloud's first interface index",
            config: "",
            instance_type: "m5.large",
            labels: &[],
            own: json!({}),
            expect: &[
                ("preAllocate", "8", "builtin"),
                ("maxAllocate", "0", "builtin"),
                ("firstInterfaceIndex", "1", "builtin"),
                ("securityGroups", "[]", "builtin"),
            ],
        },
        Row {
            rule: "a node no override selects gets the cluster-wide defaults, and built-ins for what they leave unset",
            config: CLUSTER,
            instance_type: "m5.large",
            labels: &[("karpenter.sh/nodepool", "general")],
            own: json!({}),
            expect: &[
                ("preAllocate", "10", "cluster"),
                ("maxAllocate", "50", "cluster"),
                ("minAllocate", "0", "builtin"),
                ("securityGroups", r#"["sg-cluster"]"#, "cluster"),
                ("subnetIds", "[]", "builtin"),
            ],
        },
        Row {
            rule: "a node-pool override replaces only the fields it sets",
            config: CLUSTER,
            instance_type: "m5.large",
            labels: &[("karpenter.sh/nodepool", "gpu")],
            own: json!({}),
            expect: &[
                ("preAllocate", "2", "nodePool/gpu"),
                ("minAllocate", "4", "nodePool/gpu"),
                ("maxAllocate", "50", "cluster"),
                ("subnetIds", r#"["subnet-gpu"]"#, "nodePool/gpu"),
                ("securityGroups", r#"["sg-cluster"]"#, "cluster"),
            ],
        },
        Row {
            rule: "a pool name matches under EKS's node-group label as under Karpenter's",
            config: CLUSTER,
            instance_type: "m5.large",
            labels: &[("eks.amazonaws.com/nodegroup", "gpu")],
            own: json!({}),
            expect: &[("preAllocate", "2", "nodePool/gpu")],
        },
        Row {
            rule: "several overrides select a node: they apply in list order, the later one wins field by field",
            config: CLUSTER,
            instance_type: "p4d.24xlarge",
            labels: &[("karpenter.sh/nodepool", "gpu")],
            own: json!({}),
            expect: &[("preAllocate", "6", "nodePool/big-gpu"), ("minAllocate", "4", "nodePool/gpu")],
        },
        Row {
            rule: "an empty list an override sets counts as set: any subnet again",
            config: CLUSTER,
            instance_type: "m5.large",
            labels: &[("karpenter.sh/nodepool", "gpu"), ("team", "ml")],
            own: json!({}),
            expect: &[("subnetIds", "[]", "nodePool/team-ml"), ("preAllocate", "2", "nodePool/gpu")],
        },
        Row {
            rule: "the ENINode's own spec.ipam wins where it sets a field, and only there",
            config: CLUSTER,
            instance_type: "m5.large",
            labels: &[("karpenter.sh/nodepool", "gpu")],
            own: json!({"ipam": {"preAllocate": 20}}),
            expect: &[
                ("preAllocate", "20", "eniNode"),
                ("minAllocate", "4", "nodePool/gpu"),
                ("maxAllocate", "50", "cluster"),
            ],
        },
        Row {
            rule: "the ENINode's own subnets, tags, security groups and first interface index win too",
            config: CLUSTER,
            instance_type: "m5.large",
            labels: &[("karpenter.sh/nodepool", "gpu")],
            own: json!({"subnetIds": ["subnet-own"], "subnetTags": {"pods": "1"},
                        "securityGroups": ["sg-own"], "firstInterfaceIndex": 2}),
            expect: &[
                ("subnetIds", r#"["subnet-own"]"#, "eniNode"),
                ("subnetTags", r#"{"pods":"1"}"#, "eniNode"),
                ("securityGroups", r#"["sg-own"]"#, "eniNode"),
                ("firstInterfaceIndex", "2", "eniNode"),
            ],
        },
        Row {
            rule: "empty lists in an ENINode's spec are not set: the layers below decide",
            config: CLUSTER,
            instance_type: "m5.large",
            labels: &[],
            own: json!({"subnetIds": [], "securityGroups": []}),
            expect: &[("securityGroups", r#"["sg-cluster"]"#, "cluster")],
        },
        Row {
            rule: "an ENINode whose spec sets every knob (as older agents wrote them) keeps all of them",
            config: CLUSTER,
            instance_type: "m5.large",
            labels: &[("karpenter.sh/nodepool", "gpu")],
            own: json!({"ipam": {"preAllocate": 8, "minAllocate": 0, "maxAllocate": 0, "maxAboveWatermark": 0}}),
            expect: &[
                ("preAllocate", "8", "eniNode"),
                ("minAllocate", "0", "eniNode"),
                ("maxAllocate", "0", "eniNode"),
                ("maxAboveWatermark", "0", "eniNode"),
            ],
        },
    ];
    for row in rows {
        let effective = resolve(&row).unwrap_or_else(|e| panic!("{}: {e}", row.rule));
        let as_json = serde_json::to_value(&effective).unwrap();
        for (field, value, source) in row.expect {
            let value: Value = serde_json::from_str(value).unwrap();
            let got = as_json.get(*field).cloned().unwrap_or(json!([]));
            assert_eq!(got, value, "{}: {field}", row.rule);
            assert_eq!(effective.source(field), *source, "{}: where {field} came from", row.rule);
        }
        assert_eq!(effective.sources.len(), FIELDS.len(), "{}: every field has a source", row.rule);
    }
}

#[test]
fn layers_that_conflict_name_where_each_value_came_from() {
    let row = Row {
        rule: "the ENINode's minAllocate is above the cluster's maxAllocate",
        config: CLUSTER,
        instance_type: "m5.large",
        labels: &[],
        own: json!({"ipam": {"minAllocate": 60}}),
        expect: &[],
    };
    let err = resolve(&row).expect_err(row.rule);
    assert_eq!(err.problem, KnobError::MinAboveMax { min: 60, max: 50 });
    let text = err.to_string();
    assert!(text.contains("minAllocate from eniNode, maxAllocate from cluster"), "{text}");
}

#[test]
fn the_node_pools_that_applied_are_listed_in_order() {
    let row = Row {
        rule: "",
        config: CLUSTER,
        instance_type: "p4d.24xlarge",
        labels: &[("karpenter.sh/nodepool", "gpu"), ("team", "ml")],
        own: json!({}),
        expect: &[],
    };
    assert_eq!(resolve(&row).unwrap().node_pools, ["gpu", "big-gpu", "team-ml"]);
}
