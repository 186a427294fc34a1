//! The ECS and VPC actions, over the fake cloud's state machine: each one
//! reads its parameters, goes through `FakeCloud::serve` (the per-API quota
//! answering `Throttling.User`, injected 5xx faults, then the state change)
//! and renders the cloud's JSON body.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use eni_ipam_api::{EniId, InstanceId, InstanceType, SubnetId, VpcId};
use eni_ipam_cloud::alibaba::wire;
use eni_ipam_cloud::{Api, CreateEni, EniQuery, EniState, InstanceState};
use serde_json::Value;
use tokio::time::Instant;

use crate::emulator::Emulator;
use crate::params::{ApiError, Params};

/// The largest page DescribeNetworkInterfaces gives.
const MAX_RESULTS: u32 = 500;
/// The largest page DescribeInstanceTypes gives (and its default).
const MAX_INSTANCE_TYPES: u32 = 1600;
/// IPs one Assign / Unassign / Create call may carry.
const IPS_PER_CALL: u32 = 10;

fn body<T: serde::Serialize>(value: T) -> Result<Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|e| ApiError::new("InternalError", format!("rendering the answer: {e}")))
}

/// The operation behind an action name, for quotas and counters.
pub fn api_of(action: &str) -> Option<Api> {
    Api::ALL.into_iter().find(|api| api.alibaba_name() == action)
}

impl Emulator {
    /// Runs one action.
    pub fn dispatch(&self, action: &str, p: &Params) -> Result<Value, ApiError> {
        match action {
            "DescribeVSwitches" => self.describe_vswitches(p),
            "DescribeInstanceTypes" => self.describe_instance_types(p),
            "DescribeInstances" => self.describe_instances(p),
            "DescribeNetworkInterfaces" => self.describe_network_interfaces(p),
            "CreateNetworkInterface" => self.create_network_interface(p),
            "AttachNetworkInterface" => self.attach_network_interface(p),
            "AssignPrivateIpAddresses" => self.assign_private_ip_addresses(p),
            "UnassignPrivateIpAddresses" => self.unassign_private_ip_addresses(p),
            "DetachNetworkInterface" => self.detach_network_interface(p),
            "DeleteNetworkInterface" => self.delete_network_interface(p),
            "TagResources" => self.tag_resources(p),
            other => Err(ApiError::new(
                "InvalidAction.NotFound",
                format!(
                    "action '{other}' is not served by the emulator (ECS ENI actions, DescribeInstances and DescribeVSwitches are)"
                ),
            )),
        }
    }

    fn region(&self, p: &Params) -> Result<(), ApiError> {
        let region = p.required("RegionId")?;
        if region != self.region {
            return Err(ApiError::new(
                "InvalidRegionId.NotFound",
                format!("region '{region}' is not this endpoint's ({})", self.region),
            ));
        }
        Ok(())
    }

    fn describe_vswitches(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let page_number = p.number("PageNumber", 1..=u32::MAX)?.unwrap_or(1);
        let page_size = p.number("PageSize", 1..=50)?.unwrap_or(10);
        let vpc = p.get("VpcId").map(VpcId::from).unwrap_or_else(|| self.vpc.clone());
        let only = p.get("VSwitchId").map(SubnetId::from);
        let subnets = self.cloud.serve(Api::DescribeSubnets, vpc.as_str(), |s| Ok(s.list_subnets(&vpc)))?;
        let matching: Vec<_> =
            subnets.iter().filter(|s| only.as_ref().is_none_or(|id| &s.id == id)).collect();
        let start = ((page_number - 1) as usize).saturating_mul(page_size as usize);
        let page =
            matching.iter().skip(start).take(page_size as usize).map(|s| wire::subnet_to_wire(s)).collect();
        body(wire::DescribeVSwitches {
            request_id: String::new(),
            total_count: matching.len() as u64,
            page_number: u64::from(page_number),
            page_size: u64::from(page_size),
            v_switches: wire::VSwitches { v_switch: page },
        })
    }

    /// The types named in `InstanceTypes.N` (all of them when none is named), by
    /// page: `MaxResults` (1 to 1600, ECS's default 1600) and `NextToken`, as ECS pages them.
    fn describe_instance_types(&self, p: &Params) -> Result<Value, ApiError> {
        let asked: Vec<InstanceType> = p.list("InstanceTypes").into_iter().map(InstanceType::from).collect();
        let max = p.number("MaxResults", 1..=MAX_INSTANCE_TYPES)?.unwrap_or(MAX_INSTANCE_TYPES);
        let token = p.get("NextToken").filter(|t| !t.is_empty());
        if let Some(token) = token
            && !self.cloud.profile().instance_types.contains_key(token)
        {
            return Err(ApiError::new(
                "InvalidNextToken",
                format!("NextToken '{token}' was not given by a previous DescribeInstanceTypes"),
            ));
        }
        let page = self.cloud.serve(Api::DescribeInstanceTypes, "instance-types", |s| {
            Ok(s.instance_types_page(&asked, token, max as usize))
        })?;
        let types = page
            .items
            .into_iter()
            .map(|l| wire::InstanceTypeEntry {
                instance_type_id: l.instance_type.0,
                eni_quantity: l.max_enis,
                eni_private_ip_address_quantity: l.ipv4_per_eni,
            })
            .collect();
        body(wire::DescribeInstanceTypes {
            request_id: String::new(),
            next_token: page.next_token.unwrap_or_default(),
            instance_types: wire::InstanceTypes { instance_type: types },
        })
    }

    /// The instances named in `InstanceIds` (a JSON array of up to 100 ids), or
    /// all of them, by page. Released or unknown ids are left out, as ECS does.
    fn describe_instances(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let page_number = p.number("PageNumber", 1..=u32::MAX)?.unwrap_or(1);
        let page_size = p.number("PageSize", 1..=100)?.unwrap_or(10);
        let asked: Option<Vec<String>> = match p.get("InstanceIds").filter(|t| !t.is_empty()) {
            None => None,
            Some(text) => Some(serde_json::from_str(text).map_err(|_| {
                ApiError::new(
                    "InvalidInstanceIds.Malformed",
                    format!("InstanceIds '{text}' is not a JSON array of instance ids"),
                )
            })?),
        };
        if asked.as_ref().is_some_and(|ids| ids.len() > 100) {
            return Err(ApiError::new(
                "InvalidInstanceIds.ValueNotSupported",
                "give at most 100 InstanceIds",
            ));
        }
        let listed = self.cloud.serve(Api::DescribeInstances, "instances", |s| {
            let all: Vec<InstanceId> = s.instances().into_iter().map(|i| i.id).collect();
            let ids: Vec<InstanceId> = match &asked {
                Some(ids) => ids.iter().map(|i| InstanceId::from(i.as_str())).collect(),
                None => all,
            };
            Ok(s.instance_states(&ids)
                .into_iter()
                .filter(|(_, state)| !matches!(state, InstanceState::Gone | InstanceState::Terminated))
                .collect::<Vec<_>>())
        })?;
        let start = ((page_number - 1) as usize).saturating_mul(page_size as usize);
        let page = listed
            .iter()
            .skip(start)
            .take(page_size as usize)
            .map(|(id, state)| wire::InstanceEntry {
                instance_id: id.0.clone(),
                status: wire::instance_status_word(*state).to_owned(),
            })
            .collect();
        body(wire::DescribeInstances {
            request_id: String::new(),
            total_count: listed.len() as u64,
            page_number: u64::from(page_number),
            page_size: u64::from(page_size),
            next_token: String::new(),
            instances: wire::Instances { instance: page },
        })
    }

    fn describe_network_interfaces(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let api = Api::DescribeNetworkInterfaces;
        let page_size = p.number("MaxResults", 1..=MAX_RESULTS)?.unwrap_or(10);
        let token = p.get("NextToken").filter(|t| !t.is_empty()).map(str::to_owned);
        let ids = p.list("NetworkInterfaceId");
        let (items, next, total) = if !ids.is_empty() {
            let found = self.cloud.serve(api, "network-interfaces", |s| {
                Ok(s.all_enis().filter(|e| ids.contains(&e.id.0)).cloned().collect::<Vec<_>>())
            })?;
            let total = found.len();
            (found, None, total)
        } else {
            let query = match p.get("InstanceId").filter(|i| !i.is_empty()) {
                Some(instance) => EniQuery::Instances(vec![InstanceId::from(instance)]),
                None => EniQuery::Vpc(p.get("VpcId").map(VpcId::from).unwrap_or_else(|| self.vpc.clone())),
            };
            if let Some(t) = &token
                && !t.starts_with("eni-")
            {
                return Err(ApiError::new(
                    "InvalidParameter.NextToken",
                    format!("NextToken '{t}' was not issued by this service"),
                ));
            }
            self.cloud.serve(api, "network-interfaces", |s| {
                let page = s.list_enis(&query, page_size, token.as_deref())?;
                let total = s
                    .all_enis()
                    .filter(|e| match &query {
                        EniQuery::Vpc(vpc) => &e.vpc == vpc,
                        EniQuery::Instances(ids) => e.instance.as_ref().is_some_and(|i| ids.contains(i)),
                        EniQuery::Subnet(subnet) => &e.subnet == subnet,
                    })
                    .count();
                Ok((page.items, page.next_token, total))
            })?
        };
        let groups = self.security_groups.lock().expect("security groups lock");
        let sets = items
            .iter()
            .map(|e| wire::eni_to_wire(e, groups.get(&e.id).map(Vec::as_slice).unwrap_or_default()))
            .collect();
        body(wire::DescribeNetworkInterfaces {
            request_id: String::new(),
            next_token: next.unwrap_or_default(),
            total_count: total as u64,
            network_interface_sets: wire::NetworkInterfaceSets { network_interface_set: sets },
        })
    }

    fn create_network_interface(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let subnet = SubnetId::from(p.required("VSwitchId")?);
        let mut groups = p.list("SecurityGroupIds");
        if let Some(one) = p.get("SecurityGroupId").filter(|g| !g.is_empty()) {
            groups.insert(0, one.to_owned());
        }
        if groups.is_empty() {
            return Err(ApiError::new(
                "MissingParameter",
                "give SecurityGroupId or SecurityGroupIds.N: an ENI needs a security group",
            ));
        }
        if let Some(bad) = groups.iter().find(|g| !g.starts_with("sg-")) {
            return Err(ApiError::new(
                "InvalidSecurityGroupId.NotFound",
                format!("security group '{bad}' does not exist"),
            ));
        }
        if !p.list("PrivateIpAddress").is_empty() {
            return Err(ApiError::new(
                "InvalidParameter",
                "explicit PrivateIpAddress.N is not emulated: ask by SecondaryPrivateIpAddressCount",
            ));
        }
        let secondary = p.number("SecondaryPrivateIpAddressCount", 1..=IPS_PER_CALL)?.unwrap_or(0);
        let request = CreateEni {
            subnet: subnet.clone(),
            security_groups: groups.iter().map(|g| g.as_str().into()).collect(),
            secondary_ips: secondary,
            tags: p.tags()?,
            client_token: p
                .get("ClientToken")
                .map(str::to_owned)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        };
        let eni =
            self.cloud.serve(Api::CreateNetworkInterface, subnet.as_str(), |s| s.create_eni(&request))?;
        self.security_groups.lock().expect("security groups lock").insert(eni.id.clone(), groups.clone());
        body(wire::CreateNetworkInterface {
            request_id: String::new(),
            eni: wire::eni_to_wire(&eni, &groups),
        })
    }

    fn attach_network_interface(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let eni = EniId::from(p.required("NetworkInterfaceId")?);
        let instance = InstanceId::from(p.required("InstanceId")?);
        self.cloud.serve(Api::AttachNetworkInterface, eni.as_str(), |s| {
            // ECS picks the device index: the lowest free one after the primary's.
            let used: Vec<u32> = s
                .instances()
                .into_iter()
                .find(|i| i.id == instance)
                .map(|i| i.enis.keys().copied().collect())
                .unwrap_or_default();
            let index = (1..).find(|i| !used.contains(i)).expect("a free index exists");
            s.attach_eni(&eni, &instance, index, Instant::now())
        })?;
        body(wire::Acknowledged::default())
    }

    fn assign_private_ip_addresses(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let eni = EniId::from(p.required("NetworkInterfaceId")?);
        if !p.list("PrivateIpAddress").is_empty() {
            return Err(ApiError::new(
                "InvalidParameter",
                "explicit PrivateIpAddress.N is not emulated: ask by SecondaryPrivateIpAddressCount",
            ));
        }
        let count = p.number("SecondaryPrivateIpAddressCount", 1..=IPS_PER_CALL)?.ok_or_else(|| {
            ApiError::new("MissingParameter", "give SecondaryPrivateIpAddressCount (1 to 10)")
        })?;
        let ips =
            self.cloud.serve(Api::AssignPrivateIpAddresses, eni.as_str(), |s| s.assign_ips(&eni, count))?;
        body(wire::AssignPrivateIpAddresses {
            request_id: String::new(),
            assigned_private_ip_addresses_set: wire::AssignedSet {
                network_interface_id: eni.0.clone(),
                private_ip_set: wire::AssignedIps {
                    private_ip_address: ips.iter().map(Ipv4Addr::to_string).collect(),
                },
            },
        })
    }

    fn unassign_private_ip_addresses(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let eni = EniId::from(p.required("NetworkInterfaceId")?);
        let texts = p.list("PrivateIpAddress");
        if texts.is_empty() || texts.len() > IPS_PER_CALL as usize {
            return Err(ApiError::new(
                "InvalidParameter.PrivateIpAddress",
                "give 1 to 10 PrivateIpAddress.N",
            ));
        }
        let mut ips = Vec::with_capacity(texts.len());
        for text in &texts {
            ips.push(text.parse::<Ipv4Addr>().map_err(|_| {
                ApiError::new("InvalidParameter.PrivateIpAddress", format!("'{text}' is not an IPv4 address"))
            })?);
        }
        self.cloud.serve(Api::UnassignPrivateIpAddresses, eni.as_str(), |s| {
            let on_eni =
                s.all_enis().find(|e| e.id == eni).map(|e| e.secondary_ips.clone()).unwrap_or_default();
            if let Some(gone) = ips.iter().find(|ip| !on_eni.contains(ip))
                && s.all_enis().any(|e| e.id == eni)
            {
                return Err(eni_ipam_cloud::CloudError::new(
                    Api::UnassignPrivateIpAddresses,
                    eni_ipam_cloud::ErrorClass::InvalidRequest,
                    "InvalidIp.IpUnassigned",
                    eni.as_str(),
                    format!("{gone} is not a secondary address of the ENI"),
                ));
            }
            s.unassign_ips(&eni, &ips)
        })?;
        body(wire::Acknowledged::default())
    }

    fn detach_network_interface(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let eni = EniId::from(p.required("NetworkInterfaceId")?);
        let instance = InstanceId::from(p.required("InstanceId")?);
        self.cloud.serve(Api::DetachNetworkInterface, eni.as_str(), |s| {
            if let Some(found) = s.all_enis().find(|e| e.id == eni)
                && (found.instance.as_ref() != Some(&instance) || found.state == EniState::Detached)
            {
                return Err(eni_ipam_cloud::CloudError::new(
                    Api::DetachNetworkInterface,
                    eni_ipam_cloud::ErrorClass::InvalidState,
                    "InvalidOperation.InvalidEniState",
                    eni.as_str(),
                    format!("the ENI is not attached to {instance}"),
                ));
            }
            s.detach_eni(&eni)
        })?;
        body(wire::Acknowledged::default())
    }

    fn delete_network_interface(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let eni = EniId::from(p.required("NetworkInterfaceId")?);
        self.cloud.serve(Api::DeleteNetworkInterface, eni.as_str(), |s| s.delete_eni(&eni))?;
        self.security_groups.lock().expect("security groups lock").remove(&eni);
        body(wire::Acknowledged::default())
    }

    fn tag_resources(&self, p: &Params) -> Result<Value, ApiError> {
        self.region(p)?;
        let kind = p.required("ResourceType")?;
        if kind != "eni" {
            return Err(ApiError::new(
                "InvalidResourceType.NotSupported",
                format!("ResourceType '{kind}': only eni is emulated"),
            ));
        }
        let ids = p.list("ResourceId");
        let tags: BTreeMap<String, String> = p.tags()?;
        if ids.is_empty() || tags.is_empty() {
            return Err(ApiError::new("MissingParameter", "give ResourceId.N and Tag.N.Key"));
        }
        for id in ids {
            let eni = EniId::from(id);
            self.cloud.serve(Api::CreateTags, eni.as_str(), |s| s.tag_eni(&eni, &tags))?;
        }
        body(wire::Acknowledged::default())
    }
}
