//! `helm lint --strict` passes for the default values and the example values.

use eni_ipam_chart_tests::Helm;

fn assert_lints(values: &[&str]) {
    let outcome = Helm::default().lint(values, &[]);
    assert!(
        outcome.success,
        "helm lint --strict failed for {values:?}:\n{}{}",
        outcome.stdout, outcome.stderr
    );
}

#[test]
fn default_values_lint_strictly() {
    assert_lints(&[]);
}

#[test]
fn aws_example_values_lint_strictly() {
    assert_lints(&["examples/aws-values.yaml"]);
}

#[test]
fn alibaba_example_values_lint_strictly() {
    assert_lints(&["examples/alibaba-values.yaml"]);
}
