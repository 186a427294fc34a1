//! What the operator configures to talk to Alibaba Cloud: region, endpoints
//! (public or VPC-internal, or explicit ones), credentials, signature.

use std::time::Duration;

use super::credentials::CredentialSource;
use super::sign::SignatureVersion;

/// Which network the regional endpoints are on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EndpointKind {
    /// `<product>.<region>.aliyuncs.com`, over the Internet (or NAT).
    #[default]
    Public,
    /// `<product>-vpc.<region>.aliyuncs.com`, reachable only from inside a VPC of the region.
    Vpc,
}

impl std::str::FromStr for EndpointKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "public" => Ok(Self::Public),
            "vpc" => Ok(Self::Vpc),
            other => Err(format!("unknown endpoint kind '{other}': use public or vpc")),
        }
    }
}

/// The regional endpoint of `product` (`ecs`, `vpc`, `sts`) on `kind`'s
/// network. The form is the one Alibaba's SDKs build (`<product><-network>.<region>.aliyuncs.com`,
/// network `vpc` for VPC-internal ones); see docs/operations.md.
pub fn regional_endpoint(product: &str, kind: EndpointKind, region: &str) -> String {
    match kind {
        EndpointKind::Public => format!("https://{product}.{region}.aliyuncs.com"),
        EndpointKind::Vpc => format!("https://{product}-vpc.{region}.aliyuncs.com"),
    }
}

/// ECS's largest DescribeInstanceTypes page (`MaxResults`), also its default.
pub const INSTANCE_TYPES_PAGE: u32 = 1600;

/// Alibaba provider settings.
#[derive(Clone, Debug)]
pub struct AlibabaConfig {
    /// Region id (`cn-hangzhou`).
    pub region: String,
    /// One endpoint for ECS, VPC and STS (an emulator, a private gateway).
    pub endpoint: Option<String>,
    /// The ECS endpoint, over `endpoint` and the regional one.
    pub ecs_endpoint: Option<String>,
    /// The VPC endpoint, over `endpoint` and the regional one.
    pub vpc_endpoint: Option<String>,
    /// Network of the regional endpoints.
    pub endpoint_kind: EndpointKind,
    /// Where the AccessKey comes from.
    pub credentials: CredentialSource,
    /// V3 (default) or V1 signatures.
    pub signature: SignatureVersion,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Attach polling: give up waiting for `InUse` after this long.
    pub attach_timeout: Duration,
    /// Instance types per DescribeInstanceTypes page: ECS's largest (1600);
    /// smaller only where a test wants several pages.
    pub instance_types_page: u32,
}

impl AlibabaConfig {
    /// Defaults: public endpoints of `region`, V3, 10 s per request, 60 s per attach.
    pub fn new(region: impl Into<String>, credentials: CredentialSource) -> Self {
        Self {
            region: region.into(),
            endpoint: None,
            ecs_endpoint: None,
            vpc_endpoint: None,
            endpoint_kind: EndpointKind::Public,
            credentials,
            signature: SignatureVersion::V3,
            timeout: Duration::from_secs(10),
            attach_timeout: Duration::from_secs(60),
            instance_types_page: INSTANCE_TYPES_PAGE,
        }
    }

    /// The same, against one endpoint for both products.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// ECS endpoint URL.
    pub fn ecs_endpoint(&self) -> String {
        self.ecs_endpoint
            .clone()
            .or_else(|| self.endpoint.clone())
            .unwrap_or_else(|| regional_endpoint("ecs", self.endpoint_kind, &self.region))
    }

    /// VPC endpoint URL.
    pub fn vpc_endpoint(&self) -> String {
        self.vpc_endpoint
            .clone()
            .or_else(|| self.endpoint.clone())
            .unwrap_or_else(|| regional_endpoint("vpc", self.endpoint_kind, &self.region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alibaba::Credentials;

    #[test]
    fn endpoints_follow_kind_unless_given() {
        let creds = CredentialSource::Static(Credentials::access_key("a", "b"));
        let mut c = AlibabaConfig::new("cn-beijing", creds);
        assert_eq!(c.ecs_endpoint(), "https://ecs.cn-beijing.aliyuncs.com");
        assert_eq!(c.vpc_endpoint(), "https://vpc.cn-beijing.aliyuncs.com");
        c.endpoint_kind = EndpointKind::Vpc;
        assert_eq!(c.ecs_endpoint(), "https://ecs-vpc.cn-beijing.aliyuncs.com");
        assert_eq!(c.vpc_endpoint(), "https://vpc-vpc.cn-beijing.aliyuncs.com");
        assert_eq!(
            regional_endpoint("sts", EndpointKind::Vpc, "cn-beijing"),
            "https://sts-vpc.cn-beijing.aliyuncs.com"
        );
        c = c.with_endpoint("http://127.0.0.1:9");
        assert_eq!(c.vpc_endpoint(), "http://127.0.0.1:9");
        c.ecs_endpoint = Some("https://ecs.internal.example".into());
        assert_eq!(
            (c.ecs_endpoint().as_str(), c.vpc_endpoint().as_str()),
            ("https://ecs.internal.example", "http://127.0.0.1:9")
        );
        assert!("private".parse::<EndpointKind>().unwrap_err().contains("public or vpc"));
    }
}
