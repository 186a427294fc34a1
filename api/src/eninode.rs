//! The `ENINode` custom resource: one per Kubernetes Node (same name), the
//! contract between the operator (which owns `spec.pool` and the release marks)
//! and the agent (which owns `status.used` and answers the release handshake).
//!
//! Doc comments here become the CRD's field descriptions, so they are written
//! for the cluster admin reading `kubectl explain eninode`.

use std::collections::BTreeMap;
use std::fmt;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::effective::EffectiveIpam;
use crate::ids::{EniId, InstanceId, InstanceType, SecurityGroupId, SubnetId, VpcId, Zone};
use crate::knobs::PoolOverrides;

/// The highest `firstInterfaceIndex` the CRD schema accepts. It only catches typos;
/// raise it if an instance type ever needs more.
pub const MAX_FIRST_INTERFACE_INDEX: u32 = 15;

/// CEL rule on `spec.ipam`: min-allocate may not exceed a set max-allocate.
pub const RULE_MIN_LE_MAX: &str = "!has(self.maxAllocate) || self.maxAllocate == 0 || !has(self.minAllocate) || self.minAllocate <= self.maxAllocate";
/// Message shown by the apiserver when [`RULE_MIN_LE_MAX`] fails.
pub const RULE_MIN_LE_MAX_MESSAGE: &str =
    "minAllocate is greater than maxAllocate: lower minAllocate or raise maxAllocate (0 means no limit)";
/// CEL rule on `spec.ipam`: pre-allocate may not exceed a set max-allocate.
pub const RULE_PRE_LE_MAX: &str = "!has(self.maxAllocate) || self.maxAllocate == 0 || !has(self.preAllocate) || self.preAllocate <= self.maxAllocate";
/// Message shown by the apiserver when [`RULE_PRE_LE_MAX`] fails.
pub const RULE_PRE_LE_MAX_MESSAGE: &str =
    "preAllocate is greater than maxAllocate: lower preAllocate or raise maxAllocate (0 means no limit)";

/// What one node is, where its pod IPs may come from, and the IP pool the
/// operator has attached to it.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "eni-ipam.io",
    version = "v1alpha1",
    kind = "ENINode",
    plural = "eninodes",
    singular = "eninode",
    shortname = "enin",
    status = "ENINodeStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "One per Kubernetes Node (same name): the node's cloud identity, its pod IP pool \
           (written by the operator) and what the node's agent has handed out (written by the agent)."
)]
// Columns go as raw JSON: clippy's duplicated_attributes lint flags repeated
// `type_ = "integer"` pairs in the structured printcolumn(...) form, even across attributes.
#[kube(printcolumn = r#"{"name":"Instance","type":"string","jsonPath":".spec.instanceId"}"#)]
#[kube(printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.instanceType"}"#)]
#[kube(
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.available","description":"IPs in the node's pool"}"#
)]
#[kube(
    printcolumn = r#"{"name":"Used","type":"integer","jsonPath":".status.inUse","description":"pool IPs held by pods"}"#
)]
#[kube(
    printcolumn = r#"{"name":"ENIs","type":"integer","jsonPath":".status.eniCount","description":"ENIs attached to the instance"}"#
)]
#[kube(printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#)]
#[serde(rename_all = "camelCase")]
pub struct ENINodeSpec {
    /// The cloud instance id of the VM behind this node (from `Node.spec.providerID`).
    pub instance_id: InstanceId,
    /// The instance type, which bounds how many ENIs and IPs per ENI the node can hold.
    pub instance_type: InstanceType,
    /// The availability zone of the instance; ENIs are created in subnets of this zone.
    pub zone: Zone,
    /// The VPC of the instance.
    pub vpc_id: VpcId,
    /// This node's own pool knobs: how many spare IPs to keep ready, the pool's floor and
    /// ceiling. Each one set here wins over the cluster-wide knobs and node-pool overrides
    /// (ConfigMap `<release>-knobs`); unset ones follow them. What applies is in
    /// `status.effectiveIpam`.
    #[serde(default, skip_serializing_if = "PoolOverrides::is_empty")]
    #[x_kube(validation = kube::core::Rule::new(RULE_MIN_LE_MAX).message(RULE_MIN_LE_MAX_MESSAGE))]
    #[x_kube(validation = kube::core::Rule::new(RULE_PRE_LE_MAX).message(RULE_PRE_LE_MAX_MESSAGE))]
    pub ipam: PoolOverrides,
    /// Subnets new ENIs of this node may be created in; empty follows the cluster-wide knobs
    /// (and, there too empty, any subnet of the zone, filtered by `subnetTags`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnet_ids: Vec<SubnetId>,
    /// Only subnets carrying all of these tags are used for new ENIs of this node; empty follows
    /// the cluster-wide knobs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subnet_tags: BTreeMap<String, String>,
    /// Security groups attached to every ENI created for this node; empty follows the cluster-wide knobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<SecurityGroupId>,
    /// The first device index eni-ipam may use for its ENIs; unset follows the cluster-wide
    /// knobs, then the cloud provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_FIRST_INTERFACE_INDEX))]
    pub first_interface_index: Option<u32>,
    /// The node's IP pool: IPv4 address -> the ENI and subnet it lives on. Written by the operator only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pool: BTreeMap<String, PoolEntry>,
    /// The instance `pool` was built for, written by the operator with it. The agent serves
    /// the pool only while this is `instanceId` (unset: written by an older operator, served):
    /// a node name that comes back on a new VM must not hand out the old VM's IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_instance_id: Option<InstanceId>,
    /// Every secondary IP on the instance's primary ENI when the operator last wrote `pool`,
    /// whoever assigned it (written by the operator with the pool, where pods use the primary
    /// ENI). After an operator failover, an IP that appeared there since is one the old leader
    /// assigned and had not recorded yet; an IP already listed here and not in `pool` is
    /// another CNI's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_eni_ips: Option<Vec<String>>,
}

/// Where one pool IP lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolEntry {
    /// The ENI the IP is assigned to.
    pub eni: EniId,
    /// The subnet of that ENI.
    pub subnet: SubnetId,
}

/// What the node's pool looks like from the inside: which IPs pods hold, the
/// attached ENIs, the release handshake and what went wrong.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ENINodeStatus {
    /// IPs handed out on this node: IPv4 address -> owner (`namespace/pod`, or the
    /// container id when the pod is not known). Written by the agent only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used: BTreeMap<String, String>,
    /// ENIs attached to the instance: ENI id -> its MAC, device index, subnet and IPs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub enis: BTreeMap<String, EniStatus>,
    /// The excess-IP release handshake: IPv4 address -> state. The operator marks an
    /// IP, the agent answers `ready` or `do-not-release`, the operator records `released`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub release: BTreeMap<String, ReleaseState>,
    /// What is and is not working on this node, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ENINodeCondition>,
    /// The last error that stopped the operator from growing or shrinking this node's pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// IPs in the node's pool (written by the operator).
    #[serde(default)]
    pub available: u32,
    /// Pool IPs currently held by pods (written by the agent).
    #[serde(default)]
    pub in_use: u32,
    /// ENIs attached to the instance (written by the operator).
    #[serde(default)]
    pub eni_count: u32,
    /// The knobs the operator works this node with, and where each came from (written by the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_ipam: Option<EffectiveIpam>,
    /// Pod IPs this instance can ever hold: its type's ENIs from the first interface index on,
    /// times the IPs per ENI less each ENI's own primary IP, less the ENI slots and primary-ENI
    /// IPs other CNIs hold (written by the operator). The device plugin advertises this as the
    /// node's capacity, lowered by `shortfall` and `maxAllocate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_limit: Option<u32>,
    /// Set while the operator cannot grow the pool to `ipLimit` (subnets exhausted, the
    /// instance's ENI slots taken, the cloud refusing); cleared once it can again (written by
    /// the operator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<IpShortfall>,
}

/// Why the operator cannot grow a node's pool to its `ipLimit`, and how far it can.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IpShortfall {
    /// In CamelCase: `SubnetsExhausted`, `NoMatchingSubnet`, `InstanceLimitReached`, or the cloud's
    /// refusal (`CloudQuotaExceeded`, `CloudAuthError`, `CloudRefused`).
    pub reason: String,
    /// Pod IPs the node's pool can reach now (its IPs plus those the operator can still add).
    pub obtainable: u32,
    /// Since when (RFC 3339) the operator reports this reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub since: String,
}

/// One ENI attached to the node's instance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EniStatus {
    /// The ENI's MAC address, as the kernel shows it (`0a:1b:2c:3d:4e:5f`).
    pub mac: String,
    /// The device index the ENI is attached at (0 is the primary interface).
    pub device_index: u32,
    /// The subnet the ENI lives in.
    pub subnet: SubnetId,
    /// That subnet's IPv4 CIDR (`10.0.32.0/19`): the agent gives pods on this ENI this prefix.
    /// Empty when the operator has not listed the subnet yet (objects written before this field
    /// existed too); the agent then serves the ENI's IPs as /32 without a gateway.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subnet_cidr: String,
    /// The subnet's gateway (the VPC router) by the cloud's rule: the CIDR's first host on AWS,
    /// the last address but two on Alibaba Cloud. The agent routes pod traffic leaving by this ENI
    /// through it. Empty when `subnetCidr` is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway: String,
    /// The secondary IPv4 addresses assigned to the ENI.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
}

/// Where one excess IP is in the release handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ReleaseState {
    /// The operator wants to release this IP; the agent must stop handing it out and answer.
    Marked,
    /// The agent agrees: no pod holds the IP and none will get it.
    Ready,
    /// The agent refuses: a pod got the IP before the mark arrived.
    DoNotRelease,
    /// The operator unassigned the IP from its ENI; the entry is about to be removed.
    Released,
}

impl ReleaseState {
    /// The name as it appears in the resource.
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Marked => "marked",
            ReleaseState::Ready => "ready",
            ReleaseState::DoNotRelease => "do-not-release",
            ReleaseState::Released => "released",
        }
    }
}

impl fmt::Display for ReleaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a condition holds, as Kubernetes spells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Nobody knows yet.
    #[default]
    Unknown,
}

/// One observation about the node, in the usual Kubernetes condition shape.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ENINodeCondition {
    /// What is observed, in CamelCase (`PoolReady`, `CloudReachable`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A one-word CamelCase reason for the last transition.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// What happened, and what to do about it, for a person to read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_transition_time: String,
}

impl ENINodeSpec {
    /// IPs in the node's pool.
    pub fn pool_size(&self) -> usize {
        self.pool.len()
    }

    /// Pool IPs that live on `eni`.
    pub fn pool_ips_on<'a>(&'a self, eni: &'a EniId) -> impl Iterator<Item = &'a str> + 'a {
        self.pool.iter().filter(move |(_, entry)| &entry.eni == eni).map(|(ip, _)| ip.as_str())
    }
}

impl ENINodeStatus {
    /// IPs handed out to pods.
    pub fn used_count(&self) -> usize {
        self.used.len()
    }

    /// Whether `ip` is held by a pod.
    pub fn is_used(&self, ip: &str) -> bool {
        self.used.contains_key(ip)
    }

    /// Where `ip` is in the release handshake, if anywhere.
    pub fn release_state(&self, ip: &str) -> Option<ReleaseState> {
        self.release.get(ip).copied()
    }

    /// The condition of type `type_`, if reported.
    pub fn condition(&self, type_: &str) -> Option<&ENINodeCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

impl ENINode {
    /// Free pool IPs: in the pool, not held by a pod, and not on their way out.
    pub fn free_ips(&self) -> impl Iterator<Item = &str> {
        let status = self.status.as_ref();
        self.spec
            .pool
            .keys()
            .map(String::as_str)
            .filter(move |ip| status.is_none_or(|s| !s.is_used(ip) && s.release_state(ip).is_none()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_state_names_match_the_wire() {
        for state in
            [ReleaseState::Marked, ReleaseState::Ready, ReleaseState::DoNotRelease, ReleaseState::Released]
        {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{state}\""));
            assert_eq!(serde_json::from_str::<ReleaseState>(&json).unwrap(), state);
        }
    }

    #[test]
    fn free_ips_skip_used_and_marked() {
        let mut node = ENINode::new("node-a", ENINodeSpec::default());
        for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3"] {
            node.spec.pool.insert(ip.into(), PoolEntry { eni: "eni-1".into(), subnet: "subnet-1".into() });
        }
        assert_eq!(node.free_ips().count(), 3);
        let mut status = ENINodeStatus::default();
        status.used.insert("10.0.0.1".into(), "default/web-0".into());
        status.release.insert("10.0.0.2".into(), ReleaseState::Marked);
        node.status = Some(status);
        assert_eq!(node.free_ips().collect::<Vec<_>>(), ["10.0.0.3"]);
        assert_eq!(node.spec.pool_size(), 3);
        assert_eq!(node.status.as_ref().unwrap().used_count(), 1);
        assert_eq!(node.spec.pool_ips_on(&"eni-1".into()).count(), 3);
    }

    #[test]
    fn empty_status_serializes_counters_only() {
        let json = serde_json::to_value(ENINodeStatus::default()).unwrap();
        assert_eq!(json, serde_json::json!({"available": 0, "inUse": 0, "eniCount": 0}));
    }
}
