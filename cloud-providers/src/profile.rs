//! What distinguishes one cloud from another for eni-ipam: its API quotas,
//! per-call batch limits, instance-type table and defaults. The fake cloud
//! enforces a profile; the client limiter is configured from the same one.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::Api;
use crate::token_bucket::BucketSpec;
use crate::types::InstanceLimits;

/// Which cloud.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudKind {
    /// AWS EC2.
    Aws,
    /// Alibaba Cloud ECS / VPC.
    Alibaba,
}

impl CloudKind {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CloudKind::Aws => "aws",
            CloudKind::Alibaba => "alibaba",
        }
    }

    /// The cloud's name for an operation.
    pub fn api_name(self, api: Api) -> &'static str {
        match self {
            CloudKind::Aws => api.aws_name(),
            CloudKind::Alibaba => api.alibaba_name(),
        }
    }
}

impl fmt::Display for CloudKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CloudKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aws" => Ok(CloudKind::Aws),
            "alibaba" => Ok(CloudKind::Alibaba),
            other => Err(format!("unknown cloud '{other}': use aws or alibaba")),
        }
    }
}

/// How many items one call may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BatchLimits {
    /// Secondary IPs one Assign call may add (Alibaba: 10; EC2: only the per-ENI limit).
    pub assign_ips_per_call: Option<u32>,
    /// Secondary IPs one Create call may carry.
    pub create_ips_per_call: Option<u32>,
    /// IPs one Unassign call may remove.
    pub unassign_ips_per_call: Option<u32>,
    /// Instance ids one ENI list call may filter on (EC2 filter values: 200; ECS: 1).
    pub instances_per_list: u32,
    /// Largest page of a list call (EC2: 1000; ECS: 500).
    pub max_page_size: u32,
}

impl BatchLimits {
    /// Splits `count` into call-sized chunks under `per_call`.
    pub fn chunks(count: u32, per_call: Option<u32>) -> Vec<u32> {
        let size = per_call.unwrap_or(u32::MAX).max(1);
        let mut left = count;
        let mut out = Vec::new();
        while left > 0 {
            let n = left.min(size);
            out.push(n);
            left -= n;
        }
        out
    }
}

/// Which quota bucket an operation draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum BucketId {
    /// EC2's shared bucket for all mutating actions.
    Mutating,
    /// EC2's shared bucket for all describe actions.
    NonMutating,
    /// A per-operation quota (Alibaba's style).
    Operation(Api),
}

impl fmt::Display for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BucketId::Mutating => f.write_str("mutating"),
            BucketId::NonMutating => f.write_str("non-mutating"),
            BucketId::Operation(api) => f.write_str(api.aws_name()),
        }
    }
}

/// Everything cloud-specific that the fake enforces and the client respects.
#[derive(Clone, Debug)]
pub struct CloudProfile {
    /// Which cloud.
    pub kind: CloudKind,
    /// The quota buckets.
    pub buckets: BTreeMap<BucketId, BucketSpec>,
    /// Per-call batch limits.
    pub batch: BatchLimits,
    /// Instance types the profile knows.
    pub instance_types: BTreeMap<String, InstanceLimits>,
    /// The instance type the simulator uses unless told otherwise.
    pub default_instance_type: &'static str,
    /// First device index pods may use (0: the primary ENI's secondary IPs too).
    pub default_first_interface_index: u32,
    /// Time from an attach call to the ENI being in use.
    pub attach_delay: Duration,
    /// Typical round trip of a read / a write.
    pub read_latency: Duration,
    /// Typical round trip of a write.
    pub write_latency: Duration,
    /// Error code the cloud answers when throttling.
    pub throttle_code: &'static str,
}

impl CloudProfile {
    /// The bucket an operation draws from.
    pub fn bucket_of(&self, api: Api) -> BucketId {
        match self.kind {
            CloudKind::Aws if api.is_read() => BucketId::NonMutating,
            CloudKind::Aws => BucketId::Mutating,
            CloudKind::Alibaba => BucketId::Operation(api),
        }
    }

    /// The profile of a cloud.
    pub fn of(kind: CloudKind) -> Self {
        match kind {
            CloudKind::Aws => Self::aws(),
            CloudKind::Alibaba => Self::alibaba(),
        }
    }

    /// EC2: one mutating bucket (200 burst, 5/s) and one describe bucket
    /// (100 burst, 20/s), as EC2 documents its request-rate throttling.
    pub fn aws() -> Self {
        let buckets = BTreeMap::from([
            (BucketId::Mutating, BucketSpec { burst: 200, per_second: 5.0 }),
            (BucketId::NonMutating, BucketSpec { burst: 100, per_second: 20.0 }),
        ]);
        // (type, max ENIs, IPv4 per ENI incl. the primary), from EC2's published table
        // (the same figures as moto's DescribeInstanceTypes data).
        let types = [
            ("t3.medium", 3, 6),
            ("t3.large", 3, 12),
            ("m5.large", 3, 10),
            ("c5.large", 3, 10),
            ("m5.xlarge", 4, 15),
            ("c5.xlarge", 4, 15),
            ("m5.2xlarge", 4, 15),
            ("c5.2xlarge", 4, 15),
            ("m5.4xlarge", 8, 30),
            ("c5.4xlarge", 8, 30),
            ("c5.9xlarge", 8, 30),
            ("m5.24xlarge", 15, 50),
            ("m6i.large", 3, 10),
            ("m6i.xlarge", 4, 15),
        ];
        Self {
            kind: CloudKind::Aws,
            buckets,
            batch: BatchLimits {
                assign_ips_per_call: None,
                create_ips_per_call: None,
                unassign_ips_per_call: None,
                instances_per_list: 200,
                max_page_size: 1000,
            },
            instance_types: table(&types),
            default_instance_type: "m5.xlarge",
            default_first_interface_index: 0,
            attach_delay: Duration::from_secs(1),
            read_latency: Duration::from_millis(60),
            write_latency: Duration::from_millis(120),
            throttle_code: "RequestLimitExceeded",
        }
    }

    /// Alibaba ECS/VPC: a quota per operation and minute. Assign 400/min,
    /// Create 500/min and DescribeNetworkInterfaces 800/min are the figures
    /// the project was given; the others (DescribeInstances, asked only by GC
    /// about instances no Node names, included) are assumptions of the same order.
    pub fn alibaba() -> Self {
        let per_minute = [
            (Api::DescribeInstanceTypes, 200),
            (Api::DescribeInstances, 600),
            (Api::DescribeNetworkInterfaces, 800),
            (Api::DescribeSubnets, 400),
            (Api::CreateNetworkInterface, 500),
            (Api::AttachNetworkInterface, 500),
            (Api::ModifyNetworkInterfaceAttribute, 500),
            (Api::AssignPrivateIpAddresses, 400),
            (Api::UnassignPrivateIpAddresses, 400),
            (Api::DetachNetworkInterface, 500),
            (Api::DeleteNetworkInterface, 500),
            (Api::CreateTags, 400),
        ];
        let buckets = per_minute
            .into_iter()
            .map(|(api, n)| (BucketId::Operation(api), BucketSpec::per_minute(n)))
            .collect();
        // (type, EniQuantity, EniPrivateIpAddressQuantity), from ECS's instance family
        // tables: the 7th-generation families g7, c7 and r7 share their network limits size by size.
        let types = [
            ("ecs.g7.large", 3, 6),
            ("ecs.g7.xlarge", 4, 15),
            ("ecs.g7.2xlarge", 4, 15),
            ("ecs.g7.4xlarge", 8, 30),
            ("ecs.g7.8xlarge", 8, 30),
            ("ecs.g7.16xlarge", 8, 30),
            ("ecs.c7.large", 3, 6),
            ("ecs.c7.xlarge", 4, 15),
            ("ecs.c7.2xlarge", 4, 15),
            ("ecs.c7.4xlarge", 8, 30),
            ("ecs.r7.large", 3, 6),
            ("ecs.r7.xlarge", 4, 15),
            ("ecs.r7.2xlarge", 4, 15),
        ];
        Self {
            kind: CloudKind::Alibaba,
            buckets,
            batch: BatchLimits {
                assign_ips_per_call: Some(10),
                create_ips_per_call: Some(10),
                unassign_ips_per_call: Some(10),
                instances_per_list: 1,
                max_page_size: 500,
            },
            instance_types: table(&types),
            default_instance_type: "ecs.g7.xlarge",
            default_first_interface_index: 1,
            attach_delay: Duration::from_secs(3),
            read_latency: Duration::from_millis(80),
            write_latency: Duration::from_millis(150),
            throttle_code: "Throttling.User",
        }
    }
}

fn table(rows: &[(&str, u32, u32)]) -> BTreeMap<String, InstanceLimits> {
    rows.iter()
        .map(|&(name, max_enis, ipv4_per_eni)| {
            (name.to_owned(), InstanceLimits { instance_type: name.into(), max_enis, ipv4_per_eni })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_shares_two_buckets_alibaba_has_one_per_operation() {
        let aws = CloudProfile::aws();
        assert_eq!(aws.bucket_of(Api::AssignPrivateIpAddresses), BucketId::Mutating);
        assert_eq!(aws.bucket_of(Api::CreateNetworkInterface), BucketId::Mutating);
        assert_eq!(aws.bucket_of(Api::DescribeNetworkInterfaces), BucketId::NonMutating);
        let ali = CloudProfile::alibaba();
        assert_eq!(
            ali.bucket_of(Api::AssignPrivateIpAddresses),
            BucketId::Operation(Api::AssignPrivateIpAddresses)
        );
        for api in Api::ALL {
            assert!(ali.buckets.contains_key(&ali.bucket_of(api)), "{api:?} has no bucket");
            assert!(aws.buckets.contains_key(&aws.bucket_of(api)), "{api:?} has no bucket");
        }
    }

    #[test]
    fn default_instance_types_are_in_the_tables() {
        for kind in [CloudKind::Aws, CloudKind::Alibaba] {
            let p = CloudProfile::of(kind);
            assert!(p.instance_types.contains_key(p.default_instance_type));
        }
    }

    #[test]
    fn chunks_respect_the_per_call_limit() {
        assert_eq!(BatchLimits::chunks(25, Some(10)), vec![10, 10, 5]);
        assert_eq!(BatchLimits::chunks(25, None), vec![25]);
        assert!(BatchLimits::chunks(0, Some(10)).is_empty());
    }

    #[test]
    fn cloud_names_parse_and_reject_unknown() {
        assert_eq!("alibaba".parse::<CloudKind>(), Ok(CloudKind::Alibaba));
        assert!("gcp".parse::<CloudKind>().unwrap_err().contains("aws or alibaba"));
    }
}
