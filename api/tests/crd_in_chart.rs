//! The CRD committed in the Helm chart must be what the Rust types generate,
//! and the generated CRD must carry the scope, subresource, columns and CEL
//! rules the rest of eni-ipam relies on.

use std::path::PathBuf;

use eni_ipam_api::eninode::{RULE_MIN_LE_MAX, RULE_PRE_LE_MAX};
use eni_ipam_api::{ENINode, ReleaseState, crd_yaml};
use kube::CustomResourceExt;

fn chart_crd_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/eni-ipam/crds/eninodes.eni-ipam.io.yaml")
}

#[test]
fn chart_crd_matches_the_generated_one() {
    let path = chart_crd_path();
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == crd_yaml(),
        "{} is missing or differs from what the ENINode types generate; \
         run: cargo run -p eni-ipam-api --bin crdgen > charts/eni-ipam/crds/eninodes.eni-ipam.io.yaml",
        path.display()
    );
}

#[test]
fn crd_is_cluster_scoped_with_status_subresource() {
    let crd = ENINode::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("eninodes.eni-ipam.io"));
    assert_eq!(crd.spec.scope, "Cluster");
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["enin".to_owned()][..]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    let subresources = version.subresources.as_ref().expect("subresources");
    assert!(subresources.status.is_some(), "status subresource missing");
}

#[test]
fn crd_has_the_printer_columns() {
    let crd = ENINode::crd();
    let columns: Vec<(String, String, String)> = crd.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .expect("printer columns")
        .iter()
        .map(|c| (c.name.clone(), c.type_.clone(), c.json_path.clone()))
        .collect();
    let expected = [
        ("Instance", "string", ".spec.instanceId"),
        ("Type", "string", ".spec.instanceType"),
        ("Available", "integer", ".status.available"),
        ("Used", "integer", ".status.inUse"),
        ("ENIs", "integer", ".status.eniCount"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(n, t, p)| (n.to_string(), t.to_string(), p.to_string())).collect();
    assert_eq!(columns, expected);
}

#[test]
fn knob_cel_rules_sit_on_spec_ipam() {
    let crd = serde_json::to_value(ENINode::crd()).unwrap();
    let ipam =
        &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["ipam"];
    let rules: Vec<(&str, &str)> = ipam["x-kubernetes-validations"]
        .as_array()
        .expect("x-kubernetes-validations on spec.ipam")
        .iter()
        .map(|r| (r["rule"].as_str().unwrap(), r["message"].as_str().unwrap()))
        .collect();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert_eq!(rules[0].0, RULE_MIN_LE_MAX);
    assert!(rules[0].1.contains("lower minAllocate or raise maxAllocate"), "{}", rules[0].1);
    assert_eq!(rules[1].0, RULE_PRE_LE_MAX);
    assert!(rules[1].1.contains("lower preAllocate or raise maxAllocate"), "{}", rules[1].1);
    // No schema default: a value the apiserver filled in would count as set on the node and
    // hide the cluster-wide knobs from it. The rules test has() for that reason.
    for knob in ["preAllocate", "minAllocate", "maxAllocate", "maxAboveWatermark"] {
        assert!(ipam["properties"][knob]["default"].is_null(), "{knob} has a schema default");
        assert!(
            rules.iter().filter(|r| r.0.contains(knob)).all(|r| r.0.contains(&format!("has(self.{knob})")))
        );
    }
    assert!(ipam["default"].is_null(), "spec.ipam has a schema default");
    assert!(crd_yaml().contains(RULE_MIN_LE_MAX));
}

#[test]
fn knob_integers_are_non_negative_and_interface_index_is_bounded() {
    let crd = serde_json::to_value(ENINode::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for knob in ["preAllocate", "minAllocate", "maxAllocate", "maxAboveWatermark"] {
        assert_eq!(spec["ipam"]["properties"][knob]["minimum"].as_f64(), Some(0.0), "{knob}");
    }
    assert_eq!(spec["firstInterfaceIndex"]["maximum"].as_f64(), Some(15.0));
}

#[test]
fn sample_eninode_deserializes() {
    let sample = serde_json::json!({
        "apiVersion": "eni-ipam.io/v1alpha1",
        "kind": "ENINode",
        "metadata": {"name": "ip-10-0-1-23.ec2.internal"},
        "spec": {
            "instanceId": "i-0abc1234",
            "instanceType": "m5.large",
            "zone": "us-east-1a",
            "vpcId": "vpc-1",
            "ipam": {"preAllocate": 4, "maxAllocate": 20},
            "subnetTags": {"eni-ipam.io/pods": "true"},
            "securityGroups": ["sg-1"],
            "firstInterfaceIndex": 1,
            "pool": {
                "10.0.32.7": {"eni": "eni-0a", "subnet": "subnet-1"},
                "10.0.32.8": {"eni": "eni-0a", "subnet": "subnet-1"}
            }
        },
        "status": {
            "used": {"10.0.32.7": "default/web-0"},
            // eni-0a as an operator before subnetCidr/gateway wrote it; eni-0b as one after.
            "enis": {"eni-0a": {"mac": "0a:1b:2c:3d:4e:5f", "deviceIndex": 1, "subnet": "subnet-1",
                                "ips": ["10.0.32.7", "10.0.32.8"]},
                     "eni-0b": {"mac": "0a:1b:2c:3d:4e:60", "deviceIndex": 2, "subnet": "subnet-2",
                                "subnetCidr": "10.0.64.0/19", "gateway": "10.0.64.1"}},
            "release": {"10.0.32.8": "do-not-release"},
            "conditions": [{"type": "PoolReady", "status": "True", "reason": "WarmPoolFull",
                            "lastTransitionTime": "2025-01-01T00:00:00Z"}],
            "available": 2,
            "inUse": 1,
            "eniCount": 2,
            "effectiveIpam": {"preAllocate": 4, "minAllocate": 2, "maxAllocate": 20, "maxAboveWatermark": 0,
                              "firstInterfaceIndex": 1, "securityGroups": ["sg-1"],
                              "sources": {"preAllocate": "eniNode", "minAllocate": "nodePool/gpu"},
                              "nodePools": ["gpu"]}
        }
    });
    let node: ENINode = serde_json::from_value(sample.clone()).unwrap();
    assert_eq!(node.spec.instance_id.as_str(), "i-0abc1234");
    assert_eq!(node.spec.ipam.pre_allocate, Some(4));
    assert_eq!(node.spec.ipam.min_allocate, None, "unset: the cluster-wide knobs decide");
    assert!(node.spec.subnet_ids.is_empty());
    assert_eq!(node.spec.pool_size(), 2);
    let status = node.status.as_ref().unwrap();
    assert_eq!(status.used_count(), 1);
    assert_eq!(status.release_state("10.0.32.8"), Some(ReleaseState::DoNotRelease));
    assert_eq!(status.enis["eni-0a"].device_index, 1);
    assert_eq!(
        (status.enis["eni-0a"].subnet_cidr.as_str(), status.enis["eni-0a"].gateway.as_str()),
        ("", "")
    );
    assert_eq!(
        (status.enis["eni-0b"].subnet_cidr.as_str(), status.enis["eni-0b"].gateway.as_str()),
        ("10.0.64.0/19", "10.0.64.1")
    );
    assert_eq!(status.condition("PoolReady").unwrap().reason, "WarmPoolFull");
    assert_eq!(node.free_ips().count(), 0);
    let effective = status.effective_ipam.as_ref().unwrap();
    assert_eq!((effective.min_allocate, effective.source("minAllocate")), (2, "nodePool/gpu"));
    // Round trip keeps every field the sample set (defaults aside).
    let back: ENINode = serde_json::from_value(serde_json::to_value(&node).unwrap()).unwrap();
    assert_eq!(back, node);
}
