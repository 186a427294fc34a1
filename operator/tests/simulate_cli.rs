//! The `simulate` command as a user runs it: exit codes, one-line errors,
//! the JSON report and the table agreeing, and the Foundation acceptance
//! figures for both cloud profiles.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eni-ipam-operator"))
        .args(args)
        // Credentials from the environment, never the instance metadata service:
        // tests send nothing beyond loopback.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("the binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `simulate` with `--json` and returns (report, table).
fn simulate(args: &[&str]) -> (Value, String) {
    let dir = tempdir();
    let json = dir.join("report.json");
    let mut all = vec!["simulate", "--json", json.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = operator(&all);
    assert!(out.status.success(), "simulate {args:?} failed: {}", stderr(&out));
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    (report, String::from_utf8(out.stdout).unwrap())
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "eni-ipam-sim-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_usage_error(args: &[&str], must_say: &str) {
    let out = operator(args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "one line, got: {err}");
    assert!(err.contains(must_say), "{args:?}: expected '{must_say}' in: {err}");
}

#[test]
fn impossible_settings_are_one_line_errors_with_exit_code_2() {
    assert_usage_error(&["simulate", "--nodes", "0"], "--nodes must be at least 1");
    assert_usage_error(
        &["simulate", "--min-allocate", "10", "--max-allocate", "5"],
        "min-allocate (10) is greater than max-allocate (5)",
    );
    assert_usage_error(&["simulate", "--pre-allocate", "500"], "m5.xlarge");
    assert_usage_error(&["simulate", "--cloud", "alibaba", "--instance-type", "m5.large"], "ecs.g7.xlarge");
    assert_usage_error(&["simulate", "--first-interface-index", "4"], "--first-interface-index 4");
    assert_usage_error(&["simulate", "--fault-rate", "1.5"], "--fault-rate");
    assert_usage_error(&["simulate", "--endpoint", "http://127.0.0.1:1"], "--vpc");
}

#[test]
fn bad_flags_are_one_line_errors_with_exit_code_2() {
    assert_usage_error(&["simulate", "--bogus"], "--bogus");
    assert_usage_error(&["simulate", "--cloud", "gcp"], "aws or alibaba");
    assert_usage_error(&["simulate", "--nodes", "many"], "--nodes");
    assert_usage_error(&["frobnicate"], "frobnicate");
}

#[test]
fn an_unreachable_endpoint_is_one_clear_line_not_a_retry_storm() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{closed}");
    let started = std::time::Instant::now();
    let out = operator(&["simulate", "--endpoint", &url, "--vpc", "vpc-1", "--no-progress"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&url) && err.contains("cannot reach EC2"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "one probe, no retries");
}

#[test]
fn help_tells_an_admin_what_each_knob_does() {
    let out = operator(&["simulate", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in
        ["--pre-allocate", "--min-allocate", "--max-allocate", "--max-above-watermark", "--cloud", "--json"]
    {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    assert!(help.contains("quota"), "--help explains what the report compares against");
}

fn check_acceptance(report: &Value, table: &str) {
    let nodes = report["nodes"].as_u64().unwrap();
    assert_eq!(report["ready_nodes"].as_u64(), Some(nodes), "every node ready");
    let t = report["time_to_all_ready_s"].as_f64().unwrap();
    let bound = report["quota_bound_s"].as_f64().unwrap();
    assert!(bound > 0.0);
    assert!(t / bound <= 1.25, "time {t} vs quota bound {bound}");
    let calls = report["api_calls"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>();
    assert_eq!(Some(calls), report["api_calls_total"].as_u64());
    assert!(report["throttled_calls"].as_u64().unwrap() * 100 <= calls, "throttled <= 1% of calls");
    assert_eq!(report["leaked_enis"].as_u64(), Some(0));
    assert_eq!(report["duplicate_ips"].as_u64(), Some(0));
    assert_eq!(report["pool_mismatches"].as_u64(), Some(0));
    for key in ["node_ready_p50_s", "node_ready_p99_s"] {
        assert!(report[key].as_f64().unwrap() <= t, "{key}");
    }
    // The table a person reads says the same as the JSON.
    let row = |label: &str| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no '{label}' in {table}"))
    };
    assert!(row("ready nodes").contains(&format!("{nodes} / {nodes}")));
    assert!(row("time to all ready").contains(&format!("{t:.1} s")));
    assert!(row("quota bound").contains(&format!("{bound:.1} s")));
    assert!(row("cloud calls").contains(&calls.to_string()));
    assert!(row("leaked ENIs").ends_with(" 0"));
    assert!(row("duplicate IPs").ends_with(" 0"));
    for (api, n) in report["api_calls"].as_object().unwrap() {
        assert!(row(api).ends_with(&n.to_string()), "{api}");
    }
}

#[test]
fn aws_1000_nodes_reach_pre_allocation_near_the_quota_bound() {
    let (report, table) = simulate(&["--cloud", "aws", "--nodes", "1000"]);
    check_acceptance(&report, &table);
    // On the primary ENI a node costs one assign: the mutating bucket decides.
    assert_eq!(report["mutating_calls_per_node"].as_f64(), Some(1.0));
}

#[test]
fn alibaba_1000_nodes_reach_pre_allocation_near_the_quota_bound() {
    let (report, table) = simulate(&["--cloud", "alibaba", "--nodes", "1000"]);
    check_acceptance(&report, &table);
    assert_eq!(report["api_calls"]["CreateNetworkInterface"].as_u64(), Some(1000));
    assert_eq!(report["api_calls"]["AttachNetworkInterface"].as_u64(), Some(1000));
}

#[test]
fn injected_faults_lose_nothing_and_leak_nothing() {
    for cloud in ["aws", "alibaba"] {
        let (report, _) = simulate(&["--cloud", cloud, "--nodes", "300", "--fault-rate", "0.05"]);
        assert!(report["faulted_calls"].as_u64().unwrap() > 0, "{cloud}: faults were injected");
        assert_eq!(report["ready_nodes"].as_u64(), Some(300), "{cloud}");
        assert_eq!(report["leaked_enis"].as_u64(), Some(0), "{cloud}");
        assert_eq!(report["duplicate_ips"].as_u64(), Some(0), "{cloud}");
        assert_eq!(report["pool_mismatches"].as_u64(), Some(0), "{cloud}");
    }
}

#[test]
fn a_pool_at_full_instance_capacity_spans_every_eni() {
    // t3.medium: 3 ENIs x 6 IPs = 15 pod IPs with the primary ENI in use.
    let (report, _) = simulate(&["--nodes", "50", "--instance-type", "t3.medium", "--pre-allocate", "15"]);
    assert_eq!(report["ready_nodes"].as_u64(), Some(50));
    assert_eq!(report["shortfall_nodes"].as_u64(), Some(0));
    // One assign on the primary ENI, then create + attach for each of the two others.
    assert_eq!(report["mutating_calls_per_node"].as_f64(), Some(5.0));
    assert_eq!(report["leaked_enis"].as_u64(), Some(0));
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let strip = |mut v: Value| {
        // Real time and memory are not the simulation's to decide.
        v.as_object_mut().unwrap().remove("wall_clock_s");
        v.as_object_mut().unwrap().remove("peak_rss_mib");
        v
    };
    let (a, _) = simulate(&["--cloud", "alibaba", "--nodes", "200", "--seed", "7", "--fault-rate", "0.02"]);
    let (b, _) = simulate(&["--cloud", "alibaba", "--nodes", "200", "--seed", "7", "--fault-rate", "0.02"]);
    assert_eq!(strip(a), strip(b));
}
