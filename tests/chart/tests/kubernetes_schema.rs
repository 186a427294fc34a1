//! What `helm template` renders is valid Kubernetes 1.32 (strict: no unknown
//! fields), for the default values and the example values. CRDs are left out
//! (`--skip-crds`); custom resources (cert-manager, Prometheus Operator) get
//! only a warning from kubernetes-validate, which has no schema for them.

use eni_ipam_chart_tests::{Helm, parse_documents, validate_kubernetes};

const KUBERNETES: &str = "1.32.0";

fn assert_valid(values: &[&str], sets: &[&str]) {
    let manifests = Helm::default().render(values, sets);
    assert!(parse_documents(&manifests).len() > 10, "too few objects rendered:\n{manifests}");
    if let Err(report) = validate_kubernetes(&manifests, KUBERNETES) {
        panic!(
            "kubernetes-validate --strict ({KUBERNETES}) refused the chart with {values:?} {sets:?}:\n{report}"
        );
    }
}

#[test]
fn default_values_render_valid_kubernetes_1_32() {
    assert_valid(&[], &[]);
}

#[test]
fn aws_example_renders_valid_kubernetes_1_32() {
    assert_valid(&["examples/aws-values.yaml"], &[]);
}

#[test]
fn alibaba_example_renders_valid_kubernetes_1_32() {
    assert_valid(&["examples/alibaba-values.yaml"], &[]);
}

#[test]
fn every_optional_part_renders_valid_kubernetes_1_32() {
    assert_valid(
        &["examples/aws-values.yaml"],
        &[
            "agent.socketGroup=cni",
            "apiEndpoint=https://ec2.eu-west-1.amazonaws.com",
            "credentials.existingSecret=eni-ipam-aws",
            "webhook.certManager.enabled=false",
            "agent.datapath.enabled=false",
            "cni.portmap=false",
        ],
    );
}

/// The validator itself must refuse what is wrong, or the tests above prove nothing.
#[test]
fn the_validator_refuses_an_unknown_field() {
    let broken = "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  portz: []\n";
    let report = validate_kubernetes(broken, KUBERNETES).expect_err("an unknown field must be refused");
    assert!(report.contains("Additional properties are not allowed"), "{report}");
}
