//! The example KubeSchedulerConfiguration scores the resource the chart
//! advertises. kubernetes-validate has no schema for the scheduler's own
//! configuration, so its shape is checked here against the v1 API's fields.

use eni_ipam_chart_tests::{chart_dir, parse_documents};
use serde_json::Value;

fn default_resource_name() -> String {
    let values = std::fs::read_to_string(chart_dir().join("values.yaml")).expect("values.yaml");
    let values: Value = serde_saphyr::from_str(&values).expect("values.yaml is YAML");
    values["resourceName"].as_str().expect("resourceName").to_owned()
}

#[test]
fn both_profiles_score_the_charts_resource_with_node_resources_fit() {
    let text =
        std::fs::read_to_string(chart_dir().join("examples/scheduler-config.yaml")).expect("the example");
    let documents = parse_documents(&text);
    assert_eq!(documents.len(), 1);
    let config = &documents[0];
    assert_eq!(config["apiVersion"], "kubescheduler.config.k8s.io/v1");
    assert_eq!(config["kind"], "KubeSchedulerConfiguration");
    let resource = default_resource_name();
    let mut strategies = Vec::new();
    for profile in config["profiles"].as_array().expect("profiles") {
        let fit = profile["pluginConfig"]
            .as_array()
            .and_then(|c| c.iter().find(|p| p["name"] == "NodeResourcesFit"))
            .expect("NodeResourcesFit args");
        let strategy = &fit["args"]["scoringStrategy"];
        let kind = strategy["type"].as_str().expect("type");
        assert!(["MostAllocated", "LeastAllocated"].contains(&kind), "{kind}");
        let ip = strategy["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == resource.as_str()))
            .unwrap_or_else(|| panic!("profile {} does not score {resource}", profile["schedulerName"]));
        assert!(ip["weight"].as_i64().is_some_and(|w| (1..=100).contains(&w)), "weight 1..=100: {ip}");
        strategies.push(kind.to_owned());
    }
    assert_eq!(strategies, ["MostAllocated", "LeastAllocated"]);
}
