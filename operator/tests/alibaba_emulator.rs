//! The operator's fleet loop against the Alibaba ECS/VPC emulator through
//! the signed OpenAPI client: 100 nodes, the same report as the fake cloud.

use std::sync::Arc;
use std::time::Duration;

use eni_ipam_aliyun_emulator::Emulator;
use eni_ipam_aliyun_emulator::seed::Seed;
use eni_ipam_aliyun_emulator::server::router;
use eni_ipam_api::VpcId;
use eni_ipam_cloud::alibaba::{AlibabaConfig, AlibabaProvider, CredentialSource, Credentials};
use eni_ipam_cloud::{CallGuard, CloudKind, CloudProfile, RetryPolicy};
use eni_ipam_operator::simulate::{Backend, SimConfig, run_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_nodes_get_their_pre_allocation_from_the_emulator_in_two_calls_each() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut profile = CloudProfile::alibaba();
    profile.attach_delay = Duration::from_millis(500);
    let keys = vec![Credentials::access_key("testid", "testsecret")];
    let emulator = Emulator::new(profile, "cn-hangzhou".into(), VpcId::from("vpc-emu"), keys, 1);
    let seed: Seed = serde_json::from_str(
        r#"{"vswitches": [{"name": "h", "zone": "cn-hangzhou-h", "cidr": "172.16.0.0/18"},
                          {"name": "i", "zone": "cn-hangzhou-i", "cidr": "172.16.64.0/18"}],
            "instances": [{"vswitch": "h", "instance_type": "ecs.g7.xlarge", "count": 50},
                          {"vswitch": "i", "instance_type": "ecs.g7.xlarge", "count": 50}]}"#,
    )
    .unwrap();
    seed.apply(&mut emulator.cloud().console()).expect("seeding");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = router(Arc::new(emulator));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let retry = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(5), 8, 9);
    let guard = Arc::new(CallGuard::for_profile(CloudProfile::alibaba(), 0.95, retry));
    let credentials = CredentialSource::Static(Credentials::access_key("testid", "testsecret"));
    let config = AlibabaConfig::new("cn-hangzhou", credentials).with_endpoint(url);
    let provider = AlibabaProvider::new(config, guard.clone()).expect("client");
    let sim = SimConfig {
        cloud: CloudKind::Alibaba,
        nodes: 100,
        workers: 32,
        security_groups: vec!["sg-emu".into()],
        deadline: Duration::from_secs(120),
        ..SimConfig::default()
    };
    let backend = Backend::Endpoint { provider: Arc::new(provider), guard, vpc: VpcId::from("vpc-emu") };
    let report = run_on(&sim, backend, false, &|_| {}).await.expect("the run completes");
    println!("{}", report.table());
    println!("{}", serde_json::to_string(&report).unwrap());

    assert_eq!((report.nodes, report.ready_nodes), (100, 100));
    assert_eq!((report.leaked_enis, report.duplicate_ips, report.pool_mismatches), (0, 0, 0));
    // ECS's best for a new node: CreateNetworkInterface with the secondary IPs, then Attach.
    assert_eq!(report.api_calls["CreateNetworkInterface"], 100);
    assert_eq!(report.api_calls["AttachNetworkInterface"], 100);
    assert_eq!(report.mutating_calls_per_node, 2.0);
}
