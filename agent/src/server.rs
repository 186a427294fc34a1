//! The agent's unix-socket API: JSON over HTTP, every error in the one
//! [`ApiError`] shape. The router is a plain function so tests drive it with
//! `oneshot`; [`bind_socket`] creates the socket with mode 0660 and a group.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use eni_ipam_api::agent_api::{ENDPOINT_PATH, HEALTHZ_PATH, IPAM_PATH};
use eni_ipam_api::{AllocateRequest, ApiError, EndpointRequest, ReleaseRequest};
use serde::{Deserialize, Serialize};
use tokio::net::UnixListener;

use crate::allocator::Allocation;
use crate::endpoints::{EndpointError, Endpoints};
use crate::ipam::{Ipam, IpamError};
use crate::metrics::Metrics;

/// Answer to `GET /v1/ipam`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationList {
    /// Every allocation on the node.
    pub allocations: Vec<Allocation>,
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The IPAM.
    pub ipam: Arc<Ipam>,
    /// The IPAM with the datapath: releases and endpoint registrations go through it.
    pub endpoints: Arc<Endpoints>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
}

/// The API router: `/v1/healthz`, `/v1/ipam`, `/v1/ipam/{containerId}`, `/v1/endpoint`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(HEALTHZ_PATH, get(healthz))
        .route(IPAM_PATH, get(list).post(allocate).delete(release_by_body))
        .route(&format!("{IPAM_PATH}/{{container_id}}"), axum::routing::delete(release_by_path))
        .route(ENDPOINT_PATH, axum::routing::post(register_endpoint))
        .route(&format!("{ENDPOINT_PATH}/{{container_id}}"), get(check_endpoint))
        .fallback(|| async {
            error(StatusCode::NOT_FOUND, "no such endpoint; the agent serves GET /v1/healthz, GET/POST /v1/ipam, DELETE /v1/ipam/{containerId}?ifName=eth0, POST /v1/endpoint, GET /v1/endpoint/{containerId}?ifName=eth0")
        })
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(ApiError::new(message))).into_response()
}

fn ipam_status(err: &IpamError) -> StatusCode {
    match err {
        IpamError::Exhausted { .. } => StatusCode::SERVICE_UNAVAILABLE,
        IpamError::Invalid(_) => StatusCode::BAD_REQUEST,
        IpamError::NotAllocated { .. } => StatusCode::CONFLICT,
        IpamError::Persist { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn ipam_error(err: IpamError) -> Response {
    error(ipam_status(&err), err.to_string())
}

fn endpoint_error(err: EndpointError) -> Response {
    let status = match &err {
        EndpointError::Ipam(ipam) => ipam_status(ipam),
        EndpointError::Invalid(_) => StatusCode::BAD_REQUEST,
        EndpointError::Broken { .. } => StatusCode::CONFLICT,
        EndpointError::Unresolved { .. } | EndpointError::Datapath { .. } | EndpointError::Routing { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    error(status, err.to_string())
}

fn parse<T: serde::de::DeserializeOwned>(body: &Bytes, what: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not a valid {what}: {e}"))
}

async fn healthz(State(state): State<ApiState>) -> Response {
    axum::Json(state.ipam.health()).into_response()
}

async fn list(State(state): State<ApiState>) -> Response {
    axum::Json(AllocationList { allocations: state.ipam.list() }).into_response()
}

/// Runs one IPAM call on the blocking pool (it waits for fsync), counts it under `op`, and
/// answers with `ok` or the error's response.
async fn blocking<T, E>(
    state: &ApiState,
    op: &'static str,
    call: impl FnOnce() -> Result<T, E> + Send + 'static,
    ok: impl FnOnce(T) -> Response,
    failed: impl FnOnce(E) -> Response,
) -> Response
where
    T: Send + 'static,
    E: Send + 'static,
{
    let result = tokio::task::spawn_blocking(call).await;
    state.metrics.count_call(op, matches!(result, Ok(Ok(_))));
    match result {
        Ok(Ok(value)) => ok(value),
        Ok(Err(err)) => failed(err),
        Err(join) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("{op} task failed: {join}")),
    }
}

async fn allocate(State(state): State<ApiState>, body: Bytes) -> Response {
    let request: AllocateRequest =
        match parse(&body, "AllocateRequest ({containerId, ifName, podNamespace, podName})") {
            Ok(r) => r,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
    let ipam = state.ipam.clone();
    let call = move || ipam.allocate(&request);
    blocking(&state, "allocate", call, |answer| axum::Json(answer).into_response(), ipam_error).await
}

async fn release(state: ApiState, container_id: String, if_name: String) -> Response {
    let endpoints = state.endpoints.clone();
    let call = move || endpoints.release(&container_id, &if_name);
    blocking(&state, "release", call, |_| StatusCode::NO_CONTENT.into_response(), endpoint_error).await
}

/// `POST /v1/endpoint`: the pod's veth, from the CNI plugin after ADD made it.
async fn register_endpoint(State(state): State<ApiState>, body: Bytes) -> Response {
    let request: EndpointRequest =
        match parse(&body, "EndpointRequest ({containerId, ifName, hostVeth, hostVethIfindex, podMac})") {
            Ok(r) => r,
            Err(message) => return error(StatusCode::BAD_REQUEST, message),
        };
    let endpoints = state.endpoints.clone();
    let call = move || endpoints.register(&request);
    blocking(&state, "endpoint", call, |_| StatusCode::NO_CONTENT.into_response(), endpoint_error).await
}

/// `GET /v1/endpoint/{containerId}?ifName=eth0`: CNI CHECK asks whether the pod's endpoint
/// is as ADD left it (204), or what is wrong (409).
async fn check_endpoint(
    State(state): State<ApiState>,
    UrlPath(container_id): UrlPath<String>,
    query: Result<Query<ReleaseQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let if_name = match query {
        Ok(Query(q)) => q.if_name,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad query: {e}; use ?ifName=eth0")),
    };
    let endpoints = state.endpoints.clone();
    let call = move || endpoints.check(&container_id, &if_name);
    blocking(&state, "check", call, |_| StatusCode::NO_CONTENT.into_response(), endpoint_error).await
}

async fn release_by_body(State(state): State<ApiState>, body: Bytes) -> Response {
    match parse::<ReleaseRequest>(&body, "ReleaseRequest ({containerId, ifName})") {
        Ok(r) => release(state, r.container_id, r.if_name).await,
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// Query of `DELETE /v1/ipam/{containerId}`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReleaseQuery {
    #[serde(default = "default_if_name")]
    if_name: String,
}

fn default_if_name() -> String {
    "eth0".into()
}

async fn release_by_path(
    State(state): State<ApiState>,
    UrlPath(container_id): UrlPath<String>,
    query: Result<Query<ReleaseQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(q)) => release(state, container_id, q.if_name).await,
        Err(e) => error(StatusCode::BAD_REQUEST, format!("bad query: {e}; use ?ifName=eth0")),
    }
}

/// Why the socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Filesystem or bind failure.
    #[error("agent socket {path}: {op} failed: {source}")]
    Io { path: String, op: &'static str, source: std::io::Error },
    /// The configured group does not exist.
    #[error("--socket-group {0:?} is neither a group name in /etc/group nor a numeric gid")]
    UnknownGroup(String),
}

/// Resolves a group name (from /etc/group) or a numeric gid.
pub fn resolve_group(group: &str) -> Result<u32, SocketError> {
    if let Ok(gid) = group.parse() {
        return Ok(gid);
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| SocketError::UnknownGroup(group.to_owned()))
}

/// Binds the socket: creates the directory, replaces a stale socket, mode 0660, group `gid`.
pub fn bind_socket(path: &Path, gid: Option<u32>) -> Result<UnixListener, SocketError> {
    let io = |op, source| SocketError::Io { path: path.display().to_string(), op, source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create directory", e))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove stale socket", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| io("bind", e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| io("chmod 0660", e))?;
    if let Some(gid) = gid {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| io("chown to the socket group", e))?;
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;
    use crate::pool::NodePool;
    use crate::state::StateStore;

    fn app(dir: &Path, pool_size: u8) -> Router {
        let pool = NodePool { capacity: 30, ..NodePool::on_one_eni(pool_size) };
        let (ipam, _) = Ipam::open("node-a", StateStore::new(dir.join("state.json")), pool, None).unwrap();
        let ipam = Arc::new(ipam);
        let endpoints = Arc::new(Endpoints::new(ipam.clone(), None, None));
        router(ApiState { ipam, endpoints, metrics: Arc::new(Metrics::default()) })
    }

    async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, Value) {
        let request = Request::builder().method(method).uri(uri).body(Body::from(body.to_owned())).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() })
    }

    #[tokio::test]
    async fn endpoints_answer_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), 2);
        let pod = |c: &str| {
            json!({"containerId": c, "ifName": "eth0", "podNamespace": "default", "podName": c}).to_string()
        };
        let (status, a) = call(&app, "POST", "/v1/ipam", &pod("a")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(a["ip"], "10.0.0.11");
        assert_eq!(a["subnetCidr"], "10.0.0.0/24");
        assert_eq!(call(&app, "POST", "/v1/ipam", &pod("a")).await.1, a, "same container, same IP");
        call(&app, "POST", "/v1/ipam", &pod("b")).await;
        let (status, full) = call(&app, "POST", "/v1/ipam", &pod("c")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(full["error"].as_str().unwrap().contains("node node-a has no free IP"), "{full}");
        let (_, health) = call(&app, "GET", "/v1/healthz", "").await;
        assert_eq!(
            health,
            json!({"ipam": {"allocated": 2, "available": 2, "capacity": 30, "status": "IPv4: 2/2 allocated"}})
        );
        let (_, list) = call(&app, "GET", "/v1/ipam", "").await;
        assert_eq!(list["allocations"][0]["containerId"], "a");
        assert_eq!(list["allocations"][1]["podName"], "b");
        let veth = |c: &str| {
            json!({"containerId": c, "ifName": "eth0", "hostVeth": "eni0", "hostVethIfindex": 9, "podMac": "0a:00:00:00:00:02"})
                .to_string()
        };
        assert_eq!(call(&app, "POST", "/v1/endpoint", &veth("a")).await.0, StatusCode::NO_CONTENT);
        let (status, unknown) = call(&app, "POST", "/v1/endpoint", &veth("zz")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{unknown}");
        let (_, list) = call(&app, "GET", "/v1/ipam", "").await;
        assert_eq!(list["allocations"][0]["endpoint"]["hostVethIfindex"], 9, "recorded on the allocation");
        let (status, broken) = call(&app, "GET", "/v1/endpoint/a?ifName=eth0", "").await;
        assert_eq!(status, StatusCode::CONFLICT, "CHECK: the registered veth eni0 does not exist here");
        assert!(broken["error"].as_str().unwrap().contains("veth eni0 no longer exists"), "{broken}");
        let (status, none) = call(&app, "GET", "/v1/endpoint/b?ifName=eth0", "").await;
        assert_eq!(status, StatusCode::CONFLICT, "{none}");
        assert!(none["error"].as_str().unwrap().contains("no veth was registered"), "{none}");
        assert_eq!(call(&app, "GET", "/v1/endpoint/zz", "").await.0, StatusCode::CONFLICT, "never allocated");
        assert_eq!(call(&app, "DELETE", "/v1/ipam/a?ifName=eth0", "").await.0, StatusCode::NO_CONTENT);
        assert_eq!(call(&app, "DELETE", "/v1/ipam/a", "").await.0, StatusCode::NO_CONTENT, "idempotent");
        let body = json!({"containerId": "b", "ifName": "eth0"}).to_string();
        assert_eq!(call(&app, "DELETE", "/v1/ipam", &body).await.0, StatusCode::NO_CONTENT);
        assert_eq!(call(&app, "GET", "/v1/healthz", "").await.1["ipam"]["allocated"], 0);
    }

    #[tokio::test]
    async fn bad_requests_get_json_errors() {
        let dir = tempfile::tempdir().unwrap();
        let app = app(dir.path(), 1);
        let cases: &[(&str, &str, &str, StatusCode, &str)] = &[
            ("POST", "/v1/ipam", "not json", StatusCode::BAD_REQUEST, "not a valid AllocateRequest"),
            ("POST", "/v1/ipam", "{\"containerId\":\"a\"}", StatusCode::BAD_REQUEST, "ifName"),
            (
                "POST",
                "/v1/ipam",
                "{\"containerId\":\"\",\"ifName\":\"eth0\",\"podNamespace\":\"\",\"podName\":\"\"}",
                StatusCode::BAD_REQUEST,
                "containerId is empty",
            ),
            ("DELETE", "/v1/ipam", "{}", StatusCode::BAD_REQUEST, "ReleaseRequest"),
            ("POST", "/v1/endpoint", "{}", StatusCode::BAD_REQUEST, "EndpointRequest"),
            (
                "POST",
                "/v1/endpoint",
                r#"{"containerId":"a","ifName":"eth0","hostVeth":"v","hostVethIfindex":3,"podMac":"nope"}"#,
                StatusCode::BAD_REQUEST,
                "podMac",
            ),
            ("GET", "/v2/nothing", "", StatusCode::NOT_FOUND, "no such endpoint"),
        ];
        for (method, uri, body, want_status, want_text) in cases {
            let (status, json) = call(&app, method, uri, body).await;
            assert_eq!(status, *want_status, "{method} {uri} {body}");
            assert!(json["error"].as_str().unwrap().contains(want_text), "{method} {uri}: {json}");
        }
    }

    #[tokio::test]
    async fn socket_is_0660_with_the_group_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join("agent.sock");
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        drop(bind_socket(&path, Some(gid)).unwrap());
        let listener = bind_socket(&path, Some(gid)).expect("a stale socket file is replaced");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), gid);
        drop(listener);
        assert_eq!(resolve_group("0").unwrap(), 0);
        assert_eq!(resolve_group("root").unwrap(), 0);
        assert!(resolve_group("no-such-group-eni").unwrap_err().to_string().contains("no-such-group-eni"));
    }
}
