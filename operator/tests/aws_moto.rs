//! The operator's fleet loop against moto's EC2 through the real
//! aws-sdk-ec2, with the test bed's proxy throttling 30% of mutating calls.

use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{PoolKnobs, VpcId};
use eni_ipam_cloud::{CallGuard, CloudKind, CloudProfile, RetryPolicy};
use eni_ipam_cloud_aws::{AwsConfig, AwsProvider};
use eni_ipam_ec2_testbed::{Console, Ec2Proxy, Faults, Moto};
use eni_ipam_operator::simulate::{Backend, SimConfig, run_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_converge_through_30_percent_throttling_without_leaks() {
    let moto = Moto::start();
    let proxy = Ec2Proxy::start(&moto.url, Faults::default(), 11).await;
    let console = Console::new(&moto.url);
    let vpc = console.create_vpc("10.0.0.0/16").await;
    let a = console.create_subnet(&vpc, "10.0.0.0/19", "us-east-1a").await;
    let b = console.create_subnet(&vpc, "10.0.32.0/19", "us-east-1b").await;
    console.run_instances("m5.large", &a, 25).await;
    console.run_instances("m5.large", &b, 25).await;

    let retry = RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(2), 8, 5);
    let guard = Arc::new(CallGuard::for_profile(CloudProfile::aws(), 1.0, retry));
    let mut aws = AwsConfig::for_region("us-east-1");
    aws.endpoint = Some(proxy.url.clone());
    aws.static_credentials = Some(("testing".into(), "testing".into()));
    let vpc = VpcId::from(vpc.as_str());
    let provider = AwsProvider::connect(aws, guard.clone(), &vpc).await.expect("moto answers");
    proxy.set_faults(Faults { throttle_mutating: 0.3, ..Faults::default() });

    // First index 1: every node needs a new ENI, the costliest path
    // (create + attach + DeleteOnTermination: 3 calls at best on EC2).
    let config = SimConfig {
        cloud: CloudKind::Aws,
        nodes: 50,
        instance_type: Some("m5.large".into()),
        knobs: PoolKnobs { pre_allocate: 5, ..PoolKnobs::default() },
        first_interface_index: Some(1),
        workers: 16,
        limiter_margin: 1.0,
        deadline: Duration::from_secs(240),
        ..SimConfig::default()
    };
    let backend = Backend::Endpoint { provider: Arc::new(provider), guard, vpc };
    let report = run_on(&config, backend, false, &|_| {}).await.expect("the run completes");
    println!("{}", report.table());

    assert_eq!(report.ready_nodes, 50, "every node reached its pre-allocation");
    assert_eq!((report.leaked_enis, report.duplicate_ips, report.pool_mismatches), (0, 0, 0));
    let seen = proxy.counts();
    let throttled: u64 = seen.values().map(|c| c.throttled).sum();
    assert!(throttled > 0, "the proxy did throttle");
    // What EC2 accepted: one create, one attach, one DeleteOnTermination per
    // node. An attach that stays throttled through all 8 attempts (0.3^8 per
    // attach: rare, not impossible) has its new ENI deleted at once and the
    // node tries again, so each extra create must come with a delete.
    let accepted = |action: &str| seen.get(action).map_or(0, |c| c.forwarded + c.idempotent_replays);
    let undone = accepted("DeleteNetworkInterface");
    // An operation that gave up had 8 throttles and 7 retries.
    let gave_up = throttled.saturating_sub(report.client_retries);
    assert!(gave_up <= 2, "{gave_up} operations throttled 8 times in a row: more than bad luck");
    assert!(undone <= gave_up, "{undone} ENIs deleted again, but only {gave_up} operations gave up");
    assert_eq!(accepted("CreateNetworkInterface"), 50 + undone, "{:?}", seen["CreateNetworkInterface"]);
    for action in ["AttachNetworkInterface", "ModifyNetworkInterfaceAttribute"] {
        assert_eq!(accepted(action), 50, "{action}: {:?}", seen[action]);
    }
    // Retries are bounded: at most 7 per operation (8 attempts), and reported.
    let mutating_ops = 150 + 2 * undone;
    assert!(
        report.client_retries + gave_up >= throttled,
        "every throttle was retried until the last attempt"
    );
    assert!(report.client_retries <= 7 * mutating_ops, "{} retries", report.client_retries);
    let accepted_per_node = (seen
        .iter()
        .filter(|(action, _)| !action.starts_with("Describe"))
        .map(|(_, c)| c.forwarded)
        .sum::<u64>()
        - 2 * undone) as f64
        / 50.0;
    println!("mutating calls EC2 accepted per new node: {accepted_per_node:.2} (EC2's best: 3)");
    assert_eq!(accepted_per_node, 3.0);
}
