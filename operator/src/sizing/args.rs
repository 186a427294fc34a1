//! Flags of `eni-ipam-operator capacity`.

use clap::Args;
use eni_ipam_cloud::CloudKind;

use crate::account_args::CloudAccountArgs;

use super::DEFAULT_HOST_NETWORK_PODS;

/// The long help of `capacity`: what the numbers mean and where they go.
pub const CAPACITY_ABOUT: &str = "\
Print, per instance type, the pod IPs eni-ipam can give its pods, the maxPods to \
set on kubelet (--max-pods, or maxPods in its config file) or on Karpenter \
(spec.kubelet.maxPods of its EC2NodeClass), and the Cluster Autoscaler \
node-template tag to put on the node group so it can scale from zero.

  pod IPs  = (ENIs - first interface index) x (IPv4 per ENI - 1)
  maxPods  = pod IPs + host-network pods

Every ENI keeps its primary IP, so each ENI gives IPv4-per-ENI minus 1 pods; ENIs \
below --first-interface-index are not used for pods (0 on AWS: the primary ENI's \
secondary IPs too; 1 on Alibaba: the primary ENI stays the node's). maxPods adds \
--host-network-pods (default 2): pods with hostNetwork: true, such as eni-ipam's \
agent and kube-proxy, take no pod IP but count against maxPods. With index 0 and 2 \
host-network pods the result is AWS's published formula, ENIs x (IPv4 per ENI - 1) + 2 \
(m5.large 29). Count every host-network DaemonSet of your nodes in --host-network-pods.

For Cluster Autoscaler to scale a node group up from zero nodes, tag its Auto \
Scaling group (EC2) or scaling group (ESS) with \
k8s.io/cluster-autoscaler/node-template/resources/eni-ipam.io/ip=<pod IPs>: with no \
node to copy, that is how it learns the eni-ipam.io/ip capacity a new node will have.

The instance limits come from the built-in profile, or with --from-cloud (or \
--endpoint URL) from the cloud's DescribeInstanceTypes (EC2 or ECS), which needs \
only read access (ec2:DescribeInstanceTypes, ecs:DescribeInstanceTypes).

Examples:
  eni-ipam-operator capacity --cloud aws --instance-type m5.large,c5.4xlarge
  eni-ipam-operator capacity --cloud alibaba --instance-type ecs.g7.xlarge --json
  eni-ipam-operator capacity --cloud aws --from-cloud --aws-region eu-west-1 --instance-type m7i.large";

/// Flags of `capacity`.
#[derive(Debug, Args)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub log: eni_ipam_admin::process::LogArgs,
    /// The cloud: aws or alibaba.
    #[arg(long, value_parser = parse_cloud)]
    pub cloud: CloudKind,
    /// Instance types to size (repeat the flag or separate by commas); default: every type the source knows.
    #[arg(long = "instance-type", value_name = "TYPE", value_delimiter = ',')]
    pub instance_types: Vec<String>,
    /// First ENI device index whose secondary IPs pods get, as the nodes' firstInterfaceIndex
    /// knob; default: the cloud's (aws 0, alibaba 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=64))]
    pub first_interface_index: Option<u32>,
    /// Pods with hostNetwork: true on each node (eni-ipam's agent, kube-proxy, ...): they take no
    /// pod IP but count against maxPods.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HOST_NETWORK_PODS)]
    pub host_network_pods: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ask the cloud's DescribeInstanceTypes (its regional endpoint) instead of the built-in profile.
    #[arg(long)]
    pub from_cloud: bool,
    /// Ask DescribeInstanceTypes at this endpoint (a VPC endpoint, moto, the Alibaba emulator);
    /// implies --from-cloud.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub account: CloudAccountArgs,
}

impl CapacityArgs {
    /// Whether the limits come from the cloud rather than the built-in profile.
    pub fn asks_cloud(&self) -> bool {
        self.from_cloud || self.endpoint.is_some()
    }
}

fn parse_cloud(text: &str) -> Result<CloudKind, String> {
    text.parse()
}
