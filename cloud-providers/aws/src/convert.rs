//! SDK shapes into the provider-neutral types.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use aws_sdk_ec2::types::{
    AttachmentStatus, InstanceStateName, InstanceTypeInfo, NetworkInterface, NetworkInterfaceStatus, Tag,
};
use eni_ipam_api::{EniId, InstanceId, InstanceType, SubnetId, VpcId, Zone};
use eni_ipam_cloud::{Eni, EniState, InstanceLimits, InstanceState, Subnet};

pub fn tags(set: &[Tag]) -> BTreeMap<String, String> {
    set.iter().filter_map(|t| Some((t.key()?.to_owned(), t.value().unwrap_or_default().to_owned()))).collect()
}

fn ip(text: Option<&str>) -> Option<Ipv4Addr> {
    text.and_then(|t| t.parse().ok())
}

/// The state of an EC2 instance state name. A name not known here counts as
/// running, so GC keeps what it cannot judge.
pub fn instance_state(name: Option<&InstanceStateName>) -> InstanceState {
    match name {
        Some(InstanceStateName::Stopping | InstanceStateName::Stopped) => InstanceState::Stopped,
        Some(InstanceStateName::ShuttingDown | InstanceStateName::Terminated) => InstanceState::Terminated,
        _ => InstanceState::Running,
    }
}

/// An EC2 network interface; `None` when it lacks an id or an IPv4 address.
pub fn eni(ni: &NetworkInterface) -> Option<Eni> {
    let attachment = ni.attachment();
    let attachment_state = attachment.and_then(|a| a.status());
    let state = match (ni.status(), attachment_state) {
        (_, Some(AttachmentStatus::Attaching)) | (Some(NetworkInterfaceStatus::Attaching), _) => {
            EniState::Attaching
        }
        (_, Some(AttachmentStatus::Detaching)) | (Some(NetworkInterfaceStatus::Detaching), _) => {
            EniState::Detaching
        }
        (_, Some(AttachmentStatus::Attached)) | (Some(NetworkInterfaceStatus::InUse), _) => EniState::InUse,
        _ => EniState::Detached,
    };
    let attached = state != EniState::Detached;
    let primary_ip = ip(ni.private_ip_address())?;
    let secondary_ips = ni
        .private_ip_addresses()
        .iter()
        .filter(|a| !a.primary().unwrap_or(false))
        .filter_map(|a| ip(a.private_ip_address()))
        .collect();
    Some(Eni {
        id: EniId::from(ni.network_interface_id()?),
        subnet: SubnetId::from(ni.subnet_id().unwrap_or_default()),
        vpc: VpcId::from(ni.vpc_id().unwrap_or_default()),
        zone: Zone::from(ni.availability_zone().unwrap_or_default()),
        mac: ni.mac_address().unwrap_or_default().to_owned(),
        instance: attachment.and_then(|a| a.instance_id()).filter(|_| attached).map(InstanceId::from),
        device_index: attachment.and_then(|a| a.device_index()).filter(|_| attached).map(|d| d.max(0) as u32),
        state,
        primary_ip,
        secondary_ips,
        tags: tags(ni.tag_set()),
    })
}

/// An EC2 subnet.
pub fn subnet(s: &aws_sdk_ec2::types::Subnet) -> Option<Subnet> {
    Some(Subnet {
        id: SubnetId::from(s.subnet_id()?),
        vpc: VpcId::from(s.vpc_id().unwrap_or_default()),
        zone: Zone::from(s.availability_zone().unwrap_or_default()),
        cidr: s.cidr_block().unwrap_or_default().to_owned(),
        free_ips: s.available_ip_address_count().unwrap_or(0).max(0) as u32,
        tags: tags(s.tags()),
    })
}

/// Limits of an instance type; `None` when EC2 leaves them out.
pub fn limits(info: &InstanceTypeInfo) -> Option<InstanceLimits> {
    let network = info.network_info()?;
    Some(InstanceLimits {
        instance_type: InstanceType::from(info.instance_type()?.as_str()),
        max_enis: network.maximum_network_interfaces()?.max(0) as u32,
        ipv4_per_eni: network.ipv4_addresses_per_interface()?.max(0) as u32,
    })
}
