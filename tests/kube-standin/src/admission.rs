//! Mutating admission for Pod creates, the way kube-apiserver calls a
//! `MutatingWebhookConfiguration` with one webhook for `pods` / `CREATE`.
//!
//! On a Pod create (through the REST API, not [`crate::KubeStandin::create`])
//! the stand-in POSTs an `admission.k8s.io/v1` AdmissionReview over HTTPS to
//! the registered webhook, trusting only its CA, and then:
//! - `allowed: true` with a base64 `JSONPatch`: the patch is applied to the pod
//!   before it is stored;
//! - `allowed: false`: the create fails with the webhook's `status.code`
//!   (403 when it gives none) and the message
//!   `admission webhook "<name>" denied the request: <status.message>`;
//! - the webhook unreachable, too slow, or answering something that is not a
//!   valid review for this request: `FailurePolicy::Ignore` stores the pod
//!   unchanged, `FailurePolicy::Fail` refuses with 500 InternalError
//!   `failed calling webhook "<name>": ...`.
//!
//! What it leaves out is listed in docs/testing.md.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use crate::ApiError;

/// kube-apiserver's default webhook timeout.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do with a pod when the webhook cannot be called or answers nonsense.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Store the pod unchanged.
    Ignore,
    /// Refuse the create (kube-apiserver's default for v1 webhooks).
    Fail,
}

/// One mutating webhook for Pod creates.
#[derive(Clone, Debug)]
pub struct PodWebhook {
    /// The webhook's name, quoted in errors (`webhooks[].name`).
    pub name: String,
    /// HTTPS URL the review is POSTed to, e.g. `https://127.0.0.1:8443/mutate`.
    pub url: String,
    /// PEM of the CA that signed the webhook's serving certificate (`caBundle`).
    pub ca_pem: String,
    /// `failurePolicy`.
    pub failure_policy: FailurePolicy,
    /// `timeoutSeconds`: the whole call, connection included.
    pub timeout: Duration,
    /// Namespaces whose pods are not sent (a simple stand-in for `namespaceSelector`).
    pub excluded_namespaces: BTreeSet<String>,
}

impl PodWebhook {
    /// A webhook at `url` trusted through `ca_pem`, named `pods.eni-ipam.io` as in
    /// the chart, with failurePolicy `Fail` and a 10 s timeout like kube-apiserver.
    pub fn new(url: impl Into<String>, ca_pem: impl Into<String>) -> Self {
        Self {
            name: "pods.eni-ipam.io".into(),
            url: url.into(),
            ca_pem: ca_pem.into(),
            failure_policy: FailurePolicy::Fail,
            timeout: DEFAULT_WEBHOOK_TIMEOUT,
            excluded_namespaces: BTreeSet::new(),
        }
    }

    /// Sets `failurePolicy`.
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Sets `timeoutSeconds` (any duration).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Leaves pods of `namespace` alone.
    pub fn exclude_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.excluded_namespaces.insert(namespace.into());
        self
    }
}

/// A registered webhook with its HTTPS client.
pub(crate) struct RegisteredWebhook {
    pub(crate) config: PodWebhook,
    client: reqwest::Client,
}

impl RegisteredWebhook {
    /// Builds the client that trusts only the webhook's CA.
    pub(crate) fn new(config: PodWebhook) -> Result<Self, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let not_pem = || format!("the CA of webhook {:?} holds no PEM certificate (caBundle)", config.name);
        let cas = reqwest::Certificate::from_pem_bundle(config.ca_pem.as_bytes()).map_err(|_| not_pem())?;
        if cas.is_empty() {
            return Err(not_pem());
        }
        let client = reqwest::Client::builder()
            .tls_certs_only(cas)
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("building the HTTPS client for webhook {:?}: {e}", config.name))?;
        Ok(Self { config, client })
    }

    /// Runs admission for a Pod about to be created in `namespace`; returns
    /// the pod to store or the error to answer with.
    pub(crate) async fn admit(&self, namespace: &str, pod: Value) -> Result<Value, ApiError> {
        if self.config.excluded_namespaces.contains(namespace) {
            return Ok(pod);
        }
        let uid = review_uid();
        let review = review_request(&uid, namespace, &pod);
        match self.call(&uid, &review).await {
            Ok(Verdict::Allowed(None)) => Ok(pod),
            Ok(Verdict::Allowed(Some(patch))) => self.patched(pod, &patch),
            Ok(Verdict::Denied { code, message }) => Err(ApiError::new(
                code,
                reason_for(code),
                format!("admission webhook \"{}\" denied the request: {message}", self.config.name),
            )),
            Err(failure) => match self.config.failure_policy {
                FailurePolicy::Ignore => {
                    tracing::warn!(webhook = %self.config.name, %failure, "webhook failed; failurePolicy Ignore admits the pod unchanged");
                    Ok(pod)
                }
                FailurePolicy::Fail => Err(ApiError::new(
                    500,
                    "InternalError",
                    format!(
                        "Internal error occurred: failed calling webhook \"{}\": {failure}",
                        self.config.name
                    ),
                )),
            },
        }
    }

    /// Applies the webhook's patch; a patch that does not apply is the
    /// webhook's fault, so it refuses the create whatever the failurePolicy
    /// (as kube-apiserver does).
    fn patched(&self, mut pod: Value, patch: &json_patch::Patch) -> Result<Value, ApiError> {
        json_patch::patch(&mut pod, patch).map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!(
                    "Internal error occurred: the patch of webhook \"{}\" does not apply to the pod: {e}",
                    self.config.name
                ),
            )
        })?;
        Ok(pod)
    }

    async fn call(&self, uid: &str, review: &Value) -> Result<Verdict, String> {
        let response = self
            .client
            .post(&self.config.url)
            .json(review)
            .send()
            .await
            .map_err(|e| describe_send_error(&self.config.url, self.config.timeout, &e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("reading the answer: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "the webhook answered HTTP {status}: {}",
                String::from_utf8_lossy(&body).chars().take(300).collect::<String>()
            ));
        }
        let answer: Value =
            serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))?;
        verdict(uid, &answer)
    }
}

/// What the webhook decided.
enum Verdict {
    Allowed(Option<json_patch::Patch>),
    Denied { code: u16, message: String },
}

/// Reads an AdmissionReview answer for the request `uid`.
fn verdict(uid: &str, answer: &Value) -> Result<Verdict, String> {
    if answer["apiVersion"] != "admission.k8s.io/v1" || answer["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected an admission.k8s.io/v1 AdmissionReview, got apiVersion {} kind {}",
            answer["apiVersion"], answer["kind"]
        ));
    }
    let response = &answer["response"];
    if response["uid"] != uid {
        return Err(format!("expected response.uid {uid:?}, got {}", response["uid"]));
    }
    let Some(allowed) = response["allowed"].as_bool() else {
        return Err("response.allowed is missing".into());
    };
    if !allowed {
        let code = response["status"]["code"].as_u64().and_then(|c| u16::try_from(c).ok()).unwrap_or(403);
        let message = response["status"]["message"].as_str().unwrap_or_default().to_string();
        return Ok(Verdict::Denied { code, message });
    }
    let Some(encoded) = response["patch"].as_str() else {
        return Ok(Verdict::Allowed(None));
    };
    if response["patchType"] != "JSONPatch" {
        return Err(format!("response.patchType must be \"JSONPatch\", got {}", response["patchType"]));
    }
    let bytes = STANDARD.decode(encoded).map_err(|e| format!("response.patch is not base64: {e}"))?;
    let patch =
        serde_json::from_slice(&bytes).map_err(|e| format!("response.patch is not a JSON Patch: {e}"))?;
    Ok(Verdict::Allowed(Some(patch)))
}

/// The AdmissionReview kube-apiserver sends for a Pod create by an admin.
fn review_request(uid: &str, namespace: &str, pod: &Value) -> Value {
    let kind = json!({"group": "", "version": "v1", "kind": "Pod"});
    let resource = json!({"group": "", "version": "v1", "resource": "pods"});
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": pod["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "system:admin", "groups": ["system:masters", "system:authenticated"]},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    })
}

/// A fresh UUID-shaped uid for each review.
fn review_uid() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("a0000000-0000-4000-8000-{:012x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        404 => "NotFound",
        409 => "Conflict",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        _ => "Forbidden",
    }
}

fn describe_send_error(url: &str, timeout: Duration, error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        format!("Post {url:?}: no answer within {} ms (timeoutSeconds)", timeout.as_millis())
    } else if error.is_connect() {
        format!("Post {url:?}: cannot connect")
    } else {
        format!("Post {url:?}")
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
