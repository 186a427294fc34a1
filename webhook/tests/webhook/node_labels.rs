//! `--skip-node-labels` on real AdmissionReview bodies (the corpus's plain pod, given a
//! node selection), through the router: a pod bound to a Karpenter NodePool's nodes is
//! allowed without a patch and counted as skipped; the same pod free to run elsewhere is
//! patched as always; with no key configured nothing changes.

use std::sync::Arc;

use eni_ipam_webhook::WebhookState;
use eni_ipam_webhook::metrics::{RequestOutcome, WebhookMetrics};
use serde_json::{Value, json};

use crate::support::{FIXTURES, apply_patch, fixture_policy, post_to_router};

fn plain_pod_review() -> Value {
    let path = std::path::Path::new(FIXTURES).join("plain-single-container.request.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn with_spec(extra: Value) -> Vec<u8> {
    let mut review = plain_pod_review();
    for (key, value) in extra.as_object().unwrap() {
        review["request"]["object"]["spec"][key] = value.clone();
    }
    serde_json::to_vec(&review).unwrap()
}

async fn answer(state: &WebhookState, body: Vec<u8>) -> Value {
    let (status, _, body) = post_to_router(state.clone(), body).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn pods_bound_to_skipped_nodes_get_no_request() {
    let policy = fixture_policy().with_skipped_node_labels("karpenter.sh/nodepool".parse().unwrap());
    let metrics = Arc::new(WebhookMetrics::new());
    let state = WebhookState { policy: Arc::new(policy), metrics: metrics.clone() };
    let karpenter = json!({"nodeSelector": {"karpenter.sh/nodepool": "general"}});
    let pinned = answer(&state, with_spec(karpenter.clone())).await;
    assert_eq!(pinned["response"]["allowed"], true);
    assert!(
        pinned["response"]["patch"].is_null(),
        "a pod for a Karpenter NodePool gets no request: {pinned}"
    );
    let required = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "karpenter.sh/nodepool", "operator": "Exists"}]}]}}}});
    let by_affinity = answer(&state, with_spec(required)).await;
    assert!(by_affinity["response"]["patch"].is_null(), "{by_affinity}");
    assert_eq!(metrics.requests_with(RequestOutcome::Skipped), 2);

    // Free to run on other nodes: the request as always.
    let preferred = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [
            {"key": "karpenter.sh/nodepool", "operator": "In", "values": ["general"]}]}}]}}});
    let body = with_spec(preferred);
    let free = answer(&state, body.clone()).await;
    let mut pod = serde_json::from_slice::<Value>(&body).unwrap()["request"]["object"].clone();
    apply_patch("preferred", &mut pod, &free["response"]);
    assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"]["eni-ipam.io/ip"], "1");
    assert_eq!(metrics.requests_with(RequestOutcome::Patched), 1);

    // Without the flag the NodePool's pod is patched too.
    let plain = WebhookState { policy: Arc::new(fixture_policy()), metrics: Arc::new(WebhookMetrics::new()) };
    let patched = answer(&plain, with_spec(karpenter)).await;
    assert_eq!(patched["response"]["patchType"], "JSONPatch", "{patched}");
}
