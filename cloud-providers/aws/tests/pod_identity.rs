//! EKS Pod Identity through the SDK's default chain: the chain reads
//! AWS_CONTAINER_CREDENTIALS_FULL_URI and AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE,
//! asks the agent (here a stand-in on loopback, which the chain allows as it
//! allows the agent's 169.254.170.23) with the token in `Authorization`, and
//! signs EC2 calls (moto, through the proxy, which accepts only the agent's
//! key) with what it got. No static keys anywhere.
//!
//! One test per file: it sets the process environment the chain reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use eni_ipam_api::VpcId;
use eni_ipam_cloud::{CallGuard, CloudProfile, CloudProvider, RetryPolicy};
use eni_ipam_cloud_aws::{AwsConfig, AwsProvider};
use eni_ipam_ec2_testbed::{Console, Ec2Proxy, Faults, Moto};

const AGENT_KEY: &str = "ASIAPODIDENTITY00001";
const POD_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.cG9kLWlkZW50aXR5.c2ln";

#[tokio::test]
async fn eks_pod_identity_keys_come_from_the_agent_with_the_pod_token() {
    let moto = Moto::start();
    let faults = Faults { expect_access_key: Some(AGENT_KEY.into()), ..Faults::default() };
    let proxy = Ec2Proxy::start(&moto.url, faults, 6).await;
    let console = Console::new(&moto.url);
    let vpc = console.create_vpc("10.1.0.0/16").await;
    console.create_subnet(&vpc, "10.1.0.0/20", "us-east-1a").await;

    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let agent = axum::Router::new().route(
        "/v1/credentials",
        axum::routing::get(move |headers: HeaderMap| {
            let counter = counter.clone();
            async move {
                let presented =
                    headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
                if presented != POD_TOKEN {
                    return (axum::http::StatusCode::UNAUTHORIZED, "token".to_owned());
                }
                counter.fetch_add(1, Ordering::Relaxed);
                let expires = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
                let expires = expires.format(&time::format_description::well_known::Rfc3339).unwrap();
                let body = serde_json::json!({
                    "AccessKeyId": AGENT_KEY, "SecretAccessKey": "agent-secret",
                    "Token": "agent-session-token", "Expiration": expires,
                });
                (axum::http::StatusCode::OK, body.to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("http://{}/v1/credentials", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, agent).await });

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("eks-pod-identity-token");
    std::fs::write(&token, POD_TOKEN).unwrap();
    let absent = dir.path().join("absent");
    // SAFETY: this test binary runs this one test; nothing else reads the environment concurrently.
    unsafe {
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_ROLE_ARN",
        ] {
            std::env::remove_var(name);
        }
        std::env::set_var("AWS_CONFIG_FILE", &absent);
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &absent);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::set_var("AWS_CONTAINER_CREDENTIALS_FULL_URI", &agent_url);
        std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &token);
    }

    let retry = RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(100), 1, 3);
    let guard = Arc::new(CallGuard::new(CloudProfile::aws(), BTreeMap::new(), retry));
    let mut config = AwsConfig::for_region("us-east-1");
    config.endpoint = Some(proxy.url.clone());
    let vpc = VpcId::from(vpc.as_str());
    let provider = AwsProvider::connect(config, guard, &vpc).await.expect("connects with the agent's keys");
    for _ in 0..5 {
        assert_eq!(provider.list_subnets(&vpc).await.unwrap().len(), 1);
    }
    assert_eq!(asked.load(Ordering::Relaxed), 1, "the hour-long keys were asked once and cached");
}
