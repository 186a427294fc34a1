//! AdmissionReview v1 on the wire: reading the envelope generically and
//! writing the answer.
//!
//! The envelope is checked (apiVersion, kind, request, uid) before anything
//! looks at `request.object`, so that a DELETE (`object: null`), a Deployment
//! or a v1beta1 review never fails as "not a Pod".

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::pod_patch::json_type;

/// The only review version this webhook speaks (register it with
/// `admissionReviewVersions: ["v1"]`).
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";
/// The envelope kind, both ways.
pub const REVIEW_KIND: &str = "AdmissionReview";

/// A body that is not an AdmissionReview v1 this webhook can answer. Each
/// becomes HTTP 400 with the message in a `Status` body: without a uid or in
/// another version there is no answer kube-apiserver would accept.
#[derive(Debug, Error)]
pub enum MalformedReview {
    #[error("the request body is empty; POST an AdmissionReview v1 JSON object")]
    Empty,
    #[error(
        "the request body is not valid JSON ({0}); send one AdmissionReview v1 as JSON, complete and not YAML"
    )]
    NotJson(#[source] serde_json::Error),
    #[error("the request body is JSON {found}, not an object; send one AdmissionReview v1 object")]
    NotAnObject { found: &'static str },
    #[error(
        "apiVersion is {found}, but this webhook speaks only admission.k8s.io/v1; register it with \
         admissionReviewVersions: [\"v1\"]"
    )]
    WrongApiVersion { found: String },
    #[error("kind is {found}, not AdmissionReview; send an AdmissionReview v1 envelope")]
    WrongKind { found: String },
    #[error("the review has no request object; send the AdmissionReview with its request")]
    MissingRequest,
    #[error(
        "request.uid is missing or empty; the answer must echo it, so send the review kube-apiserver built"
    )]
    MissingUid,
}

impl MalformedReview {
    /// A short fixed code for logs.
    pub fn code(&self) -> &'static str {
        match self {
            MalformedReview::Empty => "empty",
            MalformedReview::NotJson(_) => "not_json",
            MalformedReview::NotAnObject { .. } => "not_an_object",
            MalformedReview::WrongApiVersion { .. } => "wrong_api_version",
            MalformedReview::WrongKind { .. } => "wrong_kind",
            MalformedReview::MissingRequest => "missing_request",
            MalformedReview::MissingUid => "missing_uid",
        }
    }
}

/// The parts of `request` the decision reads, borrowed from the parsed body.
#[derive(Debug)]
pub struct ReviewRequest<'a> {
    /// Echoed in the response.
    pub uid: &'a str,
    request: &'a serde_json::Map<String, Value>,
}

impl<'a> ReviewRequest<'a> {
    /// Checks the envelope of a parsed body.
    pub fn from_review(review: &'a Value) -> Result<Self, MalformedReview> {
        let review = review.as_object().ok_or(MalformedReview::NotAnObject { found: json_type(review) })?;
        let api_version = review.get("apiVersion");
        if api_version.and_then(Value::as_str) != Some(REVIEW_API_VERSION) {
            return Err(MalformedReview::WrongApiVersion { found: describe(api_version) });
        }
        let kind = review.get("kind");
        if kind.and_then(Value::as_str) != Some(REVIEW_KIND) {
            return Err(MalformedReview::WrongKind { found: describe(kind) });
        }
        let request =
            review.get("request").and_then(Value::as_object).ok_or(MalformedReview::MissingRequest)?;
        let uid = request
            .get("uid")
            .and_then(Value::as_str)
            .filter(|uid| !uid.is_empty())
            .ok_or(MalformedReview::MissingUid)?;
        Ok(Self { uid, request })
    }

    /// `request.kind` is core/v1 Pod and `request.resource` is core/v1 pods.
    pub fn is_pod(&self) -> bool {
        let field = |object: &str, key: &str| {
            self.request.get(object).and_then(|o| o.get(key)).and_then(Value::as_str)
        };
        field("kind", "group") == Some("")
            && field("kind", "version") == Some("v1")
            && field("kind", "kind") == Some("Pod")
            && field("resource", "group") == Some("")
            && field("resource", "resource") == Some("pods")
    }

    /// A subresource such as `eviction`, `binding`, `ephemeralcontainers`.
    pub fn sub_resource(&self) -> Option<&'a str> {
        self.string("subResource").filter(|s| !s.is_empty())
    }

    /// `CREATE`, `UPDATE`, `DELETE` or `CONNECT`.
    pub fn operation(&self) -> Option<&'a str> {
        self.string("operation")
    }

    /// `request.namespace`, or the object's own namespace when the request
    /// does not carry one.
    pub fn namespace(&self) -> Option<&'a str> {
        self.string("namespace").or_else(|| self.object()?.get("metadata")?.get("namespace")?.as_str())
    }

    /// `request.object`, absent when missing or `null`.
    pub fn object(&self) -> Option<&'a Value> {
        self.request.get("object").filter(|o| !o.is_null())
    }

    fn string(&self, key: &str) -> Option<&'a str> {
        self.request.get(key).and_then(Value::as_str)
    }
}

fn describe(value: Option<&Value>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(Value::String(s)) => format!("{s:?}"),
        Some(other) => json_type(other).to_owned(),
    }
}

/// The answer to one well-formed review: always allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionAnswer {
    /// `request.uid`, echoed.
    pub uid: String,
    /// The JSON Patch, when the pod is mutated.
    pub patch: Option<Value>,
    /// Shown to the user by kubectl; kept short because kube-apiserver
    /// truncates long warnings.
    pub warnings: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireReview<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: WireResponse<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    // kube-apiserver rejects patchType without patch and patch without
    // patchType, so both come from the same Option.
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

impl AdmissionAnswer {
    /// The AdmissionReview v1 response body. The patch is standard padded
    /// base64, because Go decodes `[]byte` with StdEncoding.
    pub fn to_json(&self) -> Vec<u8> {
        let patch = self.patch.as_ref().map(|patch| STANDARD.encode(patch.to_string()));
        let review = WireReview {
            api_version: REVIEW_API_VERSION,
            kind: REVIEW_KIND,
            response: WireResponse {
                uid: &self.uid,
                allowed: true,
                patch_type: patch.as_ref().map(|_| "JSONPatch"),
                patch,
                warnings: &self.warnings,
            },
        };
        // Serializing strings, bools and a Value into memory cannot fail.
        serde_json::to_vec(&review).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn envelope_errors_name_what_is_wrong() {
        let cases = [
            (json!([]), "not_an_object"),
            (
                json!({ "apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview" }),
                "wrong_api_version",
            ),
            (json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionRequest" }), "wrong_kind"),
            (json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview" }), "missing_request"),
            (
                json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": { "uid": "" } }),
                "missing_uid",
            ),
        ];
        for (body, code) in cases {
            assert_eq!(ReviewRequest::from_review(&body).unwrap_err().code(), code, "body {body}");
        }
        let message = ReviewRequest::from_review(&json!({ "apiVersion": "admission.k8s.io/v1beta1" }))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("\"admission.k8s.io/v1beta1\"") && message.contains("admissionReviewVersions")
        );
    }

    #[test]
    fn answer_without_patch_has_neither_patch_nor_patch_type() {
        let answer = AdmissionAnswer { uid: "u1".into(), patch: None, warnings: vec![] };
        let body: Value = serde_json::from_slice(&answer.to_json()).unwrap();
        assert_eq!(
            body,
            json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": { "uid": "u1", "allowed": true } })
        );
    }

    #[test]
    fn patch_is_padded_standard_base64_of_the_json() {
        let answer =
            AdmissionAnswer { uid: "u".into(), patch: Some(json!([{ "op": "add" }])), warnings: vec![] };
        let body: Value = serde_json::from_slice(&answer.to_json()).unwrap();
        assert_eq!(body["response"]["patchType"], "JSONPatch");
        // `[{"op":"add"}]` is 14 bytes: base64 needs padding.
        assert_eq!(body["response"]["patch"], "W3sib3AiOiJhZGQifV0=");
    }
}
