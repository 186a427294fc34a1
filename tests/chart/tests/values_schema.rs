//! Values that cannot work are refused at install, each with a message that
//! says which value and why. Most come from values.schema.json; the checks
//! that compare two values (JSON Schema draft-07 cannot) come from
//! templates/_validate.tpl.

use eni_ipam_chart_tests::Helm;

/// Renders with `sets`, expects a refusal, prints and returns helm's message.
fn refusal(sets: &[&str]) -> String {
    let message = Helm::default().template(&[], sets).expect_err(&format!("helm must refuse {sets:?}"));
    println!("{sets:?} ->\n{message}");
    message
}

#[test]
fn a_string_where_a_number_is_expected_is_refused() {
    let message = refusal(&["pool.preAllocate=eight"]);
    assert!(
        message.contains("pool.preAllocate: Invalid type. Expected: integer, given: string"),
        "{message}"
    );
}

#[test]
fn an_unknown_cloud_is_refused() {
    let message = refusal(&["cloud=gcp"]);
    assert!(message.contains(r#"cloud: cloud must be one of the following: "aws", "alibaba""#), "{message}");
}

#[test]
fn min_allocate_above_max_allocate_is_refused() {
    let message = refusal(&["pool.minAllocate=20", "pool.maxAllocate=10"]);
    assert!(
        message.contains(
            "pool.minAllocate (20) is greater than pool.maxAllocate (10): lower minAllocate or raise maxAllocate (0 means no limit)"
        ),
        "{message}"
    );
}

#[test]
fn pre_allocate_above_max_allocate_is_refused() {
    let message = refusal(&["pool.preAllocate=16", "pool.maxAllocate=10"]);
    assert!(message.contains("pool.preAllocate (16) is greater than pool.maxAllocate (10)"), "{message}");
}

#[test]
fn max_allocate_zero_means_no_limit() {
    Helm::default().render(&[], &["pool.minAllocate=50", "pool.preAllocate=30", "pool.maxAllocate=0"]);
}

#[test]
fn negative_pool_knobs_are_refused() {
    let message = refusal(&["pool.maxAboveWatermark=-1"]);
    assert!(message.contains("pool.maxAboveWatermark: Must be greater than or equal to 0"), "{message}");
}

#[test]
fn a_misspelt_value_is_refused() {
    let message = refusal(&["pool.preAlocate=8"]);
    assert!(message.contains("Additional property preAlocate is not allowed"), "{message}");
}

#[test]
fn a_duration_the_binaries_cannot_read_is_refused() {
    let message = refusal(&["agent.nodeUpdateRate=1h"]);
    assert!(message.contains("agent.nodeUpdateRate: Does not match pattern"), "{message}");
}

#[test]
fn half_an_alibaba_identity_is_refused_and_none_at_all_renders() {
    let message = refusal(&["cloud=alibaba", "region=cn-hangzhou", "identity.alibaba.mode=rrsa"]);
    assert!(message.contains("identity.alibaba.mode is rrsa but neither"), "{message}");
    let message = refusal(&["cloud=alibaba", "identity.alibaba.rrsa.roleArn=acs:ram::1:role/eni-ipam"]);
    assert!(message.contains("roleArn and oidcProviderArn go together"), "{message}");
    let message = refusal(&["cloud=alibaba", "identity.alibaba.mode=access-key"]);
    assert!(message.contains("credentials.existingSecret is empty"), "{message}");
    let message = refusal(&["identity.alibaba.endpointKind=internal"]);
    assert!(
        message.contains("identity.alibaba.endpointKind: identity.alibaba.endpointKind must be one of"),
        "{message}"
    );
    // RRSA through the webhook, the RAM role, auto: no Secret needed.
    for sets in [
        &["cloud=alibaba", "identity.alibaba.mode=rrsa", "identity.alibaba.rrsa.roleName=eni-ipam"][..],
        &["cloud=alibaba", "identity.alibaba.mode=ram-role"],
        &["cloud=alibaba"],
    ] {
        Helm::default().template(&[], sets).unwrap_or_else(|e| panic!("{sets:?} must render: {e}"));
    }
}

#[test]
fn an_unknown_failure_policy_is_refused() {
    let message = refusal(&["webhook.failurePolicy=Retry"]);
    assert!(
        message.contains("webhook.failurePolicy: webhook.failurePolicy must be one of the following"),
        "{message}"
    );
}

#[test]
fn two_operators_without_leader_election_are_refused() {
    let message = refusal(&["operator.leaderElection.enabled=false"]);
    assert!(
        message.contains("operator.replicas is 2 but operator.leaderElection.enabled is false"),
        "{message}"
    );
    Helm::default().render(&[], &["operator.leaderElection.enabled=false", "operator.replicas=1"]);
}

#[test]
fn leader_election_timings_that_cannot_work_are_refused() {
    let message = refusal(&["operator.leaderElection.renewDeadline=20s"]);
    assert!(
        message
            .contains("operator.leaderElection.renewDeadline (20s) must be shorter than leaseDuration (15s)"),
        "{message}"
    );
    let message = refusal(&["operator.leaderElection.retryPeriod=1m"]);
    assert!(
        message.contains("operator.leaderElection.retryPeriod (1m) must be shorter than renewDeadline (10s)"),
        "{message}"
    );
    Helm::default().render(
        &[],
        &[
            "operator.leaderElection.leaseDuration=1m",
            "operator.leaderElection.renewDeadline=40s",
            "operator.leaderElection.retryPeriod=500ms",
        ],
    );
}

#[test]
fn the_old_cluster_name_is_refused_with_what_to_set_instead() {
    let message = refusal(&["clusterName=prod"]);
    assert!(message.contains("clusterName was replaced by clusterId: set clusterId=prod"), "{message}");
    let message = refusal(&["clusterId=prod cluster"]);
    assert!(message.contains("clusterId"), "{message}");
}

#[test]
fn the_cluster_id_is_passed_only_when_set() {
    let args = |sets: &[&str]| {
        Helm::default()
            .render(&[], sets)
            .lines()
            .filter(|l| l.contains("--cluster-id"))
            .map(|l| l.trim().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(args(&[]).is_empty(), "by default the operator uses the kube-system namespace UID");
    assert_eq!(args(&["clusterId=prod"]), vec!["- --cluster-id=prod".to_owned()]);
}
