//! The knobs ConfigMap the chart renders is what the operator parses: for every
//! example values file and with node-pool overrides, `KnobConfig::parse` (the
//! operator's own parser) accepts it and reads back the values given; the
//! operator is pointed at that very ConfigMap, and may read it (and no other).

use eni_ipam_api::KnobConfig;
use eni_ipam_api::knob_config::CONFIG_KEY;
use eni_ipam_chart_tests::{Helm, parse_documents};
use serde_json::Value;

fn rendered(values: &[&str], sets: &[&str]) -> (KnobConfig, Vec<Value>) {
    let objects = parse_documents(&Helm::default().render(values, sets));
    let map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "eni-ipam-knobs")
        .expect("the chart renders the knobs ConfigMap");
    let text = map["data"][CONFIG_KEY].as_str().expect("the configuration is under knobs.yaml");
    let config = KnobConfig::parse(text).unwrap_or_else(|e| panic!("{values:?} {sets:?}: {e}\n{text}"));
    (config, objects)
}

#[test]
fn every_example_renders_a_configuration_the_operator_accepts() {
    for values in [&[][..], &["examples/aws-values.yaml"], &["examples/alibaba-values.yaml"]] {
        let (config, _) = rendered(values, &[]);
        assert!(config.defaults.pool.pre_allocate.is_some(), "{values:?}: pool.* is the cluster default");
        assert!(config.node_pools.is_empty());
    }
}

#[test]
fn values_reach_the_configuration_field_by_field() {
    let (config, objects) = rendered(
        &["examples/aws-values.yaml"],
        &[
            "pool.preAllocate=12",
            "pool.maxAllocate=40",
            "pool.firstInterfaceIndex=1",
            "eni.subnetTags.tier=pods",
            "eni.securityGroups={sg-0abc1234}",
            "nodePools[0].name=gpu",
            "nodePools[0].selector.nodePools={gpu}",
            "nodePools[0].selector.instanceTypes={p4d.24xlarge}",
            "nodePools[0].pool.preAllocate=2",
            "nodePools[0].eni.subnetIds={subnet-0gpu}",
        ],
    );
    let pool = config.defaults.pool;
    assert_eq!(
        (pool.pre_allocate, pool.max_allocate, pool.first_interface_index),
        (Some(12), Some(40), Some(1))
    );
    assert_eq!(config.defaults.eni.subnet_tags.as_ref().unwrap()["tier"], "pods");
    assert_eq!(config.defaults.eni.security_groups, Some(vec!["sg-0abc1234".into()]));
    let gpu = &config.node_pools[0];
    assert_eq!(gpu.name, "gpu");
    assert_eq!(gpu.selector.node_pools, ["gpu"]);
    assert_eq!(gpu.selector.instance_types, ["p4d.24xlarge"]);
    assert_eq!(gpu.pool.pre_allocate, Some(2));
    assert_eq!(gpu.eni.subnet_ids, Some(vec!["subnet-0gpu".into()]));
    let operator = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "eni-ipam-operator")
        .expect("the operator Deployment");
    let args = operator["spec"]["template"]["spec"]["containers"][0]["args"].as_array().unwrap();
    let ns = operator["metadata"]["namespace"].as_str().unwrap();
    let flag = format!("--knob-config={ns}/eni-ipam-knobs");
    assert!(args.iter().any(|a| a.as_str() == Some(&flag)), "{flag} not in {args:?}");
    let role = objects
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["name"] == "eni-ipam-operator-knobs")
        .expect("the Role to read the knobs");
    assert_eq!(role["rules"][0]["resourceNames"], serde_json::json!(["eni-ipam-knobs"]));
    assert_eq!(role["metadata"]["namespace"], ns);
}

#[test]
fn a_node_pool_without_a_selector_is_refused_at_install() {
    let refused = Helm::default()
        .template(&["examples/aws-values.yaml"], &["nodePools[0].name=gpu"])
        .expect_err("a node pool without a selector must not install");
    assert!(refused.contains("selector"), "{refused}");
}
