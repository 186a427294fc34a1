//! Mutating admission of Pod creates: the stand-in calls a registered webhook as
//! kube-apiserver does. Here the webhook cannot be reached, so what decides is the
//! failurePolicy (the end-to-end bed runs the real webhook behind it).

use eni_ipam_kube_standin::{FailurePolicy, KubeStandin, PODS, Pki, PodWebhook};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "nginx"}]}}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_webhook_refuses_under_fail_and_admits_unchanged_under_ignore() {
    let (url, standin) = KubeStandin::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let webhook = PodWebhook::new(format!("https://{closed}/mutate"), Pki::new().ca_pem);
    let pods: Api<Pod> =
        Api::namespaced(kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap(), "default");

    standin.set_pod_webhook(webhook.clone()).unwrap();
    let refused = pods.create(&PostParams::default(), &pod("refused")).await.unwrap_err();
    let kube::Error::Api(status) = refused else { panic!("an API error, got {refused:?}") };
    assert_eq!(status.code, 500, "{status:?}");
    assert!(status.message.contains("failed calling webhook \"pods.eni-ipam.io\""), "{}", status.message);
    assert!(standin.get(PODS, "default", "refused").is_none(), "nothing stored");

    standin.set_pod_webhook(webhook.failure_policy(FailurePolicy::Ignore)).unwrap();
    pods.create(&PostParams::default(), &pod("admitted")).await.expect("Ignore admits");
    let stored = standin.get(PODS, "default", "admitted").expect("stored");
    assert!(stored["spec"]["containers"][0]["resources"].is_null(), "unchanged: {stored}");

    assert!(
        standin.set_pod_webhook(PodWebhook::new("https://127.0.0.1:1/mutate", "not a PEM")).is_err(),
        "a CA that is not PEM is refused at registration"
    );
}
