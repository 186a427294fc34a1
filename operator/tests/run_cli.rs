//! `run` fails with one clear line and a non-zero exit when it cannot reach Kubernetes.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eni-ipam-operator"))
        .args(args)
        .env_remove("KUBECONFIG")
        .env_remove("RUST_LOG")
        .output()
        .expect("the binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_bad_kubeconfig_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, "garbage").unwrap();
    let (code, stderr) = run(&["run", "--cloud", "fake", "--kubeconfig", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: cannot read kubeconfig"), "{stderr}");
}

#[test]
fn an_unreachable_apiserver_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    // Port 1 on loopback: nothing listens there.
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"http://127.0.0.1:1\"}}]\n\
         contexts: [{name: c, context: {cluster: c, user: u}}]\nusers: [{name: u, user: {}}]\ncurrent-context: c\n",
    )
    .unwrap();
    let (code, stderr) = run(&["run", "--cloud", "fake", "--kubeconfig", path.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: apiserver http://127.0.0.1:1/ is unreachable"), "{stderr}");
}

#[test]
fn run_without_a_vpc_on_aws_is_a_usage_error() {
    let (code, stderr) = run(&["run", "--cloud", "aws"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--vpc"), "{stderr}");
}

#[test]
fn run_help_explains_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_eni-ipam-operator")).args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--cloud",
        "--vpc",
        "--cluster-id",
        "--aws-endpoint",
        "--alibaba-endpoint",
        "--kubeconfig",
        "--parallel-alloc-workers",
        "--resync-interval",
        "--excess-ip-release-delay",
        "--limiter-margin",
        "--seed",
        "--eni-gc-interval",
        "--eni-gc-grace",
        "--metrics-addr",
        "--node-events",
        "--leader-elect",
        "--leader-elect-lease-duration",
        "--leader-elect-renew-deadline",
        "--leader-elect-retry-period",
        "--leader-elect-namespace",
        "--leader-elect-lease-name",
        "--leader-elect-identity",
    ] {
        assert!(help.contains(&format!("      {flag} ")), "{flag} missing from run --help");
    }
    // Every option is followed by a line of explanation, not just its name.
    let lines: Vec<&str> = help.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("--") {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            assert!(!next.is_empty() && !next.starts_with("--"), "{line} has no explanation");
        }
    }
}

#[test]
fn leader_durations_that_cannot_work_are_refused_before_anything_starts() {
    let (code, stderr) = run(&[
        "run",
        "--cloud",
        "fake",
        "--leader-elect-lease-duration",
        "10s",
        "--leader-elect-renew-deadline",
        "15s",
    ]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--leader-elect-renew-deadline (15s) must be shorter"), "{stderr}");
}

#[test]
fn a_zero_period_is_a_usage_error_naming_the_flag() {
    for flag in ["--eni-gc-interval", "--resync-interval", "--leader-elect-retry-period"] {
        let (code, stderr) = run(&["run", "--cloud", "fake", flag, "0s"]);
        assert_eq!(code, 2, "{flag}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains("'0s' is zero"), "{flag}: {stderr}");
    }
    // A zero delay is a choice, not a spin: it parses, and the run goes on to
    // fail on the missing kubeconfig instead.
    let (code, stderr) =
        run(&["run", "--cloud", "fake", "--excess-ip-release-delay", "0", "--kubeconfig", "/nonexistent"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("kubeconfig"), "{stderr}");
}
