//! The stand-in apiserver driven by a real kube 5 client: what the operator and the agent rely on.

use std::time::Duration;

use eni_ipam_api::ENINode;
use eni_ipam_kube_standin::{ENINODES, KubeStandin, NODES};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config};
use serde_json::json;

async fn client(url: &str) -> Client {
    let config = Config::new(url.parse().expect("stand-in url"));
    Client::try_from(config).expect("kube client for the stand-in")
}

fn eninode(name: &str) -> serde_json::Value {
    json!({"apiVersion":"eni-ipam.io/v1alpha1","kind":"ENINode","metadata":{"name":name},
        "spec":{"instanceId":format!("i-{name}"),"instanceType":"m5.large","zone":"us-east-1a","vpcId":"vpc-1"}})
}

#[tokio::test]
async fn list_pages_through_600_nodes_with_continue_tokens() {
    let (url, standin) = KubeStandin::start().await;
    for i in 0..600 {
        standin.create_node(&format!("node-{i:04}"), &format!("aws:///us-east-1a/i-{i}"));
    }
    let nodes: Api<Node> = Api::all(client(&url).await);
    let page = nodes.list(&ListParams::default().limit(500)).await.unwrap();
    assert_eq!(page.items.len(), 500);
    let token = page.metadata.continue_.clone().expect("a continue token after 500 of 600");
    let rest = nodes.list(&ListParams::default().limit(500).continue_token(&token)).await.unwrap();
    assert_eq!(rest.items.len(), 100);
    assert!(rest.metadata.continue_.is_none());
    // The watcher (page size 500) sees all 600 in its initial list.
    let mut stream = watcher::watcher(nodes, watcher::Config::default()).boxed();
    let mut seen = 0;
    while let Some(ev) = stream.try_next().await.unwrap() {
        match ev {
            Event::InitApply(_) => seen += 1,
            Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(seen, 600);
}

#[tokio::test]
async fn watch_streams_create_update_delete_and_relists_after_410() {
    let (url, standin) = KubeStandin::start().await;
    let api: Api<ENINode> = Api::all(client(&url).await);
    standin.create(ENINODES, eninode("a")).unwrap();
    let mut stream = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    // Watch errors (the 410) surface as stream items; the watcher then re-lists by itself.
    let mut next = async || loop {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await.unwrap().unwrap() {
            Ok(ev) => break ev,
            Err(watcher::Error::WatchError(s)) => assert_eq!(s.code, 410),
            Err(e) => panic!("unexpected watcher error: {e}"),
        }
    };
    assert!(matches!(next().await, Event::Init));
    assert!(matches!(next().await, Event::InitApply(n) if n.metadata.name.as_deref() == Some("a")));
    assert!(matches!(next().await, Event::InitDone));
    standin.create(ENINODES, eninode("b")).unwrap();
    assert!(matches!(next().await, Event::Apply(n) if n.metadata.name.as_deref() == Some("b")));
    standin.delete(ENINODES, "", "a").unwrap();
    assert!(matches!(next().await, Event::Delete(n) if n.metadata.name.as_deref() == Some("a")));
    // The watch ends with 410 Expired: the watcher re-lists and sees the current set again.
    standin.expire_watches();
    assert!(matches!(next().await, Event::Init));
    assert!(matches!(next().await, Event::InitApply(n) if n.metadata.name.as_deref() == Some("b")));
    assert!(matches!(next().await, Event::InitDone));
    standin.create(ENINODES, eninode("c")).unwrap();
    assert!(matches!(next().await, Event::Apply(n) if n.metadata.name.as_deref() == Some("c")));
    let lists =
        standin.requests().iter().filter(|r| r.method == "GET" && !r.query.contains("watch=true")).count();
    assert_eq!(lists, 2, "one list at start, one after the 410");
}

#[tokio::test]
async fn a_watch_from_a_compacted_resource_version_gets_410_expired() {
    let (url, standin) = KubeStandin::start_with_history(2).await;
    for n in ["a", "b", "c", "d"] {
        standin.create(ENINODES, eninode(n)).unwrap();
    }
    let body = reqwest_like_get(&format!(
        "{url}/apis/eni-ipam.io/v1alpha1/eninodes?&watch=true&resourceVersion=2&timeoutSeconds=1"
    ))
    .await;
    let first: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ERROR");
    assert_eq!(first["object"]["code"], 410);
    // From a retained rv the missed events are replayed in order.
    let rv = standin.resource_version() - 1;
    let body = reqwest_like_get(&format!(
        "{url}/apis/eni-ipam.io/v1alpha1/eninodes?&watch=true&resourceVersion={rv}&timeoutSeconds=1"
    ))
    .await;
    let names: Vec<String> = body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["type"] == "ADDED")
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["d"]);
}

/// A plain HTTP GET through kube's client, returning the body as text.
async fn reqwest_like_get(url: &str) -> String {
    let uri: http::Uri = url.parse().unwrap();
    let base = format!("{}://{}", uri.scheme_str().unwrap(), uri.authority().unwrap());
    let c = client(&base).await;
    let req = http::Request::get(uri.path_and_query().unwrap().as_str()).body(Vec::new()).unwrap();
    c.request_text(req).await.unwrap()
}

#[tokio::test]
async fn status_subresource_ssa_conflicts_and_no_op_writes() {
    let (url, standin) = KubeStandin::start().await;
    let api: Api<ENINode> = Api::all(client(&url).await);
    let created: ENINode = serde_json::from_value(eninode("n1")).unwrap();
    let created = api.create(&PostParams::default(), &created).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    // Agent writes status.used with a merge patch; the operator applies its condition on /status.
    api.patch_status(
        "n1",
        &PatchParams::default(),
        &Patch::Merge(json!({"status":{"used":{"10.0.0.5":"pod-a"}}})),
    )
    .await
    .unwrap();
    let apply = json!({"apiVersion":"eni-ipam.io/v1alpha1","kind":"ENINode","status":{"release":{"10.0.0.9":"marked"}}});
    let pp = PatchParams::apply("eni-ipam-operator").force();
    let after = api.patch_status("n1", &pp, &Patch::Apply(&apply)).await.unwrap();
    let status = after.status.clone().unwrap();
    assert_eq!(status.used.get("10.0.0.5").map(String::as_str), Some("pod-a"));
    assert_eq!(status.release.len(), 1);
    assert_eq!(after.metadata.generation, Some(1), "status writes do not bump generation");
    // The same apply again changes nothing: same resourceVersion.
    let again = api.patch_status("n1", &pp, &Patch::Apply(&apply)).await.unwrap();
    assert_eq!(again.metadata.resource_version, after.metadata.resource_version);
    // A main-resource write keeps status and bumps generation.
    let spec = api
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec":{"instanceType":"m5.xlarge"},"status":{"used":{}}})),
        )
        .await
        .unwrap();
    assert_eq!(spec.metadata.generation, Some(2));
    assert_eq!(spec.status.unwrap().used.len(), 1);
    // Another manager applying a different value of an owned field: 409 without force.
    let rival = json!({"apiVersion":"eni-ipam.io/v1alpha1","kind":"ENINode","status":{"release":{"10.0.0.9":"ready"}}});
    let err = api.patch_status("n1", &PatchParams::apply("rival"), &Patch::Apply(&rival)).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409), "{err}");
    // Omitting a previously applied field removes it.
    let empty = json!({"apiVersion":"eni-ipam.io/v1alpha1","kind":"ENINode","status":{"conditions":[]}});
    let cleared = api.patch_status("n1", &pp, &Patch::Apply(&empty)).await.unwrap();
    assert!(cleared.status.unwrap().release.is_empty());
    // Optimistic concurrency: a replace with a stale resourceVersion is refused.
    let mut stale = created.clone();
    stale.spec.zone = "us-east-1b".into();
    let err = api.replace("n1", &PostParams::default(), &stale).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"), "{err}");
    // And so is an apply that names a resourceVersion the object has moved past (the agent's
    // status report is computed from what it read), while the current one goes through.
    let mut stale_apply = apply.clone();
    stale_apply["metadata"] = json!({"resourceVersion": after.metadata.resource_version});
    let err = api.patch_status("n1", &pp, &Patch::Apply(&stale_apply)).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"), "{err}");
    let now = api.get("n1").await.unwrap();
    stale_apply["metadata"] = json!({"resourceVersion": now.metadata.resource_version});
    let fresh = api.patch_status("n1", &pp, &Patch::Apply(&stale_apply)).await.unwrap();
    assert_eq!(fresh.status.unwrap().release.len(), 1);
    // JSON patch with a failing test op: 422.
    let p: json_patch::Patch =
        serde_json::from_value(json!([{"op":"test","path":"/spec/zone","value":"nowhere"}])).unwrap();
    let err = api.patch("n1", &PatchParams::default(), &Patch::<()>::Json(p)).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 422), "{err}");
    assert_eq!(standin.get(ENINODES, "", "n1").unwrap()["spec"]["instanceType"], "m5.xlarge");
    // Get and delete of a missing object: 404; create of an existing one: 409 AlreadyExists.
    assert!(matches!(api.get("nope").await.unwrap_err(), kube::Error::Api(s) if s.code == 404));
    let dup: ENINode = serde_json::from_value(eninode("n1")).unwrap();
    assert!(
        matches!(api.create(&PostParams::default(), &dup).await.unwrap_err(), kube::Error::Api(s) if s.reason == "AlreadyExists")
    );
    let nodes: Api<Node> = Api::all(client(&url).await);
    standin.create_node("w1", "aws:///a/i-1");
    assert!(standin.delete_node("w1"));
    assert!(matches!(nodes.get("w1").await.unwrap_err(), kube::Error::Api(s) if s.code == 404));
    assert!(standin.get(NODES, "", "w1").is_none());
}

#[tokio::test]
async fn label_selectors_filter_lists_set_based_included() {
    let (url, standin) = KubeStandin::start().await;
    for (n, zone) in [("a", "z1"), ("b", "z2"), ("c", "z3")] {
        standin.put(NODES, json!({"metadata":{"name":n,"labels":{"topology.kubernetes.io/zone":zone}}}));
    }
    let nodes: Api<Node> = Api::all(client(&url).await);
    let got =
        nodes.list(&ListParams::default().labels("topology.kubernetes.io/zone in (z1,z3)")).await.unwrap();
    let names: Vec<_> = got.items.iter().map(|n| n.metadata.name.clone().unwrap()).collect();
    assert_eq!(names, vec!["a", "c"]);
    let got = nodes.list(&ListParams::default().fields("metadata.name=b")).await.unwrap();
    assert_eq!(got.items.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_closes_every_watch_and_watchers_resume_on_the_same_address() {
    let (url, standin) = KubeStandin::start().await;
    standin.create_node("before", "aws:///us-east-1a/i-1");
    let nodes: Api<Node> = Api::all(client(&url).await);
    let mut stream = watcher::watcher(nodes.clone(), watcher::Config::default()).boxed();
    let mut names = Vec::new();
    let next_name = async |stream: &mut futures::stream::BoxStream<'_, _>| loop {
        let event: Result<Event<Node>, watcher::Error> =
            tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("an event")
                .expect("open");
        match event {
            Ok(Event::Apply(n) | Event::InitApply(n)) => return n.metadata.name.unwrap(),
            Ok(_) => {}
            // While the stand-in is down the watcher reports failed re-connects; it keeps trying.
            Err(_) => {}
        }
    };
    names.push(next_name(&mut stream).await);
    let served = standin.request_count();
    standin.shutdown().await;
    // Down: a new request is refused.
    let refused = nodes.list(&ListParams::default()).await;
    assert!(refused.is_err(), "a stopped stand-in answers nothing");
    standin.restart().await;
    standin.create_node("after", "aws:///us-east-1a/i-2");
    loop {
        let name = next_name(&mut stream).await;
        if name == "after" {
            break;
        }
        names.push(name);
    }
    let rewatched =
        standin.requests()[served as usize..].iter().filter(|r| r.query.contains("watch=true")).count();
    assert!(rewatched >= 1, "the old watch was closed, so the watcher opened a new one");
    assert_eq!(nodes.list(&ListParams::default()).await.unwrap().items.len(), 2, "objects survive a restart");
}
