//! A stand-in kube-apiserver for tests: an axum server that speaks enough of the
//! Kubernetes REST API for kube-rs clients, watchers, Controllers, the events
//! Recorder and kube-lease-manager to run unchanged against it.
//!
//! It serves Nodes, Pods and ENINodes (cluster-scoped except Pods), Leases and
//! Events (namespaced) with: list (label/field selectors, `limit`/`continue`),
//! watch (`resourceVersion`, one JSON event per line, `410 Gone` once history is
//! compacted, `sendInitialEvents`), get, create, replace (optimistic concurrency),
//! patch (merge, strategic treated as merge, JSON patch, server-side apply with
//! per-manager field ownership and conflicts), delete, the `status` subresource,
//! and discovery (`/api`, `/apis`, `/api/v1`, `/apis/{g}/{v}`, `/version`).
//! A write that changes nothing does not bump the resourceVersion.
//!
//! ```no_run
//! # async fn demo() {
//! let (url, standin) = eni_ipam_kube_standin::KubeStandin::start().await;
//! standin.create_node("node-1", "aws:///us-east-1a/i-0123");
//! // point a kube::Client at `url` ...
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

mod admission;
mod apply;
pub mod pki;
mod selector;
mod table;

pub use admission::{DEFAULT_WEBHOOK_TIMEOUT, FailurePolicy, PodWebhook};
pub use apply::FieldSet;
pub use pki::Pki;

/// A kind the stand-in serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// URL plural.
    pub plural: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether `/status` is a subresource (main writes keep status, status writes touch only status).
    pub status: bool,
    /// Short names for discovery.
    pub short: &'static str,
}

impl Kind {
    /// `apiVersion` of the kind.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Core v1 Nodes.
pub const NODES: Kind = Kind {
    group: "",
    version: "v1",
    plural: "nodes",
    kind: "Node",
    namespaced: false,
    status: true,
    short: "no",
};
/// Core v1 Pods.
pub const PODS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
    namespaced: true,
    status: true,
    short: "po",
};
/// Core v1 Events.
pub const CORE_EVENTS: Kind = Kind {
    group: "",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    status: false,
    short: "ev",
};
/// ENINodes (cluster-scoped CRD with a status subresource).
pub const ENINODES: Kind = Kind {
    group: "eni-ipam.io",
    version: "v1alpha1",
    plural: "eninodes",
    kind: "ENINode",
    namespaced: false,
    status: true,
    short: "enin",
};
/// coordination.k8s.io/v1 Leases.
pub const LEASES: Kind = Kind {
    group: "coordination.k8s.io",
    version: "v1",
    plural: "leases",
    kind: "Lease",
    namespaced: true,
    status: false,
    short: "",
};
/// events.k8s.io/v1 Events.
pub const EVENTS: Kind = Kind {
    group: "events.k8s.io",
    version: "v1",
    plural: "events",
    kind: "Event",
    namespaced: true,
    status: false,
    short: "",
};

/// Every kind served.
pub const KINDS: [Kind; 6] = [NODES, PODS, CORE_EVENTS, ENINODES, LEASES, EVENTS];

type Key = (Kind, String, String);

struct Stored {
    object: Value,
    /// Field manager -> the leaf paths it owns.
    managers: BTreeMap<String, FieldSet>,
}

#[derive(Clone)]
struct WatchEvent {
    rv: u64,
    kind: Kind,
    namespace: String,
    type_: &'static str,
    object: Value,
}

struct Inner {
    rv: u64,
    objects: BTreeMap<Key, Stored>,
    history: VecDeque<WatchEvent>,
    /// Events with an rv at or below this were compacted away: a watch from an older rv gets 410.
    compacted: u64,
    history_limit: usize,
    uid: u64,
}

/// A request as the stand-in saw it (for counting calls in tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeenRequest {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string, raw.
    pub query: String,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<WatchEvent>,
    expire: broadcast::Sender<()>,
    requests: Mutex<Vec<SeenRequest>>,
    request_count: AtomicU64,
    /// The mutating webhook Pod creates go through, if one is registered.
    pod_webhook: Mutex<Option<Arc<admission::RegisteredWebhook>>>,
}

/// The stand-in apiserver; cheap to clone, every clone sees the same objects.
#[derive(Clone)]
pub struct KubeStandin {
    shared: Arc<Shared>,
    url: String,
    addr: SocketAddr,
    /// The accept loop and every open connection, while serving.
    server: Arc<Mutex<Option<Server>>>,
}

/// A running accept loop and the signal that stops it.
struct Server {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

/// Errors the REST layer answers with, as a meta/v1 Status.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into() }
    }
    fn not_found(kind: &Kind, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{}.{} \"{name}\" not found", kind.plural, kind.group))
    }
    fn status(&self) -> Value {
        status_json(self.code, self.reason, &self.message)
    }
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":message,"reason":reason,"code":code})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, [(header::CONTENT_TYPE, "application/json")], self.status().to_string()).into_response()
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

impl KubeStandin {
    /// Starts a stand-in on 127.0.0.1 (a free port) in the current tokio runtime.
    /// Returns its base URL (`http://127.0.0.1:PORT`) and the handle; the server stops
    /// when [`KubeStandin::shutdown`] is called or the runtime ends.
    pub async fn start() -> (String, KubeStandin) {
        Self::start_with_history(10_000).await
    }

    /// As [`KubeStandin::start`], keeping at most `history_limit` watch events; older rvs get 410.
    pub async fn start_with_history(history_limit: usize) -> (String, KubeStandin) {
        Self::serve_on(SocketAddr::from(([127, 0, 0, 1], 0)), history_limit).await
    }

    /// As [`KubeStandin::start`] on `addr` (e.g. `0.0.0.0:0`, so processes in other network
    /// namespaces reach it over a veth). The URL names the bound address as is.
    pub async fn start_on(addr: SocketAddr) -> (String, KubeStandin) {
        Self::serve_on(addr, 10_000).await
    }

    async fn serve_on(addr: SocketAddr, history_limit: usize) -> (String, KubeStandin) {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind {addr} for the stand-in: {e}"));
        let addr: SocketAddr = listener.local_addr().expect("stand-in local address");
        let url = format!("http://{addr}");
        let (events, _) = broadcast::channel(65_536);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                compacted: 0,
                history_limit: history_limit.max(1),
                uid: 0,
            }),
            events,
            expire: broadcast::channel(16).0,
            requests: Mutex::new(Vec::new()),
            request_count: AtomicU64::new(0),
            pod_webhook: Mutex::new(None),
        });
        let standin = KubeStandin { shared, url: url.clone(), addr, server: Arc::new(Mutex::new(None)) };
        standin.serve(listener);
        (url, standin)
    }

    /// Runs the accept loop; every connection is a task of it, so stopping it closes them all.
    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new().fallback(handle).with_state(self.clone());
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let accepted = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => accepted,
                };
                let Ok((stream, _)) = accepted else { continue };
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ =
                        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                });
                while connections.try_join_next().is_some() {}
            }
            // Every connection task is aborted and awaited, so each socket is closed on return.
            connections.shutdown().await;
        });
        let old = self.server.lock().expect("stand-in server").replace(Server { task, stop });
        assert!(old.is_none(), "the stand-in is served once at a time");
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A kubeconfig for kubectl and client libraries: plain HTTP to the stand-in on
    /// loopback, no credentials (the stand-in has no auth).
    pub fn kubeconfig(&self) -> String {
        let server = format!("http://127.0.0.1:{}", self.addr.port());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {server}\n\
             users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: tester\n\
             current-context: standin\n"
        )
    }

    /// Stops at once, as a crashed apiserver: no new connections, and every open one
    /// (watches included) is closed. Objects are kept for [`KubeStandin::restart`].
    pub async fn shutdown(&self) {
        let server = self.server.lock().expect("stand-in server").take();
        if let Some(Server { task, stop }) = server {
            let _ = stop.send(());
            task.await.expect("the stand-in accept loop ends cleanly");
        }
    }

    /// Restarts as an apiserver does: every connection and watch is closed, then, after
    /// `down`, the same address is served again with the same objects and resourceVersions,
    /// so clients re-list or re-watch from where they were.
    pub async fn restart_after(&self, down: std::time::Duration) {
        self.shutdown().await;
        tokio::time::sleep(down).await;
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "stand-in address still taken; retrying");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebind {} for the restarted stand-in: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// [`KubeStandin::restart_after`] with 200 ms of downtime.
    pub async fn restart(&self) {
        self.restart_after(std::time::Duration::from_millis(200)).await;
    }

    /// Registers the mutating webhook every Pod create through the REST API
    /// goes through (replacing any earlier one), as a
    /// `MutatingWebhookConfiguration` for `pods` / `CREATE` would. Fails when
    /// the CA is not a PEM certificate. [`KubeStandin::create`] and
    /// [`KubeStandin::put`] bypass it, as writes straight to etcd would.
    pub fn set_pod_webhook(&self, webhook: PodWebhook) -> Result<(), String> {
        let registered = admission::RegisteredWebhook::new(webhook)?;
        *self.shared.pod_webhook.lock().expect("stand-in lock") = Some(Arc::new(registered));
        Ok(())
    }

    /// Unregisters the Pod webhook.
    pub fn clear_pod_webhook(&self) {
        *self.shared.pod_webhook.lock().expect("stand-in lock") = None;
    }

    /// Creates a Node with `spec.providerID` (no labels). Panics if it exists.
    pub fn create_node(&self, name: &str, provider_id: &str) -> Value {
        self.create(
            NODES,
            json!({"apiVersion":"v1","kind":"Node","metadata":{"name":name},"spec":{"providerID":provider_id}}),
        )
        .expect("create Node")
    }

    /// Deletes a Node; returns whether it existed.
    pub fn delete_node(&self, name: &str) -> bool {
        self.delete(NODES, "", name).is_some()
    }

    /// Creates any object of a served kind (namespace from `metadata.namespace`).
    pub fn create(&self, kind: Kind, object: Value) -> Result<Value, String> {
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let mut inner = self.shared.inner.lock().expect("stand-in lock");
        create_locked(&mut inner, &self.shared.events, kind, &ns, object, "standin").map_err(|e| e.message)
    }

    /// Writes an object as is (create or replace, ignoring resourceVersion).
    pub fn put(&self, kind: Kind, object: Value) -> Value {
        let ns = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let mut inner = self.shared.inner.lock().expect("stand-in lock");
        let key = (kind, ns.clone(), name);
        if inner.objects.contains_key(&key) {
            let mut o = object;
            o["metadata"].as_object_mut().map(|m| m.remove("resourceVersion"));
            write_locked(&mut inner, &self.shared.events, &key, WriteMode::Replace, o, "standin")
                .expect("put existing object")
        } else {
            create_locked(&mut inner, &self.shared.events, kind, &ns, object, "standin")
                .expect("put new object")
        }
    }

    /// Merge-patches an object's main resource (status kept) or, with `status`, its status.
    pub fn merge_patch(
        &self,
        kind: Kind,
        ns: &str,
        name: &str,
        patch: Value,
        status: bool,
    ) -> Result<Value, String> {
        let mut inner = self.shared.inner.lock().expect("stand-in lock");
        let key = (kind, ns.to_string(), name.to_string());
        let current =
            inner.objects.get(&key).map(|s| s.object.clone()).ok_or_else(|| format!("{name} not found"))?;
        let mut next = current;
        json_patch::merge(&mut next, &patch);
        let mode = if status { WriteMode::Status } else { WriteMode::Main };
        write_locked(&mut inner, &self.shared.events, &key, mode, next, "standin").map_err(|e| e.message)
    }

    /// Deletes an object; returns it if it existed.
    pub fn delete(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let mut inner = self.shared.inner.lock().expect("stand-in lock");
        delete_locked(&mut inner, &self.shared.events, &(kind, ns.to_string(), name.to_string())).ok()
    }

    /// One object.
    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let inner = self.shared.inner.lock().expect("stand-in lock");
        inner.objects.get(&(kind, ns.to_string(), name.to_string())).map(|s| s.object.clone())
    }

    /// Every object of a kind (all namespaces), by namespace then name.
    pub fn list(&self, kind: Kind) -> Vec<Value> {
        let inner = self.shared.inner.lock().expect("stand-in lock");
        inner.objects.iter().filter(|(k, _)| k.0 == kind).map(|(_, s)| s.object.clone()).collect()
    }

    /// The field managers of an object and the paths each owns (dot-joined).
    pub fn managers(&self, kind: Kind, ns: &str, name: &str) -> BTreeMap<String, Vec<String>> {
        let inner = self.shared.inner.lock().expect("stand-in lock");
        inner
            .objects
            .get(&(kind, ns.to_string(), name.to_string()))
            .map(|s| s.managers.iter().map(|(m, f)| (m.clone(), f.paths())).collect())
            .unwrap_or_default()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.inner.lock().expect("stand-in lock").rv
    }

    /// Forgets all watch history: any watch resuming from an older rv gets 410 Gone.
    pub fn compact(&self) {
        let mut inner = self.shared.inner.lock().expect("stand-in lock");
        inner.history.clear();
        inner.compacted = inner.rv;
    }

    /// Ends every open watch with a `410 Expired` ERROR event (as after an etcd compaction):
    /// watchers re-list.
    pub fn expire_watches(&self) {
        let mut inner = self.shared.inner.lock().expect("stand-in lock");
        inner.history.clear();
        inner.compacted = inner.rv;
        let _ = self.shared.expire.send(());
    }

    /// Every request seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.requests.lock().expect("stand-in lock").clone()
    }

    /// How many requests were served.
    pub fn request_count(&self) -> u64 {
        self.shared.request_count.load(Ordering::Relaxed)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum WriteMode {
    /// PUT/PATCH on the main resource: status is kept from the stored object.
    Main,
    /// PUT/PATCH on /status: only status changes.
    Status,
    /// Test helper: write everything.
    Replace,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

fn record(inner: &mut Inner, tx: &broadcast::Sender<WatchEvent>, ev: WatchEvent) {
    inner.history.push_back(ev.clone());
    while inner.history.len() > inner.history_limit {
        if let Some(old) = inner.history.pop_front() {
            inner.compacted = old.rv;
        }
    }
    let _ = tx.send(ev);
}

fn create_locked(
    inner: &mut Inner,
    tx: &broadcast::Sender<WatchEvent>,
    kind: Kind,
    ns: &str,
    mut object: Value,
    manager: &str,
) -> Result<Value, ApiError> {
    if !object.is_object() {
        return Err(ApiError::new(400, "BadRequest", "body is not a JSON object"));
    }
    if kind.namespaced && ns.is_empty() {
        return Err(ApiError::new(422, "Invalid", format!("{} requires a namespace", kind.kind)));
    }
    let mut name = object["metadata"]["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty() {
        if let Some(prefix) = object["metadata"]["generateName"].as_str() {
            name = format!("{prefix}{:05x}", inner.uid + 1);
        } else {
            return Err(ApiError::new(422, "Invalid", "metadata.name: Required value"));
        }
    }
    let key = (kind, ns.to_string(), name.clone());
    if inner.objects.contains_key(&key) {
        return Err(ApiError::new(
            409,
            "AlreadyExists",
            format!("{}.{} \"{name}\" already exists", kind.plural, kind.group),
        ));
    }
    inner.rv += 1;
    inner.uid += 1;
    let rv = inner.rv;
    let obj = object.as_object_mut().expect("checked object");
    obj.insert("apiVersion".into(), kind.api_version().into());
    obj.insert("kind".into(), kind.kind.into());
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    let m = meta.as_object_mut().expect("metadata object");
    m.insert("name".into(), name.clone().into());
    if kind.namespaced {
        m.insert("namespace".into(), ns.into());
    } else {
        m.remove("namespace");
    }
    m.insert("uid".into(), format!("00000000-0000-4000-8000-{:012x}", inner.uid).into());
    m.insert("resourceVersion".into(), rv.to_string().into());
    m.insert("creationTimestamp".into(), now_rfc3339().into());
    m.insert("generation".into(), 1.into());
    m.remove("managedFields");
    let mut managers = BTreeMap::new();
    managers.insert(manager.to_string(), apply::owned_paths(&object, kind.status, None));
    inner.objects.insert(key, Stored { object: object.clone(), managers });
    record(inner, tx, WatchEvent { rv, kind, namespace: ns.into(), type_: "ADDED", object: object.clone() });
    Ok(object)
}

/// Builds the object to store from the current one and a proposed full object.
fn merge_by_mode(kind: Kind, current: &Value, proposed: Value, mode: WriteMode) -> Value {
    let mut next = proposed;
    if kind.status {
        match mode {
            WriteMode::Main => {
                let status = current.get("status").cloned();
                let o = next.as_object_mut().expect("object");
                match status {
                    Some(s) => o.insert("status".into(), s),
                    None => o.remove("status"),
                };
            }
            WriteMode::Status => {
                let mut base = current.clone();
                let o = base.as_object_mut().expect("object");
                match next.get("status").cloned() {
                    Some(s) => o.insert("status".into(), s),
                    None => o.remove("status"),
                };
                next = base;
            }
            WriteMode::Replace => {}
        }
    }
    // Identity and server-owned metadata always come from the stored object.
    let cm = current["metadata"].clone();
    let o = next.as_object_mut().expect("object");
    o.insert("apiVersion".into(), current["apiVersion"].clone());
    o.insert("kind".into(), current["kind"].clone());
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    let m = meta.as_object_mut().expect("metadata");
    for f in ["name", "namespace", "uid", "creationTimestamp", "generation", "resourceVersion"] {
        match cm.get(f) {
            Some(v) => m.insert(f.into(), v.clone()),
            None => m.remove(f),
        };
    }
    if mode == WriteMode::Status {
        // A status write cannot change labels, annotations or anything else in metadata.
        if let Some(cm) = cm.as_object() {
            *m = cm.clone();
        }
    }
    m.remove("managedFields");
    next
}

fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        o.remove("apiVersion");
        o.remove("kind");
    }
    v
}

fn strip_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

/// Writes `proposed` over the stored object at `key`: rv check (when `proposed` carries one),
/// subresource rules, generation, no-op suppression, ownership of changed fields to `manager`.
fn write_locked(
    inner: &mut Inner,
    tx: &broadcast::Sender<WatchEvent>,
    key: &Key,
    mode: WriteMode,
    proposed: Value,
    manager: &str,
) -> Result<Value, ApiError> {
    write_owned(inner, tx, key, mode, proposed, manager, None)
}

fn write_owned(
    inner: &mut Inner,
    tx: &broadcast::Sender<WatchEvent>,
    key: &Key,
    mode: WriteMode,
    proposed: Value,
    manager: &str,
    managers_after: Option<BTreeMap<String, FieldSet>>,
) -> Result<Value, ApiError> {
    let kind = key.0;
    if !proposed.is_object() {
        return Err(ApiError::new(400, "BadRequest", "body is not a JSON object"));
    }
    let stored = inner.objects.get(key).ok_or_else(|| ApiError::not_found(&kind, &key.2))?;
    let current = stored.object.clone();
    if let Some(rv) = proposed["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && Some(rv) != current["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {}.{} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                kind.plural, kind.group, key.2
            ),
        ));
    }
    let mut next = merge_by_mode(kind, &current, proposed, mode);
    if strip_rv(&next) == strip_rv(&current) {
        // No-op: same rv, no event. Ownership may still move (an apply claiming fields).
        if let Some(m) = managers_after {
            inner.objects.get_mut(key).expect("exists").managers = m;
        }
        return Ok(current);
    }
    if spec_part(&next) != spec_part(&current) {
        let g = current["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        next["metadata"]["generation"] = g.into();
    }
    inner.rv += 1;
    let rv = inner.rv;
    next["metadata"]["resourceVersion"] = rv.to_string().into();
    let managers = match managers_after {
        Some(m) => m,
        None => {
            let mut m = inner.objects.get(key).expect("exists").managers.clone();
            let changed = apply::changed_paths(&current, &next);
            for fs in m.values_mut() {
                fs.remove_all(&changed);
            }
            m.entry(manager.to_string()).or_default().extend(&changed);
            m.retain(|_, f| !f.is_empty());
            m
        }
    };
    inner.objects.insert(key.clone(), Stored { object: next.clone(), managers });
    record(
        inner,
        tx,
        WatchEvent { rv, kind, namespace: key.1.clone(), type_: "MODIFIED", object: next.clone() },
    );
    Ok(next)
}

fn delete_locked(
    inner: &mut Inner,
    tx: &broadcast::Sender<WatchEvent>,
    key: &Key,
) -> Result<Value, ApiError> {
    let Some(stored) = inner.objects.remove(key) else {
        return Err(ApiError::not_found(&key.0, &key.2));
    };
    inner.rv += 1;
    let rv = inner.rv;
    let mut obj = stored.object;
    obj["metadata"]["resourceVersion"] = rv.to_string().into();
    record(
        inner,
        tx,
        WatchEvent { rv, kind: key.0, namespace: key.1.clone(), type_: "DELETED", object: obj.clone() },
    );
    Ok(obj)
}

/// A parsed request path.
struct Target {
    kind: Kind,
    namespace: String,
    name: Option<String>,
    status: bool,
}

enum Route {
    Resource(Target),
    Discovery(Value),
    NotFound,
}

fn route(path: &str) -> Route {
    let parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let (group, version, rest) = match parts.as_slice() {
        ["version"] => {
            return Route::Discovery(
                json!({"major":"1","minor":"33","gitVersion":"v1.33.0-standin","platform":"linux/amd64"}),
            );
        }
        ["api"] => {
            return Route::Discovery(
                json!({"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}),
            );
        }
        ["apis"] => return Route::Discovery(api_group_list()),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return match resource_list(group, version) {
            Some(v) => Route::Discovery(v),
            None => Route::NotFound,
        };
    }
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        _ => (String::new(), rest),
    };
    let Some(kind) = KINDS.iter().find(|k| k.group == group && k.version == version && k.plural == rest[0])
    else {
        return Route::NotFound;
    };
    if !kind.namespaced && !namespace.is_empty() {
        return Route::NotFound;
    }
    match &rest[1..] {
        [] => Route::Resource(Target { kind: *kind, namespace, name: None, status: false }),
        [name] => {
            Route::Resource(Target { kind: *kind, namespace, name: Some(name.to_string()), status: false })
        }
        [name, "status"] if kind.status => {
            Route::Resource(Target { kind: *kind, namespace, name: Some(name.to_string()), status: true })
        }
        _ => Route::NotFound,
    }
}

fn api_group_list() -> Value {
    let mut groups: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for k in KINDS.iter().filter(|k| !k.group.is_empty()) {
        groups.entry(k.group).or_default().insert(k.version);
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind":"APIGroupList","apiVersion":"v1","groups":groups})
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = KINDS.iter().filter(|k| k.group == group && k.version == version).collect();
    if kinds.is_empty() {
        return None;
    }
    let verbs = json!(["create", "delete", "get", "list", "patch", "update", "watch"]);
    let mut resources = Vec::new();
    for k in kinds {
        let short: Vec<&str> = if k.short.is_empty() { vec![] } else { vec![k.short] };
        resources
            .push(json!({"name":k.plural,"singularName":k.kind.to_lowercase(),"namespaced":k.namespaced,
            "kind":k.kind,"verbs":verbs,"shortNames":short}));
        if k.status {
            resources.push(
                json!({"name":format!("{}/status",k.plural),"singularName":"","namespaced":k.namespaced,
                "kind":k.kind,"verbs":["get","patch","update"]}),
            );
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind":"APIResourceList","apiVersion":"v1","groupVersion":gv,"resources":resources}))
}

struct Query(BTreeMap<String, String>);

impl Query {
    fn parse(raw: &str) -> Self {
        Query(form_urlencoded::parse(raw.trim_start_matches(['?', '&']).as_bytes()).into_owned().collect())
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }
}

async fn handle(State(st): State<KubeStandin>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    st.shared.request_count.fetch_add(1, Ordering::Relaxed);
    st.shared.requests.lock().expect("stand-in lock").push(SeenRequest {
        method: method.to_string(),
        path: path.clone(),
        query: raw_query.clone(),
    });
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => return ApiError::new(400, "BadRequest", format!("reading body: {e}")).into_response(),
    };
    let q = Query::parse(&raw_query);
    match route(&path) {
        Route::Discovery(v) if method == Method::GET => json_response(StatusCode::OK, &v),
        Route::Resource(t) => match dispatch(&st, &method, t, &q, &headers, &body).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        },
        _ => ApiError::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
        .into_response(),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("body is not JSON: {e}")))
}

async fn dispatch(
    st: &KubeStandin,
    method: &Method,
    t: Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let shared = &st.shared;
    let manager = q.get("fieldManager").unwrap_or("unknown").to_string();
    match (method.clone(), &t.name) {
        (Method::GET, None) if q.flag("watch") => Ok(watch(st, &t, q)),
        (Method::GET, None) => {
            let out = list(st, &t, q)?;
            if table::wants_table(accept(headers)) {
                let items = out["items"].as_array().cloned().unwrap_or_default();
                let printed = table::table(&t.kind, &items, out["metadata"].clone(), q.get("includeObject"));
                return Ok(json_response(StatusCode::OK, &printed));
            }
            Ok(json_response(StatusCode::OK, &out))
        }
        (Method::GET, Some(name)) => {
            let inner = shared.inner.lock().expect("stand-in lock");
            let key = (t.kind, t.namespace.clone(), name.clone());
            let object = inner
                .objects
                .get(&key)
                .map(|s| s.object.clone())
                .ok_or_else(|| ApiError::not_found(&t.kind, name))?;
            if table::wants_table(accept(headers)) {
                let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                return Ok(json_response(
                    StatusCode::OK,
                    &table::table(&t.kind, &[object], meta, q.get("includeObject")),
                ));
            }
            Ok(json_response(StatusCode::OK, &object))
        }
        (Method::POST, None) => {
            let mut obj = parse_body(body)?;
            let ns = if t.kind.namespaced { t.namespace.clone() } else { String::new() };
            if t.kind.namespaced
                && let Some(ons) = obj["metadata"]["namespace"].as_str()
                && !ons.is_empty()
                && ons != ns
            {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the namespace of the object does not match the URL",
                ));
            }
            if t.kind == PODS {
                let webhook = shared.pod_webhook.lock().expect("stand-in lock").clone();
                if let Some(webhook) = webhook {
                    obj = webhook.admit(&ns, obj).await?;
                }
            }
            let mut inner = shared.inner.lock().expect("stand-in lock");
            let created = create_locked(&mut inner, &shared.events, t.kind, &ns, obj, &manager)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (Method::PUT, Some(name)) => {
            let obj = parse_body(body)?;
            let mut inner = shared.inner.lock().expect("stand-in lock");
            let key = (t.kind, t.namespace.clone(), name.clone());
            let mode = if t.status { WriteMode::Status } else { WriteMode::Main };
            let out = write_locked(&mut inner, &shared.events, &key, mode, obj, &manager)?;
            Ok(json_response(StatusCode::OK, &out))
        }
        (Method::PATCH, Some(name)) => {
            let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let ctype = ctype.split(';').next().unwrap_or_default().trim().to_string();
            let key = (t.kind, t.namespace.clone(), name.clone());
            let mode = if t.status { WriteMode::Status } else { WriteMode::Main };
            let mut inner = shared.inner.lock().expect("stand-in lock");
            let current = inner.objects.get(&key).map(|s| s.object.clone());
            match ctype.as_str() {
                "application/apply-patch+yaml" => {
                    if q.get("fieldManager").is_none() {
                        return Err(ApiError::new(
                            422,
                            "Invalid",
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                        ));
                    }
                    let applied: Value = serde_json::from_slice(body).map_err(|e| {
                        ApiError::new(
                            400,
                            "BadRequest",
                            format!("apply body is not JSON (YAML is not supported): {e}"),
                        )
                    })?;
                    let force = q.flag("force");
                    match current {
                        None => {
                            let ns = t.namespace.clone();
                            let mut obj = applied;
                            obj["metadata"]["name"] = name.clone().into();
                            let created =
                                create_locked(&mut inner, &shared.events, t.kind, &ns, obj, &manager)?;
                            Ok(json_response(StatusCode::CREATED, &created))
                        }
                        Some(cur) => {
                            let managers = inner.objects.get(&key).expect("exists").managers.clone();
                            let (next, managers) = apply::apply(
                                &cur,
                                &applied,
                                &managers,
                                &manager,
                                force,
                                t.kind.status,
                                mode == WriteMode::Status,
                            )
                            .map_err(|conflicts| {
                                ApiError::new(
                                    409,
                                    "Conflict",
                                    format!(
                                        "Apply failed with {} conflict(s): {}",
                                        conflicts.len(),
                                        conflicts.join("; ")
                                    ),
                                )
                            })?;
                            let mut next = next;
                            if let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut) {
                                m.remove("resourceVersion");
                            }
                            let out = write_owned(
                                &mut inner,
                                &shared.events,
                                &key,
                                mode,
                                next,
                                &manager,
                                Some(managers),
                            )?;
                            Ok(json_response(StatusCode::OK, &out))
                        }
                    }
                }
                "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                    let cur = current.ok_or_else(|| ApiError::not_found(&t.kind, name))?;
                    let patch = parse_body(body)?;
                    let mut next = cur.clone();
                    json_patch::merge(&mut next, &patch);
                    if patch["metadata"]["resourceVersion"].is_null()
                        && let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut)
                    {
                        m.remove("resourceVersion");
                    }
                    let out = write_locked(&mut inner, &shared.events, &key, mode, next, &manager)?;
                    Ok(json_response(StatusCode::OK, &out))
                }
                "application/json-patch+json" => {
                    let cur = current.ok_or_else(|| ApiError::not_found(&t.kind, name))?;
                    let patch: json_patch::Patch = serde_json::from_slice(body)
                        .map_err(|e| ApiError::new(400, "BadRequest", format!("bad JSON patch: {e}")))?;
                    let mut next = cur.clone();
                    json_patch::patch(&mut next, &patch)
                        .map_err(|e| ApiError::new(422, "Invalid", format!("JSON patch failed: {e}")))?;
                    if next["metadata"]["resourceVersion"] == cur["metadata"]["resourceVersion"]
                        && let Some(m) = next.get_mut("metadata").and_then(Value::as_object_mut)
                    {
                        m.remove("resourceVersion");
                    }
                    let out = write_locked(&mut inner, &shared.events, &key, mode, next, &manager)?;
                    Ok(json_response(StatusCode::OK, &out))
                }
                other => Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("unsupported patch type {other:?}"),
                )),
            }
        }
        (Method::DELETE, Some(name)) => {
            let mut inner = shared.inner.lock().expect("stand-in lock");
            let out =
                delete_locked(&mut inner, &shared.events, &(t.kind, t.namespace.clone(), name.clone()))?;
            Ok(json_response(StatusCode::OK, &out))
        }
        _ => Err(ApiError::new(405, "MethodNotAllowed", format!("{method} is not supported here"))),
    }
}

fn matches(q: &Query, obj: &Value) -> Result<bool, ApiError> {
    if let Some(ls) = q.get("labelSelector") {
        let sel = selector::parse(ls).map_err(|e| ApiError::new(400, "BadRequest", e))?;
        let labels = obj["metadata"]["labels"].as_object().cloned().unwrap_or_default();
        if !selector::matches(&sel, &labels) {
            return Ok(false);
        }
    }
    if let Some(fs) = q.get("fieldSelector") {
        let sel = selector::parse(fs).map_err(|e| ApiError::new(400, "BadRequest", e))?;
        let mut fields = Map::new();
        for (f, v) in [
            ("metadata.name", &obj["metadata"]["name"]),
            ("metadata.namespace", &obj["metadata"]["namespace"]),
        ] {
            fields.insert(f.into(), v.as_str().unwrap_or_default().into());
        }
        if let Some(node) = obj["spec"]["nodeName"].as_str() {
            fields.insert("spec.nodeName".into(), node.into());
        }
        if !selector::matches(&sel, &fields) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}

fn list(st: &KubeStandin, t: &Target, q: &Query) -> Result<Value, ApiError> {
    let inner = st.shared.inner.lock().expect("stand-in lock");
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).filter(|l| *l > 0).unwrap_or(usize::MAX);
    let after = q.get("continue").map(str::to_string);
    let mut items = Vec::new();
    let mut next_token = None;
    for ((kind, ns, name), s) in inner.objects.iter() {
        if *kind != t.kind || (!t.namespace.is_empty() && *ns != t.namespace) {
            continue;
        }
        let pos = format!("{ns}/{name}");
        if let Some(a) = &after
            && pos.as_str() <= a.as_str()
        {
            continue;
        }
        if !matches(q, &s.object)? {
            continue;
        }
        if items.len() == limit {
            next_token = Some(items_last_pos(&items));
            break;
        }
        items.push(s.object.clone());
    }
    let mut meta = json!({"resourceVersion": inner.rv.to_string()});
    if let Some(tok) = next_token {
        meta["continue"] = tok.into();
    }
    Ok(
        json!({"apiVersion": t.kind.api_version(), "kind": format!("{}List", t.kind.kind), "metadata": meta, "items": items}),
    )
}

fn items_last_pos(items: &[Value]) -> String {
    let last = items.last().expect("non-empty page");
    format!(
        "{}/{}",
        last["metadata"]["namespace"].as_str().unwrap_or_default(),
        last["metadata"]["name"].as_str().unwrap_or_default()
    )
}

fn event_line(type_: &str, object: &Value) -> Result<Bytes, Infallible> {
    let mut s = json!({"type": type_, "object": object}).to_string();
    s.push('\n');
    Ok(Bytes::from(s))
}

fn watch(st: &KubeStandin, t: &Target, q: &Query) -> Response {
    let timeout = q.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).unwrap_or(1800);
    let send_initial = q.flag("sendInitialEvents");
    let bookmarks = q.flag("allowWatchBookmarks");
    let requested: Option<u64> = q.get("resourceVersion").and_then(|s| s.parse().ok());
    let label_q = Query(q.0.clone());
    let kind = t.kind;
    let ns = t.namespace.clone();
    let mut first: Vec<Result<Bytes, Infallible>> = Vec::new();
    let inner = st.shared.inner.lock().expect("stand-in lock");
    let rx = st.shared.events.subscribe();
    let expire = st.shared.expire.subscribe();
    let wants = |k: &Kind, ens: &str| *k == kind && (ns.is_empty() || ens == ns);
    match requested {
        Some(rv) if rv != 0 && !send_initial => {
            if rv < inner.compacted {
                let status = status_json(
                    410,
                    "Expired",
                    &format!("too old resource version: {rv} ({})", inner.compacted),
                );
                first.push(event_line("ERROR", &status));
                drop(inner);
                return stream_response(futures::stream::iter(first).boxed_stream());
            }
            for ev in inner.history.iter().filter(|e| e.rv > rv && wants(&e.kind, &e.namespace)) {
                if matches(&label_q, &ev.object).unwrap_or(false) {
                    first.push(event_line(ev.type_, &ev.object));
                }
            }
        }
        _ => {
            for ((k, ons, _), s) in inner.objects.iter() {
                if wants(k, ons) && matches(&label_q, &s.object).unwrap_or(false) {
                    first.push(event_line("ADDED", &s.object));
                }
            }
            if send_initial {
                let bm = json!({"apiVersion": kind.api_version(), "kind": kind.kind, "metadata": {
                    "resourceVersion": inner.rv.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}}});
                first.push(event_line("BOOKMARK", &bm));
            }
        }
    }
    let last_rv = inner.rv;
    drop(inner);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    struct Live {
        rx: broadcast::Receiver<WatchEvent>,
        expire: broadcast::Receiver<()>,
        last_rv: u64,
        q: Query,
        done: bool,
    }
    let live = Live { rx, expire, last_rv, q: label_q, done: false };
    let rest = futures::stream::unfold(live, move |mut live| {
        let ns = ns.clone();
        async move {
            loop {
                if live.done {
                    return None;
                }
                let recv = tokio::select! {
                    r = tokio::time::timeout_at(deadline, live.rx.recv()) => r,
                    _ = live.expire.recv() => {
                        live.done = true;
                        let status = status_json(410, "Expired", "too old resource version (compacted)");
                        return Some((event_line("ERROR", &status), live));
                    }
                };
                match recv {
                    Err(_) => {
                        // Timed out: end with a bookmark so the client resumes from here.
                        live.done = true;
                        if bookmarks {
                            let bm = json!({"apiVersion": kind.api_version(), "kind": kind.kind,
                                "metadata": {"resourceVersion": live.last_rv.to_string()}});
                            return Some((event_line("BOOKMARK", &bm), live));
                        }
                        return None;
                    }
                    Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                        live.done = true;
                        let status = status_json(410, "Expired", "watch fell behind; re-list");
                        return Some((event_line("ERROR", &status), live));
                    }
                    Ok(Err(broadcast::error::RecvError::Closed)) => return None,
                    Ok(Ok(ev)) => {
                        if ev.rv <= live.last_rv {
                            continue;
                        }
                        live.last_rv = ev.rv;
                        if ev.kind != kind || (!ns.is_empty() && ev.namespace != ns) {
                            continue;
                        }
                        if !matches(&live.q, &ev.object).unwrap_or(false) {
                            continue;
                        }
                        return Some((event_line(ev.type_, &ev.object), live));
                    }
                }
            }
        }
    });
    stream_response(futures::stream::iter(first).chain(rest).boxed_stream())
}

use futures::StreamExt;

trait BoxedStream {
    fn boxed_stream(self) -> futures::stream::BoxStream<'static, Result<Bytes, Infallible>>;
}
impl<S: futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static> BoxedStream for S {
    fn boxed_stream(self) -> futures::stream::BoxStream<'static, Result<Bytes, Infallible>> {
        self.boxed()
    }
}

fn stream_response(s: futures::stream::BoxStream<'static, Result<Bytes, Infallible>>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(s))
        .expect("watch response")
}
