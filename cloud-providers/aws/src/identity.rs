//! Which AWS identity the SDK's default chain will use, read from the same
//! environment, so the operator can say it at start-up and refuse a half
//! configuration the chain would silently skip (IRSA's role without its token
//! file falls through to the node's instance role: the wrong permissions,
//! found late). The chain itself stays the SDK's: environment keys, shared
//! profile, web identity (IRSA), container credentials (EKS Pod Identity),
//! then the instance role.

/// IRSA: the projected service account token.
pub const ENV_WEB_IDENTITY_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
/// IRSA: the role to assume.
pub const ENV_ROLE_ARN: &str = "AWS_ROLE_ARN";
/// EKS Pod Identity (and other container credential agents): the agent's URL.
pub const ENV_CONTAINER_FULL_URI: &str = "AWS_CONTAINER_CREDENTIALS_FULL_URI";
/// ECS task roles: a path under 169.254.170.2.
pub const ENV_CONTAINER_RELATIVE_URI: &str = "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI";
/// EKS Pod Identity: the token presented to the agent.
pub const ENV_CONTAINER_TOKEN_FILE: &str = "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE";
/// Static keys.
pub const ENV_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
/// Static keys.
pub const ENV_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
/// A named profile of the shared files.
pub const ENV_PROFILE: &str = "AWS_PROFILE";
/// Turns the instance metadata service off.
pub const ENV_EC2_METADATA_DISABLED: &str = "AWS_EC2_METADATA_DISABLED";

/// The identity the default chain picks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AwsIdentity {
    /// Keys given to the operator (tests, flags).
    Static,
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    EnvironmentKeys,
    /// A profile of the shared config files.
    Profile(String),
    /// IRSA: `AssumeRoleWithWebIdentity` with the token file.
    WebIdentity {
        /// The role.
        role_arn: String,
    },
    /// EKS Pod Identity (full URI and token file) or an ECS task role.
    ContainerCredentials {
        /// The agent's URL, or the relative path.
        uri: String,
    },
    /// The node's instance profile, from IMDS.
    InstanceRole,
}

impl std::fmt::Display for AwsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static => write!(f, "static keys"),
            Self::EnvironmentKeys => write!(f, "keys from {ENV_ACCESS_KEY_ID}"),
            Self::Profile(p) => write!(f, "shared profile {p}"),
            Self::WebIdentity { role_arn } => write!(f, "IRSA web identity, role {role_arn}"),
            Self::ContainerCredentials { uri } => {
                write!(f, "container credentials (EKS Pod Identity) at {uri}")
            }
            Self::InstanceRole => write!(f, "the instance role (IMDS)"),
        }
    }
}

/// The environment cannot give credentials.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AwsIdentityError {
    /// One identity's settings are partly there.
    #[error("{identity} is half configured: {} not set; set {}, or remove the rest", .missing.join(", "), if .missing.len() == 1 { "it" } else { "them" })]
    Incomplete {
        /// Which identity.
        identity: &'static str,
        /// What is missing.
        missing: Vec<&'static str>,
    },
    /// Nothing at all, and IMDS is off.
    #[error(
        "no AWS identity is configured and {ENV_EC2_METADATA_DISABLED} is set: annotate the service account for \
         IRSA (eks.amazonaws.com/role-arn), associate it with EKS Pod Identity, or set {ENV_ACCESS_KEY_ID} and \
         {ENV_SECRET_ACCESS_KEY}; see docs/operations.md"
    )]
    NoneConfigured,
}

/// What the chain will use, given the environment (`env(name)`, empty is unset).
pub fn identity_of(
    static_keys: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<AwsIdentity, AwsIdentityError> {
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if static_keys {
        return Ok(AwsIdentity::Static);
    }
    match (var(ENV_ACCESS_KEY_ID), var(ENV_SECRET_ACCESS_KEY)) {
        (Some(_), Some(_)) => return Ok(AwsIdentity::EnvironmentKeys),
        (None, None) => {}
        (id, _) => {
            let missing = if id.is_some() { ENV_SECRET_ACCESS_KEY } else { ENV_ACCESS_KEY_ID };
            return Err(AwsIdentityError::Incomplete {
                identity: "the environment's AccessKey",
                missing: vec![missing],
            });
        }
    }
    if let Some(profile) = var(ENV_PROFILE) {
        return Ok(AwsIdentity::Profile(profile));
    }
    match (var(ENV_WEB_IDENTITY_TOKEN_FILE), var(ENV_ROLE_ARN)) {
        (Some(_), Some(role_arn)) => return Ok(AwsIdentity::WebIdentity { role_arn }),
        (None, None) => {}
        (file, _) => {
            let missing = if file.is_some() { ENV_ROLE_ARN } else { ENV_WEB_IDENTITY_TOKEN_FILE };
            return Err(AwsIdentityError::Incomplete { identity: "IRSA", missing: vec![missing] });
        }
    }
    if let Some(uri) = var(ENV_CONTAINER_RELATIVE_URI) {
        return Ok(AwsIdentity::ContainerCredentials { uri });
    }
    if let Some(uri) = var(ENV_CONTAINER_FULL_URI) {
        return Ok(AwsIdentity::ContainerCredentials { uri });
    }
    if var(ENV_CONTAINER_TOKEN_FILE).is_some() {
        return Err(AwsIdentityError::Incomplete {
            identity: "EKS Pod Identity",
            missing: vec![ENV_CONTAINER_FULL_URI],
        });
    }
    if var(ENV_EC2_METADATA_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(AwsIdentityError::NoneConfigured);
    }
    Ok(AwsIdentity::InstanceRole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(static_keys: bool, vars: &[(&str, &str)]) -> String {
        let env = |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
        match identity_of(static_keys, &env) {
            Ok(identity) => identity.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn which_identity_the_chain_uses() {
        const KEY: (&str, &str) = (ENV_ACCESS_KEY_ID, "AKID");
        const SECRET: (&str, &str) = (ENV_SECRET_ACCESS_KEY, "s");
        const TOKEN: (&str, &str) =
            (ENV_WEB_IDENTITY_TOKEN_FILE, "/var/run/secrets/eks.amazonaws.com/serviceaccount/token");
        const ROLE: (&str, &str) = (ENV_ROLE_ARN, "arn:aws:iam::1:role/eni-ipam");
        const POD_URI: (&str, &str) = (ENV_CONTAINER_FULL_URI, "http://169.254.170.23/v1/credentials");
        const POD_TOKEN: (&str, &str) = (
            ENV_CONTAINER_TOKEN_FILE,
            "/var/run/secrets/pods.eks.amazonaws.com/serviceaccount/eks-pod-identity-token",
        );
        const NO_IMDS: (&str, &str) = (ENV_EC2_METADATA_DISABLED, "true");
        type Row<'a> = (bool, &'a [(&'a str, &'a str)], &'a str);
        let rows: &[Row] = &[
            (true, &[KEY, SECRET, TOKEN, ROLE], "static keys"),
            (false, &[KEY, SECRET, TOKEN, ROLE], "keys from AWS_ACCESS_KEY_ID"),
            (
                false,
                &[TOKEN, ROLE, POD_URI, POD_TOKEN],
                "IRSA web identity, role arn:aws:iam::1:role/eni-ipam",
            ),
            (
                false,
                &[POD_URI, POD_TOKEN],
                "container credentials (EKS Pod Identity) at http://169.254.170.23/v1/credentials",
            ),
            (false, &[(ENV_PROFILE, "ops"), TOKEN, ROLE], "shared profile ops"),
            (false, &[], "the instance role (IMDS)"),
            (false, &[NO_IMDS], "error: no AWS identity is configured"),
            (false, &[ROLE], "error: IRSA is half configured: AWS_WEB_IDENTITY_TOKEN_FILE not set"),
            (false, &[TOKEN, NO_IMDS], "error: IRSA is half configured: AWS_ROLE_ARN not set"),
            (
                false,
                &[POD_TOKEN],
                "error: EKS Pod Identity is half configured: AWS_CONTAINER_CREDENTIALS_FULL_URI not set",
            ),
            (
                false,
                &[KEY, TOKEN, ROLE],
                "error: the environment's AccessKey is half configured: AWS_SECRET_ACCESS_KEY not set",
            ),
            (false, &[(ENV_ROLE_ARN, " "), NO_IMDS], "error: no AWS identity is configured"),
        ];
        for (static_keys, vars, want) in rows {
            let got = run(*static_keys, vars);
            assert!(got.starts_with(want), "{vars:?}: got '{got}', want '{want}'");
        }
    }

    #[test]
    fn the_none_configured_error_names_every_way_out() {
        let e = run(false, &[(ENV_EC2_METADATA_DISABLED, "true")]);
        for needle in ["eks.amazonaws.com/role-arn", "Pod Identity", ENV_ACCESS_KEY_ID] {
            assert!(e.contains(needle), "{e}");
        }
    }
}
