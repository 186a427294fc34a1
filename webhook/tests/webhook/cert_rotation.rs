//! A certificate replaced on disk is served to new connections without a
//! restart, and a broken replacement leaves the old one serving.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::{FIXTURES, TestPki, fixture_state, install_ring, start_tls_webhook};

/// Fast checks keep the test short; production checks every second.
const RELOAD_INTERVAL: Duration = Duration::from_millis(100);
/// Generous: the reload takes one or two intervals.
const DEADLINE: Duration = Duration::from_secs(15);

async fn review_ok(client: &reqwest::Client, url: &str) -> Result<(), String> {
    let body = std::fs::read(format!("{FIXTURES}/plain-single-container.request.json")).unwrap();
    let response = client.post(url).body(body).send().await.map_err(|e| format!("{e:?}"))?;
    if response.status() == 200 { Ok(()) } else { Err(format!("status {}", response.status())) }
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}");
        tokio::time::sleep(RELOAD_INTERVAL / 2).await;
    }
}

fn tls_reloads(metrics: &eni_ipam_webhook::metrics::WebhookMetrics, result: &str) -> u64 {
    let prefix = format!("eni_ipam_webhook_tls_reloads_total{{result=\"{result}\"}} ");
    metrics.encode().lines().find_map(|line| line.strip_prefix(&prefix)?.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_certificate_reaches_new_connections_without_restart() {
    install_ring();
    let dir = tempfile::tempdir().unwrap();
    let (pki_a, pki_b) = (TestPki::new("CA A"), TestPki::new("CA B"));
    let state = fixture_state();
    let metrics = state.metrics.clone();
    let (webhook, files) = start_tls_webhook(dir.path(), &pki_a, RELOAD_INTERVAL, state).await;
    let url = format!("https://{}/mutate", webhook.local_addr);
    // Every request on a new connection, so each one sees the current certificate.
    let (trusts_a, trusts_b) = (pki_a.client(true), pki_b.client(true));
    // A client kept alive across the rotation keeps its connection.
    let kept_alive = pki_a.client(false);

    review_ok(&trusts_a, &url).await.expect("CA A's client before the rotation");
    review_ok(&kept_alive, &url).await.expect("kept-alive client before the rotation");
    let refused = review_ok(&trusts_b, &url).await;
    assert!(refused.is_err(), "CA B's client must not accept certificate A");

    // Written in place, cert then key, as a careless rotation would: the
    // half-written pair in between must not stop the server.
    pki_b.write_to(&files);
    eventually("certificate B served to a new connection", || async {
        review_ok(&trusts_b, &url).await.is_ok()
    })
    .await;
    assert!(review_ok(&trusts_a, &url).await.is_err(), "new connections must no longer get certificate A");
    assert!(tls_reloads(&metrics, "ok") >= 1);
    review_ok(&kept_alive, &url).await.expect("a connection opened before the rotation keeps working");

    // A broken replacement is refused; certificate B keeps serving.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        .unwrap();
    let errors_before = tls_reloads(&metrics, "error");
    eventually("the broken certificate seen and refused", || async {
        tls_reloads(&metrics, "error") > errors_before
    })
    .await;
    review_ok(&trusts_b, &url).await.expect("certificate B still served after a broken write");

    webhook.shutdown(Duration::from_secs(1)).await;
}
