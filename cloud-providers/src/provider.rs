//! The one interface the operator has to a cloud.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use eni_ipam_api::{EniId, InstanceId, InstanceType, VpcId};

use crate::error::CloudResult;
use crate::profile::{BatchLimits, CloudKind};
use crate::types::{CreateEni, Eni, EniQuery, InstanceLimits, InstanceState, Page, Subnet};

/// A cloud, seen through its ENI API. Implementations send every call
/// through a [`crate::CallGuard`] (one limiter, one retry policy); none of
/// them decides anything.
#[async_trait]
pub trait CloudProvider: Send + Sync {
    /// Which cloud this is.
    fn kind(&self) -> CloudKind;

    /// Per-call batch limits of this cloud.
    fn batch_limits(&self) -> BatchLimits;

    /// Limits of the given instance types (unknown ones are left out).
    async fn instance_limits(&self, types: &[InstanceType]) -> CloudResult<Vec<InstanceLimits>>;

    /// Every instance type the cloud offers in this region, with its limits:
    /// DescribeInstanceTypes without a filter, followed page by page.
    async fn instance_catalog(&self) -> CloudResult<Vec<InstanceLimits>>;

    /// The state of each of `ids`: every id asked is in the answer, one the
    /// cloud does not know as [`InstanceState::Gone`]. Batched per call as the
    /// cloud allows ([`INSTANCES_PER_DESCRIBE`]).
    async fn instance_states(&self, ids: &[InstanceId]) -> CloudResult<BTreeMap<InstanceId, InstanceState>>;

    /// One page of ENIs. `page_size` is capped at the cloud's maximum.
    async fn list_enis(
        &self,
        query: &EniQuery,
        page_size: u32,
        token: Option<String>,
    ) -> CloudResult<Page<Eni>>;

    /// The subnets of a VPC with their free IP counts.
    async fn list_subnets(&self, vpc: &VpcId) -> CloudResult<Vec<Subnet>>;

    /// Creates a detached ENI with secondary IPs and tags. Repeating the call
    /// with the same client token returns the same ENI.
    async fn create_eni(&self, request: &CreateEni) -> CloudResult<Eni>;

    /// Asks to attach an ENI at a device index, set to be deleted with the
    /// instance. The attachment completes asynchronously: the ENI is
    /// `Attaching` until a later list shows it `InUse`.
    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, device_index: u32) -> CloudResult<()>;

    /// Adds `count` secondary IPs to an ENI; returns the new addresses.
    async fn assign_ips(&self, eni: &EniId, count: u32) -> CloudResult<Vec<Ipv4Addr>>;

    /// Removes secondary IPs from an ENI. Addresses already gone are not an error.
    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()>;

    /// Detaches an ENI. Already detached is not an error.
    async fn detach_eni(&self, eni: &EniId) -> CloudResult<()>;

    /// Deletes a detached ENI. Already gone is not an error.
    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()>;

    /// Adds or overwrites tags on an ENI.
    async fn tag_eni(&self, eni: &EniId, tags: &BTreeMap<String, String>) -> CloudResult<()>;
}

/// Instance ids one DescribeInstances call carries (ECS takes at most 100;
/// EC2 as many, as filter values).
pub const INSTANCES_PER_DESCRIBE: usize = 100;

/// Follows a paginated ENI list to its end.
pub async fn list_all_enis(provider: &dyn CloudProvider, query: &EniQuery) -> CloudResult<(Vec<Eni>, u32)> {
    let page_size = provider.batch_limits().max_page_size;
    let mut token = None;
    let mut all = Vec::new();
    let mut calls = 0;
    loop {
        let page = provider.list_enis(query, page_size, token).await?;
        calls += 1;
        all.extend(page.items);
        match page.next_token {
            Some(next) => token = Some(next),
            None => return Ok((all, calls)),
        }
    }
}
