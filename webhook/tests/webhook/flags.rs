//! The binary's flag handling: a bad flag exits 2 with one line on stderr
//! naming the flag; a certificate it cannot read exits 1 naming the file and
//! the flag to fix.

use std::process::{Command, Output};

const BINARY: &str = env!("CARGO_BIN_EXE_eni-ipam-webhook");

fn run(args: &[&str]) -> Output {
    Command::new(BINARY)
        .args(args)
        // The flags' environment variables must not leak in from the caller.
        .env_remove("ENI_IPAM_WEBHOOK_TLS_CERT_FILE")
        .env_remove("ENI_IPAM_WEBHOOK_TLS_KEY_FILE")
        .env_remove("ENI_IPAM_WEBHOOK_LISTEN")
        .env_remove("ENI_IPAM_WEBHOOK_RESOURCE_NAME")
        .env_remove("ENI_IPAM_WEBHOOK_EXCLUDE_NAMESPACES")
        .env_remove("ENI_IPAM_WEBHOOK_METRICS_ADDR")
        .output()
        .expect("running the webhook binary")
}

fn stderr_line(output: &Output) -> String {
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "expected one line on stderr, got: {stderr:?}");
    stderr.trim_end().to_owned()
}

#[test]
fn flag_errors_exit_2_with_one_line_naming_the_flag() {
    let certs = ["--tls-cert-file", "/nonexistent/tls.crt", "--tls-key-file", "/nonexistent/tls.key"];
    let with_certs = |extra: &[&'static str]| [&certs[..], extra].concat();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![], "--tls-cert-file"),
        (vec!["--tls-cert-file", "c.pem"], "--tls-key-file"),
        (with_certs(&["--listen", "8443"]), "--listen"),
        (with_certs(&["--metrics-addr", "localhost:x"]), "--metrics-addr"),
        (with_certs(&["--resource-name", "ip"]), "--resource-name"),
        (with_certs(&["--resource-name", "kubernetes.io/ip"]), "reserved by Kubernetes"),
        (with_certs(&["--exclude-namespaces", "kube-system,Bad_Name"]), "Bad_Name"),
        (with_certs(&["--no-such-flag"]), "--no-such-flag"),
    ];
    for (args, expected) in cases {
        let output = run(&args);
        assert_eq!(output.status.code(), Some(2), "args {args:?}");
        let line = stderr_line(&output);
        assert!(line.contains(expected) && line.ends_with("(see --help)"), "args {args:?}: {line}");
        assert!(output.stdout.is_empty(), "args {args:?}");
    }
}

#[test]
fn help_exits_0() {
    let output = run(&["--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--listen",
        "--tls-cert-file",
        "--tls-key-file",
        "--resource-name",
        "--exclude-namespaces",
        "--metrics-addr",
    ] {
        assert!(help.contains(flag), "--help does not mention {flag}");
    }
}

#[test]
fn unreadable_certificate_exits_1_naming_file_and_flag() {
    let output = run(&[
        "--tls-cert-file",
        "/nonexistent/tls.crt",
        "--tls-key-file",
        "/nonexistent/tls.key",
        "--listen",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(line.contains("/nonexistent/tls.crt") && line.contains("--tls-cert-file"), "{line}");
}
