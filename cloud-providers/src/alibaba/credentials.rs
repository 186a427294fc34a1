//! Where the client's AccessKey comes from: a static pair, the standard
//! environment variables, the credentials file of Alibaba's SDKs, or the ECS
//! instance's RAM role (STS credentials from the metadata service, refreshed
//! before they expire).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Mutex;

/// Environment variable of the AccessKey id.
pub const ENV_ACCESS_KEY_ID: &str = "ALIBABA_CLOUD_ACCESS_KEY_ID";
/// Environment variable of the AccessKey secret.
pub const ENV_ACCESS_KEY_SECRET: &str = "ALIBABA_CLOUD_ACCESS_KEY_SECRET";
/// Environment variable of an STS token going with the pair.
pub const ENV_SECURITY_TOKEN: &str = "ALIBABA_CLOUD_SECURITY_TOKEN";
/// The ECS metadata service.
pub const DEFAULT_METADATA_URL: &str = "http://100.100.100.200";
/// Path of the RAM role credentials under the metadata service.
pub const RAM_ROLE_PATH: &str = "/latest/meta-data/ram/security-credentials/";

/// One AccessKey pair, with an STS token when temporary.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// AccessKey id (`STS.` prefixed when temporary).
    pub access_key_id: String,
    /// AccessKey secret.
    pub access_key_secret: String,
    /// STS security token.
    pub security_token: Option<String>,
}

impl Credentials {
    /// A long-lived pair.
    pub fn access_key(id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self { access_key_id: id.into(), access_key_secret: secret.into(), security_token: None }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field("security_token", &self.security_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Where to get credentials.
#[derive(Clone, Debug)]
pub enum CredentialSource {
    /// A fixed pair (tests, or a secret mounted by the chart).
    Static(Credentials),
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `..._SECRET` (and `..._SECURITY_TOKEN`).
    Env,
    /// The `[profile]` of an SDK credentials file (`type = access_key`).
    File {
        /// Path, e.g. `~/.alibabacloud/credentials`.
        path: PathBuf,
        /// Section name, usually `default`.
        profile: String,
    },
    /// The instance's RAM role, from the metadata service.
    RamRole {
        /// Base URL of the metadata service (`http://100.100.100.200`).
        metadata_url: String,
        /// Role name; asked from the metadata service when `None`.
        role: Option<String>,
    },
}

/// Why credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// An environment variable is missing.
    #[error("{0} is not set: export the AccessKey pair or configure a RAM role")]
    MissingEnv(&'static str),
    /// The credentials file is unreadable or lacks the profile.
    #[error("credentials file {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong, and what to fix.
        reason: String,
    },
    /// The metadata service did not give credentials.
    #[error("RAM role credentials from {url}: {reason}; check that the instance has a RAM role attached")]
    Metadata {
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

#[derive(Debug)]
struct Cached {
    credentials: Credentials,
    refresh_at: Option<OffsetDateTime>,
}

/// Hands out current credentials, refreshing temporary ones before expiry.
#[derive(Debug)]
pub struct CredentialProvider {
    source: CredentialSource,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

/// Temporary credentials are refreshed this long before they expire.
const REFRESH_MARGIN: time::Duration = time::Duration::minutes(5);

impl CredentialProvider {
    /// A provider over `source`; static, env and file sources are read at once
    /// so a missing key fails at start-up, not at the first call.
    pub fn new(source: CredentialSource, http: reqwest::Client) -> Result<Self, CredentialError> {
        let cached = match &source {
            CredentialSource::Static(c) => Some(c.clone()),
            CredentialSource::Env => Some(from_env()?),
            CredentialSource::File { path, profile } => Some(from_file(path, profile)?),
            CredentialSource::RamRole { .. } => None,
        };
        let cached = cached.map(|credentials| Cached { credentials, refresh_at: None });
        Ok(Self { source, http, cached: Mutex::new(cached) })
    }

    /// Current credentials.
    pub async fn get(&self) -> Result<Credentials, CredentialError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.refresh_at.is_none_or(|at| OffsetDateTime::now_utc() < at)
        {
            return Ok(c.credentials.clone());
        }
        let CredentialSource::RamRole { metadata_url, role } = &self.source else {
            unreachable!("only RAM role credentials expire")
        };
        let fresh = self.fetch_ram_role(metadata_url, role.as_deref()).await?;
        let credentials = fresh.credentials.clone();
        *cached = Some(fresh);
        Ok(credentials)
    }

    async fn fetch_ram_role(&self, base: &str, role: Option<&str>) -> Result<Cached, CredentialError> {
        let base = format!("{}{RAM_ROLE_PATH}", base.trim_end_matches('/'));
        let role = match role {
            Some(r) => r.to_owned(),
            None => self.fetch_text(&base).await?.lines().next().unwrap_or_default().trim().to_owned(),
        };
        if role.is_empty() {
            return Err(CredentialError::Metadata { url: base, reason: "no role name listed".into() });
        }
        let url = format!("{base}{role}");
        let body = self.fetch_text(&url).await?;
        let doc: RamRoleDocument = serde_json::from_str(&body)
            .map_err(|e| CredentialError::Metadata { url: url.clone(), reason: format!("not JSON ({e})") })?;
        if doc.code != "Success" {
            return Err(CredentialError::Metadata { url, reason: format!("Code is {}", doc.code) });
        }
        let expires =
            super::sign::parse_timestamp(&doc.expiration).ok_or_else(|| CredentialError::Metadata {
                url: url.clone(),
                reason: format!("Expiration '{}' is not yyyy-MM-ddTHH:mm:ssZ", doc.expiration),
            })?;
        tracing::info!(role = %role, expires = %doc.expiration, "fetched RAM role credentials");
        Ok(Cached {
            credentials: Credentials {
                access_key_id: doc.access_key_id,
                access_key_secret: doc.access_key_secret,
                security_token: Some(doc.security_token),
            },
            refresh_at: Some(expires - REFRESH_MARGIN),
        })
    }

    async fn fetch_text(&self, url: &str) -> Result<String, CredentialError> {
        let fail = |reason: String| CredentialError::Metadata { url: url.to_owned(), reason };
        let response = self
            .http
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
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RamRoleDocument {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
    code: String,
}

fn from_env() -> Result<Credentials, CredentialError> {
    let id = std::env::var(ENV_ACCESS_KEY_ID).map_err(|_| CredentialError::MissingEnv(ENV_ACCESS_KEY_ID))?;
    let secret = std::env::var(ENV_ACCESS_KEY_SECRET)
        .map_err(|_| CredentialError::MissingEnv(ENV_ACCESS_KEY_SECRET))?;
    let token = std::env::var(ENV_SECURITY_TOKEN).ok().filter(|t| !t.is_empty());
    Ok(Credentials { access_key_id: id, access_key_secret: secret, security_token: token })
}

/// Reads an INI credentials file as Alibaba's SDKs write it.
fn from_file(path: &std::path::Path, profile: &str) -> Result<Credentials, CredentialError> {
    let fail = |reason: String| CredentialError::File { path: path.display().to_string(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read it ({e})")))?;
    let mut section = String::new();
    let (mut id, mut secret, mut token) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_owned();
        } else if section == profile
            && let Some((key, value)) = line.split_once('=')
        {
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "access_key_id" => id = Some(value),
                "access_key_secret" => secret = Some(value),
                "security_token" | "sts_token" => token = Some(value),
                _ => {}
            }
        }
    }
    match (id, secret) {
        (Some(id), Some(secret)) => {
            Ok(Credentials { access_key_id: id, access_key_secret: secret, security_token: token })
        }
        _ => Err(fail(format!("profile [{profile}] needs access_key_id and access_key_secret"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_secret() {
        let c = Credentials {
            security_token: Some("T0KEN-VALUE".into()),
            ..Credentials::access_key("id", "s3cr3t")
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("T0KEN-VALUE"), "{shown}");
    }

    #[test]
    fn the_file_profile_is_read_and_others_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        std::fs::write(
            &path,
            "[other]\naccess_key_id = no\naccess_key_secret = no\n\n[default]\ntype = access_key\naccess_key_id = AK1\naccess_key_secret = \"SK1\"\n",
        )
        .unwrap();
        assert_eq!(from_file(&path, "default").unwrap(), Credentials::access_key("AK1", "SK1"));
        let err = from_file(&path, "missing").unwrap_err().to_string();
        assert!(err.contains("[missing]") && err.contains("access_key_id"), "{err}");
    }
}
