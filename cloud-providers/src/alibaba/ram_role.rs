//! The ECS instance's RAM role: temporary keys from the metadata service
//! (`<base>/latest/meta-data/ram/security-credentials/<role>`). The base is
//! configurable so tests point it at the emulator's stand-in.

use std::time::Duration;

use super::credentials::{CredentialError, Credentials, RAM_ROLE_PATH, Temporary};
use super::sign::parse_timestamp;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RamRoleDocument {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
    code: String,
}

/// Fetches the role's keys; the role's name is asked first when not given.
pub async fn fetch(
    http: &reqwest::Client,
    base: &str,
    role: Option<&str>,
) -> Result<Temporary, CredentialError> {
    let base = format!("{}{RAM_ROLE_PATH}", base.trim_end_matches('/'));
    let role = match role {
        Some(r) => r.to_owned(),
        None => get_text(http, &base).await?.lines().next().unwrap_or_default().trim().to_owned(),
    };
    if role.is_empty() {
        return Err(CredentialError::Metadata { url: base, reason: "no role name listed".into() });
    }
    let url = format!("{base}{role}");
    let body = get_text(http, &url).await?;
    let doc: RamRoleDocument = serde_json::from_str(&body)
        .map_err(|e| CredentialError::Metadata { url: url.clone(), reason: format!("not JSON ({e})") })?;
    if doc.code != "Success" {
        return Err(CredentialError::Metadata { url, reason: format!("Code is {}", doc.code) });
    }
    let expires = parse_timestamp(&doc.expiration).ok_or_else(|| CredentialError::Metadata {
        url: url.clone(),
        reason: format!("Expiration '{}' is not yyyy-MM-ddTHH:mm:ssZ", doc.expiration),
    })?;
    Ok(Temporary {
        credentials: Credentials {
            access_key_id: doc.access_key_id,
            access_key_secret: doc.access_key_secret,
            security_token: Some(doc.security_token),
        },
        expires,
    })
}

async fn get_text(http: &reqwest::Client, url: &str) -> Result<String, CredentialError> {
    let fail = |reason: String| CredentialError::Metadata { url: url.to_owned(), reason };
    let response = http
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| fail(format!("request failed: {e}")))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| fail(format!("reading the answer: {e}")))?;
    if !status.is_success() {
        return Err(fail(format!("HTTP {status}")));
    }
    Ok(text)
}
