//! One review, start to finish, without HTTP: bytes in, an answer (or the
//! reason there is none) out. The order of the checks is the contract: the
//! envelope, then kind / subresource / operation / namespace, and only then
//! the pod itself.

use serde_json::Value;

use crate::pod_patch::{self, PodDecision, PodShapeError, SkipReason};
use crate::policy::MutationPolicy;
use crate::review::{AdmissionAnswer, MalformedReview, ReviewRequest};

/// How a well-formed review was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum ReviewOutcome {
    /// Allowed with a patch adding the resource.
    Patched,
    /// Allowed unchanged, on purpose.
    Skipped(SkipReason),
    /// Allowed unchanged because the pod could not be read; the answer
    /// carries a warning. Never a denial: the webhook's trouble must not stop
    /// a pod.
    Unpatchable(PodShapeError),
}

/// A well-formed review and its answer.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub answer: AdmissionAnswer,
    pub outcome: ReviewOutcome,
}

/// Reviews one request body.
pub fn review(body: &[u8], policy: &MutationPolicy) -> Result<Reviewed, MalformedReview> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(MalformedReview::Empty);
    }
    // serde_json keeps its recursion limit (128): 100,000 nested arrays are
    // an error here, not a stack overflow.
    let parsed: Value = serde_json::from_slice(body).map_err(MalformedReview::NotJson)?;
    let request = ReviewRequest::from_review(&parsed)?;
    let outcome = decide(&request, policy);
    let (patch, warnings) = match &outcome {
        Ok(PodDecision::Patch(patch)) => (Some(patch.clone()), Vec::new()),
        Ok(PodDecision::Skip(_)) => (None, Vec::new()),
        Err(problem) => {
            (None, vec![format!("eni-ipam webhook: {problem}; admitted without {}", policy.resource_name())])
        }
    };
    let outcome = match outcome {
        Ok(PodDecision::Patch(_)) => ReviewOutcome::Patched,
        Ok(PodDecision::Skip(reason)) => ReviewOutcome::Skipped(reason),
        Err(problem) => ReviewOutcome::Unpatchable(problem),
    };
    Ok(Reviewed { answer: AdmissionAnswer { uid: request.uid.to_owned(), patch, warnings }, outcome })
}

fn decide(request: &ReviewRequest<'_>, policy: &MutationPolicy) -> Result<PodDecision, PodShapeError> {
    if !request.is_pod() {
        return Ok(PodDecision::Skip(SkipReason::NotPod));
    }
    if request.sub_resource().is_some() {
        return Ok(PodDecision::Skip(SkipReason::Subresource));
    }
    if request.operation() != Some("CREATE") {
        return Ok(PodDecision::Skip(SkipReason::NotCreate));
    }
    if request.namespace().is_some_and(|ns| policy.is_excluded(ns)) {
        return Ok(PodDecision::Skip(SkipReason::ExcludedNamespace));
    }
    let pod = request.object().unwrap_or(&Value::Null);
    pod_patch::decide(pod, policy)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy() -> MutationPolicy {
        MutationPolicy::new("eni-ipam.io/ip".parse().unwrap(), "kube-system".parse().unwrap())
    }

    fn pod_create() -> Value {
        json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u-1", "operation": "CREATE", "namespace": "shop",
                "kind": { "group": "", "version": "v1", "kind": "Pod" },
                "resource": { "group": "", "version": "v1", "resource": "pods" },
                "object": { "spec": { "containers": [{ "name": "a", "resources": {} }] } },
            }
        })
    }

    fn outcome_of(body: &Value) -> ReviewOutcome {
        review(body.to_string().as_bytes(), &policy()).unwrap().outcome
    }

    #[test]
    fn pod_create_is_patched() {
        assert_eq!(outcome_of(&pod_create()), ReviewOutcome::Patched);
    }

    #[test]
    fn review_level_skips_come_before_the_object_is_read() {
        // Each case also drops the object, which must not matter.
        type Change = fn(&mut Value);
        let cases: [(Change, SkipReason); 4] = [
            (
                |b| b["request"]["kind"] = json!({ "group": "apps", "version": "v1", "kind": "Deployment" }),
                SkipReason::NotPod,
            ),
            (|b| b["request"]["subResource"] = json!("eviction"), SkipReason::Subresource),
            (|b| b["request"]["operation"] = json!("DELETE"), SkipReason::NotCreate),
            (|b| b["request"]["namespace"] = json!("kube-system"), SkipReason::ExcludedNamespace),
        ];
        for (change, reason) in cases {
            let mut body = pod_create();
            body["request"]["object"] = Value::Null;
            change(&mut body);
            assert_eq!(outcome_of(&body), ReviewOutcome::Skipped(reason));
        }
    }

    #[test]
    fn excluded_namespace_falls_back_to_the_object_namespace() {
        let mut body = pod_create();
        body["request"].as_object_mut().unwrap().remove("namespace");
        body["request"]["object"]["metadata"] = json!({ "namespace": "kube-system" });
        assert_eq!(outcome_of(&body), ReviewOutcome::Skipped(SkipReason::ExcludedNamespace));
    }

    #[test]
    fn unreadable_pod_is_allowed_with_a_warning_naming_the_problem() {
        let mut body = pod_create();
        body["request"]["object"]["spec"]["containers"] = json!({ "name": "a" });
        let reviewed = review(body.to_string().as_bytes(), &policy()).unwrap();
        assert_eq!(
            reviewed.outcome,
            ReviewOutcome::Unpatchable(PodShapeError::ContainersNotAList { found: "an object" })
        );
        assert_eq!(reviewed.answer.patch, None);
        assert_eq!(
            reviewed.answer.warnings,
            [
                "eni-ipam webhook: spec.containers is an object, not a list of containers; admitted without eni-ipam.io/ip"
            ]
        );
    }

    #[test]
    fn blank_and_broken_bodies_are_malformed() {
        assert!(matches!(review(b"  \n", &policy()), Err(MalformedReview::Empty)));
        assert!(matches!(review(b"{\"apiVersion\":", &policy()), Err(MalformedReview::NotJson(_))));
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(review(deep.as_bytes(), &policy()), Err(MalformedReview::NotJson(_))));
    }
}
