//! What the operator configures to talk to Alibaba Cloud.

use std::time::Duration;

use super::credentials::CredentialSource;
use super::sign::SignatureVersion;

/// Alibaba provider settings.
#[derive(Clone, Debug)]
pub struct AlibabaConfig {
    /// Region id (`cn-hangzhou`).
    pub region: String,
    /// One endpoint for both ECS and VPC (an emulator, a private gateway);
    /// by default `https://ecs.<region>.aliyuncs.com` and `https://vpc.<region>.aliyuncs.com`.
    pub endpoint: Option<String>,
    /// Where the AccessKey comes from.
    pub credentials: CredentialSource,
    /// V3 (default) or V1 signatures.
    pub signature: SignatureVersion,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attach polling: give up waiting for `InUse` after this long.
    pub attach_timeout: Duration,
}

impl AlibabaConfig {
    /// Defaults: public endpoints of `region`, V3, 10 s per request, 60 s per attach.
    pub fn new(region: impl Into<String>, credentials: CredentialSource) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            credentials,
            signature: SignatureVersion::V3,
            timeout: Duration::from_secs(10),
            attach_timeout: Duration::from_secs(60),
        }
    }

    /// The same, against one endpoint for both products.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// ECS endpoint URL.
    pub fn ecs_endpoint(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| format!("https://ecs.{}.aliyuncs.com", self.region))
    }

    /// VPC endpoint URL.
    pub fn vpc_endpoint(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| format!("https://vpc.{}.aliyuncs.com", self.region))
    }
}
