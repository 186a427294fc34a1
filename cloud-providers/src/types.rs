//! The cloud's objects as eni-ipam sees them, the same for every provider.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use eni_ipam_api::{EniId, InstanceId, InstanceType, SecurityGroupId, SubnetId, VpcId, Zone};
use serde::Serialize;

/// Tag keys eni-ipam puts on everything it creates, so GC can find leaks and
/// never touch what is not ours.
pub mod tag {
    /// The cluster that owns the ENI: its identity (`--cluster-id`, by default
    /// the UID of its kube-system namespace).
    pub const CLUSTER: &str = "eni-ipam.io/cluster";
    /// The UID of the kube-system namespace of the cluster that created the ENI,
    /// even when [`CLUSTER`] is a name the admin chose: two clusters given the
    /// same name differ here, and the operator refuses to start on such a VPC.
    pub const CLUSTER_UID: &str = "eni-ipam.io/cluster-uid";
    /// The node the ENI was created for.
    pub const NODE: &str = "eni-ipam.io/node";
    /// Always `eni-ipam-operator`.
    pub const CREATED_BY: &str = "eni-ipam.io/created-by";
    /// The value of [`CREATED_BY`].
    pub const CREATOR: &str = "eni-ipam-operator";
}

/// What an instance type allows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceLimits {
    /// The type.
    pub instance_type: InstanceType,
    /// ENIs one instance may have attached, the primary included.
    pub max_enis: u32,
    /// IPv4 addresses one ENI may hold, its primary included.
    pub ipv4_per_eni: u32,
}

impl InstanceLimits {
    /// Pod IPs an instance can hold when pods may use ENIs from `first_index` on
    /// (every ENI's primary IP stays the ENI's own). The one definition of an
    /// instance type's pod IPs: the planner's ceiling, the ENINode's `ipLimit` and
    /// `eni-ipam-operator capacity` all take it from here.
    pub fn pod_capacity(&self, first_index: u32) -> u32 {
        self.max_enis.saturating_sub(first_index) * self.ipv4_per_eni.saturating_sub(1)
    }
}

/// What the cloud says of an instance, as far as GC cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum InstanceState {
    /// Pending or running (EC2 `pending`/`running`, ECS `Pending`/`Starting`/`Running`).
    Running,
    /// Stopping or stopped: it may start again with its ENIs.
    Stopped,
    /// Shutting down or terminated (EC2 keeps terminated instances visible for a while).
    Terminated,
    /// The cloud does not know the id (released, or long terminated).
    Gone,
}

/// An ENI's lifecycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum EniState {
    /// Created, not attached (EC2 `available`, ECS `Available`).
    Detached,
    /// Attach requested, not done yet.
    Attaching,
    /// Attached and usable.
    InUse,
    /// Detach requested, not done yet.
    Detaching,
}

/// One ENI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Eni {
    /// Its id.
    pub id: EniId,
    /// Its subnet.
    pub subnet: SubnetId,
    /// Its VPC.
    pub vpc: VpcId,
    /// Its zone.
    pub zone: Zone,
    /// MAC address.
    pub mac: String,
    /// The instance it is attached to, if any.
    pub instance: Option<InstanceId>,
    /// Device index on that instance.
    pub device_index: Option<u32>,
    /// Lifecycle state.
    pub state: EniState,
    /// The ENI's own address.
    pub primary_ip: Ipv4Addr,
    /// Secondary addresses, the ones pods get.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl Eni {
    /// Whether eni-ipam created this ENI for `cluster`.
    pub fn is_ours(&self, cluster: &str) -> bool {
        self.tags.get(tag::CLUSTER).is_some_and(|c| c == cluster)
            && self.tags.get(tag::CREATED_BY).is_some_and(|c| c == tag::CREATOR)
    }
}

/// A subnet (vSwitch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Subnet {
    /// Its id.
    pub id: SubnetId,
    /// Its VPC.
    pub vpc: VpcId,
    /// Its zone.
    pub zone: Zone,
    /// CIDR, as text.
    pub cidr: String,
    /// Free addresses.
    pub free_ips: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

/// Which ENIs a list call asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EniQuery {
    /// Every ENI of a VPC (the bulk resync).
    Vpc(VpcId),
    /// The ENIs attached to these instances (per-instance resync); at most
    /// [`crate::BatchLimits::instances_per_list`] of them.
    Instances(Vec<InstanceId>),
    /// The ENIs of one subnet. eni-ipam never resyncs this way; the
    /// simulator uses it for the per-subnet listing strategy it compares with.
    Subnet(SubnetId),
}

/// One page of a paginated list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Token for the next page; `None` on the last one.
    pub next_token: Option<String>,
}

/// A request to create an ENI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateEni {
    /// Subnet to create it in.
    pub subnet: SubnetId,
    /// Security groups.
    pub security_groups: Vec<SecurityGroupId>,
    /// Secondary IPs to put on it at creation.
    pub secondary_ips: u32,
    /// Tags (cluster, node, created-by).
    pub tags: BTreeMap<String, String>,
    /// Idempotency token: repeating the call with it returns the same ENI.
    pub client_token: String,
}
