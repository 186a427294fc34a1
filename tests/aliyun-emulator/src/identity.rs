//! The emulator's identity side: the key store with expiries, STS's
//! `AssumeRoleWithOIDC` (RRSA), and the RAM role the metadata stand-in
//! hands out. Every request signed with a temporary key is checked against
//! its expiry, as the cloud does (`InvalidSecurityToken.Expired`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use eni_ipam_cloud::alibaba::Credentials;
use eni_ipam_cloud::alibaba::sign::format_timestamp;
use eni_ipam_cloud::alibaba::sts::STS_VERSION;
use serde_json::Value;
use time::OffsetDateTime;

use crate::params::ApiError;

/// The RRSA trust the test sets up: which token, role and provider STS accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrsaTrust {
    /// The OIDC token STS accepts (what the test wrote into the token file).
    pub oidc_token: String,
    /// The role that trusts the provider.
    pub role_arn: String,
    /// The OIDC provider.
    pub provider_arn: String,
}

/// A key the emulator accepts, and until when.
#[derive(Clone, Debug)]
struct Key {
    credentials: Credentials,
    expires: Option<OffsetDateTime>,
}

/// The RAM role the metadata stand-in serves, rotated before expiry as ECS does.
#[derive(Debug)]
struct ServedRole {
    name: String,
    current: Mutex<Option<(Credentials, OffsetDateTime, OffsetDateTime)>>,
}

/// What the identity side did, for assertions.
#[derive(Debug, Default)]
pub struct IdentityCounts {
    /// AssumeRoleWithOIDC calls answered (success or not).
    pub sts_calls: AtomicU64,
    /// Of them, keys issued.
    pub sts_issued: AtomicU64,
    /// Metadata fetches of the role's keys.
    pub metadata_fetches: AtomicU64,
    /// Requests refused because their temporary key had expired.
    pub expired_refusals: AtomicU64,
}

/// Keys, STS and the metadata role.
#[derive(Debug, Default)]
pub struct Identity {
    keys: Mutex<HashMap<String, Key>>,
    rrsa: Option<RrsaTrust>,
    role: Option<ServedRole>,
    /// Lifetime of issued keys, whatever DurationSeconds asks (a test knob;
    /// the cloud's shortest is 900 s).
    lifetime_override: Option<Duration>,
    /// Counters.
    pub counts: IdentityCounts,
}

/// STS's bounds on DurationSeconds (the role's maximum session may be lower).
const DURATION_RANGE: std::ops::RangeInclusive<u64> = 900..=43_200;
/// Lifetime of RAM role keys when not overridden.
const ROLE_LIFETIME: Duration = Duration::from_secs(3600);

fn random_key() -> Credentials {
    let hex = || uuid::Uuid::new_v4().simple().to_string();
    Credentials {
        access_key_id: format!("STS.emulated{}", &hex()[..16]),
        access_key_secret: hex(),
        security_token: Some(format!("CAIS{}{}", hex(), hex())),
    }
}

impl Identity {
    /// Long-lived AccessKeys only.
    pub fn new(access_keys: Vec<Credentials>) -> Self {
        let keys = access_keys
            .into_iter()
            .map(|c| (c.access_key_id.clone(), Key { credentials: c, expires: None }))
            .collect();
        Self { keys: Mutex::new(keys), ..Self::default() }
    }

    /// Also answers AssumeRoleWithOIDC for this trust.
    pub fn with_rrsa(mut self, trust: RrsaTrust) -> Self {
        self.rrsa = Some(trust);
        self
    }

    /// Also serves this RAM role on the metadata paths.
    pub fn with_ram_role(mut self, name: &str) -> Self {
        self.role = Some(ServedRole { name: name.to_owned(), current: Mutex::new(None) });
        self
    }

    /// Issued keys live this long.
    pub fn with_lifetime(mut self, lifetime: Option<Duration>) -> Self {
        self.lifetime_override = lifetime;
        self
    }

    /// The key with this id, if known (expired or not).
    pub fn key(&self, id: &str) -> Option<Credentials> {
        self.keys.lock().expect("keys lock").get(id).map(|k| k.credentials.clone())
    }

    /// Refuses a request signed with an expired temporary key.
    pub fn check_expiry(&self, id: &str, now: OffsetDateTime) -> Result<(), ApiError> {
        let expires = self.keys.lock().expect("keys lock").get(id).and_then(|k| k.expires);
        match expires {
            Some(at) if now >= at => {
                self.counts.expired_refusals.fetch_add(1, Ordering::Relaxed);
                Err(ApiError {
                    code: "InvalidSecurityToken.Expired".into(),
                    status: 400,
                    message: format!(
                        "the security token of AccessKey '{id}' expired at {}: fetch new STS credentials",
                        format_timestamp(at)
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    fn issue(&self, lifetime: Duration, now: OffsetDateTime) -> (Credentials, OffsetDateTime) {
        let credentials = random_key();
        let expires = now + lifetime;
        let key = Key { credentials: credentials.clone(), expires: Some(expires) };
        self.keys.lock().expect("keys lock").insert(credentials.access_key_id.clone(), key);
        (credentials, expires)
    }

    /// STS `AssumeRoleWithOIDC` (anonymous: the OIDC token is the proof).
    pub fn assume_role_with_oidc(
        &self,
        params: &[(String, String)],
        now: OffsetDateTime,
    ) -> Result<Value, ApiError> {
        self.counts.sts_calls.fetch_add(1, Ordering::Relaxed);
        let get = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let need = |name: &str| {
            get(name).filter(|v| !v.is_empty()).ok_or_else(|| ApiError {
                code: format!("Missing{name}"),
                status: 400,
                message: format!("{name} is mandatory for this action"),
            })
        };
        let refuse = |code: &str, message: String| ApiError { code: code.into(), status: 401, message };
        if get("Version") != Some(STS_VERSION) {
            return Err(ApiError::new("InvalidVersion", format!("STS is served for version {STS_VERSION}")));
        }
        let (token, role, provider) = (need("OIDCToken")?, need("RoleArn")?, need("OIDCProviderArn")?);
        let session = need("RoleSessionName")?;
        let Some(trust) = &self.rrsa else {
            return Err(refuse(
                "AuthenticationFail.NoPermission",
                "no OIDC provider is registered (start the emulator with --rrsa-*)".into(),
            ));
        };
        if provider != trust.provider_arn {
            return Err(refuse(
                "AuthenticationFail.NoPermission",
                format!("OIDC provider '{provider}' is not registered"),
            ));
        }
        if role != trust.role_arn {
            return Err(refuse(
                "AuthenticationFail.NoPermission",
                format!("role '{role}' does not trust provider '{provider}'"),
            ));
        }
        if token.trim() != trust.oidc_token {
            return Err(refuse(
                "AuthenticationFail.OIDCToken.Invalid",
                "the OIDC token is not one the provider issued".into(),
            ));
        }
        let asked: u64 = get("DurationSeconds").unwrap_or("3600").parse().map_err(|_| {
            ApiError::new(
                "InvalidParameter.DurationSeconds",
                "DurationSeconds must be a whole number of seconds",
            )
        })?;
        if !DURATION_RANGE.contains(&asked) {
            return Err(ApiError::new(
                "InvalidParameter.DurationSeconds",
                format!("DurationSeconds {asked} is outside 900..=43200"),
            ));
        }
        let lifetime = self.lifetime_override.unwrap_or(Duration::from_secs(asked));
        let (c, expires) = self.issue(lifetime, now);
        self.counts.sts_issued.fetch_add(1, Ordering::Relaxed);
        Ok(serde_json::json!({
            "Credentials": {
                "AccessKeyId": c.access_key_id,
                "AccessKeySecret": c.access_key_secret,
                "SecurityToken": c.security_token,
                "Expiration": format_timestamp(expires),
            },
            "AssumedRoleUser": {"Arn": format!("{role}/{session}"), "AssumedRoleId": format!("3{}:{session}", &c.access_key_id[12..])},
            "OIDCTokenInfo": {"Issuer": "emulated", "Subject": "system:serviceaccount:emulated"},
        }))
    }

    /// The served role's name.
    pub fn role_name(&self) -> Option<&str> {
        self.role.as_ref().map(|r| r.name.as_str())
    }

    /// The metadata document for `name`: the current keys, new ones once
    /// two thirds of their life has passed (ECS renews well before expiry).
    pub fn role_document(&self, name: &str, now: OffsetDateTime) -> Option<Value> {
        let role = self.role.as_ref().filter(|r| r.name == name)?;
        self.counts.metadata_fetches.fetch_add(1, Ordering::Relaxed);
        let lifetime = self.lifetime_override.unwrap_or(ROLE_LIFETIME);
        let mut current = role.current.lock().expect("role lock");
        let stale =
            current.as_ref().is_none_or(|(_, issued, expires)| now >= *issued + (*expires - *issued) * 2 / 3);
        if stale {
            let (c, expires) = self.issue(lifetime, now);
            *current = Some((c, now, expires));
        }
        let (c, issued, expires) = current.as_ref().expect("just set");
        Some(serde_json::json!({
            "AccessKeyId": c.access_key_id,
            "AccessKeySecret": c.access_key_secret,
            "SecurityToken": c.security_token,
            "Expiration": format_timestamp(*expires),
            "LastUpdated": format_timestamp(*issued),
            "Code": "Success",
        }))
    }

    /// Counters for the state dump.
    pub fn dump(&self) -> Value {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "sts_calls": n(&self.counts.sts_calls),
            "sts_issued": n(&self.counts.sts_issued),
            "metadata_fetches": n(&self.counts.metadata_fetches),
            "expired_refusals": n(&self.counts.expired_refusals),
        })
    }
}
