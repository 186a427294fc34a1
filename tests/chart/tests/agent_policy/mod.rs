//! What the tests of the agent's write policies share: the agent's identity as its
//! bound token gives it, and the check of a refusal.

use eni_ipam_kube_standin::{AdmissionPolicy, AdmissionRequest, Denial, UserInfo};
use serde_json::Value;

/// The release namespace the tests render into.
pub const NAMESPACE: &str = "eni-ipam";
/// The agent's service account there.
pub const AGENT_SA: &str = "eni-ipam-agent";

/// The agent of `node`, as its bound service-account token names it.
pub fn agent_of(node: &str) -> UserInfo {
    UserInfo::service_account_on_node(NAMESPACE, AGENT_SA, node)
}

/// Asserts `result` is a 403 whose message contains `says`.
pub fn refused(result: Result<(), Denial>, says: &str) {
    let denial = result.expect_err("the write must be refused");
    assert_eq!(denial.code, 403, "{denial:?}");
    assert!(denial.message.contains(says), "expected {says:?} in: {}", denial.message);
}

/// A cluster-scoped write of `object` (`old` the stored one on UPDATE) to the resource
/// `(group, version, plural)`, as the apiserver hands it to `policy`.
pub fn admit(
    policy: &AdmissionPolicy,
    resource: (&str, &str, &str),
    user: &UserInfo,
    operation: &str,
    subresource: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), Denial> {
    let (group, version, resource) = resource;
    policy.admit(&AdmissionRequest {
        operation,
        group,
        version,
        resource,
        subresource,
        name: object["metadata"]["name"].as_str().unwrap_or_default(),
        namespace: "",
        object,
        old_object: old,
        user,
    })
}
