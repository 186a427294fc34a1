//! Command line: where to listen, which keys to accept, the seed, quotas,
//! attach delay and faults. Every flag can also come from the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use eni_ipam_api::VpcId;
use eni_ipam_cloud::alibaba::Credentials;
use eni_ipam_cloud::{BucketId, BucketSpec, CloudProfile};

use crate::actions::api_of;
use crate::emulator::{Emulator, FaultPlan, InjectedError};
use crate::identity::{Identity, RrsaTrust};
use crate::seed::Seed;

/// Alibaba Cloud ECS/VPC OpenAPI emulator (plain HTTP).
#[derive(Debug, Parser)]
#[command(name = "eni-ipam-aliyun-emulator", version)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one (printed on stdout).
    #[arg(long, env = "EMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// AccessKey pairs accepted, `ID:SECRET` (repeatable).
    #[arg(
        long = "access-key",
        env = "EMULATOR_ACCESS_KEYS",
        value_delimiter = ',',
        default_value = "testid:testsecret"
    )]
    pub access_keys: Vec<String>,
    /// Region id the endpoint serves.
    #[arg(long, env = "EMULATOR_REGION", default_value = "cn-hangzhou")]
    pub region: String,
    /// The VPC id.
    #[arg(long, env = "EMULATOR_VPC", default_value = "vpc-emulated")]
    pub vpc: String,
    /// Seed file (JSON: vswitches, instances, enis).
    #[arg(long, env = "EMULATOR_SEED")]
    pub seed: Option<PathBuf>,
    /// Time from AttachNetworkInterface to InUse.
    #[arg(long, env = "EMULATOR_ATTACH_DELAY_MS", default_value_t = 3000)]
    pub attach_delay_ms: u64,
    /// Per-API quota, `Action=PER_MINUTE` or `Action=BURST@PER_SECOND` (repeatable).
    #[arg(long = "quota", env = "EMULATOR_QUOTAS", value_delimiter = ',')]
    pub quotas: Vec<String>,
    /// No quotas at all.
    #[arg(long, env = "EMULATOR_NO_QUOTAS")]
    pub no_quotas: bool,
    /// Latency added to every answer.
    #[arg(long, env = "EMULATOR_LATENCY_MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Share of calls answered InternalError before any change.
    #[arg(long, env = "EMULATOR_FAULT_RATE", default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Share of calls answered Throttling.User although the quota has room.
    #[arg(long, env = "EMULATOR_THROTTLE_RATE", default_value_t = 0.0)]
    pub throttle_rate: f64,
    /// Scripted errors, `Action=Code:TIMES` (repeatable).
    #[arg(long = "fail", env = "EMULATOR_FAIL", value_delimiter = ',')]
    pub fail: Vec<String>,
    /// Fault plan file (JSON: latency_ms, transient_rate, errors); overrides the fault flags.
    #[arg(long, env = "EMULATOR_FAULTS")]
    pub faults: Option<PathBuf>,
    /// Serve this RAM role's STS credentials on the metadata paths.
    #[arg(long, env = "EMULATOR_RAM_ROLE")]
    pub ram_role: Option<String>,
    /// RRSA: the role STS AssumeRoleWithOIDC lets the provider below assume.
    #[arg(long, env = "EMULATOR_RRSA_ROLE_ARN", requires_all = ["rrsa_provider_arn", "rrsa_oidc_token"])]
    pub rrsa_role_arn: Option<String>,
    /// RRSA: the registered OIDC provider.
    #[arg(long, env = "EMULATOR_RRSA_PROVIDER_ARN", requires = "rrsa_role_arn")]
    pub rrsa_provider_arn: Option<String>,
    /// RRSA: the OIDC token STS accepts (what the test writes into the token file).
    #[arg(long, env = "EMULATOR_RRSA_OIDC_TOKEN", requires = "rrsa_role_arn")]
    pub rrsa_oidc_token: Option<String>,
    /// Lifetime of every issued STS key, whatever DurationSeconds asks (the
    /// cloud's shortest is 900 s; tests cross expiries in seconds). Default:
    /// DurationSeconds for STS, an hour for the RAM role.
    #[arg(long, env = "EMULATOR_STS_LIFETIME_SECONDS")]
    pub sts_lifetime_seconds: Option<u64>,
    /// Write the state here on shutdown.
    #[arg(long, env = "EMULATOR_DUMP_FILE")]
    pub dump_file: Option<PathBuf>,
}

fn quota(text: &str) -> anyhow::Result<(BucketId, BucketSpec)> {
    let fail = || format!("quota '{text}': use Action=PER_MINUTE or Action=BURST@PER_SECOND");
    let (action, spec) = text.split_once('=').with_context(fail)?;
    let api = api_of(action).with_context(|| format!("quota '{text}': unknown action '{action}'"))?;
    let spec = match spec.split_once('@') {
        Some((burst, rate)) => BucketSpec {
            burst: burst.parse().with_context(fail)?,
            per_second: rate.parse().with_context(fail)?,
        },
        None => BucketSpec::per_minute(spec.parse().with_context(fail)?),
    };
    if spec.burst == 0 || spec.per_second <= 0.0 {
        bail!("quota '{text}': burst and rate must be positive");
    }
    Ok((BucketId::Operation(api), spec))
}

fn injected(text: &str) -> anyhow::Result<InjectedError> {
    let fail = || {
        format!(
            "--fail '{text}': use Action=Code:TIMES, e.g. AttachNetworkInterface=IncorrectInstanceStatus:2"
        )
    };
    let (action, rest) = text.split_once('=').with_context(fail)?;
    let (code, times) = rest.rsplit_once(':').with_context(fail)?;
    Ok(InjectedError { action: action.into(), code: code.into(), times: times.parse().with_context(fail)? })
}

fn access_key(text: &str) -> anyhow::Result<Credentials> {
    let (id, secret) = text.split_once(':').with_context(|| format!("access key '{text}': use ID:SECRET"))?;
    Ok(Credentials::access_key(id, secret))
}

impl Args {
    /// The emulator these flags describe, seeded.
    pub fn build(&self) -> anyhow::Result<Emulator> {
        let mut profile = CloudProfile::alibaba();
        profile.attach_delay = Duration::from_millis(self.attach_delay_ms);
        if self.no_quotas {
            profile.buckets.clear();
        }
        for text in &self.quotas {
            let (id, spec) = quota(text)?;
            profile.buckets.insert(id, spec);
        }
        let keys = self.access_keys.iter().map(|k| access_key(k)).collect::<anyhow::Result<Vec<_>>>()?;
        let mut identity =
            Identity::new(keys.clone()).with_lifetime(self.sts_lifetime_seconds.map(Duration::from_secs));
        if let Some(role) = &self.ram_role {
            identity = identity.with_ram_role(role);
        }
        if let (Some(role_arn), Some(provider_arn), Some(oidc_token)) =
            (&self.rrsa_role_arn, &self.rrsa_provider_arn, &self.rrsa_oidc_token)
        {
            identity = identity.with_rrsa(RrsaTrust {
                oidc_token: oidc_token.clone(),
                role_arn: role_arn.clone(),
                provider_arn: provider_arn.clone(),
            });
        }
        let mut emulator =
            Emulator::new(profile, self.region.clone(), VpcId::from(self.vpc.as_str()), keys, 1)
                .with_identity(identity);
        if let Some(path) = &self.seed {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading seed {}", path.display()))?;
            let seed: Seed = serde_json::from_str(&text)
                .with_context(|| format!("seed {} is not valid", path.display()))?;
            let seeded = seed.apply(&mut emulator.cloud().console())?;
            emulator.seeded = seeded;
        }
        let plan = match &self.faults {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading faults {}", path.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("fault plan {} is not valid", path.display()))?
            }
            None => FaultPlan {
                latency_ms: self.latency_ms,
                transient_rate: self.fault_rate,
                throttle_rate: self.throttle_rate,
                errors: self.fail.iter().map(|f| injected(f)).collect::<anyhow::Result<_>>()?,
            },
        };
        if !(0.0..=1.0).contains(&plan.transient_rate) {
            bail!("fault rate {} is not within 0..=1", plan.transient_rate);
        }
        if !(0.0..=1.0).contains(&plan.throttle_rate) {
            bail!("throttle rate {} is not within 0..=1", plan.throttle_rate);
        }
        emulator.set_faults(plan);
        Ok(emulator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_and_fault_flags_parse_and_bad_ones_say_the_format() {
        let (id, spec) = quota("AssignPrivateIpAddresses=5@2.5").unwrap();
        assert_eq!(id, BucketId::Operation(eni_ipam_cloud::Api::AssignPrivateIpAddresses));
        assert_eq!(spec, BucketSpec { burst: 5, per_second: 2.5 });
        assert_eq!(quota("CreateNetworkInterface=600").unwrap().1, BucketSpec::per_minute(600));
        assert!(quota("Nope=1").unwrap_err().to_string().contains("unknown action"));
        assert!(format!("{:#}", quota("CreateNetworkInterface").unwrap_err()).contains("PER_MINUTE"));
        let e = injected("AttachNetworkInterface=IncorrectInstanceStatus:2").unwrap();
        assert_eq!((e.code.as_str(), e.times), ("IncorrectInstanceStatus", 2));
    }
}
