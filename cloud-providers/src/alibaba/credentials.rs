//! Where the client's AccessKey comes from: a static pair, the standard
//! environment variables, the credentials file of Alibaba's SDKs, the ECS
//! instance's RAM role (metadata service), or RRSA (a projected OIDC token
//! exchanged at STS). Temporary keys are refreshed before they expire, one
//! refresh at a time, and a failed refresh keeps the keys that still work.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::refresh::{RefreshPlan, retry_after_failure};

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

/// RRSA: a service account token (projected by ACK's pod identity webhook)
/// exchanged for temporary keys at STS `AssumeRoleWithOIDC`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcRole {
    /// The OIDC token file (`ALIBABA_CLOUD_OIDC_TOKEN_FILE`); read again at every refresh, as kubelet rotates it.
    pub token_file: PathBuf,
    /// The RAM role to assume (`ALIBABA_CLOUD_ROLE_ARN`).
    pub role_arn: String,
    /// The cluster's OIDC provider (`ALIBABA_CLOUD_OIDC_PROVIDER_ARN`).
    pub provider_arn: String,
    /// Session name, seen in ActionTrail.
    pub session_name: String,
    /// STS endpoint URL (`https://sts.<region>.aliyuncs.com` or its `sts-vpc` twin).
    pub sts_endpoint: String,
    /// Lifetime asked for (STS accepts 900 s up to the role's maximum session).
    pub duration: Duration,
}

/// Where to get credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// RRSA: an OIDC token exchanged at STS.
    Oidc(OidcRole),
}

impl CredentialSource {
    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Static(_) => "static AccessKey",
            Self::Env => "AccessKey from the environment",
            Self::File { .. } => "credentials file",
            Self::RamRole { .. } => "instance RAM role",
            Self::Oidc(_) => "RRSA (OIDC token at STS)",
        }
    }
}

/// Why credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// An environment variable is missing.
    #[error("{0} is not set: export the AccessKey pair or configure RRSA or a RAM role")]
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
    /// STS did not exchange the OIDC token.
    #[error("RRSA: {reason}")]
    Sts {
        /// What went wrong, naming the file, role or endpoint to check.
        reason: String,
    },
}

/// Temporary keys and when they stop working.
#[derive(Clone, Debug)]
pub struct Temporary {
    /// The keys.
    pub credentials: Credentials,
    /// Their expiry.
    pub expires: OffsetDateTime,
}

#[derive(Debug)]
struct Cached {
    credentials: Credentials,
    /// `None`: never expires.
    plan: Option<RefreshPlan>,
}

/// Hands out current credentials, refreshing temporary ones before expiry.
#[derive(Debug)]
pub struct CredentialProvider {
    source: CredentialSource,
    http: reqwest::Client,
    /// The lock makes refreshes single-flight: callers wait for the one refresh.
    cached: Mutex<Option<Cached>>,
}

impl CredentialProvider {
    /// A provider over `source`; static, env and file sources are read at once
    /// so a missing key fails at start-up, not at the first call.
    pub fn new(source: CredentialSource, http: reqwest::Client) -> Result<Self, CredentialError> {
        let cached = match &source {
            CredentialSource::Static(c) => Some(c.clone()),
            CredentialSource::Env => Some(from_env()?),
            CredentialSource::File { path, profile } => Some(from_file(path, profile)?),
            CredentialSource::RamRole { .. } | CredentialSource::Oidc(_) => None,
        };
        let cached = cached.map(|credentials| Cached { credentials, plan: None });
        Ok(Self { source, http, cached: Mutex::new(cached) })
    }

    /// The source.
    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// Current credentials: cached ones until their refresh time, then one
    /// refresh; if it fails while the cached keys still work, those are
    /// returned and the refresh is tried again after a pause.
    pub async fn get(&self) -> Result<Credentials, CredentialError> {
        let mut cached = self.cached.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(c) = cached.as_mut() {
            match &c.plan {
                None => return Ok(c.credentials.clone()),
                Some(plan) if !plan.due(now) => return Ok(c.credentials.clone()),
                Some(_) => {}
            }
        }
        match self.fetch().await {
            Ok(fresh) => {
                let credentials = fresh.credentials.clone();
                let plan = RefreshPlan::for_keys(now, fresh.expires);
                tracing::info!(source = self.source.kind(), key = %credentials.access_key_id, expires = %fresh.expires, "fetched temporary credentials");
                *cached = Some(Cached { credentials: credentials.clone(), plan: Some(plan) });
                Ok(credentials)
            }
            Err(e) => match cached.as_mut() {
                Some(Cached { credentials, plan: Some(plan) }) if now < plan.expires => {
                    let retry = retry_after_failure(now, plan.expires);
                    tracing::warn!(source = self.source.kind(), error = %e, retry_at = %retry, expires = %plan.expires, "refreshing credentials failed; the current ones still work");
                    plan.refresh_at = retry;
                    Ok(credentials.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// The cloud said `access_key_id` no longer works (an expired or revoked
    /// token): the next [`Self::get`] refreshes, if that key is still cached.
    pub async fn refused(&self, access_key_id: &str) {
        let mut cached = self.cached.lock().await;
        if let Some(Cached { credentials, plan: Some(plan) }) = cached.as_mut()
            && credentials.access_key_id == access_key_id
        {
            plan.refresh_at = OffsetDateTime::now_utc();
        }
    }

    async fn fetch(&self) -> Result<Temporary, CredentialError> {
        match &self.source {
            CredentialSource::RamRole { metadata_url, role } => {
                super::ram_role::fetch(&self.http, metadata_url, role.as_deref()).await
            }
            CredentialSource::Oidc(role) => super::sts::assume_role_with_oidc(&self.http, role).await,
            CredentialSource::Static(_) | CredentialSource::Env | CredentialSource::File { .. } => {
                unreachable!("long-lived keys are read once in new()")
            }
        }
    }
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
