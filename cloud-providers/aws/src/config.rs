//! Building the EC2 client: region, endpoint, credentials the AWS way, the
//! SDK's own retries off (the shared `CallGuard` is the one retry policy),
//! bounded timeouts, and ring as the one TLS provider.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_ec2::config::{Credentials, Region};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use eni_ipam_cloud::InstanceLimits;

/// Where and how to reach EC2.
#[derive(Clone, Debug, Default)]
pub struct AwsConfig {
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Endpoint URL (moto, a VPC endpoint); `None` for EC2's own.
    pub endpoint: Option<String>,
    /// Static credentials (access key id, secret); `None` for the default
    /// chain: environment, shared profile, web identity, instance role.
    pub static_credentials: Option<(String, String)>,
    /// Limits for instance types EC2 does not describe (or to override it).
    pub limits_override: BTreeMap<String, InstanceLimits>,
    /// Timeout of one call, connect included.
    pub call_timeout: Duration,
}

impl AwsConfig {
    /// A config for a region with the default timeouts.
    pub fn for_region(region: &str) -> Self {
        Self { region: region.to_owned(), call_timeout: Duration::from_secs(20), ..Self::default() }
    }
}

/// The configuration cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AwsSetupError {
    /// Not a region name.
    #[error("'{0}' is not an AWS region name (like us-east-1); fix --aws-region")]
    BadRegion(String),
    /// Not a URL.
    #[error("'{0}' is not an http(s) URL; fix --aws-endpoint")]
    BadEndpoint(String),
}

/// `xx-name-N` or `xx-gov-name-N`: a check of form, not a list of regions.
fn looks_like_region(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()))
        && parts.last().is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// The endpoint the client talks to, for messages.
pub fn endpoint_of(config: &AwsConfig) -> String {
    config.endpoint.clone().unwrap_or_else(|| format!("https://ec2.{}.amazonaws.com", config.region))
}

/// Builds the SDK client.
pub async fn sdk_client(config: &AwsConfig) -> Result<aws_sdk_ec2::Client, AwsSetupError> {
    if !looks_like_region(&config.region) {
        return Err(AwsSetupError::BadRegion(config.region.clone()));
    }
    if let Some(url) = &config.endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(AwsSetupError::BadEndpoint(url.clone()));
    }
    let http =
        aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3).min(config.call_timeout))
        .operation_timeout(config.call_timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(config.region.clone()))
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts);
    if let Some(url) = &config.endpoint {
        loader = loader.endpoint_url(url);
    }
    if let Some((id, secret)) = &config.static_credentials {
        loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "eni-ipam-static"));
    }
    Ok(aws_sdk_ec2::Client::new(&loader.load().await))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_names_are_checked_for_form() {
        for ok in ["us-east-1", "eu-central-2", "us-gov-west-1", "ap-southeast-4"] {
            assert!(looks_like_region(ok), "{ok}");
        }
        for bad in ["", "useast1", "us-east", "US-EAST-1", "us-east-x", "moon-base-1"] {
            assert!(!looks_like_region(bad), "{bad}");
        }
    }
}
