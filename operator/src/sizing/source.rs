//! Where `capacity` takes instance limits from: the built-in profile, or the
//! cloud's DescribeInstanceTypes through a provider (one limiter, one retry
//! policy, every page followed).

use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::InstanceType;
use eni_ipam_cloud::alibaba::AlibabaProvider;
use eni_ipam_cloud::{
    CallGuard, CloudError, CloudKind, CloudProfile, CloudProvider, InstanceLimits, RetryPolicy,
};
use eni_ipam_cloud_aws::{AwsConfig, AwsProvider};

use super::args::CapacityArgs;
use super::{NoPodEnis, Sizing, sizing};

/// Where instance limits come from.
pub enum LimitsSource {
    /// The built-in profile of a cloud.
    Profile(CloudKind),
    /// The cloud's DescribeInstanceTypes.
    Cloud {
        /// The provider, its calls guarded.
        provider: Arc<dyn CloudProvider>,
        /// The endpoint and region, for messages.
        place: String,
    },
}

impl LimitsSource {
    /// Which source, in words.
    pub fn describe(&self) -> String {
        match self {
            LimitsSource::Profile(cloud) => format!("the built-in {cloud} profile"),
            LimitsSource::Cloud { provider, place } => {
                let service = if provider.kind() == CloudKind::Aws { "EC2" } else { "ECS" };
                format!("{service} DescribeInstanceTypes at {place}")
            }
        }
    }
}

/// Why `capacity` has no answer.
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    /// Asked types the source does not know.
    #[error("instance type {} not known to {from}; {hint}", .types.join(", "))]
    UnknownTypes {
        /// The types.
        types: Vec<String>,
        /// The source, in words.
        from: String,
        /// What to do.
        hint: String,
    },
    /// An asked type has no ENI for pods at the index.
    #[error(transparent)]
    NoPodEnis(#[from] NoPodEnis),
    /// No listed type has an ENI for pods at the index.
    #[error("no instance type of {from} has an ENI at --first-interface-index {index} or above; lower it")]
    NoneFits {
        /// The source, in words.
        from: String,
        /// The index asked.
        index: u32,
    },
    /// The cloud refused or did not answer.
    #[error("{from} failed: {cause}; check the endpoint, the region and the credentials")]
    Cloud {
        /// The source, in words.
        from: String,
        /// The cloud's error.
        cause: CloudError,
    },
}

impl CapacityError {
    /// Whether the input (flags) is at fault rather than the cloud.
    pub fn is_usage(&self) -> bool {
        !matches!(self, CapacityError::Cloud { .. })
    }
}

/// Connects to the cloud `args` name: a provider whose calls go through a
/// [`CallGuard`] with the cloud's quotas and a short retry budget (a command
/// line, not a controller).
pub async fn connect(args: &CapacityArgs) -> anyhow::Result<LimitsSource> {
    let profile = CloudProfile::of(args.cloud);
    let retry = RetryPolicy::new(
        Duration::from_millis(200),
        Duration::from_secs(2),
        4,
        u64::from(std::process::id()),
    );
    let guard = Arc::new(CallGuard::for_profile(profile, 1.0, retry));
    let endpoint = args.endpoint.as_deref();
    Ok(match args.cloud {
        CloudKind::Aws => {
            let mut aws = AwsConfig::for_region(&args.account.aws_region);
            aws.endpoint = args.endpoint.clone();
            let provider = AwsProvider::connect_catalog(aws, guard).await?;
            let place = format!("{} (region {})", provider.endpoint(), args.account.aws_region);
            LimitsSource::Cloud { provider: Arc::new(provider), place }
        }
        CloudKind::Alibaba => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let config = args.account.alibaba.config(&args.account.alibaba_region, endpoint)?;
            let place = format!("{} (region {})", config.ecs_endpoint(), args.account.alibaba_region);
            LimitsSource::Cloud { provider: Arc::new(AlibabaProvider::new(config, guard)?), place }
        }
    })
}

/// The sizing of `asked` (every type the source knows when empty), in the order asked.
pub async fn capacity_rows(
    source: &LimitsSource,
    asked: &[InstanceType],
    first_interface_index: u32,
    host_network_pods: u32,
) -> Result<Vec<Sizing>, CapacityError> {
    let known = fetch(source, asked).await?;
    let limits = select(&known, asked).map_err(|types| CapacityError::UnknownTypes {
        types,
        from: source.describe(),
        hint: unknown_hint(source, &known),
    })?;
    let sized = limits.iter().map(|l| sizing(l, first_interface_index, host_network_pods));
    if !asked.is_empty() {
        return Ok(sized.collect::<Result<_, _>>()?);
    }
    // Listing every type: leave out those too small for the index.
    let rows: Vec<Sizing> = sized.filter_map(Result::ok).collect();
    if rows.is_empty() {
        return Err(CapacityError::NoneFits { from: source.describe(), index: first_interface_index });
    }
    Ok(rows)
}

/// The limits of the `asked` types among `known` (all of `known`, by name, when
/// none is asked), each once, in the order asked; or the asked types not known.
pub fn select(known: &[InstanceLimits], asked: &[InstanceType]) -> Result<Vec<InstanceLimits>, Vec<String>> {
    if asked.is_empty() {
        let mut all = known.to_vec();
        all.sort_by(|a, b| a.instance_type.0.cmp(&b.instance_type.0));
        all.dedup_by(|a, b| a.instance_type == b.instance_type);
        return Ok(all);
    }
    let mut found = Vec::new();
    let mut unknown = Vec::new();
    for name in asked {
        if found.iter().any(|l: &InstanceLimits| &l.instance_type == name) || unknown.contains(&name.0) {
            continue;
        }
        match known.iter().find(|l| &l.instance_type == name) {
            Some(l) => found.push(l.clone()),
            None => unknown.push(name.0.clone()),
        }
    }
    if unknown.is_empty() { Ok(found) } else { Err(unknown) }
}

async fn fetch(source: &LimitsSource, asked: &[InstanceType]) -> Result<Vec<InstanceLimits>, CapacityError> {
    let (provider, place) = match source {
        LimitsSource::Profile(cloud) => {
            return Ok(CloudProfile::of(*cloud).instance_types.into_values().collect());
        }
        LimitsSource::Cloud { provider, place } => (provider, place),
    };
    let failed = |cause| CapacityError::Cloud { from: source.describe(), cause };
    if asked.is_empty() {
        return provider.instance_catalog().await.map_err(failed);
    }
    let mut found = provider.instance_limits(asked).await.map_err(failed)?;
    // EC2 refuses a whole call that names one unknown type: ask the missing ones
    // one by one, so the error names only the unknown ones.
    let missing: Vec<&InstanceType> =
        asked.iter().filter(|t| !found.iter().any(|l| &l.instance_type == *t)).collect();
    if missing.len() > 1 || (missing.len() == 1 && asked.len() > 1) {
        for ty in missing {
            found.extend(provider.instance_limits(std::slice::from_ref(ty)).await.map_err(failed)?);
        }
    }
    tracing::debug!(place = %place, types = found.len(), "instance limits fetched");
    Ok(found)
}

fn unknown_hint(source: &LimitsSource, known: &[InstanceLimits]) -> String {
    match source {
        LimitsSource::Profile(cloud) => {
            let mut names: Vec<&str> = known.iter().map(|l| l.instance_type.as_str()).collect();
            names.sort_unstable();
            format!(
                "it knows {}; ask the cloud instead with --from-cloud (or --endpoint URL), e.g. \
                 eni-ipam-operator capacity --cloud {cloud} --from-cloud --instance-type TYPE",
                names.join(", ")
            )
        }
        LimitsSource::Cloud { .. } => {
            "check the spelling and that the region offers the type (instance types differ by region)".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(name: &str, enis: u32, per_eni: u32) -> InstanceLimits {
        InstanceLimits { instance_type: name.into(), max_enis: enis, ipv4_per_eni: per_eni }
    }

    #[test]
    fn select_keeps_the_asked_order_once_and_names_the_unknown() {
        let known = [limits("b.large", 3, 10), limits("a.large", 2, 4), limits("c.large", 4, 15)];
        let asked: Vec<InstanceType> = ["c.large", "a.large", "c.large"].map(InstanceType::from).to_vec();
        let got = select(&known, &asked).unwrap();
        let names: Vec<&str> = got.iter().map(|l| l.instance_type.as_str()).collect();
        assert_eq!(names, ["c.large", "a.large"]);

        let asked: Vec<InstanceType> =
            ["a.large", "x.huge", "y.tiny", "x.huge"].map(InstanceType::from).to_vec();
        assert_eq!(select(&known, &asked).unwrap_err(), ["x.huge", "y.tiny"]);

        let all = select(&known, &[]).unwrap();
        let names: Vec<&str> = all.iter().map(|l| l.instance_type.as_str()).collect();
        assert_eq!(names, ["a.large", "b.large", "c.large"], "every type, by name");
    }

    #[tokio::test]
    async fn the_profile_source_names_an_unknown_type_and_the_way_out() {
        let source = LimitsSource::Profile(CloudKind::Aws);
        let asked = [InstanceType::from("m5.large"), InstanceType::from("m9.gigantic")];
        let err = capacity_rows(&source, &asked, 0, 2).await.unwrap_err();
        let text = err.to_string();
        assert!(err.is_usage());
        assert!(
            text.starts_with("instance type m9.gigantic not known to the built-in aws profile;"),
            "{text}"
        );
        assert!(text.contains("m5.large") && text.contains("--from-cloud"), "{text}");
    }

    #[tokio::test]
    async fn listing_every_type_leaves_out_those_without_an_eni_for_pods() {
        let source = LimitsSource::Profile(CloudKind::Aws);
        let every = capacity_rows(&source, &[], 0, 2).await.unwrap();
        assert_eq!(every.len(), CloudProfile::aws().instance_types.len());
        // Index 8: only the 15-ENI m5.24xlarge has ENIs left.
        let big = capacity_rows(&source, &[], 8, 2).await.unwrap();
        let names: Vec<&str> = big.iter().map(|r| r.instance_type.as_str()).collect();
        assert_eq!(names, ["m5.24xlarge"]);
        assert_eq!(big[0].pod_ips, 7 * 49);
        let err = capacity_rows(&source, &[], 15, 2).await.unwrap_err();
        assert!(err.to_string().contains("--first-interface-index 15"), "{err}");
        let asked = [InstanceType::from("m5.large")];
        let err = capacity_rows(&source, &asked, 3, 2).await.unwrap_err();
        assert!(err.to_string().starts_with("instance type m5.large has 3 ENIs"), "{err}");
    }
}
