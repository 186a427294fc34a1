//! The decision for one Pod: does it need the IP resource, and the JSON Patch
//! that adds it. Pure: a `serde_json::Value` in, a decision out.
//!
//! The pod is read as raw JSON, never as a typed Pod, so that a patch is
//! computed against exactly the document kube-apiserver will apply it to (a
//! typed round-trip drops or normalizes fields the patch paths depend on).

use serde_json::{Map, Value, json};
use thiserror::Error;

use crate::policy::MutationPolicy;

/// Why a Pod CREATE is allowed without a patch. A fixed set: these are metric
/// label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The review is not about a Pod (`request.kind` / `request.resource`).
    NotPod,
    /// A subresource such as `pods/eviction` or `pods/ephemeralcontainers`.
    Subresource,
    /// UPDATE, DELETE, CONNECT: pod resources are set once, at creation.
    NotCreate,
    /// The namespace is in `--exclude-namespaces`.
    ExcludedNamespace,
    /// `spec.hostNetwork: true`: the pod uses the node's IP.
    HostNetwork,
    /// A Windows pod: the agent and device plugin run on Linux nodes only.
    Windows,
    /// A regular container already requests the resource (any value).
    AlreadyRequested,
    /// The pod can only run on nodes carrying a `--skip-node-labels` key (e.g. a Karpenter NodePool's).
    SkippedNodeLabel,
}

impl SkipReason {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotPod => "not_pod",
            SkipReason::Subresource => "subresource",
            SkipReason::NotCreate => "not_create",
            SkipReason::ExcludedNamespace => "excluded_namespace",
            SkipReason::HostNetwork => "host_network",
            SkipReason::Windows => "windows",
            SkipReason::AlreadyRequested => "already_requested",
            SkipReason::SkippedNodeLabel => "skipped_node_label",
        }
    }
}

/// What to do with a pod that passed the review-level checks.
#[derive(Debug, Clone, PartialEq)]
pub enum PodDecision {
    /// Allow with this RFC 6902 patch (a JSON array of operations).
    Patch(Value),
    /// Allow unchanged.
    Skip(SkipReason),
}

/// A pod whose shape the webhook cannot patch. kube-apiserver decodes and
/// defaults pods before admission, so these only come from broken callers; the
/// pod is still allowed (with a warning), because the webhook never denies a
/// pod for its own trouble.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PodShapeError {
    #[error("request.object is {found}, not a Pod object")]
    NotAnObject { found: &'static str },
    #[error("the pod has no spec object")]
    MissingSpec,
    #[error("spec.containers is {found}, not a list of containers")]
    ContainersNotAList { found: &'static str },
    #[error("spec.containers is empty")]
    NoContainers,
    #[error("spec.containers[0] is {found}, not a container object")]
    ContainerNotAnObject { found: &'static str },
    #[error("spec.containers[0].{field} is {found}, not an object")]
    ResourcesNotAnObject { field: &'static str, found: &'static str },
}

/// The decision for a Pod CREATE in a namespace that is not excluded.
pub fn decide(pod: &Value, policy: &MutationPolicy) -> Result<PodDecision, PodShapeError> {
    let pod = pod.as_object().ok_or(PodShapeError::NotAnObject { found: json_type(pod) })?;
    let spec = pod.get("spec").and_then(Value::as_object).ok_or(PodShapeError::MissingSpec)?;

    if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
        return Ok(PodDecision::Skip(SkipReason::HostNetwork));
    }
    if is_windows(spec) {
        return Ok(PodDecision::Skip(SkipReason::Windows));
    }
    if policy.skipped_node_labels().selected_by(spec) {
        return Ok(PodDecision::Skip(SkipReason::SkippedNodeLabel));
    }

    let containers = match spec.get("containers") {
        Some(Value::Array(containers)) => containers,
        other => {
            return Err(PodShapeError::ContainersNotAList { found: other.map_or("missing", json_type) });
        }
    };
    // Any regular container holding the resource means the pod already asks
    // the scheduler for its IP; adding one more to containers[0] would make it
    // count twice. Init, sidecar and ephemeral containers do not count: the
    // scheduler takes the max over init containers, not the sum.
    if containers.iter().any(|c| requests_resource(c, policy.resource_name())) {
        return Ok(PodDecision::Skip(SkipReason::AlreadyRequested));
    }
    let first = containers.first().ok_or(PodShapeError::NoContainers)?;
    let first = first.as_object().ok_or(PodShapeError::ContainerNotAnObject { found: json_type(first) })?;
    patch_first_container(first, policy).map(PodDecision::Patch)
}

/// `spec.os.name: windows`, or a nodeSelector pinning the pod to Windows nodes.
fn is_windows(spec: &Map<String, Value>) -> bool {
    let os_name = spec.get("os").and_then(|os| os.get("name")).and_then(Value::as_str);
    let selected_os =
        spec.get("nodeSelector").and_then(|s| s.get("kubernetes.io/os")).and_then(Value::as_str);
    os_name == Some("windows") || selected_os == Some("windows")
}

fn requests_resource(container: &Value, resource_name: &str) -> bool {
    let Some(resources) = container.get("resources") else { return false };
    ["requests", "limits"].iter().any(|list| {
        resources.get(list).and_then(Value::as_object).is_some_and(|m| m.contains_key(resource_name))
    })
}

/// Adds `resource: "1"` to requests and limits of containers[0], creating each
/// missing object rather than replacing an existing one (which would wipe cpu,
/// memory, GPUs or claims). A `null` member counts as missing: JSON Patch
/// `add` on an existing member replaces it.
fn patch_first_container(
    container: &Map<String, Value>,
    policy: &MutationPolicy,
) -> Result<Value, PodShapeError> {
    const CONTAINER: &str = "/spec/containers/0";
    let name = policy.resource_name();
    let one = || Value::Object(Map::from_iter([(name.to_owned(), Value::from("1"))]));

    let resources = match container.get("resources") {
        None | Some(Value::Null) => {
            return Ok(json!([{
                "op": "add",
                "path": format!("{CONTAINER}/resources"),
                "value": { "requests": one(), "limits": one() },
            }]));
        }
        Some(Value::Object(resources)) => resources,
        Some(other) => {
            return Err(PodShapeError::ResourcesNotAnObject { field: "resources", found: json_type(other) });
        }
    };

    let mut operations = Vec::with_capacity(2);
    for list in ["requests", "limits"] {
        let operation = match resources.get(list) {
            None | Some(Value::Null) => json!({
                "op": "add",
                "path": format!("{CONTAINER}/resources/{list}"),
                "value": one(),
            }),
            Some(Value::Object(_)) => json!({
                "op": "add",
                "path": format!("{CONTAINER}/resources/{list}/{}", policy.resource_pointer_token()),
                "value": "1",
            }),
            Some(other) => {
                let field = if list == "requests" { "resources.requests" } else { "resources.limits" };
                return Err(PodShapeError::ResourcesNotAnObject { field, found: json_type(other) });
            }
        };
        operations.push(operation);
    }
    Ok(Value::Array(operations))
}

/// Escapes one JSON Pointer reference token (RFC 6901): `~` first, then `/`,
/// so `eni-ipam.io/ip` becomes `eni-ipam.io~1ip` and not a path into an
/// `eni-ipam.io` object.
pub fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A JSON type name for messages.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> MutationPolicy {
        MutationPolicy::new("eni-ipam.io/ip".parse().unwrap(), Default::default())
    }

    fn pod(containers: Value) -> Value {
        json!({ "metadata": { "name": "p" }, "spec": { "containers": containers } })
    }

    #[test]
    fn escapes_tilde_before_slash() {
        assert_eq!(escape_pointer_token("eni-ipam.io/ip"), "eni-ipam.io~1ip");
        assert_eq!(escape_pointer_token("a~/b"), "a~0~1b");
        assert_eq!(escape_pointer_token("~1"), "~01");
    }

    #[test]
    fn missing_resources_are_created_whole() {
        let decision = decide(&pod(json!([{ "name": "a" }])), &policy()).unwrap();
        assert_eq!(
            decision,
            PodDecision::Patch(json!([{
                "op": "add",
                "path": "/spec/containers/0/resources",
                "value": { "requests": { "eni-ipam.io/ip": "1" }, "limits": { "eni-ipam.io/ip": "1" } },
            }]))
        );
    }

    #[test]
    fn existing_requests_gain_a_member_and_missing_limits_are_created() {
        let decision =
            decide(&pod(json!([{ "name": "a", "resources": { "requests": { "cpu": "1" } } }])), &policy())
                .unwrap();
        assert_eq!(
            decision,
            PodDecision::Patch(json!([
                { "op": "add", "path": "/spec/containers/0/resources/requests/eni-ipam.io~1ip", "value": "1" },
                { "op": "add", "path": "/spec/containers/0/resources/limits", "value": { "eni-ipam.io/ip": "1" } },
            ]))
        );
    }

    #[test]
    fn any_regular_container_with_the_resource_in_limits_means_no_patch() {
        let containers =
            json!([{ "name": "a" }, { "name": "b", "resources": { "limits": { "eni-ipam.io/ip": "3" } } }]);
        assert_eq!(
            decide(&pod(containers), &policy()).unwrap(),
            PodDecision::Skip(SkipReason::AlreadyRequested)
        );
    }

    #[test]
    fn init_container_with_the_resource_does_not_count() {
        let mut p = pod(json!([{ "name": "a" }]));
        p["spec"]["initContainers"] =
            json!([{ "name": "i", "resources": { "requests": { "eni-ipam.io/ip": "1" } } }]);
        assert!(matches!(decide(&p, &policy()).unwrap(), PodDecision::Patch(_)));
    }

    #[test]
    fn host_network_and_windows_are_skipped() {
        let mut p = pod(json!([{ "name": "a" }]));
        p["spec"]["hostNetwork"] = json!(true);
        assert_eq!(decide(&p, &policy()).unwrap(), PodDecision::Skip(SkipReason::HostNetwork));

        let mut p = pod(json!([{ "name": "a" }]));
        p["spec"]["os"] = json!({ "name": "windows" });
        assert_eq!(decide(&p, &policy()).unwrap(), PodDecision::Skip(SkipReason::Windows));

        let mut p = pod(json!([{ "name": "a" }]));
        p["spec"]["hostNetwork"] = json!(false);
        p["spec"]["nodeSelector"] = json!({ "kubernetes.io/os": "linux" });
        assert!(matches!(decide(&p, &policy()).unwrap(), PodDecision::Patch(_)));
    }

    #[test]
    fn broken_shapes_are_errors_not_panics() {
        let cases = [
            (json!("pod"), PodShapeError::NotAnObject { found: "a string" }),
            (json!({}), PodShapeError::MissingSpec),
            (json!({ "spec": {} }), PodShapeError::ContainersNotAList { found: "missing" }),
            (
                json!({ "spec": { "containers": {} } }),
                PodShapeError::ContainersNotAList { found: "an object" },
            ),
            (json!({ "spec": { "containers": [] } }), PodShapeError::NoContainers),
            (
                json!({ "spec": { "containers": [1] } }),
                PodShapeError::ContainerNotAnObject { found: "a number" },
            ),
            (
                json!({ "spec": { "containers": [{ "resources": [] }] } }),
                PodShapeError::ResourcesNotAnObject { field: "resources", found: "an array" },
            ),
            (
                json!({ "spec": { "containers": [{ "resources": { "limits": "x" } }] } }),
                PodShapeError::ResourcesNotAnObject { field: "resources.limits", found: "a string" },
            ),
        ];
        for (pod, expected) in cases {
            assert_eq!(decide(&pod, &policy()), Err(expected), "pod {pod}");
        }
    }
}
