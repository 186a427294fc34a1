//! The JSON bodies of the ECS/VPC actions eni-ipam uses, in the cloud's own
//! field names (`tests/fixtures/alibaba/responses.json`): list wrappers
//! are objects holding one array, ECS tags are `{TagKey, TagValue}`, VPC tags
//! `{Key, Value}`. The client reads them, the emulator writes them; missing
//! fields default, unknown ones are ignored, as the SDK models do.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use eni_ipam_api::{EniId, InstanceId, SubnetId, VpcId, Zone};
use serde::{Deserialize, Serialize};

use crate::types::{Eni, EniState, InstanceState, Subnet};

/// The error body every failed call carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ErrorBody {
    /// Request id.
    pub request_id: String,
    /// The endpoint host that answered.
    pub host_id: String,
    /// Error code.
    pub code: String,
    /// Message.
    pub message: String,
    /// Diagnosis URL.
    pub recommend: String,
}

/// A body with only the request id (attach, unassign, detach, delete, tag).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Acknowledged {
    /// Request id.
    pub request_id: String,
}

/// `PrivateIpSets.PrivateIpSet[]` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PrivateIpSet {
    /// The address.
    pub private_ip_address: String,
    /// Whether it is the ENI's primary address.
    pub primary: bool,
}

/// `PrivateIpSets`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PrivateIpSets {
    /// The addresses.
    pub private_ip_set: Vec<PrivateIpSet>,
}

/// `SecurityGroupIds`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct SecurityGroupIds {
    /// The ids.
    pub security_group_id: Vec<String>,
}

/// An ECS tag.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EcsTag {
    /// Key.
    pub tag_key: String,
    /// Value.
    pub tag_value: String,
}

/// `Tags` of ECS objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EcsTags {
    /// The tags.
    pub tag: Vec<EcsTag>,
}

/// `Attachment` of an ENI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Attachment {
    /// Instance.
    pub instance_id: String,
    /// Device index.
    pub device_index: Option<u32>,
    /// Network card.
    pub network_card_index: Option<u32>,
}

/// One ENI as DescribeNetworkInterfaces and CreateNetworkInterface show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkInterfaceSet {
    /// ENI id.
    pub network_interface_id: String,
    /// `Available`, `Attaching`, `InUse`, `Detaching`, ...
    pub status: String,
    /// `Primary` or `Secondary`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Attached instance, empty when detached.
    pub instance_id: String,
    /// Attachment details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// MAC.
    pub mac_address: String,
    /// Primary address.
    pub private_ip_address: String,
    /// All addresses.
    pub private_ip_sets: PrivateIpSets,
    /// vSwitch.
    pub v_switch_id: String,
    /// VPC.
    pub vpc_id: String,
    /// Zone.
    pub zone_id: String,
    /// Security groups.
    pub security_group_ids: SecurityGroupIds,
    /// Tags.
    pub tags: EcsTags,
}

/// `NetworkInterfaceSets`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkInterfaceSets {
    /// The ENIs.
    pub network_interface_set: Vec<NetworkInterfaceSet>,
}

/// DescribeNetworkInterfaces.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeNetworkInterfaces {
    /// Request id.
    pub request_id: String,
    /// Next page; empty on the last.
    pub next_token: String,
    /// Matching ENIs in all.
    pub total_count: u64,
    /// This page.
    pub network_interface_sets: NetworkInterfaceSets,
}

/// CreateNetworkInterface: the new ENI's fields at top level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetworkInterface {
    /// Request id.
    pub request_id: String,
    /// The ENI.
    #[serde(flatten)]
    pub eni: NetworkInterfaceSet,
}

/// `AssignedPrivateIpAddressesSet.PrivateIpSet`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AssignedIps {
    /// The new addresses.
    pub private_ip_address: Vec<String>,
}

/// `AssignedPrivateIpAddressesSet`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AssignedSet {
    /// The ENI.
    pub network_interface_id: String,
    /// The addresses.
    pub private_ip_set: AssignedIps,
}

/// AssignPrivateIpAddresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AssignPrivateIpAddresses {
    /// Request id.
    pub request_id: String,
    /// What was assigned.
    pub assigned_private_ip_addresses_set: AssignedSet,
}

/// One instance type's network limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InstanceTypeEntry {
    /// Type name.
    pub instance_type_id: String,
    /// ENIs an instance may have.
    pub eni_quantity: u32,
    /// IPv4 addresses per ENI.
    pub eni_private_ip_address_quantity: u32,
}

/// `InstanceTypes`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InstanceTypes {
    /// The types.
    pub instance_type: Vec<InstanceTypeEntry>,
}

/// DescribeInstanceTypes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeInstanceTypes {
    /// Request id.
    pub request_id: String,
    /// Next page; empty on the last.
    pub next_token: String,
    /// The types.
    pub instance_types: InstanceTypes,
}

/// A VPC tag.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VpcTag {
    /// Key.
    pub key: String,
    /// Value.
    pub value: String,
}

/// `Tags` of VPC objects.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VpcTags {
    /// The tags.
    pub tag: Vec<VpcTag>,
}

/// One vSwitch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VSwitch {
    /// Id.
    pub v_switch_id: String,
    /// VPC.
    pub vpc_id: String,
    /// Zone.
    pub zone_id: String,
    /// CIDR.
    pub cidr_block: String,
    /// Free addresses.
    pub available_ip_address_count: u64,
    /// `Available`.
    pub status: String,
    /// Tags.
    pub tags: VpcTags,
}

/// `VSwitches`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VSwitches {
    /// The vSwitches.
    pub v_switch: Vec<VSwitch>,
}

/// DescribeVSwitches (PageNumber / PageSize paging).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeVSwitches {
    /// Request id.
    pub request_id: String,
    /// Matching vSwitches in all.
    pub total_count: u64,
    /// This page's number, from 1.
    pub page_number: u64,
    /// Page size asked.
    pub page_size: u64,
    /// This page.
    pub v_switches: VSwitches,
}

/// One instance of DescribeInstances (the fields eni-ipam reads).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct InstanceEntry {
    /// Its id.
    pub instance_id: String,
    /// `Pending`, `Starting`, `Running`, `Stopping` or `Stopped`.
    pub status: String,
}

/// `Instances`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Instances {
    /// The instances.
    pub instance: Vec<InstanceEntry>,
}

/// DescribeInstances. An id the region does not know (a released instance)
/// is left out of the answer, not refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DescribeInstances {
    /// Request id.
    pub request_id: String,
    /// Instances matching the query.
    pub total_count: u64,
    /// This page's number.
    pub page_number: u64,
    /// The page size.
    pub page_size: u64,
    /// Next page (the token style); empty on the last.
    pub next_token: String,
    /// This page.
    pub instances: Instances,
}

/// The instance state of an ECS status word. ECS has no "terminated": a
/// released instance is simply not listed. A word not known here counts as
/// running, so GC keeps what it cannot judge.
pub fn instance_state_of(status: &str) -> InstanceState {
    match status {
        "Stopping" | "Stopped" => InstanceState::Stopped,
        _ => InstanceState::Running,
    }
}

/// The ECS status word of an instance state (for the emulator; `Gone` is not listed).
pub fn instance_status_word(state: InstanceState) -> &'static str {
    match state {
        InstanceState::Stopped => "Stopped",
        _ => "Running",
    }
}

/// The cloud's status word for an ENI state.
pub fn status_word(state: EniState) -> &'static str {
    match state {
        EniState::Detached => "Available",
        EniState::Attaching => "Attaching",
        EniState::InUse => "InUse",
        EniState::Detaching => "Detaching",
    }
}

/// The ENI state of a status word. Transitional words the operator does not
/// act on (`Creating`, `Deleting`, ...) count as busy.
pub fn state_of(status: &str) -> EniState {
    match status {
        "Available" => EniState::Detached,
        "Attaching" => EniState::Attaching,
        "InUse" => EniState::InUse,
        _ => EniState::Detaching,
    }
}

/// The wire view of an ENI.
pub fn eni_to_wire(eni: &Eni, security_groups: &[String]) -> NetworkInterfaceSet {
    let mut ips = vec![PrivateIpSet { private_ip_address: eni.primary_ip.to_string(), primary: true }];
    ips.extend(
        eni.secondary_ips
            .iter()
            .map(|ip| PrivateIpSet { private_ip_address: ip.to_string(), primary: false }),
    );
    let instance_id = eni.instance.as_ref().map(|i| i.0.clone()).unwrap_or_default();
    NetworkInterfaceSet {
        network_interface_id: eni.id.0.clone(),
        status: status_word(eni.state).into(),
        kind: if eni.device_index == Some(0) { "Primary" } else { "Secondary" }.into(),
        attachment: eni.instance.as_ref().map(|_| Attachment {
            instance_id: instance_id.clone(),
            device_index: eni.device_index,
            network_card_index: Some(0),
        }),
        instance_id,
        mac_address: eni.mac.clone(),
        private_ip_address: eni.primary_ip.to_string(),
        private_ip_sets: PrivateIpSets { private_ip_set: ips },
        v_switch_id: eni.subnet.0.clone(),
        vpc_id: eni.vpc.0.clone(),
        zone_id: eni.zone.0.clone(),
        security_group_ids: SecurityGroupIds { security_group_id: security_groups.to_vec() },
        tags: EcsTags {
            tag: eni.tags.iter().map(|(k, v)| EcsTag { tag_key: k.clone(), tag_value: v.clone() }).collect(),
        },
    }
}

fn ip(text: &str, eni: &str) -> Result<Ipv4Addr, String> {
    text.parse().map_err(|_| format!("ENI {eni} has address '{text}', not an IPv4 address"))
}

/// The ENI of a wire view; fails on addresses that are not IPv4.
pub fn eni_from_wire(wire: &NetworkInterfaceSet) -> Result<Eni, String> {
    let id = wire.network_interface_id.as_str();
    let attachment = wire.attachment.as_ref();
    let instance = Some(wire.instance_id.as_str())
        .filter(|i| !i.is_empty())
        .or_else(|| attachment.map(|a| a.instance_id.as_str()).filter(|i| !i.is_empty()))
        .map(InstanceId::from);
    let mut secondary_ips = Vec::new();
    for set in &wire.private_ip_sets.private_ip_set {
        if !set.primary {
            secondary_ips.push(ip(&set.private_ip_address, id)?);
        }
    }
    let device_index =
        attachment.and_then(|a| a.device_index).or_else(|| (wire.kind == "Primary").then_some(0));
    Ok(Eni {
        id: EniId::from(id),
        subnet: SubnetId::from(wire.v_switch_id.as_str()),
        vpc: VpcId::from(wire.vpc_id.as_str()),
        zone: Zone::from(wire.zone_id.as_str()),
        mac: wire.mac_address.clone(),
        device_index: instance.as_ref().and(device_index),
        instance,
        state: state_of(&wire.status),
        primary_ip: ip(&wire.private_ip_address, id)?,
        secondary_ips,
        tags: wire
            .tags
            .tag
            .iter()
            .map(|t| (t.tag_key.clone(), t.tag_value.clone()))
            .collect::<BTreeMap<_, _>>(),
    })
}

/// The wire view of a subnet.
pub fn subnet_to_wire(subnet: &Subnet) -> VSwitch {
    VSwitch {
        v_switch_id: subnet.id.0.clone(),
        vpc_id: subnet.vpc.0.clone(),
        zone_id: subnet.zone.0.clone(),
        cidr_block: subnet.cidr.clone(),
        available_ip_address_count: u64::from(subnet.free_ips),
        status: "Available".into(),
        tags: VpcTags {
            tag: subnet.tags.iter().map(|(k, v)| VpcTag { key: k.clone(), value: v.clone() }).collect(),
        },
    }
}

/// The subnet of a wire view.
pub fn subnet_from_wire(wire: &VSwitch) -> Subnet {
    Subnet {
        id: SubnetId::from(wire.v_switch_id.as_str()),
        vpc: VpcId::from(wire.vpc_id.as_str()),
        zone: Zone::from(wire.zone_id.as_str()),
        cidr: wire.cidr_block.clone(),
        free_ips: u32::try_from(wire.available_ip_address_count).unwrap_or(u32::MAX),
        tags: wire.tags.tag.iter().map(|t| (t.key.clone(), t.value.clone())).collect(),
    }
}
