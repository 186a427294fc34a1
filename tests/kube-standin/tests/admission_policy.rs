//! ValidatingAdmissionPolicies in the stand-in: requests are authenticated by bearer
//! token (a user with `extra`, as a bound service-account token gives), every REST write
//! (create, update, merge/JSON patch, server-side apply, on the object and on `/status`)
//! goes through the registered policies with the object as it would be stored, and a
//! refusal is the apiserver's Status. Here a small policy (the chart's is tested in
//! tests/chart/tests/agent_write_policy.rs and enforced in the e2e bed).

use eni_ipam_api::ENINode;
use eni_ipam_kube_standin::{AdmissionPolicy, ENINODES, KubeStandin, UserInfo};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// Agents of namespace `ns` may write only the ENINode named like their node, never `spec.pool`.
fn own_node_policy() -> AdmissionPolicy {
    let policy = json!({"metadata": {"name": "own-node"}, "spec": {
    "failurePolicy": "Fail",
    "matchConstraints": {"resourceRules": [{"apiGroups": ["eni-ipam.io"], "apiVersions": ["*"],
        "operations": ["CREATE", "UPDATE"], "resources": ["eninodes", "eninodes/status"]}]},
    "matchConditions": [{"name": "agent", "expression": "request.userInfo.username == 'system:serviceaccount:ns:agent'"}],
    "variables": [{"name": "node", "expression": "request.userInfo.?extra[?'authentication.kubernetes.io/node-name'].orValue([''])[0]"}],
    "validations": [
        {"expression": "object.metadata.name == variables.node", "reason": "Forbidden",
         "messageExpression": "'node ' + variables.node + ' may not write ' + object.metadata.name"},
        {"expression": "request.operation == 'CREATE' || object.spec.?pool.orValue({}) == oldObject.spec.?pool.orValue({})",
         "message": "spec.pool is not the agent's"}
    ]}});
    let binding = json!({"metadata": {"name": "own-node"}, "spec": {"policyName": "own-node", "validationActions": ["Deny"]}});
    AdmissionPolicy::compile(&policy, &binding).unwrap()
}

async fn client_with_token(standin: &KubeStandin, token: &str) -> kube::Client {
    let text = standin.kubeconfig_with_token(std::net::Ipv4Addr::LOCALHOST.into(), token);
    let kubeconfig = Kubeconfig::from_yaml(&text).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    kube::Client::try_from(config).unwrap()
}

fn eninode(name: &str) -> ENINode {
    serde_json::from_value(
        json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode", "metadata": {"name": name},
        "spec": {"instanceId": "i-1", "instanceType": "m5.large", "zone": "a", "vpcId": ""}}),
    )
    .unwrap()
}

fn status_of(error: kube::Error) -> kube::core::Status {
    match error {
        kube::Error::Api(status) => *status,
        other => panic!("an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_through_the_policy_as_the_token_user() {
    let (url, standin) = KubeStandin::start().await;
    standin.add_admission_policy(own_node_policy());
    standin.add_token("token-a", UserInfo::service_account_on_node("ns", "agent", "node-a"));
    let as_a: Api<ENINode> = Api::all(client_with_token(&standin, "token-a").await);
    let admin: Api<ENINode> =
        Api::all(kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap());

    as_a.create(&PostParams::default(), &eninode("node-a")).await.expect("its own ENINode");
    let refused = status_of(as_a.create(&PostParams::default(), &eninode("node-b")).await.unwrap_err());
    assert_eq!(refused.code, 403, "{refused:?}");
    assert_eq!(
        refused.message,
        "ValidatingAdmissionPolicy 'own-node' with binding 'own-node' denied request: node node-a may not write node-b"
    );
    assert!(standin.get(ENINODES, "", "node-b").is_none(), "nothing stored");
    admin.create(&PostParams::default(), &eninode("node-b")).await.expect("the admin is not matched");

    // Every kind of write of another node's ENINode is refused, and leaves it as it was.
    let before = standin.get(ENINODES, "", "node-b").unwrap();
    let merge = Patch::Merge(json!({"spec": {"instanceId": "i-evil"}}));
    let apply = Patch::Apply(
        json!({"apiVersion": "eni-ipam.io/v1alpha1", "kind": "ENINode", "status": {"used": {"10.0.0.9": "x"}}}),
    );
    let json_patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/spec/zone", "value": "z"}])).unwrap();
    let results = [
        as_a.patch("node-b", &PatchParams::default(), &merge).await,
        as_a.patch_status("node-b", &PatchParams::apply("agent").force(), &apply).await,
        as_a.patch("node-b", &PatchParams::default(), &Patch::<()>::Json(json_patch)).await,
        as_a.replace("node-b", &PostParams::default(), &eninode("node-b")).await,
    ];
    for result in results {
        assert_eq!(status_of(result.unwrap_err()).code, 403);
    }
    assert_eq!(standin.get(ENINODES, "", "node-b").unwrap(), before);

    // On its own: a status write passes; the pool (the operator's) does not, checked against the stored object.
    as_a.patch_status("node-a", &PatchParams::apply("agent").force(), &apply).await.expect("own status");
    admin
        .patch(
            "node-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"pool": {"10.0.0.9": {"eni": "e", "subnet": "s"}}}})),
        )
        .await
        .expect("the operator's write");
    let pool = status_of(
        as_a.patch("node-a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"pool": null}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(pool.code, 422, "no reason given: Invalid");
    assert!(pool.message.ends_with("denied request: spec.pool is not the agent's"), "{}", pool.message);

    // An unknown token is not a user.
    let stranger: Api<ENINode> = Api::all(client_with_token(&standin, "nobody").await);
    assert_eq!(status_of(stranger.get("node-a").await.unwrap_err()).code, 401);
}
