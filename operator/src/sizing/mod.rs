//! `eni-ipam-operator capacity`: how many pods an instance type can run with
//! eni-ipam, for kubelet's or Karpenter's `maxPods` and for Cluster Autoscaler's
//! node template (scale from zero). The numbers are a pure function of the
//! instance type's limits ([`InstanceLimits::pod_capacity`], the same function
//! the operator plans with); where the limits come from is [`source`].

pub mod args;
pub mod source;

use std::fmt::Write as _;

use eni_ipam_cloud::{CloudKind, InstanceLimits};
use serde::Serialize;

/// The node-template tag Cluster Autoscaler reads on an autoscaling group (EC2)
/// or a scaling group (ESS) to know a node's `eni-ipam.io/ip` capacity before
/// any node of the group exists.
pub const NODE_TEMPLATE_TAG: &str = "k8s.io/cluster-autoscaler/node-template/resources/eni-ipam.io/ip";

/// Pods with `hostNetwork: true` a node runs that take no pod IP, counted in
/// `maxPods` on top of the pod IPs: AWS's published formula adds 2 for aws-node
/// and kube-proxy; with eni-ipam they are its agent and kube-proxy.
pub const DEFAULT_HOST_NETWORK_PODS: u32 = 2;

/// One instance type's sizing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizing {
    /// The instance type.
    pub instance_type: String,
    /// ENIs an instance may have, the primary included.
    pub max_enis: u32,
    /// IPv4 addresses per ENI, its primary included.
    pub ipv4_per_eni: u32,
    /// First ENI device index whose secondary IPs pods get.
    pub first_interface_index: u32,
    /// Pod IPs the instance can ever hold: its `eni-ipam.io/ip` capacity.
    pub pod_ips: u32,
    /// What to give kubelet (`--max-pods`) or Karpenter (`kubelet.maxPods`):
    /// the pod IPs plus the host-network pods.
    pub max_pods: u32,
    /// The Cluster Autoscaler node-template tag, `key=value`.
    pub node_template_tag: String,
}

/// A type with no ENI left for pods at the asked first interface index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "instance type {instance_type} has {max_enis} ENIs: --first-interface-index {first_interface_index} leaves none for pods; use 0 to {last}",
    last = max_enis.saturating_sub(1)
)]
pub struct NoPodEnis {
    /// The type.
    pub instance_type: String,
    /// Its ENIs.
    pub max_enis: u32,
    /// The index asked.
    pub first_interface_index: u32,
}

/// The sizing of one instance type when pods use the ENIs from
/// `first_interface_index` on and `host_network_pods` pods need no pod IP.
pub fn sizing(
    limits: &InstanceLimits,
    first_interface_index: u32,
    host_network_pods: u32,
) -> Result<Sizing, NoPodEnis> {
    if first_interface_index >= limits.max_enis {
        return Err(NoPodEnis {
            instance_type: limits.instance_type.0.clone(),
            max_enis: limits.max_enis,
            first_interface_index,
        });
    }
    let pod_ips = limits.pod_capacity(first_interface_index);
    Ok(Sizing {
        instance_type: limits.instance_type.0.clone(),
        max_enis: limits.max_enis,
        ipv4_per_eni: limits.ipv4_per_eni,
        first_interface_index,
        pod_ips,
        max_pods: pod_ips + host_network_pods,
        node_template_tag: format!("{NODE_TEMPLATE_TAG}={pod_ips}"),
    })
}

/// The first interface index eni-ipam uses on `cloud` unless a node says otherwise.
pub fn default_first_interface_index(cloud: CloudKind) -> u32 {
    eni_ipam_cloud::CloudProfile::of(cloud).default_first_interface_index
}

/// The rows as an aligned text table.
pub fn table(rows: &[Sizing]) -> String {
    let header =
        ["INSTANCE TYPE", "ENIS", "IPV4/ENI", "FIRST ENI", "POD IPS", "MAX PODS", "NODE TEMPLATE TAG"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.instance_type.clone(),
                r.max_enis.to_string(),
                r.ipv4_per_eni.to_string(),
                r.first_interface_index.to_string(),
                r.pod_ips.to_string(),
                r.max_pods.to_string(),
                r.node_template_tag.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let mut line = |row: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Names left-aligned, numbers right-aligned, the last column unpadded.
            match i {
                0 => write!(text, "{cell:<w$}  "),
                6 => write!(text, "{cell}"),
                _ => write!(text, "{cell:>w$}  "),
            }
            .expect("writing to a String");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header.map(str::to_owned));
    for row in &cells {
        line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use eni_ipam_cloud::CloudProfile;

    use super::*;

    fn limits(cloud: CloudKind, name: &str) -> InstanceLimits {
        CloudProfile::of(cloud).instance_types[name].clone()
    }

    /// AWS publishes max pods = ENIs x (IPv4 per ENI - 1) + 2 (eni-max-pods.txt);
    /// with the primary ENI usable (index 0) and 2 host-network pods eni-ipam agrees.
    #[test]
    fn aws_types_match_the_published_max_pods() {
        let rows = [
            // (type, first index, pod IPs, max pods)
            ("t3.medium", 0, 15, 17),
            ("m5.large", 0, 27, 29),
            ("m5.xlarge", 0, 56, 58),
            ("c5.4xlarge", 0, 232, 234),
            ("m5.24xlarge", 0, 735, 737),
            // Pods off the primary ENI: one ENI's secondaries fewer.
            ("m5.large", 1, 18, 20),
            ("c5.4xlarge", 1, 203, 205),
        ];
        for (name, first, pod_ips, max_pods) in rows {
            let s = sizing(&limits(CloudKind::Aws, name), first, DEFAULT_HOST_NETWORK_PODS).unwrap();
            assert_eq!((s.pod_ips, s.max_pods), (pod_ips, max_pods), "{name} from ENI {first}");
            assert_eq!(s.node_template_tag, format!("{NODE_TEMPLATE_TAG}={pod_ips}"));
        }
    }

    /// The same rule on ECS, where pods start at ENI 1 by default (the primary ENI
    /// stays the node's own).
    #[test]
    fn alibaba_types_follow_the_same_rule_from_their_first_interface_index() {
        let first = default_first_interface_index(CloudKind::Alibaba);
        assert_eq!(first, 1);
        let rows = [
            // (type, ENIs, IPv4 per ENI, pod IPs from ENI 1, max pods)
            ("ecs.g7.large", 3, 6, 10, 12),
            ("ecs.g7.xlarge", 4, 15, 42, 44),
            ("ecs.c7.2xlarge", 4, 15, 42, 44),
            ("ecs.g7.4xlarge", 8, 30, 203, 205),
            ("ecs.r7.large", 3, 6, 10, 12),
        ];
        for (name, enis, per_eni, pod_ips, max_pods) in rows {
            let l = limits(CloudKind::Alibaba, name);
            assert_eq!((l.max_enis, l.ipv4_per_eni), (enis, per_eni), "{name} limits");
            let s = sizing(&l, first, DEFAULT_HOST_NETWORK_PODS).unwrap();
            assert_eq!((s.pod_ips, s.max_pods), (pod_ips, max_pods), "{name}");
            assert_eq!(s.pod_ips, (enis - first) * (per_eni - 1), "{name}: ENIs from {first} x secondaries");
        }
        let with_primary = sizing(&limits(CloudKind::Alibaba, "ecs.g7.large"), 0, 2).unwrap();
        assert_eq!(with_primary.max_pods, 3 * 5 + 2, "index 0 on ECS is AWS's formula");
    }

    #[test]
    fn host_network_pods_add_to_max_pods_only() {
        let s = sizing(&limits(CloudKind::Aws, "m5.large"), 0, 5).unwrap();
        assert_eq!((s.pod_ips, s.max_pods), (27, 32));
        assert!(s.node_template_tag.ends_with("=27"), "the IP resource does not count host-network pods");
    }

    #[test]
    fn an_index_past_the_last_eni_is_refused_naming_the_type() {
        let err = sizing(&limits(CloudKind::Aws, "t3.medium"), 3, 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance type t3.medium has 3 ENIs: --first-interface-index 3 leaves none for pods; use 0 to 2"
        );
        assert!(sizing(&limits(CloudKind::Aws, "t3.medium"), 2, 2).is_ok(), "the last ENI still serves pods");
    }

    #[test]
    fn the_table_aligns_columns_and_ends_with_the_tag() {
        let rows: Vec<Sizing> = ["m5.large", "c5.4xlarge"]
            .into_iter()
            .map(|t| sizing(&limits(CloudKind::Aws, t), 0, 2).unwrap())
            .collect();
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("INSTANCE TYPE"));
        assert!(lines[1].starts_with("m5.large  "), "{text}");
        assert!(lines[2].ends_with(&format!("{NODE_TEMPLATE_TAG}=232")), "{text}");
        let column = |line: &str| line.find(NODE_TEMPLATE_TAG);
        assert_eq!(column(lines[1]), column(lines[2]), "{text}");
    }
}
