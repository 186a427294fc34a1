//! Identities against the emulator, over real HTTP with real signatures:
//! RRSA (an OIDC token exchanged at the emulator's STS `AssumeRoleWithOIDC`)
//! and the RAM role (the metadata stand-in), with keys that live a few
//! seconds so every test crosses expiries. A refresh that does not happen
//! fails the calls (`InvalidSecurityToken.Expired`); a refresh storm fails
//! the STS call counts.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use eni_ipam_api::VpcId;
use eni_ipam_cloud::alibaba::{
    AlibabaProvider, CredentialProvider, CredentialSource, Credentials, OidcRole, SignatureVersion,
};
use eni_ipam_cloud::{CloudProvider, ErrorClass, RetryPolicy};

const ROLE: &str = "acs:ram::1234567890:role/eni-ipam-operator";
const PROVIDER: &str = "acs:ram::1234567890:oidc-provider/ack-rrsa-c0ffee";
const TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3ViZS1zeXN0ZW06ZW5pLWlwYW0ifQ.c2ln";

fn rrsa_emulator(lifetime_seconds: u32) -> common::Emulator {
    let lifetime = lifetime_seconds.to_string();
    common::Emulator::start(
        &common::seed("ecs.g7.large", 1, 0),
        &[
            "--rrsa-role-arn",
            ROLE,
            "--rrsa-provider-arn",
            PROVIDER,
            "--rrsa-oidc-token",
            TOKEN,
            "--sts-lifetime-seconds",
            &lifetime,
        ],
    )
}

fn oidc(emulator: &common::Emulator, token_file: &Path) -> CredentialSource {
    CredentialSource::Oidc(OidcRole {
        token_file: token_file.to_owned(),
        role_arn: ROLE.into(),
        provider_arn: PROVIDER.into(),
        session_name: "identity-test".into(),
        sts_endpoint: emulator.url(),
        duration: Duration::from_secs(900),
    })
}

fn token_file(dir: &tempfile::TempDir, content: &str) -> std::path::PathBuf {
    let path = dir.path().join("token");
    std::fs::write(&path, content).expect("writing the token file");
    path
}

fn provider(
    emulator: &common::Emulator,
    credentials: CredentialSource,
    signature: SignatureVersion,
) -> AlibabaProvider {
    // One attempt per call: a refused key must show, not be retried away.
    let retry = RetryPolicy::new(Duration::from_millis(20), Duration::from_millis(100), 1, 3);
    common::alibaba_provider(emulator, credentials, signature, retry)
}

fn vpc() -> VpcId {
    VpcId::from("vpc-emulated")
}

async fn identity_counts(emulator: &common::Emulator) -> (u64, u64, u64, u64) {
    let d = emulator.dump().await["identity"].clone();
    let n = |k: &str| d[k].as_u64().unwrap_or_else(|| panic!("identity.{k} in {d}"));
    (n("sts_calls"), n("sts_issued"), n("metadata_fetches"), n("expired_refusals"))
}

/// Calls `parallel` list_subnets at once every 200 ms for `run`; every one must succeed.
async fn keep_calling(p: &AlibabaProvider, run: Duration, parallel: usize) -> u32 {
    let (start, vpc) = (Instant::now(), vpc());
    let mut calls = 0;
    while start.elapsed() < run {
        let results = futures::future::join_all((0..parallel).map(|_| p.list_subnets(&vpc))).await;
        for r in results {
            let subnets = r.unwrap_or_else(|e| panic!("call at {:?} failed: {e}", start.elapsed()));
            assert_eq!(subnets.len(), 1);
            calls += 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    calls
}

#[tokio::test]
async fn rrsa_keys_are_refreshed_before_expiry_under_load_without_an_sts_storm() {
    for signature in [SignatureVersion::V3, SignatureVersion::V1] {
        // 4 s keys, refreshed a third of their life before expiry: over 9 s about 4 exchanges.
        let emulator = rrsa_emulator(4);
        let dir = tempfile::tempdir().unwrap();
        let p = provider(&emulator, oidc(&emulator, &token_file(&dir, &format!("{TOKEN}\n"))), signature);
        let calls = keep_calling(&p, Duration::from_secs(9), 4).await;
        let (sts, issued, _, expired) = identity_counts(&emulator).await;
        assert_eq!(expired, 0, "{signature:?}: a request went out with an expired key");
        assert_eq!(sts, issued, "{signature:?}: every exchange succeeded");
        assert!(
            (3..=6).contains(&sts),
            "{signature:?}: {sts} STS exchanges for {calls} calls over 9 s of 4 s keys: want 3 to 6 (one per refresh, not per call)"
        );
    }
}

#[tokio::test]
async fn a_key_past_its_expiry_or_with_a_wrong_token_is_refused_as_the_cloud_does() {
    let emulator = rrsa_emulator(2);
    let dir = tempfile::tempdir().unwrap();
    let source = oidc(&emulator, &token_file(&dir, TOKEN));
    let http = reqwest::Client::new();
    let keys = CredentialProvider::new(source, http).unwrap().get().await.expect("STS exchange");
    assert!(keys.security_token.is_some());
    for signature in [SignatureVersion::V3, SignatureVersion::V1] {
        let fresh = provider(&emulator, CredentialSource::Static(keys.clone()), signature);
        assert_eq!(fresh.list_subnets(&vpc()).await.unwrap().len(), 1, "{signature:?}: fresh key works");
        let wrong = Credentials { security_token: Some("CAISforged".into()), ..keys.clone() };
        let err = provider(&emulator, CredentialSource::Static(wrong), signature)
            .list_subnets(&vpc())
            .await
            .unwrap_err();
        assert_eq!(
            (err.class, err.code.as_str()),
            (ErrorClass::Auth, "InvalidSecurityToken.MismatchWithAccessKey")
        );
        let bare = Credentials { security_token: None, ..keys.clone() };
        let err = provider(&emulator, CredentialSource::Static(bare), signature)
            .list_subnets(&vpc())
            .await
            .unwrap_err();
        assert_eq!((err.class, err.code.as_str()), (ErrorClass::Auth, "MissingSecurityToken"));
    }
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let stale = provider(&emulator, CredentialSource::Static(keys), SignatureVersion::V3);
    let err = stale.list_subnets(&vpc()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (ErrorClass::Auth, "InvalidSecurityToken.Expired"), "{err}");
    assert_eq!(identity_counts(&emulator).await.3, 1);
}

#[tokio::test]
async fn a_wrong_or_missing_oidc_token_is_a_clear_error() {
    let emulator = rrsa_emulator(900);
    let dir = tempfile::tempdir().unwrap();
    let p = provider(
        &emulator,
        oidc(&emulator, &token_file(&dir, "eyJ.not-this-cluster.sig")),
        SignatureVersion::V3,
    );
    let err = p.list_subnets(&vpc()).await.unwrap_err();
    assert_eq!((err.class, err.code.as_str()), (ErrorClass::Auth, "CredentialsUnavailable"), "{err}");
    for needle in ["AuthenticationFail.OIDCToken.Invalid", ROLE, "trust policy"] {
        assert!(err.message.contains(needle), "'{needle}' not in: {}", err.message);
    }
    let missing = dir.path().join("absent");
    let p = provider(&emulator, oidc(&emulator, &missing), SignatureVersion::V3);
    let err = p.list_subnets(&vpc()).await.unwrap_err();
    let path = missing.display().to_string();
    for needle in [path.as_str(), "pod-identity.alibabacloud.com/injection"] {
        assert!(err.message.contains(needle), "'{needle}' not in: {}", err.message);
    }
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_working_keys_and_is_retried_before_expiry() {
    let emulator = rrsa_emulator(6);
    let dir = tempfile::tempdir().unwrap();
    let p = provider(&emulator, oidc(&emulator, &token_file(&dir, TOKEN)), SignatureVersion::V3);
    assert_eq!(p.list_subnets(&vpc()).await.unwrap().len(), 1);
    // The next exchange (due at about 4 s) fails once.
    let plan = serde_json::json!({"errors": [{"action": "AssumeRoleWithOIDC", "code": "InternalError", "times": 1}]});
    let set =
        reqwest::Client::new().post(format!("{}/_emulator/faults", emulator.url())).json(&plan).send().await;
    assert!(set.unwrap().status().is_success());
    keep_calling(&p, Duration::from_secs(7), 2).await;
    let (sts, issued, _, expired) = identity_counts(&emulator).await;
    assert_eq!(expired, 0, "no request went out with an expired key");
    assert_eq!(sts, issued + 1, "one exchange failed, the others succeeded");
    assert!((3..=4).contains(&sts), "{sts} exchanges: first, failed, retried (and perhaps the next)");
}

#[tokio::test]
async fn the_ram_role_keys_are_followed_across_rotations() {
    let emulator = common::Emulator::start(
        &common::seed("ecs.g7.large", 1, 0),
        &["--ram-role", "eni-ipam-node", "--sts-lifetime-seconds", "3"],
    );
    let source = CredentialSource::RamRole { metadata_url: emulator.url(), role: None };
    let p = provider(&emulator, source, SignatureVersion::V3);
    keep_calling(&p, Duration::from_secs(7), 3).await;
    let (_, _, fetches, expired) = identity_counts(&emulator).await;
    assert_eq!(expired, 0, "no request went out with an expired key");
    assert!((3..=8).contains(&fetches), "{fetches} metadata fetches over 7 s of 3 s keys");
}
