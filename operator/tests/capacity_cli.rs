//! `eni-ipam-operator capacity` as an admin runs it: offline from the built-in
//! profile, and with --endpoint against moto's EC2 (real DescribeInstanceTypes
//! data, paginated, through the test bed's proxy that injects errors) and the
//! project's Alibaba ECS emulator (signed requests, paginated answers).

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_aliyun_emulator::Emulator;
use eni_ipam_aliyun_emulator::server::router;
use eni_ipam_api::VpcId;
use eni_ipam_cloud::alibaba::{AlibabaConfig, AlibabaProvider, CredentialSource, Credentials};
use eni_ipam_cloud::{Api, CallGuard, CloudProfile, CloudProvider, RetryPolicy};
use eni_ipam_ec2_testbed::{Ec2Proxy, Faults, Moto};
use serde_json::Value;

const TAG: &str = "k8s.io/cluster-autoscaler/node-template/resources/eni-ipam.io/ip";

fn operator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eni-ipam-operator"))
        .arg("capacity")
        .args(args)
        // Credentials from the environment, never a metadata service: nothing leaves loopback.
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
        .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "testsecret")
        .env_remove("AWS_PROFILE")
        .env_remove("ALIBABA_CLOUD_ROLE_ARN")
        .output()
        .expect("the binary runs")
}

/// Runs `capacity --json` (in a thread: the servers of the async tests keep running).
async fn capacity_json(args: Vec<String>) -> Value {
    let out = tokio::task::spawn_blocking(move || {
        let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
        all.push("--json");
        operator(&all)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "capacity failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// (pod IPs, max pods, tag) per type of a JSON report.
fn by_type(report: &Value) -> std::collections::BTreeMap<String, (u64, u64, String)> {
    report["instanceTypes"]
        .as_array()
        .expect("instanceTypes")
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_u64().unwrap();
            let tag = r["nodeTemplateTag"].as_str().unwrap().to_owned();
            (r["instanceType"].as_str().unwrap().to_owned(), (n("podIps"), n("maxPods"), tag))
        })
        .collect()
}

/// AWS's published max pods (eni-max-pods.txt) for the types of the issue.
const AWS_PUBLISHED: [(&str, u64); 4] =
    [("m5.large", 29), ("m5.xlarge", 58), ("c5.4xlarge", 234), ("t3.medium", 17)];

fn assert_aws_published(report: &Value) {
    let rows = by_type(report);
    for (ty, max_pods) in AWS_PUBLISHED {
        let (pod_ips, got, tag) = rows.get(ty).unwrap_or_else(|| panic!("{ty} missing: {report}"));
        assert_eq!(*got, max_pods, "{ty}: AWS publishes {max_pods}");
        assert_eq!(*pod_ips, max_pods - 2, "{ty}: the 2 host-network pods take no IP");
        assert_eq!(tag, &format!("{TAG}={pod_ips}"));
    }
}

fn aws_types() -> Vec<String> {
    vec![
        "--cloud".into(),
        "aws".into(),
        "--instance-type".into(),
        "m5.large,m5.xlarge,c5.4xlarge,t3.medium".into(),
    ]
}

#[tokio::test]
async fn offline_the_built_in_profile_gives_aws_published_max_pods() {
    let report = capacity_json(aws_types()).await;
    assert_eq!(report["cloud"], "aws");
    assert_eq!(report["source"], "the built-in aws profile");
    assert_eq!(report["hostNetworkPods"], 2);
    assert_aws_published(&report);
    let order: Vec<&str> = report["instanceTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["instanceType"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["m5.large", "m5.xlarge", "c5.4xlarge", "t3.medium"], "in the order asked");
}

#[tokio::test]
async fn offline_alibaba_uses_its_first_interface_index_and_the_flag_overrides_it() {
    let args = |extra: &[&str]| {
        let mut a: Vec<String> =
            ["--cloud", "alibaba", "--instance-type", "ecs.g7.xlarge"].map(String::from).to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let report = capacity_json(args(&[])).await;
    let row = &report["instanceTypes"][0];
    assert_eq!(row["firstInterfaceIndex"], 1);
    assert_eq!((row["podIps"].as_u64(), row["maxPods"].as_u64()), (Some(3 * 14), Some(3 * 14 + 2)));
    let report = capacity_json(args(&["--first-interface-index", "0", "--host-network-pods", "4"])).await;
    let row = &report["instanceTypes"][0];
    assert_eq!((row["podIps"].as_u64(), row["maxPods"].as_u64()), (Some(4 * 14), Some(4 * 14 + 4)));
}

#[test]
fn the_table_has_one_line_per_type_and_names_its_source() {
    let out = operator(&["--cloud", "aws", "--instance-type", "m5.large", "--instance-type", "t3.medium"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("INSTANCE TYPE"), "{text}");
    assert!(lines[1].starts_with("m5.large") && lines[1].ends_with(&format!("{TAG}=27")), "{text}");
    assert!(lines[2].starts_with("t3.medium") && lines[2].contains(" 17  "), "{text}");
    assert!(text.contains("limits from the built-in aws profile"), "{text}");
    let all = operator(&["--cloud", "alibaba"]);
    let text = String::from_utf8(all.stdout).unwrap();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ecs.")).count(),
        CloudProfile::alibaba().instance_types.len()
    );
}

fn assert_usage_error(args: &[&str], must_say: &[&str]) {
    let out = operator(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?} exits 2: {err}");
    assert!(out.stdout.is_empty(), "{args:?} prints nothing on stdout");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    for word in must_say {
        assert!(err.contains(word), "{args:?}: '{word}' not in: {err}");
    }
}

#[test]
fn bad_flags_and_unknown_types_get_one_line_naming_them() {
    assert_usage_error(&["--cloud", "gcp"], &["--cloud", "gcp", "aws or alibaba"]);
    assert_usage_error(&["--instance-type", "m5.large"], &["--cloud"]);
    assert_usage_error(
        &["--cloud", "aws", "--first-interface-index", "99"],
        &["--first-interface-index", "99"],
    );
    assert_usage_error(
        &["--cloud", "aws", "--first-interface-index", "two"],
        &["--first-interface-index", "two"],
    );
    assert_usage_error(&["--cloud", "aws", "--host-network-pods", "x"], &["--host-network-pods"]);
    assert_usage_error(&["--cloud", "aws", "--maxpods"], &["--maxpods"]);
    assert_usage_error(&["--cloud", "aws", "--endpoint", "127.0.0.1:5000"], &["--endpoint", "http://"]);
    assert_usage_error(
        &["--cloud", "aws", "--instance-type", "m5.large,m9.gigantic"],
        &["instance type m9.gigantic not known to the built-in aws profile", "--from-cloud"],
    );
    assert_usage_error(
        &["--cloud", "aws", "--instance-type", "t3.medium", "--first-interface-index", "3"],
        &["t3.medium has 3 ENIs", "--first-interface-index 3", "use 0 to 2"],
    );
}

#[test]
fn help_explains_the_formula_and_the_host_network_pods() {
    let out = operator(&["--help"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in ["maxPods", "hostNetwork", "--host-network-pods", "ENIs x (IPv4 per ENI - 1) + 2", TAG] {
        assert!(text.contains(needle), "--help lacks '{needle}'");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_moto_describe_instance_types_gives_the_published_numbers_through_errors() {
    let moto = Moto::start();
    // Every third DescribeInstanceTypes answered InternalError: the guard's retry carries it.
    let faults = Faults {
        internal_error: 0.3,
        actions: Some(vec!["DescribeInstanceTypes".into()]),
        ..Faults::default()
    };
    let proxy = Ec2Proxy::start(&moto.url, faults, 5).await;
    let mut args = aws_types();
    args.extend(["--endpoint".into(), proxy.url.clone()]);
    let report = capacity_json(args).await;
    assert!(
        report["source"].as_str().unwrap().starts_with("EC2 DescribeInstanceTypes at http://"),
        "{report}"
    );
    assert_aws_published(&report);

    // Every type moto knows. The provider asks 100 a page and follows NextToken, but
    // moto answers DescribeInstanceTypes in one page whatever MaxResults says; paging
    // is proven against the Alibaba emulator below.
    let all =
        capacity_json(vec!["--cloud".into(), "aws".into(), "--endpoint".into(), proxy.url.clone()]).await;
    let rows = by_type(&all);
    assert!(rows.len() > 1000, "moto lists its whole catalog: {}", rows.len());
    assert_eq!(rows["m5.large"].1, 29);
    assert_eq!(rows["m5.24xlarge"].1, 737, "AWS publishes 737");
    let counts = proxy.counts()["DescribeInstanceTypes"];
    assert!(counts.internal_errors > 0, "the proxy did inject errors: {counts:?}");

    // A type EC2 does not know: named alone, with what to do.
    let url = proxy.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        operator(&["--cloud", "aws", "--endpoint", &url, "--instance-type", "m5.large,m9.gigantic"])
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("instance type m9.gigantic not known to EC2 DescribeInstanceTypes at"), "{err}");
    assert!(!err.contains("m5.large"), "only the unknown type is named: {err}");
    assert!(err.contains("region"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_alibaba_emulator_every_type_comes_back_by_signed_paginated_calls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keys = vec![Credentials::access_key("testid", "testsecret")];
    let emulator =
        Emulator::new(CloudProfile::alibaba(), "cn-hangzhou".into(), VpcId::from("vpc-emu"), keys, 1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(Arc::new(emulator))).await });

    let base =
        ["--cloud", "alibaba", "--alibaba-region", "cn-hangzhou", "--endpoint", &url].map(String::from);
    let all = capacity_json(base.to_vec()).await;
    assert!(all["source"].as_str().unwrap().starts_with("ECS DescribeInstanceTypes at "), "{all}");
    let rows = by_type(&all);
    let profile = CloudProfile::alibaba();
    assert_eq!(rows.len(), profile.instance_types.len());
    for (name, limits) in &profile.instance_types {
        let pod_ips = u64::from(limits.pod_capacity(1));
        assert_eq!(rows[name].0, pod_ips, "{name}");
        assert_eq!(rows[name].1, pod_ips + 2, "{name}");
    }

    let mut asked = base.to_vec();
    asked.extend(["--instance-type".into(), "ecs.g7.4xlarge,ecs.c7.large".into()]);
    let two = by_type(&capacity_json(asked).await);
    assert_eq!(two["ecs.g7.4xlarge"].1, 7 * 29 + 2);
    assert_eq!(two["ecs.c7.large"].1, 2 * 5 + 2);

    // The provider follows NextToken: 5 types a page.
    let retry = RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(1), 4, 3);
    let guard = Arc::new(CallGuard::for_profile(CloudProfile::alibaba(), 1.0, retry));
    let credentials = CredentialSource::Static(Credentials::access_key("testid", "testsecret"));
    let mut config = AlibabaConfig::new("cn-hangzhou", credentials).with_endpoint(url.clone());
    config.instance_types_page = 5;
    let provider = AlibabaProvider::new(config, guard.clone()).unwrap();
    let catalog = provider.instance_catalog().await.unwrap();
    let names: BTreeSet<String> = catalog.iter().map(|l| l.instance_type.0.clone()).collect();
    assert_eq!(names.len(), catalog.len(), "no type twice across pages");
    assert_eq!(names, profile.instance_types.keys().cloned().collect::<BTreeSet<_>>());
    let calls = guard.counts()[&Api::DescribeInstanceTypes].sent;
    assert_eq!(calls as usize, profile.instance_types.len().div_ceil(5), "one call a page");

    // A wrong secret: the emulator checks the signature, the command says so and fails.
    let url2 = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_eni-ipam-operator"))
            .args(["capacity", "--cloud", "alibaba", "--endpoint", &url2, "--instance-type", "ecs.g7.large"])
            .env("ALIBABA_CLOUD_ACCESS_KEY_ID", "testid")
            .env("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "wrong")
            .env_remove("ALIBABA_CLOUD_ROLE_ARN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("ECS DescribeInstanceTypes at") && err.contains("credentials"), "{err}");
}
