//! Reads over time: list (selectors, `limit`/`continue`) and watch (from a resourceVersion,
//! one event per line, `410 Gone` once history is compacted).

use super::*;

use futures::StreamExt;

pub(crate) fn list(st: &KubeStandin, t: &Target, q: &Query) -> Result<Value, ApiError> {
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

pub(crate) fn items_last_pos(items: &[Value]) -> String {
    let last = items.last().expect("non-empty page");
    format!(
        "{}/{}",
        last["metadata"]["namespace"].as_str().unwrap_or_default(),
        last["metadata"]["name"].as_str().unwrap_or_default()
    )
}

pub(crate) fn event_line(type_: &str, object: &Value) -> Result<Bytes, Infallible> {
    let mut s = json!({"type": type_, "object": object}).to_string();
    s.push('\n');
    Ok(Bytes::from(s))
}

pub(crate) fn watch(st: &KubeStandin, t: &Target, q: &Query) -> Response {
    let timeout = q.get("timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).unwrap_or(1800);
    let send_initial = q.flag("sendInitialEvents");
    let bookmarks = q.flag("allowWatchBookmarks");
    let requested: Option<u64> = q.get("resourceVersion").and_then(|s| s.parse().ok());
    let label_q = q.clone();
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
                return stream_response(futures::stream::iter(first).boxed());
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
    stream_response(futures::stream::iter(first).chain(rest).boxed())
}

pub(crate) fn stream_response(s: futures::stream::BoxStream<'static, Result<Bytes, Infallible>>) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(s))
        .expect("watch response")
}
