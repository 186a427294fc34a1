//! Flags of the Alibaba Cloud identity and endpoints, shared by `run` and
//! `simulate --endpoint`, and the provider configuration they make. The
//! identity choice itself is the cloud crate's pure `identity::choose`.

use std::time::Duration;

use clap::Args;
use eni_ipam_api::duration::parse_duration;
use eni_ipam_cloud::alibaba::credentials::DEFAULT_METADATA_URL;
use eni_ipam_cloud::alibaba::identity::choose;
use eni_ipam_cloud::alibaba::{
    AlibabaConfig, EndpointKind, IdentityError, IdentityInputs, IdentityMode, IdentitySettings,
    regional_endpoint,
};

/// How the operator authenticates to Alibaba Cloud and which endpoints it calls.
#[derive(Debug, Args, Clone)]
pub struct AlibabaArgs {
    /// Identity: auto (an AccessKey from the environment, else RRSA's
    /// ALIBABA_CLOUD_ROLE_ARN / _OIDC_PROVIDER_ARN / _OIDC_TOKEN_FILE, else the
    /// RAM role named by --alibaba-ram-role), access-key, rrsa or ram-role.
    #[arg(long, env = "ENI_IPAM_ALIBABA_IDENTITY", default_value = "auto", value_parser = parse_mode)]
    pub alibaba_identity: IdentityMode,
    /// The node's RAM role (also ALIBABA_CLOUD_ECS_METADATA); with --alibaba-identity
    /// ram-role and no name, the metadata service is asked for it.
    #[arg(long, env = "ENI_IPAM_ALIBABA_RAM_ROLE")]
    pub alibaba_ram_role: Option<String>,
    /// Network of the regional endpoints: public (ecs.<region>.aliyuncs.com) or
    /// vpc (ecs-vpc.<region>.aliyuncs.com, vpc-vpc.., sts-vpc..; from inside the VPC only).
    #[arg(long, env = "ENI_IPAM_ALIBABA_ENDPOINT_KIND", default_value = "public", value_parser = parse_kind)]
    pub alibaba_endpoint_kind: EndpointKind,
    /// ECS API endpoint, over the regional one.
    #[arg(long, env = "ENI_IPAM_ALIBABA_ECS_ENDPOINT")]
    pub alibaba_ecs_endpoint: Option<String>,
    /// VPC API endpoint, over the regional one.
    #[arg(long, env = "ENI_IPAM_ALIBABA_VPC_ENDPOINT")]
    pub alibaba_vpc_endpoint: Option<String>,
    /// STS endpoint for RRSA, over the regional one (ack-pod-identity-webhook sets ALIBABA_CLOUD_STS_ENDPOINT).
    #[arg(long, env = "ALIBABA_CLOUD_STS_ENDPOINT")]
    pub alibaba_sts_endpoint: Option<String>,
    /// Base URL of the ECS metadata service (RAM role keys).
    #[arg(long, env = "ENI_IPAM_ALIBABA_METADATA_URL", default_value = DEFAULT_METADATA_URL)]
    pub alibaba_metadata_url: String,
    /// Lifetime of RRSA keys asked of STS (15m up to the role's maximum session).
    #[arg(long, env = "ENI_IPAM_ALIBABA_STS_DURATION", default_value = "1h", value_parser = parse_sts_duration)]
    pub alibaba_sts_duration: Duration,
}

fn parse_mode(text: &str) -> Result<IdentityMode, String> {
    text.parse()
}

fn parse_kind(text: &str) -> Result<EndpointKind, String> {
    text.parse()
}

fn parse_sts_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if !(900..=43_200).contains(&d.as_secs()) {
        return Err(format!("'{text}' is outside what STS grants (15m to 12h)"));
    }
    Ok(d)
}

impl AlibabaArgs {
    /// The provider configuration for `region`; `endpoint` (an emulator, a
    /// gateway) serves ECS, VPC and STS unless one of them is given apart.
    /// Reads the identity's environment variables.
    pub fn config(&self, region: &str, endpoint: Option<&str>) -> Result<AlibabaConfig, IdentityError> {
        let settings = self.settings(region, endpoint);
        let source = choose(&settings, &IdentityInputs::from_env(self.alibaba_ram_role.clone()))?;
        let mut config = AlibabaConfig::new(region, source);
        config.endpoint = endpoint.map(str::to_owned);
        config.ecs_endpoint = self.alibaba_ecs_endpoint.clone();
        config.vpc_endpoint = self.alibaba_vpc_endpoint.clone();
        config.endpoint_kind = self.alibaba_endpoint_kind;
        Ok(config)
    }

    fn settings(&self, region: &str, endpoint: Option<&str>) -> IdentitySettings {
        let sts = self
            .alibaba_sts_endpoint
            .clone()
            .or_else(|| endpoint.map(str::to_owned))
            .unwrap_or_else(|| regional_endpoint("sts", self.alibaba_endpoint_kind, region));
        IdentitySettings {
            mode: self.alibaba_identity,
            sts_endpoint: sts,
            metadata_url: self.alibaba_metadata_url.clone(),
            sts_duration: self.alibaba_sts_duration,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        alibaba: AlibabaArgs,
    }

    fn parse(args: &[&str]) -> Result<AlibabaArgs, String> {
        Cli::try_parse_from(std::iter::once("test").chain(args.iter().copied()))
            .map(|c| c.alibaba)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn sts_endpoint_follows_flag_then_shared_endpoint_then_region_and_kind() {
        let a = parse(&["--alibaba-endpoint-kind", "vpc"]).unwrap();
        assert_eq!(a.settings("cn-beijing", None).sts_endpoint, "https://sts-vpc.cn-beijing.aliyuncs.com");
        assert_eq!(a.settings("cn-beijing", Some("http://127.0.0.1:9")).sts_endpoint, "http://127.0.0.1:9");
        let a = parse(&["--alibaba-sts-endpoint", "https://sts.example"]).unwrap();
        assert_eq!(a.settings("cn-beijing", Some("http://127.0.0.1:9")).sts_endpoint, "https://sts.example");
        assert_eq!(a.settings("cn-beijing", None).metadata_url, DEFAULT_METADATA_URL);
    }

    #[test]
    fn bad_values_say_what_is_accepted() {
        assert!(parse(&["--alibaba-identity", "irsa"]).unwrap_err().contains("rrsa"));
        assert!(parse(&["--alibaba-endpoint-kind", "private"]).unwrap_err().contains("public or vpc"));
        assert!(parse(&["--alibaba-sts-duration", "5m"]).unwrap_err().contains("15m to 12h"));
        assert_eq!(parse(&["--alibaba-sts-duration", "2h"]).unwrap().alibaba_sts_duration.as_secs(), 7200);
    }
}
