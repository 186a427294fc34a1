//! The REST surface: paths to kinds and objects, discovery documents, and the dispatch of
//! each request to get, list, watch, create, replace, patch or delete.

use super::*;

/// A parsed request path.
pub(crate) struct Target {
    pub(crate) kind: Kind,
    pub(crate) namespace: String,
    pub(crate) name: Option<String>,
    pub(crate) status: bool,
}

pub(crate) enum Route {
    Resource(Target),
    Discovery(Value),
    NotFound,
}

pub(crate) fn route(path: &str) -> Route {
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

pub(crate) fn api_group_list() -> Value {
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

pub(crate) fn resource_list(group: &str, version: &str) -> Option<Value> {
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

/// The request's query parameters.
#[derive(Clone)]
pub(crate) struct Query(BTreeMap<String, String>);

impl Query {
    pub(crate) fn parse(raw: &str) -> Self {
        Query(form_urlencoded::parse(raw.trim_start_matches(['?', '&']).as_bytes()).into_owned().collect())
    }
    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
    pub(crate) fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1"))
    }
}

pub(crate) async fn handle(State(st): State<KubeStandin>, req: Request) -> Response {
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
    let user = match authenticate(&st, &headers) {
        Ok(user) => user,
        Err(e) => return e.into_response(),
    };
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(e) => return ApiError::new(400, "BadRequest", format!("reading body: {e}")).into_response(),
    };
    let q = Query::parse(&raw_query);
    match route(&path) {
        Route::Discovery(v) if method == Method::GET => json_response(StatusCode::OK, &v),
        Route::Resource(t) => match dispatch(&st, &method, t, &q, &headers, &body, &user).await {
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

/// Who makes the request: the user of its bearer token, or the admin when it has none.
fn authenticate(st: &KubeStandin, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(UserInfo::admin()) };
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default();
    st.shared
        .tokens
        .lock()
        .expect("stand-in lock")
        .get(token)
        .cloned()
        .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized: the bearer token is not known"))
}

/// Runs the registered admission policies on a write of `t`: `object` as it would be stored,
/// `old` the stored one (None on CREATE).
fn admit(
    st: &KubeStandin,
    user: &UserInfo,
    t: &Target,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let policies = st.shared.policies.lock().expect("stand-in lock").clone();
    let name = object["metadata"]["name"].as_str().or(t.name.as_deref()).unwrap_or_default().to_string();
    let request = AdmissionRequest {
        operation: if old.is_some() { "UPDATE" } else { "CREATE" },
        group: t.kind.group,
        version: t.kind.version,
        resource: t.kind.plural,
        subresource: if t.status { "status" } else { "" },
        name: &name,
        namespace: &t.namespace,
        object,
        old_object: old,
        user,
    };
    for policy in &policies {
        policy.admit(&request).map_err(|d| ApiError {
            code: d.code,
            reason: reason_of(&d.reason),
            message: d.message,
        })?;
    }
    Ok(())
}

fn reason_of(reason: &str) -> &'static str {
    match reason {
        "Forbidden" => "Forbidden",
        "Unauthorized" => "Unauthorized",
        "RequestEntityTooLarge" => "RequestEntityTooLarge",
        _ => "Invalid",
    }
}

pub(crate) fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "BadRequest", format!("body is not JSON: {e}")))
}

pub(crate) async fn dispatch(
    st: &KubeStandin,
    method: &Method,
    t: Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    user: &UserInfo,
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
            admit(st, user, &t, &obj, None)?;
            let mut inner = shared.inner.lock().expect("stand-in lock");
            let created = create_locked(&mut inner, &shared.events, t.kind, &ns, obj, &manager)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (Method::PUT, Some(name)) => {
            let obj = parse_body(body)?;
            let mut inner = shared.inner.lock().expect("stand-in lock");
            let key = (t.kind, t.namespace.clone(), name.clone());
            let mode = if t.status { WriteMode::Status } else { WriteMode::Main };
            if let Some(cur) = inner.objects.get(&key).map(|s| s.object.clone()) {
                admit(st, user, &t, &merge_by_mode(t.kind, &cur, obj.clone(), mode), Some(&cur))?;
            }
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
                            admit(st, user, &t, &obj, None)?;
                            let created =
                                create_locked(&mut inner, &shared.events, t.kind, &ns, obj, &manager)?;
                            Ok(json_response(StatusCode::CREATED, &created))
                        }
                        Some(cur) => {
                            check_resource_version(t.kind, name, &applied, &cur)?;
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
                            admit(
                                st,
                                user,
                                &t,
                                &merge_by_mode(t.kind, &cur, next.clone(), mode),
                                Some(&cur),
                            )?;
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
                    admit(st, user, &t, &merge_by_mode(t.kind, &cur, next.clone(), mode), Some(&cur))?;
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
                    admit(st, user, &t, &merge_by_mode(t.kind, &cur, next.clone(), mode), Some(&cur))?;
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

pub(crate) fn matches(q: &Query, obj: &Value) -> Result<bool, ApiError> {
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

pub(crate) fn accept(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())
}
