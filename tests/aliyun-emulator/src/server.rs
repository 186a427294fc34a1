//! The HTTP side: the OpenAPI endpoint (`/` on any method), the ECS metadata
//! service's RAM-role paths, and the emulator's own `/_emulator/*` endpoints
//! (state dump, fault plan).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use eni_ipam_cloud::alibaba::credentials::RAM_ROLE_PATH;
use eni_ipam_cloud::alibaba::verify::Received;

use crate::emulator::{Emulator, FaultPlan};

/// The emulator's router.
pub fn router(emulator: Arc<Emulator>) -> Router {
    Router::new()
        .route("/", any(openapi))
        .route("/_emulator/state", get(dump))
        .route("/_emulator/faults", get(faults).post(set_faults))
        .route(RAM_ROLE_PATH, get(role_name))
        .route(&format!("{RAM_ROLE_PATH}{{role}}"), get(role_credentials))
        .with_state(emulator)
}

fn json(status: u16, body: serde_json::Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert("content-type", "application/json;charset=utf-8".parse().expect("static value"));
    response
}

async fn openapi(
    State(emulator): State<Arc<Emulator>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| {
            (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    let received = Received {
        method: method.as_str(),
        path: uri.path(),
        query: uri.query().unwrap_or_default(),
        headers: &headers,
        body: &body,
    };
    let (status, answer) = emulator.handle(&received).await;
    json(status, answer)
}

async fn dump(State(emulator): State<Arc<Emulator>>) -> Response {
    json(200, emulator.dump())
}

async fn faults(State(emulator): State<Arc<Emulator>>) -> Response {
    json(200, serde_json::to_value(emulator.faults()).unwrap_or_default())
}

async fn set_faults(State(emulator): State<Arc<Emulator>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultPlan>(&body) {
        Ok(plan) => {
            tracing::info!(?plan, "fault plan replaced");
            emulator.set_faults(plan);
            json(200, serde_json::json!({"ok": true}))
        }
        Err(e) => json(
            400,
            serde_json::json!({"Code": "InvalidParameter", "Message": format!("fault plan is not valid JSON of {{latency_ms, transient_rate, throttle_rate, errors: [{{action, code, times}}]}}: {e}")}),
        ),
    }
}

async fn role_name(State(emulator): State<Arc<Emulator>>) -> Response {
    match emulator.identity.role_name() {
        Some(role) => (StatusCode::OK, role.to_owned()).into_response(),
        None => {
            (StatusCode::NOT_FOUND, "no RAM role: start the emulator with --ram-role NAME").into_response()
        }
    }
}

async fn role_credentials(State(emulator): State<Arc<Emulator>>, Path(role): Path<String>) -> Response {
    match emulator.identity.role_document(&role, time::OffsetDateTime::now_utc()) {
        Some(document) => json(200, document),
        None => (StatusCode::NOT_FOUND, format!("no RAM role '{role}' on this instance")).into_response(),
    }
}
