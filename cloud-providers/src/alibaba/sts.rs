//! RRSA's exchange: STS `AssumeRoleWithOIDC` (version 2015-04-01) turns the
//! pod's projected OIDC token into temporary keys with a security token.
//! The call is anonymous (no AccessKey, no signature): the OIDC token is the
//! proof. Parameters and the answer's shape are those of Alibaba's official
//! credentials SDK (`alibabacloud_credentials`, `OIDCRoleArnCredentialsProvider`);
//! see docs/testing.md.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::credentials::{CredentialError, Credentials, OidcRole, Temporary};
use super::encode::encode_pairs;
use super::sign::{format_timestamp, parse_timestamp};
use super::wire::ErrorBody;

/// STS API version.
pub const STS_VERSION: &str = "2015-04-01";
/// The action.
pub const ASSUME_ROLE_WITH_OIDC: &str = "AssumeRoleWithOIDC";

/// The keys in an STS answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StsCredentials {
    /// Temporary AccessKey id (`STS.` prefixed).
    pub access_key_id: String,
    /// Its secret.
    pub access_key_secret: String,
    /// The security token every signed request carries.
    pub security_token: String,
    /// UTC `yyyy-MM-ddTHH:mm:ssZ`.
    pub expiration: String,
}

/// The answer to AssumeRoleWithOIDC (the parts read).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AssumeRoleWithOidcAnswer {
    /// Request id.
    #[serde(default)]
    pub request_id: String,
    /// The keys.
    pub credentials: StsCredentials,
}

/// The request's parameters, as the official SDK sends them.
pub fn request_params(role: &OidcRole, token: &str, now: time::OffsetDateTime) -> Vec<(String, String)> {
    [
        ("Action", ASSUME_ROLE_WITH_OIDC.to_owned()),
        ("Format", "JSON".to_owned()),
        ("Version", STS_VERSION.to_owned()),
        ("DurationSeconds", role.duration.as_secs().to_string()),
        ("RoleArn", role.role_arn.clone()),
        ("OIDCProviderArn", role.provider_arn.clone()),
        ("OIDCToken", token.to_owned()),
        ("RoleSessionName", role.session_name.clone()),
        ("Timestamp", format_timestamp(now)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Exchanges the token in `role.token_file` for temporary keys.
pub async fn assume_role_with_oidc(
    http: &reqwest::Client,
    role: &OidcRole,
) -> Result<Temporary, CredentialError> {
    let fail = |reason: String| CredentialError::Sts { reason };
    let token = std::fs::read_to_string(&role.token_file).map_err(|e| {
        fail(format!(
            "cannot read the OIDC token file {} ({e}); is the pod's service account set up for RRSA \
             (pod-identity.alibabacloud.com/injection: on)?",
            role.token_file.display()
        ))
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(fail(format!("the OIDC token file {} is empty", role.token_file.display())));
    }
    let params = request_params(role, token, time::OffsetDateTime::now_utc());
    // ack-pod-identity-webhook injects a bare host (ALIBABA_CLOUD_STS_ENDPOINT=sts-vpc.<region>.aliyuncs.com).
    let base = role.sts_endpoint.trim_end_matches('/');
    let url = if base.contains("://") { format!("{base}/") } else { format!("https://{base}/") };
    let response = http
        .post(&url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(encode_pairs(&params))
        .send()
        .await
        .map_err(|e| {
            fail(format!(
                "{ASSUME_ROLE_WITH_OIDC} at {url} failed: {e}; check the STS endpoint and the network"
            ))
        })?;
    let status = response.status().as_u16();
    let body = response.bytes().await.map_err(|e| fail(format!("reading the answer of {url}: {e}")))?;
    if !(200..300).contains(&status) {
        let error: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
        return Err(fail(format!(
            "STS at {url} refused role {} with provider {} (HTTP {status}, {}: {}); check the role's trust policy \
             and that the token file holds this cluster's service account token",
            role.role_arn, role.provider_arn, error.code, error.message
        )));
    }
    let answer: AssumeRoleWithOidcAnswer = serde_json::from_slice(&body)
        .map_err(|e| fail(format!("the answer of STS at {url} is not the expected JSON ({e})")))?;
    let c = answer.credentials;
    let expires = parse_timestamp(&c.expiration)
        .ok_or_else(|| fail(format!("STS Expiration '{}' is not yyyy-MM-ddTHH:mm:ssZ", c.expiration)))?;
    Ok(Temporary {
        credentials: Credentials {
            access_key_id: c.access_key_id,
            access_key_secret: c.access_key_secret,
            security_token: Some(c.security_token),
        },
        expires,
    })
}
