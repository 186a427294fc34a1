//! The Grafana dashboard queries metrics the binaries really export.

use std::collections::BTreeSet;

use eni_ipam_chart_tests::{Helm, parse_documents};
use serde_json::Value;

/// Metric names in a PromQL expression (`eni_ipam_...`), without the
/// `_total` / `_bucket` / `_sum` / `_count` suffixes of the exposition.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("eni_ipam_") {
        let tail = &rest[start..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.push(family.to_owned());
        rest = &tail[end..];
    }
    names
}

/// Metric families named in `# TYPE` lines of an exposition.
fn families(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// What the agent, the device plugin and the webhook export, once each
/// labelled family has seen one event (empty families print nothing).
fn exported() -> BTreeSet<String> {
    let folder = tempfile::tempdir().expect("temp dir");
    let store = eni_ipam_agent::state::StateStore::new(folder.path().join("state.json"));
    let (ipam, _) =
        eni_ipam_agent::ipam::Ipam::open("node-a", store, eni_ipam_agent::pool::NodePool::default(), None)
            .expect("an empty IPAM");
    let agent = eni_ipam_agent::metrics::Metrics::default();
    agent.count_call("allocate", true);
    let mut all = families(&agent.encode(&ipam));

    use eni_ipam_device_plugin::metrics::Metrics as PluginMetrics;
    let plugin = PluginMetrics::new();
    for family in
        [&plugin.agent_polls, &plugin.pod_resources_reads, &plugin.registrations, &plugin.allocations]
    {
        PluginMetrics::count(family, "ok");
    }
    all.extend(families(&plugin.encode()));

    use eni_ipam_webhook::metrics::{RequestOutcome, WebhookMetrics};
    let webhook = WebhookMetrics::new();
    webhook.observe_request(RequestOutcome::Patched, std::time::Duration::from_micros(40));
    webhook.count_skip("host_network");
    webhook.count_tls_reload(true);
    all.extend(families(&webhook.encode()));

    use eni_ipam_cloud::{Api, AttemptResult, CallObserver};
    let operator = eni_ipam_operator::metrics::OperatorMetrics::default();
    operator.attempt(Api::CreateNetworkInterface, AttemptResult::Ok, Default::default(), Default::default());
    operator.resync(true, Default::default());
    let cache = std::sync::Arc::new(eni_ipam_operator::instances::InstancesCache::new());
    cache.set_subnets(vec![eni_ipam_cloud::Subnet {
        id: "subnet-1".into(),
        vpc: "vpc-1".into(),
        zone: "a".into(),
        cidr: "10.0.0.0/24".into(),
        free_ips: 250,
        tags: Default::default(),
    }]);
    operator.set_cloud_cache(cache);
    all.extend(families(&operator.encode()));
    all
}

fn dashboard() -> Value {
    let objects = parse_documents(&Helm::default().render(&[], &["monitoring.dashboard.enabled=true"]));
    let config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("a ConfigMap with the sidecar label grafana_dashboard=1");
    let text = config_map["data"]["eni-ipam.json"].as_str().expect("eni-ipam.json");
    serde_json::from_str(text).expect("the dashboard is JSON")
}

#[test]
fn every_query_names_an_exported_metric() {
    let dashboard = dashboard();
    let exported = exported();
    let mut missing = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            for name in metric_names(expr) {
                if !exported.contains(&name) {
                    missing.push(format!("{} queries {name}", panel["title"]));
                }
            }
        }
    }
    assert!(missing.is_empty(), "unknown metrics (exported: {exported:?}):\n{}", missing.join("\n"));
}

#[test]
fn the_dashboard_shows_what_the_issue_asks_for() {
    let dashboard = dashboard();
    let titles: Vec<&str> =
        dashboard["panels"].as_array().expect("panels").iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Pool usage per node",
        "Free IPs per subnet",
        "Cloud API calls",
        "Cloud API throttling",
        "Allocation latency",
        "Nodes short of IPs (operator)",
        "Nodes with no free pod IP",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted:?} in {titles:?}");
    }
}
