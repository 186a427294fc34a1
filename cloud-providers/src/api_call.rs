//! The cloud operations eni-ipam makes, named once, so limiter buckets,
//! retry rules, counters and reports all speak of the same thing.

use serde::Serialize;

/// One cloud API operation. Names follow EC2; [`Api::alibaba_name`] gives ECS/VPC's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Api {
    /// Instance type limits (ENIs, IPs per ENI).
    DescribeInstanceTypes,
    /// Instance states (running, stopped, terminated), for GC.
    DescribeInstances,
    /// List ENIs: VPC-wide, by instance, or by id; paginated.
    DescribeNetworkInterfaces,
    /// Subnets (vSwitches) with their free IP counts.
    DescribeSubnets,
    /// Create an ENI with secondary IPs and tags.
    CreateNetworkInterface,
    /// Attach an ENI to an instance at a device index (asynchronous in the cloud).
    AttachNetworkInterface,
    /// Set DeleteOnTermination on an attachment (EC2 only).
    ModifyNetworkInterfaceAttribute,
    /// Add secondary IPs to an ENI.
    AssignPrivateIpAddresses,
    /// Remove secondary IPs from an ENI.
    UnassignPrivateIpAddresses,
    /// Detach an ENI from its instance.
    DetachNetworkInterface,
    /// Delete a detached ENI.
    DeleteNetworkInterface,
    /// Tag an ENI.
    CreateTags,
}

impl Api {
    /// Every operation, in a fixed order (for reports).
    pub const ALL: [Api; 12] = [
        Api::DescribeInstanceTypes,
        Api::DescribeInstances,
        Api::DescribeNetworkInterfaces,
        Api::DescribeSubnets,
        Api::CreateNetworkInterface,
        Api::AttachNetworkInterface,
        Api::ModifyNetworkInterfaceAttribute,
        Api::AssignPrivateIpAddresses,
        Api::UnassignPrivateIpAddresses,
        Api::DetachNetworkInterface,
        Api::DeleteNetworkInterface,
        Api::CreateTags,
    ];

    /// The EC2 action name.
    pub fn aws_name(self) -> &'static str {
        match self {
            Api::DescribeInstanceTypes => "DescribeInstanceTypes",
            Api::DescribeInstances => "DescribeInstances",
            Api::DescribeNetworkInterfaces => "DescribeNetworkInterfaces",
            Api::DescribeSubnets => "DescribeSubnets",
            Api::CreateNetworkInterface => "CreateNetworkInterface",
            Api::AttachNetworkInterface => "AttachNetworkInterface",
            Api::ModifyNetworkInterfaceAttribute => "ModifyNetworkInterfaceAttribute",
            Api::AssignPrivateIpAddresses => "AssignPrivateIpAddresses",
            Api::UnassignPrivateIpAddresses => "UnassignPrivateIpAddresses",
            Api::DetachNetworkInterface => "DetachNetworkInterface",
            Api::DeleteNetworkInterface => "DeleteNetworkInterface",
            Api::CreateTags => "CreateTags",
        }
    }

    /// The ECS / VPC OpenAPI action name.
    pub fn alibaba_name(self) -> &'static str {
        match self {
            Api::DescribeSubnets => "DescribeVSwitches",
            Api::ModifyNetworkInterfaceAttribute => "ModifyNetworkInterfaceAttribute",
            Api::CreateTags => "TagResources",
            other => other.aws_name(),
        }
    }

    /// Reads change nothing in the cloud.
    pub fn is_read(self) -> bool {
        matches!(
            self,
            Api::DescribeInstanceTypes
                | Api::DescribeInstances
                | Api::DescribeNetworkInterfaces
                | Api::DescribeSubnets
        )
    }

    /// Whether repeating the call after an unknown outcome (a 5xx, a lost
    /// answer) can do no harm. Reads are; `CreateNetworkInterface` is through
    /// its client token; detach, delete, unassign and tag converge on the same
    /// end state. `AssignPrivateIpAddresses` by count is not: a lost answer
    /// may have added IPs, so the executor resyncs and re-plans instead.
    /// `AttachNetworkInterface` is not either: the index may now be taken.
    pub fn is_idempotent(self) -> bool {
        !matches!(self, Api::AssignPrivateIpAddresses | Api::AttachNetworkInterface)
    }
}
