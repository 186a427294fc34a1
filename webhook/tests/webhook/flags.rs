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

/// A command line that starts, then fails on a certificate it cannot read.
const UNREADABLE_CERTIFICATE: &[&str] = &[
    "--tls-cert-file",
    "/nonexistent/tls.crt",
    "--tls-key-file",
    "/nonexistent/tls.key",
    "--listen",
    "127.0.0.1:0",
    "--metrics-addr",
    "127.0.0.1:0",
];

#[test]
fn unreadable_certificate_exits_1_naming_file_and_flag() {
    let output = run(UNREADABLE_CERTIFICATE);
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    assert!(line.contains("/nonexistent/tls.crt") && line.contains("--tls-cert-file"), "{line}");
}

/// `--log-format json`: the process's last words are one JSON error event (a
/// log pipeline keeps them), and with `text` one plain line.
#[test]
fn with_json_logs_the_fatal_error_is_one_json_event() {
    let args = |format| [UNREADABLE_CERTIFICATE, &["--log-format", format]].concat();
    let output = run(&args("json"));
    assert_eq!(output.status.code(), Some(1));
    let line = stderr_line(&output);
    let event: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
    assert_eq!(event["level"], "ERROR", "{line}");
    assert!(event["timestamp"].is_string(), "{line}");
    assert!(event["message"].as_str().is_some_and(|m| m.contains("/nonexistent/tls.crt")), "{line}");
    let text = stderr_line(&run(&args("text")));
    assert!(text.starts_with("eni-ipam-webhook: ") && text.contains("/nonexistent/tls.crt"), "{text}");
    let refused = run(&args("yaml"));
    assert_eq!(refused.status.code(), Some(2));
    assert!(stderr_line(&refused).contains("--log-format"), "{}", stderr_line(&refused));
}
