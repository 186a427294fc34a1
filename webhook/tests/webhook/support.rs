//! What the integration tests share: the fixture corpus, the contract check
//! for one answer, a throwaway PKI, and a webhook on loopback TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use eni_ipam_webhook::metrics::WebhookMetrics;
use eni_ipam_webhook::policy::MutationPolicy;
use eni_ipam_webhook::tls_reload::{CertificateFiles, ReloadingCertificate};
use eni_ipam_webhook::{RunningWebhook, WebhookState, start_webhook, webhook_router};
use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::Value;
use tower::ServiceExt;

/// The project's corpus of AdmissionReview cases (tests/fixtures/admission).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/admission");

/// One more folder of cases in the same format, checked in addition.
pub const EXTRA_FIXTURES_ENV: &str = "ENI_IPAM_ADMISSION_FIXTURES";

/// One fixture: the bytes to POST and the expected outcome.
pub struct Case {
    pub name: String,
    pub body: Vec<u8>,
    pub expected: Value,
}

impl Case {
    /// A `bad-*` case: any acceptable malformed-body answer will do.
    pub fn is_malformed(&self) -> bool {
        !self.expected["status_on_malformed"].is_null()
    }
}

/// Every case: the project's request cases, its stored bad bodies and the
/// 5 MiB body built in memory, then those of `ENI_IPAM_ADMISSION_FIXTURES`.
pub fn all_cases() -> Vec<Case> {
    let mut cases = cases_in(Path::new(FIXTURES));
    let expected = read_json(&Path::new(FIXTURES).join("bad-huge-5mb.expected.json"));
    let body = huge_body(expected["body_bytes"].as_u64().expect("body_bytes") as usize);
    cases.push(Case { name: "bad-huge-5mb".into(), body, expected });
    assert_eq!(
        cases.iter().filter(|c| !c.is_malformed()).count(),
        20,
        "tests/fixtures/admission/README.md promises 20 request cases"
    );
    assert_eq!(
        cases.iter().filter(|c| c.is_malformed()).count(),
        14,
        "tests/fixtures/admission/README.md promises 14 malformed bodies"
    );
    if let Ok(extra) = std::env::var(EXTRA_FIXTURES_ENV) {
        let more = cases_in(Path::new(&extra));
        assert!(!more.is_empty(), "{EXTRA_FIXTURES_ENV}={extra} holds no *.request.json or *.body case");
        cases.extend(more);
    }
    cases
}

/// The `NAME.request.json` and `NAME.body` cases of a folder, each with its
/// `NAME.expected.json`.
fn cases_in(folder: &Path) -> Vec<Case> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap_or_else(|e| panic!("reading the fixture folder {}: {e}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    names.sort();
    let mut cases = Vec::new();
    for path in names {
        let file = path.file_name().unwrap().to_str().unwrap().to_owned();
        let Some(name) = file.strip_suffix(".request.json").or_else(|| file.strip_suffix(".body")) else {
            continue;
        };
        cases.push(Case {
            expected: read_json(&folder.join(format!("{name}.expected.json"))),
            name: name.to_owned(),
            body: std::fs::read(&path).unwrap(),
        });
    }
    cases
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A well-formed Pod CREATE review of exactly `total` bytes:
/// plain-single-container's, with one annotation of 'x' as padding.
fn huge_body(total: usize) -> Vec<u8> {
    let mut review = read_json(&Path::new(FIXTURES).join("plain-single-container.request.json"));
    let blob = |review: &mut Value, len: usize| {
        review["request"]["object"]["metadata"]["annotations"]["example.com/blob"] =
            Value::from("x".repeat(len));
    };
    blob(&mut review, 0);
    let bare = serde_json::to_vec(&review).unwrap().len();
    assert!(bare < total, "the review without padding is already {bare} bytes");
    blob(&mut review, total - bare);
    let body = serde_json::to_vec(&review).unwrap();
    assert_eq!(body.len(), total);
    body
}

/// The policy the corpus assumes (its `assumes` fields).
pub fn fixture_policy() -> MutationPolicy {
    MutationPolicy::new("eni-ipam.io/ip".parse().unwrap(), "kube-system".parse().unwrap())
}

pub fn fixture_state() -> WebhookState {
    WebhookState { policy: Arc::new(fixture_policy()), metrics: Arc::new(WebhookMetrics::new()) }
}

/// Checks one answer against the case's contract; panics with the case name.
pub fn check_answer(case: &Case, status: u16, content_type: Option<&str>, body: &[u8]) {
    let name = &case.name;
    let answer: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{name}: answer is not JSON ({e}): {}", String::from_utf8_lossy(body)));
    assert_eq!(content_type, Some("application/json"), "{name}: content type");
    if case.is_malformed() {
        check_malformed_answer(case, status, &answer);
        return;
    }
    assert_eq!(status, 200, "{name}: status, answer {answer}");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1", "{name}");
    assert_eq!(answer["kind"], "AdmissionReview", "{name}");
    let request: Value = serde_json::from_slice(&case.body).unwrap();
    let response = &answer["response"];
    assert_eq!(response["uid"], request["request"]["uid"], "{name}: uid echo");
    assert_eq!(response["allowed"], case.expected["allowed"], "{name}: allowed");
    if case.expected["patched"] == Value::Bool(true) {
        assert_eq!(response["patchType"], "JSONPatch", "{name}: patchType");
        let mut pod = request["request"]["object"].clone();
        apply_patch(name, &mut pod, response);
        assert_eq!(pod, case.expected["pod_after"], "{name}: pod after the patch");
    } else {
        assert!(
            response["patch"].is_null() && response["patchType"].is_null(),
            "{name}: unexpected patch {answer}"
        );
    }
}

/// Decodes `response.patch` (standard padded base64) and applies it strictly.
pub fn apply_patch(name: &str, pod: &mut Value, response: &Value) {
    let encoded = response["patch"].as_str().unwrap_or_else(|| panic!("{name}: no patch in {response}"));
    let decoded =
        STANDARD.decode(encoded).unwrap_or_else(|e| panic!("{name}: patch is not standard base64: {e}"));
    let patch: json_patch::Patch =
        serde_json::from_slice(&decoded).unwrap_or_else(|e| panic!("{name}: patch is not a JSON Patch: {e}"));
    json_patch::patch(pod, &patch).unwrap_or_else(|e| panic!("{name}: patch does not apply: {e}"));
}

fn check_malformed_answer(case: &Case, status: u16, answer: &Value) {
    let name = &case.name;
    let may_be_413 = case.expected["status_on_malformed"].as_str().unwrap().contains("413");
    match status {
        400 => {}
        413 if may_be_413 => {}
        200 => {
            let response = &answer["response"];
            assert_eq!(response["allowed"], true, "{name}: {answer}");
            assert!(response["patch"].is_null() && response["patchType"].is_null(), "{name}: {answer}");
            assert!(
                response["warnings"].as_array().is_some_and(|w| !w.is_empty()),
                "{name}: no warning: {answer}"
            );
            return;
        }
        other => panic!("{name}: status {other} is not acceptable for a malformed body: {answer}"),
    }
    // A refusal is a Kubernetes Status saying what is wrong.
    assert_eq!(answer["kind"], "Status", "{name}: {answer}");
    assert_eq!(answer["code"], status, "{name}: {answer}");
    assert!(answer["message"].as_str().is_some_and(|m| m.len() > 20), "{name}: no message: {answer}");
}

/// POSTs `body` to `/mutate` through the router, without a socket.
pub async fn post_to_router(state: WebhookState, body: Vec<u8>) -> (u16, Option<String>, Vec<u8>) {
    let request = axum::http::Request::post("/mutate")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let response = webhook_router(state).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, content_type, body)
}

/// A CA and a server certificate it signed for 127.0.0.1 and localhost.
pub struct TestPki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestPki {
    pub fn new(ca_name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "eni-ipam-webhook.test");
        let cert = params.signed_by(&key, &issuer).unwrap();
        Self { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    pub fn write_to(&self, files: &CertificateFiles) {
        std::fs::write(&files.cert, &self.cert_pem).unwrap();
        std::fs::write(&files.key, &self.key_pem).unwrap();
    }

    /// A client that trusts only this CA and opens a new connection for
    /// every request when `fresh_connections`.
    pub fn client(&self, fresh_connections: bool) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap();
        let mut builder = reqwest::Client::builder().tls_certs_only([ca]).timeout(Duration::from_secs(10));
        if fresh_connections {
            builder = builder.pool_max_idle_per_host(0);
        }
        builder.build().unwrap()
    }
}

/// A webhook on 127.0.0.1 (a free port) serving `pki`'s certificate from
/// files in `dir`.
pub async fn start_tls_webhook(
    dir: &Path,
    pki: &TestPki,
    reload_interval: Duration,
    state: WebhookState,
) -> (RunningWebhook, CertificateFiles) {
    let files = CertificateFiles { cert: dir.join("tls.crt"), key: dir.join("tls.key") };
    pki.write_to(&files);
    let certificate = ReloadingCertificate::load(files.clone()).await.unwrap();
    let webhook =
        start_webhook("127.0.0.1:0".parse().unwrap(), certificate, reload_interval, state).await.unwrap();
    (webhook, files)
}

pub fn install_ring() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
