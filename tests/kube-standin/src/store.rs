//! Writes to the stored objects: create, replace/patch by mode (main, status), delete; each
//! bumps the resourceVersion only when something changed and records a watch event.

use super::*;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum WriteMode {
    /// PUT/PATCH on the main resource: status is kept from the stored object.
    Main,
    /// PUT/PATCH on /status: only status changes.
    Status,
    /// Test helper: write everything.
    Replace,
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

pub(crate) fn record(inner: &mut Inner, tx: &broadcast::Sender<WatchEvent>, ev: WatchEvent) {
    inner.history.push_back(ev.clone());
    while inner.history.len() > inner.history_limit {
        if let Some(old) = inner.history.pop_front() {
            inner.compacted = old.rv;
        }
    }
    let _ = tx.send(ev);
}

pub(crate) fn create_locked(
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
    m.insert("uid".into(), format!("{:08x}-0000-4000-8000-{:012x}", inner.uid_prefix, inner.uid).into());
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
pub(crate) fn merge_by_mode(kind: Kind, current: &Value, proposed: Value, mode: WriteMode) -> Value {
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

pub(crate) fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
        o.remove("apiVersion");
        o.remove("kind");
    }
    v
}

pub(crate) fn strip_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        m.remove("managedFields");
    }
    v
}

/// Writes `proposed` over the stored object at `key`: rv check (when `proposed` carries one),
/// subresource rules, generation, no-op suppression, ownership of changed fields to `manager`.
pub(crate) fn write_locked(
    inner: &mut Inner,
    tx: &broadcast::Sender<WatchEvent>,
    key: &Key,
    mode: WriteMode,
    proposed: Value,
    manager: &str,
) -> Result<Value, ApiError> {
    write_owned(inner, tx, key, mode, proposed, manager, None)
}

/// The optimistic lock: a write (or an apply) that names a resourceVersion other than the
/// stored one is refused with 409, as kube-apiserver does.
pub(crate) fn check_resource_version(
    kind: Kind,
    name: &str,
    proposed: &Value,
    current: &Value,
) -> Result<(), ApiError> {
    match proposed["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && Some(rv) != current["metadata"]["resourceVersion"].as_str() => {
            Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {}.{} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    kind.plural, kind.group
                ),
            ))
        }
        _ => Ok(()),
    }
}

pub(crate) fn write_owned(
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
    check_resource_version(kind, &key.2, &proposed, &current)?;
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

pub(crate) fn delete_locked(
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
