//! The fake cloud's state machine: VPC, subnets with finite address space,
//! instances with their type limits, ENIs through their lifecycle. It checks
//! what the real clouds check and answers with their error classes. No I/O,
//! no clock of its own: callers pass `now`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

use eni_ipam_api::{EniId, InstanceId, SubnetId, VpcId, Zone};
use tokio::time::Instant;

use crate::Api;
use crate::error::{CloudError, CloudResult, ErrorClass};
use crate::profile::{CloudKind, CloudProfile};
use crate::subnet_gateway::reserved_addresses;
use crate::types::{CreateEni, Eni, EniQuery, EniState, InstanceLimits, InstanceState, Page, Subnet};

/// Why the fake refuses a call; mapped to each cloud's own error code.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    EniNotFound,
    InstanceNotFound,
    SubnetNotFound,
    SubnetFull,
    AttachmentLimit,
    IpLimit,
    EniBusy,
    DeviceIndexTaken,
    BatchTooLarge,
    WrongZone,
    PrimaryEni,
}

impl Refusal {
    fn class(self) -> ErrorClass {
        match self {
            Refusal::EniNotFound | Refusal::InstanceNotFound | Refusal::SubnetNotFound => {
                ErrorClass::NotFound
            }
            Refusal::SubnetFull => ErrorClass::SubnetFull,
            Refusal::AttachmentLimit | Refusal::IpLimit => ErrorClass::Quota,
            Refusal::EniBusy | Refusal::DeviceIndexTaken => ErrorClass::InvalidState,
            Refusal::BatchTooLarge | Refusal::WrongZone | Refusal::PrimaryEni => ErrorClass::InvalidRequest,
        }
    }

    fn code(self, kind: CloudKind) -> &'static str {
        match (kind, self) {
            (CloudKind::Aws, Refusal::EniNotFound) => "InvalidNetworkInterfaceID.NotFound",
            (CloudKind::Aws, Refusal::InstanceNotFound) => "InvalidInstanceID.NotFound",
            (CloudKind::Aws, Refusal::SubnetNotFound) => "InvalidSubnetID.NotFound",
            (CloudKind::Aws, Refusal::SubnetFull) => "InsufficientFreeAddressesInSubnet",
            (CloudKind::Aws, Refusal::AttachmentLimit) => "AttachmentLimitExceeded",
            (CloudKind::Aws, Refusal::IpLimit) => "PrivateIpAddressLimitExceeded",
            (CloudKind::Aws, Refusal::EniBusy) => "IncorrectState",
            (CloudKind::Aws, Refusal::DeviceIndexTaken) => "InvalidParameterValue",
            (CloudKind::Aws, _) => "InvalidParameterValue",
            (CloudKind::Alibaba, Refusal::EniNotFound) => "InvalidEniId.NotFound",
            (CloudKind::Alibaba, Refusal::InstanceNotFound) => "InvalidInstanceId.NotFound",
            (CloudKind::Alibaba, Refusal::SubnetNotFound) => "InvalidVSwitchId.NotFound",
            (CloudKind::Alibaba, Refusal::SubnetFull) => "InvalidVSwitchId.IpNotEnough",
            (CloudKind::Alibaba, Refusal::AttachmentLimit) => "EniPerInstanceLimitExceeded",
            (CloudKind::Alibaba, Refusal::IpLimit) => "InvalidOperation.Ipv4CountExceeded",
            (CloudKind::Alibaba, Refusal::EniBusy) => "InvalidOperation.InvalidEniState",
            (CloudKind::Alibaba, Refusal::DeviceIndexTaken) => "InvalidOperation.DeviceIndexInUse",
            (CloudKind::Alibaba, _) => "InvalidParameter",
        }
    }
}

#[derive(Debug)]
struct SubnetSpace {
    info: Subnet,
    base: u32,
    size: u32,
    next: u32,
    /// Addresses the cloud keeps at the top (its reserved ones, gateway among them on Alibaba).
    reserved_high: u32,
    freed: Vec<u32>,
}

impl SubnetSpace {
    fn take(&mut self) -> Option<Ipv4Addr> {
        let offset = match self.freed.pop() {
            Some(o) => o,
            None if self.next < self.size - self.reserved_high => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.info.free_ips -= 1;
        Some(Ipv4Addr::from(self.base + offset))
    }

    fn give_back(&mut self, ip: Ipv4Addr) {
        self.freed.push(u32::from(ip) - self.base);
        self.info.free_ips += 1;
    }
}

#[derive(Debug)]
struct Instance {
    zone: Zone,
    limits: InstanceLimits,
    /// device index -> ENI
    enis: BTreeMap<u32, EniId>,
}

/// An instance as the console shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InstanceView {
    /// Its id.
    pub id: InstanceId,
    /// Its zone.
    pub zone: Zone,
    /// Its type.
    pub instance_type: eni_ipam_api::InstanceType,
    /// Attached ENIs by device index.
    pub enis: BTreeMap<u32, EniId>,
}

/// Everything the fake cloud holds.
#[derive(Debug)]
pub struct CloudState {
    profile: CloudProfile,
    vpc: VpcId,
    subnets: BTreeMap<SubnetId, SubnetSpace>,
    instances: HashMap<InstanceId, Instance>,
    /// Terminated instances the cloud still shows (as EC2 does for a while).
    terminated: HashSet<InstanceId>,
    enis: BTreeMap<EniId, Eni>,
    attaching: Vec<(Instant, EniId)>,
    tokens: HashMap<String, EniId>,
    serial: u64,
}

impl CloudState {
    /// An empty VPC.
    pub fn new(profile: CloudProfile, vpc: VpcId) -> Self {
        Self {
            profile,
            vpc,
            subnets: BTreeMap::new(),
            instances: HashMap::new(),
            terminated: HashSet::new(),
            enis: BTreeMap::new(),
            attaching: Vec::new(),
            tokens: HashMap::new(),
            serial: 0,
        }
    }

    fn refuse(&self, api: Api, why: Refusal, object: impl Into<String>, message: &str) -> CloudError {
        CloudError::new(api, why.class(), why.code(self.profile.kind), object, message)
    }

    fn next_serial(&mut self) -> u64 {
        self.serial += 1;
        self.serial
    }

    /// Adds a subnet `a.b.c.d/prefix` in a zone.
    pub fn add_subnet(
        &mut self,
        zone: Zone,
        base: Ipv4Addr,
        prefix: u8,
        tags: BTreeMap<String, String>,
    ) -> SubnetId {
        let serial = self.next_serial();
        let id = SubnetId(format!("subnet-{serial:08x}"));
        let size = 1u32 << (32 - u32::from(prefix));
        // The cloud's reserved addresses (the VPC router among them) are never handed out.
        let (reserved_low, reserved_high) = reserved_addresses(self.profile.kind);
        let space = SubnetSpace {
            info: Subnet {
                id: id.clone(),
                vpc: self.vpc.clone(),
                zone,
                cidr: format!("{base}/{prefix}"),
                free_ips: size - reserved_low - reserved_high,
                tags,
            },
            base: u32::from(base),
            size,
            next: reserved_low,
            reserved_high,
            freed: Vec::new(),
        };
        self.subnets.insert(id.clone(), space);
        id
    }

    fn new_eni(&mut self, api: Api, subnet: &SubnetId, secondary: u32) -> CloudResult<Eni> {
        let space = self
            .subnets
            .get(subnet)
            .ok_or_else(|| self.refuse(api, Refusal::SubnetNotFound, subnet.as_str(), "no such subnet"))?;
        if space.info.free_ips < secondary + 1 {
            return Err(self.refuse(api, Refusal::SubnetFull, subnet.as_str(), "not enough free addresses"));
        }
        let serial = self.next_serial();
        let space = self.subnets.get_mut(subnet).expect("checked above");
        let primary_ip = space.take().expect("room checked");
        let secondary_ips = (0..secondary).map(|_| space.take().expect("room checked")).collect();
        let b = serial.to_be_bytes();
        Ok(Eni {
            id: EniId(format!("eni-{serial:017x}")),
            subnet: subnet.clone(),
            vpc: self.vpc.clone(),
            zone: space.info.zone.clone(),
            mac: format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[3], b[4], b[5], b[6], b[7]),
            instance: None,
            device_index: None,
            state: EniState::Detached,
            primary_ip,
            secondary_ips,
            tags: BTreeMap::new(),
        })
    }

    /// Launches a VM with its primary ENI (what the cloud does on its own when
    /// an autoscaler adds a node; not an API call of ours).
    pub fn launch_instance(&mut self, instance_type: &str, subnet: &SubnetId) -> CloudResult<InstanceId> {
        let api = Api::DescribeInstanceTypes;
        let limits = self.profile.instance_types.get(instance_type).cloned().ok_or_else(|| {
            CloudError::new(
                api,
                ErrorClass::InvalidRequest,
                "InvalidInstanceType",
                instance_type,
                "unknown type",
            )
        })?;
        let mut eni = self.new_eni(Api::CreateNetworkInterface, subnet, 0)?;
        let serial = self.next_serial();
        let id = InstanceId(format!("i-{serial:017x}"));
        eni.instance = Some(id.clone());
        eni.device_index = Some(0);
        eni.state = EniState::InUse;
        let zone = eni.zone.clone();
        self.instances
            .insert(id.clone(), Instance { zone, limits, enis: BTreeMap::from([(0, eni.id.clone())]) });
        self.enis.insert(eni.id.clone(), eni);
        Ok(id)
    }

    /// Terminates a VM: ENIs attached to it are deleted with it (eni-ipam
    /// attaches with DeleteOnTermination), detaching ones are left behind.
    pub fn terminate_instance(&mut self, id: &InstanceId) {
        let Some(instance) = self.instances.remove(id) else { return };
        self.terminated.insert(id.clone());
        for eni in instance.enis.values() {
            self.release_eni(eni);
        }
    }

    fn release_eni(&mut self, id: &EniId) {
        if let Some(eni) = self.enis.remove(id)
            && let Some(space) = self.subnets.get_mut(&eni.subnet)
        {
            space.give_back(eni.primary_ip);
            for ip in eni.secondary_ips {
                space.give_back(ip);
            }
        }
    }

    /// Completes attachments whose delay has passed.
    pub fn settle(&mut self, now: Instant) {
        let enis = &mut self.enis;
        self.attaching.retain(|(ready_at, id)| {
            if *ready_at > now {
                return true;
            }
            if let Some(eni) = enis.get_mut(id)
                && eni.state == EniState::Attaching
            {
                eni.state = EniState::InUse;
            }
            false
        });
    }

    /// Every instance with its type and attached ENIs by device index (for
    /// the emulator's dump and its device-index choice; not an API).
    pub fn instances(&self) -> Vec<InstanceView> {
        let mut out: Vec<InstanceView> = self
            .instances
            .iter()
            .map(|(id, i)| InstanceView {
                id: id.clone(),
                zone: i.zone.clone(),
                instance_type: i.limits.instance_type.clone(),
                enis: i.enis.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// What the cloud says of each of `ids` (DescribeInstances): running while
    /// launched, terminated once terminated, gone when never seen.
    pub fn instance_states(&self, ids: &[InstanceId]) -> BTreeMap<InstanceId, InstanceState> {
        ids.iter()
            .map(|id| {
                let state = if self.instances.contains_key(id) {
                    InstanceState::Running
                } else if self.terminated.contains(id) {
                    InstanceState::Terminated
                } else {
                    InstanceState::Gone
                };
                (id.clone(), state)
            })
            .collect()
    }

    /// Every ENI (for invariant checks, not an API).
    pub fn all_enis(&self) -> impl Iterator<Item = &Eni> {
        self.enis.values()
    }

    /// Instance limits of the known types among `types`.
    pub fn instance_limits(&self, types: &[eni_ipam_api::InstanceType]) -> Vec<InstanceLimits> {
        types.iter().filter_map(|t| self.profile.instance_types.get(t.as_str()).cloned()).collect()
    }

    /// One page of the instance types DescribeInstanceTypes lists, in name order:
    /// those among `asked` (all of them when `asked` is empty) after the type named
    /// by `token`, at most `max`; the next token is the last name returned.
    pub fn instance_types_page(
        &self,
        asked: &[eni_ipam_api::InstanceType],
        token: Option<&str>,
        max: usize,
    ) -> Page<InstanceLimits> {
        let mut matching = self
            .profile
            .instance_types
            .iter()
            .filter(|(name, _)| asked.is_empty() || asked.iter().any(|t| t.as_str() == name.as_str()))
            .filter(|(name, _)| token.is_none_or(|after| name.as_str() > after))
            .map(|(_, limits)| limits.clone());
        let items: Vec<InstanceLimits> = matching.by_ref().take(max.max(1)).collect();
        let next_token = match matching.next() {
            Some(_) => items.last().map(|l| l.instance_type.0.clone()),
            None => None,
        };
        Page { items, next_token }
    }

    /// One page of ENIs, in id order; the token is the last id returned.
    pub fn list_enis(&self, query: &EniQuery, page_size: u32, token: Option<&str>) -> CloudResult<Page<Eni>> {
        let api = Api::DescribeNetworkInterfaces;
        let page_size = page_size.clamp(1, self.profile.batch.max_page_size) as usize;
        let matches: Box<dyn Fn(&Eni) -> bool> = match query {
            EniQuery::Vpc(vpc) => {
                let vpc = vpc.clone();
                Box::new(move |e: &Eni| e.vpc == vpc)
            }
            EniQuery::Subnet(subnet) => {
                let subnet = subnet.clone();
                Box::new(move |e: &Eni| e.subnet == subnet)
            }
            EniQuery::Instances(ids) => {
                if ids.len() > self.profile.batch.instances_per_list as usize {
                    return Err(self.refuse(
                        api,
                        Refusal::BatchTooLarge,
                        "instances",
                        "too many filter values",
                    ));
                }
                let ids = ids.clone();
                Box::new(move |e: &Eni| e.instance.as_ref().is_some_and(|i| ids.contains(i)))
            }
        };
        let start = match token {
            Some(t) => std::ops::Bound::Excluded(EniId(t.to_owned())),
            None => std::ops::Bound::Unbounded,
        };
        let mut items: Vec<Eni> = Vec::with_capacity(page_size);
        let mut more = false;
        for eni in self.enis.range((start, std::ops::Bound::Unbounded)).map(|(_, e)| e) {
            if !matches(eni) {
                continue;
            }
            if items.len() == page_size {
                more = true;
                break;
            }
            items.push(eni.clone());
        }
        let next_token = if more { items.last().map(|e| e.id.0.clone()) } else { None };
        Ok(Page { items, next_token })
    }

    /// Subnets of a VPC.
    pub fn list_subnets(&self, vpc: &VpcId) -> Vec<Subnet> {
        self.subnets.values().filter(|s| &s.info.vpc == vpc).map(|s| s.info.clone()).collect()
    }

    /// CreateNetworkInterface.
    pub fn create_eni(&mut self, req: &CreateEni) -> CloudResult<Eni> {
        let api = Api::CreateNetworkInterface;
        if let Some(id) = self.tokens.get(&req.client_token)
            && let Some(eni) = self.enis.get(id)
        {
            return Ok(eni.clone());
        }
        if req.secondary_ips > self.profile.batch.create_ips_per_call.unwrap_or(u32::MAX) {
            return Err(self.refuse(
                api,
                Refusal::BatchTooLarge,
                req.subnet.as_str(),
                "too many secondary IPs",
            ));
        }
        let mut eni = self.new_eni(api, &req.subnet, req.secondary_ips)?;
        eni.tags = req.tags.clone();
        self.tokens.insert(req.client_token.clone(), eni.id.clone());
        self.enis.insert(eni.id.clone(), eni.clone());
        Ok(eni)
    }

    /// AttachNetworkInterface: starts the attachment; it completes after the
    /// profile's attach delay.
    pub fn attach_eni(
        &mut self,
        id: &EniId,
        instance_id: &InstanceId,
        index: u32,
        now: Instant,
    ) -> CloudResult<()> {
        let api = Api::AttachNetworkInterface;
        let eni = self
            .enis
            .get(id)
            .ok_or_else(|| self.refuse(api, Refusal::EniNotFound, id.as_str(), "no such ENI"))?;
        let instance = self.instances.get(instance_id).ok_or_else(|| {
            self.refuse(api, Refusal::InstanceNotFound, instance_id.as_str(), "no such instance")
        })?;
        if eni.state != EniState::Detached {
            return Err(self.refuse(api, Refusal::EniBusy, id.as_str(), "ENI is not detached"));
        }
        if eni.zone != instance.zone {
            return Err(self.refuse(
                api,
                Refusal::WrongZone,
                id.as_str(),
                "ENI and instance are in different zones",
            ));
        }
        if instance.enis.contains_key(&index) {
            return Err(self.refuse(
                api,
                Refusal::DeviceIndexTaken,
                instance_id.as_str(),
                "device index in use",
            ));
        }
        if instance.enis.len() as u32 >= instance.limits.max_enis {
            return Err(self.refuse(
                api,
                Refusal::AttachmentLimit,
                instance_id.as_str(),
                "instance has its maximum ENIs",
            ));
        }
        if eni.secondary_ips.len() as u32 + 1 > instance.limits.ipv4_per_eni {
            return Err(self.refuse(
                api,
                Refusal::IpLimit,
                id.as_str(),
                "ENI holds more IPs than the instance type allows",
            ));
        }
        self.instances.get_mut(instance_id).expect("checked").enis.insert(index, id.clone());
        let eni = self.enis.get_mut(id).expect("checked");
        eni.instance = Some(instance_id.clone());
        eni.device_index = Some(index);
        eni.state = EniState::Attaching;
        self.attaching.push((now + self.profile.attach_delay, id.clone()));
        Ok(())
    }

    /// AssignPrivateIpAddresses by count.
    pub fn assign_ips(&mut self, id: &EniId, count: u32) -> CloudResult<Vec<Ipv4Addr>> {
        let api = Api::AssignPrivateIpAddresses;
        let eni = self
            .enis
            .get(id)
            .ok_or_else(|| self.refuse(api, Refusal::EniNotFound, id.as_str(), "no such ENI"))?;
        if count > self.profile.batch.assign_ips_per_call.unwrap_or(u32::MAX) {
            return Err(self.refuse(api, Refusal::BatchTooLarge, id.as_str(), "too many IPs in one call"));
        }
        if self.profile.kind == CloudKind::Alibaba
            && eni.state != EniState::InUse
            && eni.state != EniState::Detached
        {
            return Err(self.refuse(api, Refusal::EniBusy, id.as_str(), "ENI is attaching or detaching"));
        }
        if let Some(instance) = eni.instance.as_ref().and_then(|i| self.instances.get(i))
            && eni.secondary_ips.len() as u32 + 1 + count > instance.limits.ipv4_per_eni
        {
            return Err(self.refuse(api, Refusal::IpLimit, id.as_str(), "ENI would exceed its IP limit"));
        }
        let subnet = eni.subnet.clone();
        let space = self.subnets.get_mut(&subnet).expect("ENI's subnet exists");
        if space.info.free_ips < count {
            return Err(self.refuse(api, Refusal::SubnetFull, subnet.as_str(), "not enough free addresses"));
        }
        let new: Vec<Ipv4Addr> = (0..count).map(|_| space.take().expect("room checked")).collect();
        self.enis.get_mut(id).expect("checked").secondary_ips.extend(&new);
        Ok(new)
    }

    /// UnassignPrivateIpAddresses; addresses not on the ENI are ignored.
    pub fn unassign_ips(&mut self, id: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        let api = Api::UnassignPrivateIpAddresses;
        if ips.len() as u32 > self.profile.batch.unassign_ips_per_call.unwrap_or(u32::MAX) {
            return Err(self.refuse(api, Refusal::BatchTooLarge, id.as_str(), "too many IPs in one call"));
        }
        if !self.enis.contains_key(id) {
            return Err(self.refuse(api, Refusal::EniNotFound, id.as_str(), "no such ENI"));
        }
        let eni = self.enis.get_mut(id).expect("checked");
        let mut freed = Vec::new();
        eni.secondary_ips.retain(|ip| {
            let drop = ips.contains(ip);
            if drop {
                freed.push(*ip);
            }
            !drop
        });
        let space = self.subnets.get_mut(&eni.subnet).expect("ENI's subnet exists");
        for ip in freed {
            space.give_back(ip);
        }
        Ok(())
    }

    /// DetachNetworkInterface (completes at once in the fake).
    pub fn detach_eni(&mut self, id: &EniId) -> CloudResult<()> {
        let api = Api::DetachNetworkInterface;
        let eni = self
            .enis
            .get(id)
            .ok_or_else(|| self.refuse(api, Refusal::EniNotFound, id.as_str(), "no such ENI"))?;
        if eni.device_index == Some(0) {
            return Err(self.refuse(
                api,
                Refusal::PrimaryEni,
                id.as_str(),
                "the primary ENI cannot be detached",
            ));
        }
        if let (Some(instance), Some(index)) = (eni.instance.clone(), eni.device_index)
            && let Some(inst) = self.instances.get_mut(&instance)
        {
            inst.enis.remove(&index);
        }
        let eni = self.enis.get_mut(id).expect("checked");
        eni.instance = None;
        eni.device_index = None;
        eni.state = EniState::Detached;
        Ok(())
    }

    /// DeleteNetworkInterface: only a detached ENI.
    pub fn delete_eni(&mut self, id: &EniId) -> CloudResult<()> {
        let api = Api::DeleteNetworkInterface;
        let eni = self
            .enis
            .get(id)
            .ok_or_else(|| self.refuse(api, Refusal::EniNotFound, id.as_str(), "no such ENI"))?;
        if eni.state != EniState::Detached {
            return Err(self.refuse(api, Refusal::EniBusy, id.as_str(), "ENI is attached"));
        }
        self.release_eni(id);
        Ok(())
    }

    /// CreateTags / TagResources.
    pub fn tag_eni(&mut self, id: &EniId, tags: &BTreeMap<String, String>) -> CloudResult<()> {
        let api = Api::CreateTags;
        if !self.enis.contains_key(id) {
            return Err(self.refuse(api, Refusal::EniNotFound, id.as_str(), "no such ENI"));
        }
        let eni = self.enis.get_mut(id).expect("checked");
        eni.tags.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }
}
