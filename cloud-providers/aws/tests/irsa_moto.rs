//! IRSA against moto's STS: no static keys anywhere; the SDK's default chain
//! reads AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, exchanges the token at
//! STS `AssumeRoleWithWebIdentity` (moto, through the test bed's proxy, which
//! makes the keys last 14 s and refuses EC2 calls signed with an expired or
//! unknown key), and signs EC2 calls with the result. A run of 21 s crosses
//! expiries: if the SDK did not refresh, calls would fail with ExpiredToken;
//! if it refreshed per call, the STS count would show it.
//!
//! One test per file: it sets the process environment the chain reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eni_ipam_api::VpcId;
use eni_ipam_cloud::{CallGuard, CloudProfile, CloudProvider, RetryPolicy};
use eni_ipam_cloud_aws::{AwsConfig, AwsProvider};
use eni_ipam_ec2_testbed::{Console, Ec2Proxy, Faults, Moto};

#[tokio::test]
async fn irsa_keys_from_moto_sts_are_used_and_refreshed_across_expiry() {
    let moto = Moto::start();
    let faults = Faults {
        sts_duration: Some(Duration::from_secs(14)),
        require_session_keys: true,
        ..Faults::default()
    };
    let proxy = Ec2Proxy::start(&moto.url, faults, 5).await;
    let console = Console::new(&moto.url);
    let vpc = console.create_vpc("10.0.0.0/16").await;
    console.create_subnet(&vpc, "10.0.0.0/20", "us-east-1a").await;

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1zeXN0ZW06ZW5pLWlwYW0ifQ.c2ln",
    )
    .unwrap();
    let absent = dir.path().join("absent");
    // SAFETY: this test binary runs this one test; nothing else reads the environment concurrently.
    unsafe {
        for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"] {
            std::env::remove_var(name);
        }
        std::env::set_var("AWS_CONFIG_FILE", &absent);
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &absent);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_WEB_IDENTITY_TOKEN_FILE", &token);
        std::env::set_var("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/eni-ipam-operator");
        std::env::set_var("AWS_ROLE_SESSION_NAME", "eni-ipam-test");
        std::env::set_var("AWS_ENDPOINT_URL_STS", &proxy.url);
    }

    let retry = RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(100), 1, 3);
    let guard = Arc::new(CallGuard::new(CloudProfile::aws(), BTreeMap::new(), retry));
    let mut config = AwsConfig::for_region("us-east-1");
    config.endpoint = Some(proxy.url.clone());
    assert!(config.static_credentials.is_none());
    let vpc = VpcId::from(vpc.as_str());
    let provider = AwsProvider::connect(config, guard, &vpc).await.expect("connects with IRSA keys");

    let start = Instant::now();
    let mut calls = 0;
    while start.elapsed() < Duration::from_secs(21) {
        let results = futures::future::join_all((0..3).map(|_| provider.list_subnets(&vpc))).await;
        for r in results {
            let subnets = r.unwrap_or_else(|e| panic!("call at {:?} failed: {e}", start.elapsed()));
            assert_eq!(subnets.len(), 1);
            calls += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let s = proxy.sessions();
    assert_eq!(
        (s.expired_refusals, s.unknown_refusals),
        (0, 0),
        "every EC2 call carried a live STS key: {s:?}"
    );
    assert_eq!(s.sts_calls, s.issued, "{s:?}");
    // The SDK's cache refreshes 5-10 s before expiry (10 s buffer, up to 5 s jitter):
    // 14 s keys are used for 4-9 s each, so 21 s take 3 to 7 exchanges.
    assert!((3..=7).contains(&s.sts_calls), "{} STS exchanges for {calls} calls: {s:?}", s.sts_calls);
    assert!(s.used >= 3, "the refreshed keys were used: {s:?}");
}
