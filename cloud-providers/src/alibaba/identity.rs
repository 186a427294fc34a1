//! Which identity the operator uses on Alibaba Cloud, from its flags and the
//! environment: an AccessKey, RRSA (ACK's pod identity: an OIDC token
//! exchanged at STS) or the instance's RAM role. A pure choice over
//! [`IdentityInputs`] (read from the environment at the edge), tested by a
//! table; anything half configured is an error that names what is missing.

use std::path::PathBuf;
use std::time::Duration;

use super::credentials::{
    CredentialSource, Credentials, ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN, OidcRole,
};

/// RRSA: the projected service account token (set by ACK's pod identity webhook).
pub const ENV_OIDC_TOKEN_FILE: &str = "ALIBABA_CLOUD_OIDC_TOKEN_FILE";
/// RRSA: the RAM role to assume.
pub const ENV_ROLE_ARN: &str = "ALIBABA_CLOUD_ROLE_ARN";
/// RRSA: the cluster's OIDC provider.
pub const ENV_OIDC_PROVIDER_ARN: &str = "ALIBABA_CLOUD_OIDC_PROVIDER_ARN";
/// RRSA: session name (optional).
pub const ENV_ROLE_SESSION_NAME: &str = "ALIBABA_CLOUD_ROLE_SESSION_NAME";
/// Name of the instance RAM role, as Alibaba's SDKs read it.
pub const ENV_ECS_METADATA: &str = "ALIBABA_CLOUD_ECS_METADATA";
/// Session name when none is set.
pub const DEFAULT_SESSION_NAME: &str = "eni-ipam-operator";

/// Which identity to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IdentityMode {
    /// The first configured of: AccessKey, RRSA, a named RAM role (the SDKs' order).
    #[default]
    Auto,
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID` / `..._SECRET` (a Secret).
    AccessKey,
    /// RRSA: `ALIBABA_CLOUD_OIDC_TOKEN_FILE`, `..._ROLE_ARN`, `..._OIDC_PROVIDER_ARN`.
    Rrsa,
    /// The node's RAM role from the metadata service.
    RamRole,
}

impl std::str::FromStr for IdentityMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "access-key" => Ok(Self::AccessKey),
            "rrsa" => Ok(Self::Rrsa),
            "ram-role" => Ok(Self::RamRole),
            other => Err(format!("unknown identity '{other}': use auto, access-key, rrsa or ram-role")),
        }
    }
}

/// What the environment and the flags hold about identity; empty is unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityInputs {
    /// `ALIBABA_CLOUD_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `ALIBABA_CLOUD_ACCESS_KEY_SECRET`.
    pub access_key_secret: Option<String>,
    /// `ALIBABA_CLOUD_SECURITY_TOKEN`.
    pub security_token: Option<String>,
    /// `ALIBABA_CLOUD_OIDC_TOKEN_FILE`.
    pub oidc_token_file: Option<PathBuf>,
    /// `ALIBABA_CLOUD_ROLE_ARN`.
    pub role_arn: Option<String>,
    /// `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`.
    pub oidc_provider_arn: Option<String>,
    /// `ALIBABA_CLOUD_ROLE_SESSION_NAME`.
    pub role_session_name: Option<String>,
    /// The RAM role name (`--alibaba-ram-role`, else `ALIBABA_CLOUD_ECS_METADATA`).
    pub ram_role: Option<String>,
}

impl IdentityInputs {
    /// Reads the environment; `ram_role` is the flag's value, over the environment's.
    pub fn from_env(ram_role: Option<String>) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        Self {
            access_key_id: var(ENV_ACCESS_KEY_ID),
            access_key_secret: var(ENV_ACCESS_KEY_SECRET),
            security_token: var(ENV_SECURITY_TOKEN),
            oidc_token_file: var(ENV_OIDC_TOKEN_FILE).map(PathBuf::from),
            role_arn: var(ENV_ROLE_ARN),
            oidc_provider_arn: var(ENV_OIDC_PROVIDER_ARN),
            role_session_name: var(ENV_ROLE_SESSION_NAME),
            ram_role: ram_role.filter(|r| !r.trim().is_empty()).or_else(|| var(ENV_ECS_METADATA)),
        }
    }

    fn has_access_key(&self) -> bool {
        self.access_key_id.is_some() || self.access_key_secret.is_some()
    }

    fn has_rrsa(&self) -> bool {
        self.oidc_token_file.is_some() || self.role_arn.is_some() || self.oidc_provider_arn.is_some()
    }
}

/// Where the temporary-key services answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentitySettings {
    /// The chosen mode.
    pub mode: IdentityMode,
    /// STS endpoint URL for RRSA.
    pub sts_endpoint: String,
    /// Base URL of the metadata service for the RAM role.
    pub metadata_url: String,
    /// Lifetime asked of STS.
    pub sts_duration: Duration,
}

/// No usable identity.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Some of one identity's settings are there, not all.
    #[error("the {identity} identity is half configured: {} not set; set {} too, or remove the others", .missing.join(", "), if .missing.len() == 1 { "it" } else { "them" })]
    Incomplete {
        /// Which identity.
        identity: &'static str,
        /// The environment variables missing.
        missing: Vec<&'static str>,
    },
    /// Nothing is configured.
    #[error(
        "no Alibaba Cloud identity is configured: set {ENV_ACCESS_KEY_ID} and {ENV_ACCESS_KEY_SECRET} (AccessKey), \
         or {ENV_ROLE_ARN}, {ENV_OIDC_PROVIDER_ARN} and {ENV_OIDC_TOKEN_FILE} (RRSA), or name the instance RAM role \
         with --alibaba-ram-role; see docs/operations.md"
    )]
    NoneConfigured,
}

/// The credential source for `settings.mode`, given `inputs`.
pub fn choose(
    settings: &IdentitySettings,
    inputs: &IdentityInputs,
) -> Result<CredentialSource, IdentityError> {
    match settings.mode {
        IdentityMode::AccessKey => access_key(inputs),
        IdentityMode::Rrsa => rrsa(settings, inputs),
        IdentityMode::RamRole => Ok(ram_role(settings, inputs)),
        IdentityMode::Auto if inputs.has_access_key() => access_key(inputs),
        IdentityMode::Auto if inputs.has_rrsa() => rrsa(settings, inputs),
        IdentityMode::Auto if inputs.ram_role.is_some() => Ok(ram_role(settings, inputs)),
        IdentityMode::Auto => Err(IdentityError::NoneConfigured),
    }
}

fn missing(pairs: &[(&'static str, bool)]) -> Vec<&'static str> {
    pairs.iter().filter(|(_, present)| !present).map(|(name, _)| *name).collect()
}

fn access_key(inputs: &IdentityInputs) -> Result<CredentialSource, IdentityError> {
    match (&inputs.access_key_id, &inputs.access_key_secret) {
        (Some(id), Some(secret)) => Ok(CredentialSource::Static(Credentials {
            access_key_id: id.clone(),
            access_key_secret: secret.clone(),
            security_token: inputs.security_token.clone(),
        })),
        (id, secret) => Err(IdentityError::Incomplete {
            identity: "AccessKey",
            missing: missing(&[(ENV_ACCESS_KEY_ID, id.is_some()), (ENV_ACCESS_KEY_SECRET, secret.is_some())]),
        }),
    }
}

fn rrsa(settings: &IdentitySettings, inputs: &IdentityInputs) -> Result<CredentialSource, IdentityError> {
    match (&inputs.oidc_token_file, &inputs.role_arn, &inputs.oidc_provider_arn) {
        (Some(file), Some(role), Some(provider)) => Ok(CredentialSource::Oidc(OidcRole {
            token_file: file.clone(),
            role_arn: role.clone(),
            provider_arn: provider.clone(),
            session_name: inputs.role_session_name.clone().unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned()),
            sts_endpoint: settings.sts_endpoint.clone(),
            duration: settings.sts_duration,
        })),
        (file, role, provider) => Err(IdentityError::Incomplete {
            identity: "RRSA",
            missing: missing(&[
                (ENV_OIDC_TOKEN_FILE, file.is_some()),
                (ENV_ROLE_ARN, role.is_some()),
                (ENV_OIDC_PROVIDER_ARN, provider.is_some()),
            ]),
        }),
    }
}

fn ram_role(settings: &IdentitySettings, inputs: &IdentityInputs) -> CredentialSource {
    CredentialSource::RamRole { metadata_url: settings.metadata_url.clone(), role: inputs.ram_role.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STS: &str = "https://sts-vpc.cn-beijing.aliyuncs.com";
    const META: &str = "http://100.100.100.200";

    fn settings(mode: IdentityMode) -> IdentitySettings {
        IdentitySettings {
            mode,
            sts_endpoint: STS.into(),
            metadata_url: META.into(),
            sts_duration: Duration::from_secs(3600),
        }
    }

    /// Inputs from a compact spec: `k` key id, `s` secret, `f` token file, `r` role ARN, `p` provider ARN, `m` RAM role.
    fn inputs(spec: &str) -> IdentityInputs {
        let has = |c| spec.contains(c);
        IdentityInputs {
            access_key_id: has('k').then(|| "LTAIkey".into()),
            access_key_secret: has('s').then(|| "secret".into()),
            security_token: None,
            oidc_token_file: has('f')
                .then(|| PathBuf::from("/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token")),
            role_arn: has('r').then(|| "acs:ram::1:role/eni-ipam".into()),
            oidc_provider_arn: has('p').then(|| "acs:ram::1:oidc-provider/ack-rrsa-c1".into()),
            role_session_name: None,
            ram_role: has('m').then(|| "node-role".into()),
        }
    }

    fn outcome(result: Result<CredentialSource, IdentityError>) -> String {
        match result {
            Ok(CredentialSource::Static(c)) => format!("access-key {}", c.access_key_id),
            Ok(CredentialSource::Oidc(o)) => format!("rrsa {} via {}", o.role_arn, o.sts_endpoint),
            Ok(CredentialSource::RamRole { metadata_url, role }) => {
                format!("ram-role {} at {metadata_url}", role.as_deref().unwrap_or("<asked>"))
            }
            Ok(other) => format!("{other:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn which_identity_wins() {
        use IdentityMode::*;
        let rrsa_ok = format!("rrsa acs:ram::1:role/eni-ipam via {STS}");
        let rows: [(IdentityMode, &str, &str); 13] = [
            // auto: AccessKey, then RRSA, then a named RAM role (the SDKs' order)
            (Auto, "ks", "access-key LTAIkey"),
            (Auto, "ksfrpm", "access-key LTAIkey"),
            (Auto, "frp", &rrsa_ok),
            (Auto, "frpm", &rrsa_ok),
            (Auto, "m", "ram-role node-role at http://100.100.100.200"),
            (Auto, "", "error: no Alibaba Cloud identity is configured"),
            // half configured: named, never skipped
            (
                Auto,
                "k",
                "error: the AccessKey identity is half configured: ALIBABA_CLOUD_ACCESS_KEY_SECRET not set",
            ),
            (
                Auto,
                "rm",
                "error: the RRSA identity is half configured: ALIBABA_CLOUD_OIDC_TOKEN_FILE, ALIBABA_CLOUD_OIDC_PROVIDER_ARN not set",
            ),
            // explicit modes take only their own settings
            (
                AccessKey,
                "frp",
                "error: the AccessKey identity is half configured: ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET not set",
            ),
            (Rrsa, "ksfrp", &rrsa_ok),
            (
                Rrsa,
                "ks",
                "error: the RRSA identity is half configured: ALIBABA_CLOUD_OIDC_TOKEN_FILE, ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN not set",
            ),
            (RamRole, "ks", "ram-role <asked> at http://100.100.100.200"),
            (RamRole, "m", "ram-role node-role at http://100.100.100.200"),
        ];
        for (mode, spec, want) in rows {
            let got = outcome(choose(&settings(mode), &inputs(spec)));
            assert!(got.starts_with(want), "{mode:?} with '{spec}': got '{got}', want '{want}'");
        }
    }

    #[test]
    fn rrsa_carries_the_session_name_and_duration() {
        let mut i = inputs("frp");
        i.role_session_name = Some("audit-me".into());
        let Ok(CredentialSource::Oidc(role)) = choose(&settings(IdentityMode::Rrsa), &i) else {
            panic!("rrsa")
        };
        assert_eq!((role.session_name.as_str(), role.duration.as_secs()), ("audit-me", 3600));
        let Ok(CredentialSource::Oidc(role)) = choose(&settings(IdentityMode::Rrsa), &inputs("frp")) else {
            panic!("rrsa")
        };
        assert_eq!(role.session_name, DEFAULT_SESSION_NAME);
    }

    #[test]
    fn the_none_configured_error_says_every_way_out() {
        let e = choose(&settings(IdentityMode::Auto), &IdentityInputs::default()).unwrap_err().to_string();
        for needle in [ENV_ACCESS_KEY_ID, ENV_ROLE_ARN, ENV_OIDC_TOKEN_FILE, "--alibaba-ram-role"] {
            assert!(e.contains(needle), "{e}");
        }
        assert_eq!("ram-role".parse::<IdentityMode>(), Ok(IdentityMode::RamRole));
        assert!("irsa".parse::<IdentityMode>().unwrap_err().contains("rrsa"));
    }
}
