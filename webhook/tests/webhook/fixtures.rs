//! The contract's test: every case of `tests/fixtures/admission` (and of
//! `ENI_IPAM_ADMISSION_FIXTURES`), through
//! the router and through the real TLS server on loopback.

use std::time::Duration;

use crate::support::{
    TestPki, all_cases, check_answer, fixture_state, install_ring, post_to_router, start_tls_webhook,
};

#[tokio::test]
async fn every_fixture_case_through_the_router() {
    for case in all_cases() {
        let (status, content_type, body) = post_to_router(fixture_state(), case.body.clone()).await;
        check_answer(&case, status, content_type.as_deref(), &body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_case_through_the_tls_server() {
    install_ring();
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new("fixtures CA");
    let state = fixture_state();
    let metrics = state.metrics.clone();
    let (webhook, _files) = start_tls_webhook(dir.path(), &pki, Duration::from_secs(1), state).await;
    let url = format!("https://{}/mutate", webhook.local_addr);
    // One keep-alive client for all cases: a refused body must not break the
    // connection for the next review.
    let client = pki.client(false);
    let cases = all_cases();
    for case in &cases {
        let response = client
            .post(&url)
            .header("content-type", "application/json")
            .body(case.body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: no answer over TLS: {e:?}", case.name));
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        let body = response.bytes().await.unwrap();
        check_answer(case, status, content_type.as_deref(), &body);
    }
    // Every request was counted under exactly one outcome.
    use eni_ipam_webhook::metrics::RequestOutcome::*;
    let counted: u64 = [Patched, Skipped, AllowedWithWarning, Malformed, TooLarge, BodyTimeout]
        .into_iter()
        .map(|outcome| metrics.requests_with(outcome))
        .sum();
    assert_eq!(counted, cases.len() as u64);
    assert_eq!(metrics.requests_with(TooLarge), 1);
    webhook.shutdown(Duration::from_secs(1)).await;
}
