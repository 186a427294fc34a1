//! The HTTP face of the webhook: `POST /mutate` plus probes, as an axum
//! router built by a function, so tests drive it without a socket.
//!
//! Every request gets an answer: 200 with an AdmissionReview, or a 4xx with a
//! Kubernetes `Status` body (kube-apiserver quotes a Status message in its
//! "failed calling webhook" error, so the operator sees ours). Never a 5xx.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::json;

use crate::admission::{ReviewOutcome, review};
use crate::metrics::{RequestOutcome, WebhookMetrics};
use crate::policy::MutationPolicy;

/// The largest body read. kube-apiserver caps request bodies at 3 MiB and
/// etcd objects at ~1.5 MiB; an UPDATE review carries two objects, so 4 MiB
/// never refuses a review kube-apiserver could send, should the webhook be
/// registered for more than CREATE.
pub const MAX_REVIEW_BYTES: usize = 4 * 1024 * 1024;

/// Past the limit the rest of the body is read and thrown away (not kept), up
/// to this much, so the client reads our 413 instead of a connection reset.
/// A sender of even more is cut off.
const MAX_DISCARDED_BYTES: usize = 16 * 1024 * 1024;

/// A body still arriving after this long is refused (kube-apiserver's own
/// webhook timeout is at most 30 s, 10 s by default).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct WebhookState {
    pub policy: Arc<MutationPolicy>,
    pub metrics: Arc<WebhookMetrics>,
}

/// `POST /mutate` (AdmissionReview v1), `GET /healthz`, `GET /readyz`.
pub fn webhook_router(state: WebhookState) -> Router {
    let metrics = state.metrics.clone();
    let probes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(eni_ipam_admin::readyz::<WebhookMetrics>))
        .with_state(metrics);
    Router::new().route("/mutate", post(mutate)).with_state(state).merge(probes)
}

async fn mutate(State(state): State<WebhookState>, request: Request) -> Response {
    let started = Instant::now();
    let declared_len = declared_length(request.headers());
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, read_capped(request.into_body(), declared_len)).await;
    let (outcome, response) = match read {
        Err(_) => (
            RequestOutcome::BodyTimeout,
            status_error(
                StatusCode::REQUEST_TIMEOUT,
                "Timeout",
                format!(
                    "the request body did not arrive within {} s; send the AdmissionReview in one request",
                    BODY_READ_TIMEOUT.as_secs()
                ),
            ),
        ),
        Ok(Err(BodyError::TooLarge)) => (
            RequestOutcome::TooLarge,
            status_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                format!(
                    "the request body is larger than {MAX_REVIEW_BYTES} bytes, more than kube-apiserver ever \
                     sends for a Pod; send the AdmissionReview kube-apiserver built"
                ),
            ),
        ),
        Ok(Err(BodyError::Read(error))) => (
            RequestOutcome::Malformed,
            status_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("reading the request body failed ({error}); retry the request"),
            ),
        ),
        Ok(Ok(body)) => answer(&state, &body),
    };
    state.metrics.observe_request(outcome, started.elapsed());
    response
}

fn answer(state: &WebhookState, body: &[u8]) -> (RequestOutcome, Response) {
    match review(body, &state.policy) {
        Ok(reviewed) => {
            let outcome = match &reviewed.outcome {
                ReviewOutcome::Patched => RequestOutcome::Patched,
                ReviewOutcome::Skipped(reason) => {
                    state.metrics.count_skip(reason.as_str());
                    RequestOutcome::Skipped
                }
                ReviewOutcome::Unpatchable(problem) => {
                    tracing::warn!(uid = %reviewed.answer.uid, %problem, "admitted a pod the webhook cannot read");
                    RequestOutcome::AllowedWithWarning
                }
            };
            tracing::debug!(uid = %reviewed.answer.uid, outcome = outcome.as_str(), "answered admission review");
            let headers = [(header::CONTENT_TYPE, "application/json")];
            (outcome, (StatusCode::OK, headers, reviewed.answer.to_json()).into_response())
        }
        Err(malformed) => {
            tracing::warn!(code = malformed.code(), error = %malformed, "refused a malformed admission review");
            (
                RequestOutcome::Malformed,
                status_error(StatusCode::BAD_REQUEST, "BadRequest", malformed.to_string()),
            )
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// Collects at most [`MAX_REVIEW_BYTES`]; a longer body (declared or actual)
/// is read on and discarded, never buffered.
async fn read_capped(mut body: Body, declared_len: Option<u64>) -> Result<Bytes, BodyError> {
    let mut too_large = declared_len.is_some_and(|len| len > MAX_REVIEW_BYTES as u64);
    let capacity = if too_large { 0 } else { declared_len.unwrap_or(0) as usize };
    let mut collected = Vec::with_capacity(capacity);
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else { continue };
        seen = seen.saturating_add(data.len());
        if seen > MAX_REVIEW_BYTES && !too_large {
            too_large = true;
            collected = Vec::new();
        }
        if too_large {
            if seen > MAX_REVIEW_BYTES + MAX_DISCARDED_BYTES {
                return Err(BodyError::TooLarge);
            }
            continue;
        }
        collected.extend_from_slice(&data);
    }
    if too_large { Err(BodyError::TooLarge) } else { Ok(Bytes::from(collected)) }
}

/// One error shape for every refusal: a Kubernetes `Status`.
fn status_error(code: StatusCode, reason: &'static str, message: String) -> Response {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
