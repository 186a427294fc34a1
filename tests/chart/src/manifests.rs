//! Reading what `helm template` printed: the objects, and the containers in them.

use serde_json::Value;

/// Every object of a multi-document YAML stream (empty documents dropped).
pub fn parse_documents(yaml: &str) -> Vec<Value> {
    let documents: Vec<Option<Value>> = serde_saphyr::from_multiple(yaml)
        .unwrap_or_else(|e| panic!("the rendered chart is not YAML: {e}\n{yaml}"));
    documents.into_iter().flatten().filter(|d| !d.is_null()).collect()
}

/// One container (or init container) of a rendered workload.
#[derive(Clone, Debug)]
pub struct RenderedContainer {
    /// `Kind/name` of the object holding it.
    pub workload: String,
    /// The container's name.
    pub name: String,
    /// `command` (empty when the image's entrypoint is used).
    pub command: Vec<String>,
    /// `args`.
    pub args: Vec<String>,
    /// `env`, in order.
    pub env: Vec<Value>,
    /// Every `ports[].containerPort` (on the host network, the ports it holds on its node).
    pub ports: Vec<u16>,
    /// Whether its pod runs on the node's network (`hostNetwork: true`).
    pub host_network: bool,
    /// `volumeMounts` as (mount path, volume name).
    pub mounts: Vec<(String, String)>,
}

impl RenderedContainer {
    /// The program the container runs: the last path segment of `command[0]`.
    pub fn program(&self) -> Option<&str> {
        self.command.first().map(|c| c.rsplit('/').next().unwrap_or(c))
    }

    /// `workload/container`, for messages.
    pub fn label(&self) -> String {
        format!("{}/{}", self.workload, self.name)
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect())
        .unwrap_or_default()
}

/// The containers and init containers of every Deployment, DaemonSet,
/// StatefulSet and Job in `objects`.
pub fn containers(objects: &[Value]) -> Vec<RenderedContainer> {
    let mut found = Vec::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "Deployment" | "DaemonSet" | "StatefulSet" | "Job") {
            continue;
        }
        let workload = format!("{kind}/{}", object["metadata"]["name"].as_str().unwrap_or_default());
        let pod = &object["spec"]["template"]["spec"];
        for list in ["initContainers", "containers"] {
            for container in pod[list].as_array().into_iter().flatten() {
                found.push(RenderedContainer {
                    workload: workload.clone(),
                    name: container["name"].as_str().unwrap_or_default().to_owned(),
                    command: strings(container.get("command")),
                    args: strings(container.get("args")),
                    env: container["env"].as_array().cloned().unwrap_or_default(),
                    ports: container["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|p| p["containerPort"].as_u64())
                        .filter_map(|p| u16::try_from(p).ok())
                        .collect(),
                    host_network: pod["hostNetwork"] == true,
                    mounts: container["volumeMounts"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|m| {
                            Some((m["mountPath"].as_str()?.to_owned(), m["name"].as_str()?.to_owned()))
                        })
                        .collect(),
                });
            }
        }
    }
    found
}

/// Each rendered ValidatingAdmissionPolicy with the binding that names it, by policy name.
pub fn admission_policies(objects: &[Value]) -> Vec<(Value, Value)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "ValidatingAdmissionPolicy")
        .map(|policy| {
            let name = &policy["metadata"]["name"];
            let binding = objects
                .iter()
                .find(|o| o["kind"] == "ValidatingAdmissionPolicyBinding" && &o["spec"]["policyName"] == name)
                .unwrap_or_else(|| panic!("the chart renders no binding for policy {name}"));
            (policy.clone(), binding.clone())
        })
        .collect()
}
