//! Every container the chart renders runs a command line its binary accepts:
//! the rendered args, plus every env var that is a flag's env twin, go through
//! the binary's own clap parser (`try_parse_from`, the very `Cli` its `main`
//! uses). And every flag an admin would tune is reachable from values.

use std::collections::{BTreeMap, BTreeSet};

use clap::{CommandFactory, Parser};
use eni_ipam_chart_tests::{Helm, RenderedContainer, command_line, containers, known_flags, parse_documents};

/// One binary the chart runs, with its parser.
struct Binary {
    program: &'static str,
    /// The parser whose flags the container sets (the `run` subcommand for the operator).
    parser: fn() -> clap::Command,
    parse: fn(&[String]) -> Result<(), clap::Error>,
    /// Flags the chart leaves alone on purpose, and why.
    not_for_admins: &'static [(&'static str, &'static str)],
}

/// Why the agent's knob flags are not rendered.
const KNOB_FLAG: &str = "pool.*, eni.* and nodePools reach every node through the knobs ConfigMap the \
    operator watches; the flag writes a per-node override into new ENINodes (agent.extraArgs only)";

const BINARIES: &[Binary] = &[
    Binary {
        program: "eni-ipam-operator",
        parser: || {
            eni_ipam_operator::cli::Cli::command()
                .find_subcommand("run")
                .expect("the operator has a run subcommand")
                .clone()
        },
        parse: |argv| eni_ipam_operator::cli::Cli::try_parse_from(argv).map(drop),
        not_for_admins: &[
            ("kubeconfig", "the pod uses its service account"),
            (
                "seed",
                "one value for every replica would repeat idempotency tokens; without it each process picks its own",
            ),
            ("leader-elect-identity", "set through POD_NAME from the downward API"),
        ],
    },
    Binary {
        program: "eni-ipam-agent",
        parser: eni_ipam_agent::cli::Cli::command,
        parse: |argv| eni_ipam_agent::cli::Cli::try_parse_from(argv).map(drop),
        not_for_admins: &[
            ("pool-file", "standalone runs and tests: the pool comes from the ENINode"),
            ("subnet", "standalone runs with --pool-file"),
            (
                "live-containers-file",
                "standalone runs: in a cluster kubelet's pod-resources (--pod-resources-socket) says which pods live",
            ),
            ("capacity", "a per-node number (instance type, subnets): 0 takes the pool size"),
            ("kube-url", "the pod uses its service account"),
            (
                "node-routing",
                "tests that run the agent in a shared namespace; a cluster needs the policy routing",
            ),
            ("pre-allocate", KNOB_FLAG),
            ("min-allocate", KNOB_FLAG),
            ("max-allocate", KNOB_FLAG),
            ("max-above-watermark", KNOB_FLAG),
            ("first-interface-index", KNOB_FLAG),
            ("eni-subnet", KNOB_FLAG),
            ("eni-subnet-tag", KNOB_FLAG),
            ("eni-security-group", KNOB_FLAG),
        ],
    },
    Binary {
        program: "eni-ipam-device-plugin",
        parser: eni_ipam_device_plugin::cli::Cli::command,
        parse: |argv| eni_ipam_device_plugin::cli::Cli::try_parse_from(argv).map(drop),
        not_for_admins: &[],
    },
    Binary {
        program: "eni-ipam-webhook",
        parser: eni_ipam_webhook::cli::WebhookArgs::command,
        parse: |argv| eni_ipam_webhook::cli::WebhookArgs::try_parse_from(argv).map(drop),
        not_for_admins: &[],
    },
];

/// The install step of the agent pod is a shell script, not one of our parsers.
const SHELL_STEPS: &[&str] = &["install-cni"];

/// Values that, together, turn on every option of the chart.
const SCENARIOS: &[(&str, &[&str], &[&str])] = &[
    ("default values", &[], &[]),
    ("aws example", &["examples/aws-values.yaml"], &[]),
    ("alibaba example", &["examples/alibaba-values.yaml"], &[]),
    (
        "aws example, every option",
        &["examples/aws-values.yaml"],
        &[
            "agent.socketGroup=cni",
            "apiEndpoint=https://ec2.eu-west-1.amazonaws.com",
            "credentials.existingSecret=eni-ipam-aws",
            "resourceName=example.com/pod-ip",
            "eni.subnetIds={subnet-0abc1234}",
            "eni.subnetTags.tier=pods",
            "eni.securityGroups={sg-0abc1234}",
            "agent.datapath.hostRoutes={203.0.113.0/24}",
            "agent.datapath.serviceCIDRs={10.96.0.0/12}",
            "webhook.skipPodsSelectingNodeLabels={karpenter.sh/nodepool}",
        ],
    ),
    (
        "alibaba example, every option",
        &["examples/alibaba-values.yaml"],
        &[
            "apiEndpoint=https://ecs.cn-hangzhou.aliyuncs.com",
            "identity.alibaba.ecsEndpoint=https://ecs-vpc.cn-hangzhou.aliyuncs.com",
            "identity.alibaba.vpcEndpoint=https://vpc-vpc.cn-hangzhou.aliyuncs.com",
            "identity.alibaba.rrsa.stsEndpoint=sts-vpc.cn-hangzhou.aliyuncs.com",
            "identity.alibaba.ramRole=eni-ipam-node",
            "agent.socketGroup=1000",
            "agent.datapath.enabled=false",
        ],
    ),
];

fn binary(program: &str) -> Option<&'static Binary> {
    BINARIES.iter().find(|b| b.program == program)
}

/// Every rendered container of every scenario, parsed; returns the flags set per program.
fn parse_every_scenario() -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut set_flags: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut failures = Vec::new();
    for (scenario, values, sets) in SCENARIOS {
        let objects = parse_documents(&Helm::default().render(values, sets));
        let rendered = containers(&objects);
        assert!(rendered.len() >= 5, "{scenario}: expected at least 5 containers, got {rendered:#?}");
        for container in &rendered {
            if SHELL_STEPS.contains(&container.name.as_str()) {
                continue;
            }
            let Some(bin) = container.program().and_then(binary) else {
                failures.push(format!(
                    "{scenario}: {} runs {:?}, which has no parser in this test: add it to BINARIES",
                    container.label(),
                    container.command
                ));
                continue;
            };
            let parser = (bin.parser)();
            let line = command_line(container, &parser);
            failures.extend(line.problems.iter().map(|p| format!("{scenario}: {p}")));
            let argv = line.argv.clone();
            if let Err(error) = (bin.parse)(&argv) {
                failures.push(format!(
                    "{scenario}: {} does not parse: {}\n  argv: {argv:?}",
                    container.label(),
                    error.render().to_string().trim()
                ));
            }
            set_flags.entry(bin.program).or_default().extend(line.flags);
        }
    }
    assert!(failures.is_empty(), "rendered command lines refused:\n{}", failures.join("\n"));
    set_flags
}

#[test]
fn every_rendered_command_line_parses_with_its_binarys_parser() {
    let set_flags = parse_every_scenario();
    for bin in BINARIES {
        assert!(set_flags.contains_key(bin.program), "no container runs {}", bin.program);
    }
}

#[test]
fn every_flag_an_admin_tunes_is_reachable_from_values() {
    let set_flags = parse_every_scenario();
    let mut unreachable = Vec::new();
    for bin in BINARIES {
        let known = known_flags(&(bin.parser)());
        let set = &set_flags[bin.program];
        for (flag, _why) in bin.not_for_admins {
            assert!(
                known.contains(&(*flag).to_owned()),
                "{}: --{flag} is listed as not for admins but does not exist",
                bin.program
            );
        }
        for flag in &known {
            let excluded = bin.not_for_admins.iter().any(|(f, _)| f == flag);
            if !excluded && !set.contains(flag) {
                unreachable.push(format!("{} --{flag}", bin.program));
            }
        }
    }
    assert!(
        unreachable.is_empty(),
        "flags no values file sets (add a value, or list them in not_for_admins with the reason):\n{}",
        unreachable.join("\n")
    );
}

fn container<'a>(all: &'a [RenderedContainer], name: &str) -> &'a RenderedContainer {
    all.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn the_agents_node_name_comes_from_the_pods_node() {
    let objects = parse_documents(&Helm::default().render(&[], &[]));
    let all = containers(&objects);
    let agent = container(&all, "agent");
    let line = command_line(agent, &eni_ipam_agent::cli::Cli::command());
    assert!(line.argv.contains(&"--node-name=fieldRef:spec.nodeName".to_owned()), "{:?}", line.argv);
    let cli = eni_ipam_agent::cli::Cli::try_parse_from(&line.argv).expect("agent args parse");
    assert_eq!(cli.node_name, "fieldRef:spec.nodeName");
}

#[test]
fn device_plugin_and_webhook_agree_on_the_resource_and_the_socket() {
    let objects = parse_documents(
        &Helm::default().render(&["examples/aws-values.yaml"], &["resourceName=example.com/pod-ip"]),
    );
    let all = containers(&objects);
    let plugin = command_line(container(&all, "device-plugin"), &eni_ipam_device_plugin::cli::Cli::command());
    let plugin =
        eni_ipam_device_plugin::cli::Cli::try_parse_from(&plugin.argv).expect("device plugin args parse");
    let webhook = command_line(container(&all, "webhook"), &eni_ipam_webhook::cli::WebhookArgs::command());
    let webhook =
        eni_ipam_webhook::cli::WebhookArgs::try_parse_from(&webhook.argv).expect("webhook args parse");
    let agent = command_line(container(&all, "agent"), &eni_ipam_agent::cli::Cli::command());
    let agent = eni_ipam_agent::cli::Cli::try_parse_from(&agent.argv).expect("agent args parse");
    assert_eq!(plugin.resource_name, "example.com/pod-ip");
    assert_eq!(webhook.policy().resource_name(), "example.com/pod-ip");
    assert_eq!(plugin.agent_socket, agent.paths.socket, "the device plugin must read the agent's socket");
    assert_eq!(plugin.max_slots, 58, "devicePlugin.maxSlots of the aws example");
}

#[test]
fn the_webhook_skips_kube_system_the_release_namespace_and_the_admins_list() {
    let objects = parse_documents(&Helm::default().render(&["examples/alibaba-values.yaml"], &[]));
    let all = containers(&objects);
    let line = command_line(container(&all, "webhook"), &eni_ipam_webhook::cli::WebhookArgs::command());
    let args = eni_ipam_webhook::cli::WebhookArgs::try_parse_from(&line.argv).expect("webhook args parse");
    let policy = args.policy();
    for namespace in ["kube-system", "eni-ipam", "monitoring"] {
        assert!(policy.is_excluded(namespace), "{namespace} must be excluded: {:?}", line.argv);
    }
    assert!(!policy.is_excluded("default"));
    let registration = objects
        .iter()
        .find(|o| o["kind"] == "MutatingWebhookConfiguration")
        .expect("a MutatingWebhookConfiguration");
    let hook = &registration["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Fail", "the alibaba example sets Fail");
    let selector = &hook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(selector["key"], "kubernetes.io/metadata.name");
    assert_eq!(selector["operator"], "NotIn");
    assert_eq!(selector["values"], serde_json::json!(["kube-system", "eni-ipam", "monitoring"]));
}

#[test]
fn pods_for_the_node_labels_of_webhook_skip_list_get_no_request() {
    let policy = |sets: &[&str]| {
        let objects = parse_documents(&Helm::default().render(&[], sets));
        let all = containers(&objects);
        let line = command_line(container(&all, "webhook"), &eni_ipam_webhook::cli::WebhookArgs::command());
        eni_ipam_webhook::cli::WebhookArgs::try_parse_from(&line.argv).expect("webhook args parse").policy()
    };
    let karpenter = serde_json::json!({"nodeSelector": {"karpenter.sh/nodepool": "general"}});
    let spec = karpenter.as_object().unwrap();
    assert!(!policy(&[]).skipped_node_labels().selected_by(spec), "none by default");
    let set = policy(&["webhook.skipPodsSelectingNodeLabels={karpenter.sh/nodepool,workload-class}"]);
    assert_eq!(set.skipped_node_labels().to_string(), "karpenter.sh/nodepool,workload-class");
    assert!(set.skipped_node_labels().selected_by(spec));
    let refused = Helm::default()
        .template(&[], &["webhook.skipPodsSelectingNodeLabels={Not A Key}"])
        .expect_err("the schema refuses a key that is not a label key");
    assert!(refused.contains("skipPodsSelectingNodeLabels"), "{refused}");
}

#[test]
fn the_capacity_meaning_reaches_the_agent_and_only_known_ones_install() {
    let agent_rule = |sets: &[&str]| {
        let objects = parse_documents(&Helm::default().render(&[], sets));
        let all = containers(&objects);
        let line = command_line(container(&all, "agent"), &eni_ipam_agent::cli::Cli::command());
        eni_ipam_agent::cli::Cli::try_parse_from(&line.argv).expect("agent args parse").capacity_rule()
    };
    assert_eq!(agent_rule(&[]).mode, eni_ipam_api::CapacityMode::InstanceLimit);
    assert_eq!(agent_rule(&["devicePlugin.capacity=pool"]).mode, eni_ipam_api::CapacityMode::Pool);
    assert_eq!(agent_rule(&["devicePlugin.capacity=instanceLimit"]).fixed, 0, "no fixed number");
    let refused = Helm::default().template(&[], &["devicePlugin.capacity=maxPods"]).unwrap_err();
    assert!(refused.contains("capacity"), "{refused}");
}

#[test]
fn the_tc_attach_mode_reaches_the_agent_and_only_known_modes_install() {
    let agent_mode = |sets: &[&str]| {
        let objects = parse_documents(&Helm::default().render(&[], sets));
        let all = containers(&objects);
        let line = command_line(container(&all, "agent"), &eni_ipam_agent::cli::Cli::command());
        eni_ipam_agent::cli::Cli::try_parse_from(&line.argv).expect("agent args parse").tc_attach.to_string()
    };
    assert_eq!(agent_mode(&[]), "auto");
    assert_eq!(agent_mode(&["agent.datapath.tcAttach=netlink"]), "netlink");
    assert_eq!(agent_mode(&["agent.datapath.tcAttach=tcx"]), "tcx");
    let refused = Helm::default().template(&[], &["agent.datapath.tcAttach=tc"]).unwrap_err();
    assert!(refused.contains("tcAttach"), "{refused}");
}
