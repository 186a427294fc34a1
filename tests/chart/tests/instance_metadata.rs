//! Pods kept away from the cloud's instance metadata service by default: the agent gets
//! `--block-pod-destination` with the address of the chart's cloud, and none when the
//! value is off. (The drop itself is tested in the e2e traffic matrix: pod refused, node
//! answered.)

use eni_ipam_chart_tests::{Helm, containers, parse_documents};

fn blocked(values: &[&str], sets: &[&str]) -> Vec<String> {
    let objects = parse_documents(&Helm::default().render(values, sets));
    let agent = containers(&objects)
        .into_iter()
        .find(|c| c.workload == "DaemonSet/eni-ipam-agent" && c.name == "agent")
        .expect("the chart renders the agent container");
    agent.args.iter().filter_map(|a| a.strip_prefix("--block-pod-destination=")).map(str::to_owned).collect()
}

#[test]
fn pods_are_kept_from_the_metadata_service_of_the_charts_cloud_by_default() {
    assert_eq!(blocked(&[], &[]), ["169.254.169.254/32"]);
    assert_eq!(blocked(&["examples/aws-values.yaml"], &[]), ["169.254.169.254/32"]);
    assert_eq!(blocked(&["examples/alibaba-values.yaml"], &[]), ["100.100.100.200/32"]);
    assert!(blocked(&[], &["agent.blockInstanceMetadata=false"]).is_empty());
}
