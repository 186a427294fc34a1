//! The cloud account flags of every command that calls a cloud (`run`,
//! `simulate --endpoint`, `capacity --from-cloud`): the regions, and the
//! Alibaba identity and endpoints ([`AlibabaArgs`]).

use clap::Args;

use crate::alibaba_args::AlibabaArgs;

/// Where and as whom the operator calls the cloud.
#[derive(Debug, Args, Clone)]
pub struct CloudAccountArgs {
    /// AWS region. Credentials come from the SDK's default chain: environment keys,
    /// shared profile, IRSA, EKS Pod Identity, instance role.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub aws_region: String,
    /// Alibaba Cloud region (the identity as --alibaba-identity says).
    #[arg(long, env = "ALIBABA_CLOUD_REGION_ID", default_value = "cn-hangzhou")]
    pub alibaba_region: String,
    #[command(flatten)]
    pub alibaba: AlibabaArgs,
}
