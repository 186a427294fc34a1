//! The operator and the webhook started the way the chart starts them: the
//! bed renders `charts/eni-ipam` with `helm template` (values for this bed's
//! cloud and timings) and takes each pod's command line, environment and
//! volume mounts from what the chart rendered. Only what a cluster would
//! supply is filled in by the bed: the service account (a kubeconfig to the
//! stand-in), the downward API (`POD_NAME`), the Secret's keys and the
//! mounted volumes (folders of the bed). Both pods must be `hostNetwork`:
//! the bed runs them in a node's network namespace.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use eni_ipam_chart_tests::{Helm, RenderedContainer, RenderedEnv, containers, parse_documents, rendered_env};
use eni_ipam_kube_standin::{FailurePolicy, PodWebhook};
use serde_json::Value;

use crate::daemon::binary;

/// Release namespace the bed renders the chart into (the operator's Lease lives there).
pub const NAMESPACE: &str = "eni-ipam";

/// What the chart renders for the control plane of the bed.
#[derive(Clone, Debug)]
pub struct ChartControlPlane {
    /// The operator's container.
    pub operator: RenderedContainer,
    /// The webhook's container.
    pub webhook: RenderedContainer,
    /// The port the webhook Service sends 443 to (its `targetPort`).
    pub webhook_target_port: u16,
    /// The registration's `failurePolicy`.
    pub failure_policy: FailurePolicy,
    /// The registration's `timeoutSeconds`.
    pub timeout: Duration,
    /// Namespaces the registration's `namespaceSelector` leaves out.
    pub excluded_namespaces: Vec<String>,
    /// `--metrics-addr` of the agent container of the DaemonSet.
    pub agent_metrics_addr: String,
    /// `--metrics-addr` of the device plugin container of the DaemonSet.
    pub device_plugin_metrics_addr: String,
    /// The agent's datapath flags (`--datapath`, `--tc-attach`, `--service-cidr`,
    /// `--host-route`, `--block-pod-destination`), as the DaemonSet passes them.
    pub agent_datapath_args: Vec<String>,
    /// The CNI network configuration list the chart installs on every node.
    pub conflist: Value,
    /// The agent DaemonSet's service account (`serviceAccountName`).
    pub agent_service_account: String,
    /// The agent's startup taint flags (`--startup-taint`, `--startup-taint-resource`).
    pub agent_startup_taint_args: Vec<String>,
    /// The ValidatingAdmissionPolicies (on the agent's ENINode and Node writes) with their bindings.
    pub admission_policies: Vec<(Value, Value)>,
}

/// Flags of the agent that choose and configure its datapath (the bed keeps its own pin folder).
const DATAPATH_FLAGS: [&str; 5] =
    ["--datapath=", "--tc-attach=", "--service-cidr=", "--host-route=", "--block-pod-destination="];

/// The conflist in the chart's CNI ConfigMap (its only key).
fn conflist_of(objects: &[Value]) -> Value {
    let map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == "eni-ipam-cni")
        .expect("the chart renders the CNI ConfigMap");
    let text = map["data"]
        .as_object()
        .and_then(|d| d.values().next()?.as_str())
        .expect("the ConfigMap has the conflist");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("the chart's conflist is not JSON ({e}): {text}"))
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect()
}

/// The container `name` of the workload `Kind/name`.
fn container_of(all: &[RenderedContainer], workload: &str, name: &str) -> RenderedContainer {
    all.iter()
        .find(|c| c.workload == workload && c.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("the chart renders no container {name} in {workload}"))
}

/// The value of `--flag=value` in `args`.
pub fn arg_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().rev().find_map(|a| a.strip_prefix(flag)?.strip_prefix('='))
}

impl ChartControlPlane {
    /// Renders the chart with `--set` pairs `sets`. Panics with helm's message when it refuses.
    pub fn render(sets: &[String]) -> Self {
        let helm = Helm { release: "eni-ipam".into(), namespace: NAMESPACE.into() };
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        let objects = parse_documents(&helm.render(&[], &sets));
        let all = containers(&objects);
        let operator = container_of(&all, "Deployment/eni-ipam-operator", "operator");
        let webhook = container_of(&all, "Deployment/eni-ipam-webhook", "webhook");
        for container in [&operator, &webhook] {
            assert!(container.host_network, "the chart runs {} on the host network", container.label());
        }
        let agent = container_of(&all, "DaemonSet/eni-ipam-agent", "agent");
        let agent_datapath_args =
            agent.args.iter().filter(|a| DATAPATH_FLAGS.iter().any(|f| a.starts_with(f))).cloned().collect();
        let agent_startup_taint_args =
            agent.args.iter().filter(|a| a.starts_with("--startup-taint")).cloned().collect();
        let metrics_of = |name: &str| {
            let container = container_of(&all, "DaemonSet/eni-ipam-agent", name);
            arg_value(&container.args, "--metrics-addr").expect("the chart sets --metrics-addr").to_owned()
        };
        let service = objects
            .iter()
            .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "eni-ipam-webhook")
            .expect("the chart renders the webhook Service");
        let https = https_target_port(service);
        let registration = objects
            .iter()
            .find(|o| o["kind"] == "MutatingWebhookConfiguration")
            .expect("the chart renders a MutatingWebhookConfiguration");
        let hook = &registration["webhooks"][0];
        let excluded = hook["namespaceSelector"]["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["key"] == "kubernetes.io/metadata.name" && e["operator"] == "NotIn")
            .flat_map(|e| strings(&e["values"]))
            .collect();
        let kind = |k: &str| objects.iter().find(|o| o["kind"] == k).cloned();
        let admission_policies = eni_ipam_chart_tests::admission_policies(&objects);
        let daemonset = kind("DaemonSet").expect("the chart renders the agent DaemonSet");
        let agent_service_account = daemonset["spec"]["template"]["spec"]["serviceAccountName"]
            .as_str()
            .expect("the agent DaemonSet names its service account")
            .to_owned();
        Self {
            operator,
            webhook,
            webhook_target_port: https,
            failure_policy: match hook["failurePolicy"].as_str() {
                Some("Ignore") => FailurePolicy::Ignore,
                _ => FailurePolicy::Fail,
            },
            timeout: Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10)),
            excluded_namespaces: excluded,
            agent_metrics_addr: metrics_of("agent"),
            device_plugin_metrics_addr: metrics_of("device-plugin"),
            agent_datapath_args,
            conflist: conflist_of(&objects),
            agent_service_account,
            agent_startup_taint_args,
            admission_policies,
        }
    }

    /// The key of the taint the chart's agent removes (nodes register with it), if any.
    pub fn startup_taint(&self) -> Option<&str> {
        arg_value(&self.agent_startup_taint_args, "--startup-taint").filter(|key| !key.is_empty())
    }

    /// The webhook as kube-apiserver calls it: through the Service, whose endpoint is the
    /// node at `node` (host network) and the Service's target port.
    pub fn pod_webhook(&self, node: Ipv4Addr, ca_pem: &str) -> PodWebhook {
        let url = format!("https://{node}:{}/mutate", self.webhook_target_port);
        let mut webhook =
            PodWebhook::new(url, ca_pem).failure_policy(self.failure_policy).timeout(self.timeout);
        for namespace in &self.excluded_namespaces {
            webhook = webhook.exclude_namespace(namespace.clone());
        }
        webhook
    }
}

/// The numeric `targetPort` of the Service port named `https`.
fn https_target_port(service: &Value) -> u16 {
    let https = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == "https")
        .expect("the webhook Service has an https port");
    let target = https["targetPort"]
        .as_u64()
        .expect("the webhook Service's targetPort is the port opened on the node (a number)");
    u16::try_from(target).expect("a port")
}

/// What a cluster supplies to a pod that the chart only names.
pub struct PodSupply<'a> {
    /// `metadata.name` (downward API).
    pub pod_name: &'a str,
    /// The keys of the Secrets the pod reads (`secretKeyRef`).
    pub secret: &'a [(&'static str, String)],
    /// Where each volume is mounted from: a folder per volume name.
    pub volumes: &'a Path,
    /// Environment a node gives every process but the chart does not (e.g. no metadata service).
    pub node_env: &'a [(&'static str, String)],
}

/// `container`'s command run inside the network namespace at `netns` (host network of
/// that node), with `extra` flags appended (what the service account would give).
pub fn command(
    container: &RenderedContainer,
    netns: &Path,
    supply: &PodSupply<'_>,
    extra: &[String],
) -> Command {
    let program = container.program().expect("the chart sets a command");
    let mut command = Command::new("nsenter");
    command.arg(format!("--net={}", netns.display())).arg("--").arg(binary(program));
    for arg in &container.args {
        command.arg(mounted(container, arg, supply.volumes));
    }
    command.args(extra);
    command.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (name, value) in supply.node_env {
        command.env(name, value);
    }
    for entry in &container.env {
        let name = entry["name"].as_str().unwrap_or_default();
        let value = match rendered_env(entry) {
            RenderedEnv::Literal(text) => text,
            RenderedEnv::From(source) if source == "fieldRef:metadata.name" => supply.pod_name.to_owned(),
            RenderedEnv::From(source) => {
                let key = source
                    .strip_prefix("secretKeyRef:")
                    .unwrap_or_else(|| panic!("the bed cannot supply env {name} of {program} ({source})"));
                let found = supply.secret.iter().find(|(k, _)| *k == key);
                found
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| panic!("the bed's Secret has no key {key} (env {name} of {program})"))
            }
        };
        command.env(name, value);
    }
    command
}

/// `arg` with a volume's mount path replaced by the bed's folder for that volume.
fn mounted(container: &RenderedContainer, arg: &str, volumes: &Path) -> String {
    for (path, volume) in &container.mounts {
        if let Some(at) = arg.find(path.as_str()) {
            let folder: PathBuf = volumes.join(volume);
            return format!("{}{}{}", &arg[..at], folder.display(), &arg[at + path.len()..]);
        }
    }
    arg.to_owned()
}
