//! The operator and the webhook start on a cluster where no pod has an IP yet:
//! they run on the node's network (hostNetwork), on nodes that are not ready,
//! and every port the chart opens on a node is clear of kubelet, kube-proxy,
//! the control plane and the chart's other ports. Bound ports are read from
//! the rendered command lines through the binaries' own clap parsers, so a
//! flag that binds elsewhere than the pod spec declares is caught.

use std::collections::BTreeMap;

use clap::CommandFactory;
use eni_ipam_chart_tests::{Helm, RenderedContainer, command_line, containers, flag_value, parse_documents};
use serde_json::{Value, json};

/// Ports every node already holds, and whose they are (kubelet and kube-proxy
/// everywhere; the control plane on nodes the operator and webhook tolerate).
const RESERVED: &[(u16, &str)] = &[
    (10248, "kubelet healthz"),
    (10250, "kubelet"),
    (10255, "kubelet read-only"),
    (10249, "kube-proxy metrics"),
    (10256, "kube-proxy healthz"),
    (10257, "kube-controller-manager"),
    (10259, "kube-scheduler"),
    (6443, "kube-apiserver"),
    (2379, "etcd"),
    (2380, "etcd peers"),
    (2381, "etcd metrics"),
];

const SCENARIOS: &[(&str, &[&str])] = &[
    ("default values", &[]),
    ("aws example", &["examples/aws-values.yaml"]),
    ("alibaba example", &["examples/alibaba-values.yaml"]),
];

/// The parser of a program the chart runs, and its flags that bind a socket.
fn listeners(program: &str) -> (clap::Command, &'static [&'static str]) {
    match program {
        "eni-ipam-operator" => (
            eni_ipam_operator::cli::Cli::command().find_subcommand("run").expect("run").clone(),
            &["metrics-addr"],
        ),
        "eni-ipam-webhook" => (eni_ipam_webhook::cli::WebhookArgs::command(), &["listen", "metrics-addr"]),
        "eni-ipam-agent" => (eni_ipam_agent::cli::Cli::command(), &["metrics-addr"]),
        "eni-ipam-device-plugin" => (eni_ipam_device_plugin::cli::Cli::command(), &["metrics-addr"]),
        other => panic!("{other} has no parser in this test: add it to listeners()"),
    }
}

/// The ports a container's binary binds, read from its command line by its parser.
fn bound_ports(container: &RenderedContainer) -> Vec<(String, u16)> {
    let program = container.program().expect("a command");
    if program == "eni-ipam-operator" && container.args.first().is_some_and(|a| a == "uninstall") {
        // The uninstall hook steps (tests/uninstall_hooks.rs) only call the apiserver.
        return Vec::new();
    }
    let (parser, flags) = listeners(program);
    let line = command_line(container, &parser);
    flags
        .iter()
        .map(|flag| {
            let value = flag_value(&parser, &line.argv, flag)
                .unwrap_or_else(|| panic!("{}: --{flag} does not parse: {:?}", container.label(), line.argv));
            let port = value
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{}: --{flag}={value} names no port", container.label()));
            (format!("{} --{flag}", container.label()), port)
        })
        .collect()
}

fn deployment<'a>(objects: &'a [Value], component: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == "Deployment" && o["metadata"]["labels"]["app.kubernetes.io/component"] == component
        })
        .unwrap_or_else(|| panic!("no {component} Deployment"))
}

fn service<'a>(objects: &'a [Value], name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Service {name}"))
}

#[test]
fn the_operator_and_the_webhook_run_on_the_node_network_on_nodes_not_ready_yet() {
    for (scenario, values) in SCENARIOS {
        let objects = parse_documents(&Helm::default().render(values, &[]));
        for (component, dns) in [("operator", "Default"), ("webhook", "ClusterFirstWithHostNet")] {
            let spec = &deployment(&objects, component)["spec"];
            let pod = &spec["template"]["spec"];
            assert_eq!(pod["hostNetwork"], true, "{scenario}: the {component} needs no pod IP");
            assert_eq!(pod["dnsPolicy"], dns, "{scenario}: DNS of the {component}");
            let tolerations = pod["tolerations"].as_array().expect("tolerations");
            for taint in [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/network-unavailable",
                "node-role.kubernetes.io/control-plane",
            ] {
                let tolerated = tolerations
                    .iter()
                    .any(|t| t["key"] == taint && t["operator"] == "Exists" && t["effect"] == "NoSchedule");
                assert!(tolerated, "{scenario}: the {component} tolerates {taint}: {tolerations:?}");
            }
            // One replica per node: two would open the same host ports.
            let anti = &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
            assert_eq!(anti[0]["topologyKey"], "kubernetes.io/hostname", "{scenario}: {component}: {anti}");
            assert_eq!(
                anti[0]["labelSelector"]["matchLabels"]["app.kubernetes.io/component"], component,
                "{scenario}: {component} replicas avoid each other"
            );
            // A surge pod would find the port taken on every node holding a replica.
            assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], 0, "{scenario}: {component}");
        }
    }
}

#[test]
fn host_ports_are_declared_and_clear_of_kubelet_kube_proxy_and_each_other() {
    for (scenario, values) in SCENARIOS {
        let objects = parse_documents(&Helm::default().render(values, &[]));
        let on_host: Vec<RenderedContainer> =
            containers(&objects).into_iter().filter(|c| c.host_network && c.name != "install-cni").collect();
        let programs: Vec<&str> = on_host.iter().filter_map(RenderedContainer::program).collect();
        for program in ["eni-ipam-operator", "eni-ipam-webhook", "eni-ipam-agent", "eni-ipam-device-plugin"] {
            assert!(
                programs.contains(&program),
                "{scenario}: {program} runs on the host network: {programs:?}"
            );
        }
        let mut holders: BTreeMap<u16, String> = BTreeMap::new();
        for container in &on_host {
            for (who, port) in bound_ports(container) {
                // Declared, so the scheduler counts the node's port as taken (hostPort = containerPort).
                assert!(container.ports.contains(&port), "{scenario}: {who} binds {port}, not in its ports");
                if let Some((_, owner)) = RESERVED.iter().find(|(p, _)| *p == port) {
                    panic!("{scenario}: {who} binds {port}, {owner}'s port on every node");
                }
                if let Some(first) = holders.insert(port, who.clone()) {
                    panic!("{scenario}: {first} and {who} both bind {port} on the node");
                }
            }
        }
        assert_eq!(holders.len(), 5, "{scenario}: five listeners on each node: {holders:?}");
    }
}

#[test]
fn services_target_the_ports_opened_on_the_nodes() {
    for sets in [&[][..], &["webhook.port=9555", "operator.metricsPort=9556"][..]] {
        let objects = parse_documents(&Helm::default().render(&[], sets));
        let all = containers(&objects);
        let port_of = |program: &str, flag: &str| {
            let container = all.iter().find(|c| c.program() == Some(program)).expect("container");
            bound_ports(container).into_iter().find(|(who, _)| who.ends_with(flag)).expect("flag").1
        };
        let webhook = service(&objects, "eni-ipam-webhook");
        let https =
            webhook["spec"]["ports"].as_array().unwrap().iter().find(|p| p["name"] == "https").unwrap();
        assert_eq!(https["port"], 443, "kube-apiserver calls the Service on 443");
        assert_eq!(https["targetPort"], json!(port_of("eni-ipam-webhook", "--listen")), "{sets:?}");
        let operator = service(&objects, "eni-ipam-operator-metrics");
        assert_eq!(
            operator["spec"]["ports"][0]["targetPort"],
            json!(port_of("eni-ipam-operator", "--metrics-addr")),
            "{sets:?}"
        );
    }
}

#[test]
fn a_host_port_that_collides_is_refused_with_the_value_to_change() {
    let cases = [
        (&["operator.metricsPort=10250"][..], "operator.metricsPort (10250) is kubelet's API on every node"),
        (&["agent.metricsPort=10256"][..], "agent.metricsPort (10256) is kube-proxy's healthz on every node"),
        (
            &["webhook.port=9466", "operator.metricsPort=9466"][..],
            "operator.metricsPort and webhook.port are both 9466",
        ),
        (&["webhook.metricsPort=9465"][..], "devicePlugin.metricsPort and webhook.metricsPort are both 9465"),
    ];
    for (sets, expected) in cases {
        let message = Helm::default().template(&[], sets).expect_err(&format!("helm must refuse {sets:?}"));
        assert!(message.contains(expected), "{sets:?}: {message}");
        assert!(message.contains("hostNetwork"), "{sets:?} says why: {message}");
    }
}

#[test]
fn admission_never_waits_for_the_webhook_on_the_charts_pods_kube_system_or_host_network_pods() {
    for (scenario, values) in SCENARIOS {
        let objects = parse_documents(&Helm::default().render(values, &[]));
        let registration = objects
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .expect("a MutatingWebhookConfiguration");
        let hook = &registration["webhooks"][0];
        let expected_policy =
            if values.contains(&"examples/alibaba-values.yaml") { "Fail" } else { "Ignore" };
        assert_eq!(hook["failurePolicy"], expected_policy, "{scenario}");
        let selector = &hook["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(selector["key"], "kubernetes.io/metadata.name", "{scenario}");
        assert_eq!(selector["operator"], "NotIn", "{scenario}");
        let excluded = selector["values"].as_array().expect("values");
        for namespace in ["kube-system", "eni-ipam"] {
            assert!(
                excluded.contains(&json!(namespace)),
                "{scenario}: {namespace} is never sent: {excluded:?}"
            );
        }
        let conditions = hook["matchConditions"].as_array().expect("matchConditions");
        assert_eq!(
            conditions[0]["expression"], "!has(object.spec.hostNetwork) || !object.spec.hostNetwork",
            "{scenario}: pods on the host network are never sent"
        );
    }
}
