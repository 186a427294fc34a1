//! A stand-in kube-apiserver for tests: an axum server that speaks enough of the
//! Kubernetes REST API for kube-rs clients, watchers, Controllers, the events
//! Recorder and kube-lease-manager to run unchanged against it.
//!
//! It serves Nodes, Pods and ENINodes (cluster-scoped except Pods), ConfigMaps,
//! Leases and Events (namespaced) with: list (label/field selectors, `limit`/`continue`),
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
mod kinds;
pub mod pki;
pub mod policy;
mod routes;
mod selector;
mod store;
mod table;
mod watch;

pub use admission::{DEFAULT_WEBHOOK_TIMEOUT, FailurePolicy, PodWebhook};
pub use apply::FieldSet;
pub use kinds::*;
pub use pki::Pki;
pub use policy::{AdmissionPolicy, AdmissionRequest, Denial, UserInfo};
use routes::*;
use store::*;
use watch::*;

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
    /// The first part of every UID: unique per stand-in, so two stand-ins (two
    /// clusters in one bed) never share a kube-system UID.
    uid_prefix: u32,
}

/// A number unlikely to repeat across stand-ins (std's per-instance hash keys are random).
fn unique_u32() -> u32 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u8) as u32
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
    /// Bearer token -> who it authenticates (requests without a token are the admin).
    tokens: Mutex<BTreeMap<String, UserInfo>>,
    /// ValidatingAdmissionPolicies (with their bindings) every REST write goes through.
    policies: Mutex<Vec<Arc<AdmissionPolicy>>>,
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
                uid_prefix: unique_u32(),
            }),
            events,
            expire: broadcast::channel(16).0,
            requests: Mutex::new(Vec::new()),
            request_count: AtomicU64::new(0),
            pod_webhook: Mutex::new(None),
            tokens: Mutex::new(BTreeMap::new()),
            policies: Mutex::new(Vec::new()),
        });
        let standin = KubeStandin { shared, url: url.clone(), addr, server: Arc::new(Mutex::new(None)) };
        standin
            .create(NAMESPACES, json!({"metadata": {"name": "kube-system"}}))
            .expect("a fresh stand-in has no kube-system yet");
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
        self.kubeconfig_via(std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// Like [`KubeStandin::kubeconfig`], reaching the stand-in at `host` (e.g. the host's
    /// address as a node's network namespace sees it; the stand-in must listen there).
    pub fn kubeconfig_via(&self, host: std::net::IpAddr) -> String {
        let server = format!("http://{}", SocketAddr::new(host, self.addr.port()));
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {server}\n\
             users:\n- name: tester\n  user: {{}}\ncontexts:\n- name: standin\n  context:\n    cluster: standin\n    user: tester\n\
             current-context: standin\n"
        )
    }

    /// Like [`KubeStandin::kubeconfig_via`], authenticating with the bearer `token` (one given
    /// to [`KubeStandin::add_token`]).
    pub fn kubeconfig_with_token(&self, host: std::net::IpAddr, token: &str) -> String {
        self.kubeconfig_via(host).replace("  user: {}\n", &format!("  user:\n    token: {token}\n"))
    }

    /// Requests carrying `Authorization: Bearer <token>` are made by `user` from now on
    /// (a request with an unknown token gets 401; one without a token is the admin).
    pub fn add_token(&self, token: impl Into<String>, user: UserInfo) {
        self.shared.tokens.lock().expect("stand-in lock").insert(token.into(), user);
    }

    /// Every create, update and patch through the REST API goes through `policy` from now on,
    /// as a ValidatingAdmissionPolicy with a Deny binding would ([`policy`]). Writes of the
    /// test helpers ([`KubeStandin::create`], [`KubeStandin::put`], ...) bypass it.
    pub fn add_admission_policy(&self, policy: AdmissionPolicy) {
        self.shared.policies.lock().expect("stand-in lock").push(Arc::new(policy));
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
