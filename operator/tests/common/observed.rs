//! A cloud provider that delegates to the fake cloud's and lets a test watch
//! the calls that change things (creates and unassigns) as they are made.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use async_trait::async_trait;
use eni_ipam_api::{EniId, InstanceId, InstanceType, VpcId};
use eni_ipam_cloud::fake::FakeProvider;
use eni_ipam_cloud::{
    BatchLimits, CloudKind, CloudProvider, CloudResult, CreateEni, Eni, EniQuery, InstanceLimits,
    InstanceState, Page, Subnet,
};

/// Called with every create request, before it is sent.
pub type OnCreate = Box<dyn Fn(&CreateEni) + Send + Sync>;
/// Called with every unassign, before it is sent.
pub type OnUnassign = Box<dyn Fn(&EniId, &[Ipv4Addr]) + Send + Sync>;

/// The fake cloud's provider, watched.
pub struct Observed {
    /// Where the calls go.
    pub inner: FakeProvider,
    /// Sees every create.
    pub on_create: Option<OnCreate>,
    /// Sees every unassign.
    pub on_unassign: Option<OnUnassign>,
}

#[async_trait]
impl CloudProvider for Observed {
    fn kind(&self) -> CloudKind {
        self.inner.kind()
    }
    fn batch_limits(&self) -> BatchLimits {
        self.inner.batch_limits()
    }
    async fn instance_limits(&self, types: &[InstanceType]) -> CloudResult<Vec<InstanceLimits>> {
        self.inner.instance_limits(types).await
    }
    async fn instance_states(&self, ids: &[InstanceId]) -> CloudResult<BTreeMap<InstanceId, InstanceState>> {
        self.inner.instance_states(ids).await
    }
    async fn list_enis(
        &self,
        query: &EniQuery,
        page_size: u32,
        token: Option<String>,
    ) -> CloudResult<Page<Eni>> {
        self.inner.list_enis(query, page_size, token).await
    }
    async fn list_subnets(&self, vpc: &VpcId) -> CloudResult<Vec<Subnet>> {
        self.inner.list_subnets(vpc).await
    }
    async fn create_eni(&self, request: &CreateEni) -> CloudResult<Eni> {
        if let Some(hook) = &self.on_create {
            hook(request);
        }
        self.inner.create_eni(request).await
    }
    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, device_index: u32) -> CloudResult<()> {
        self.inner.attach_eni(eni, instance, device_index).await
    }
    async fn assign_ips(&self, eni: &EniId, count: u32) -> CloudResult<Vec<Ipv4Addr>> {
        self.inner.assign_ips(eni, count).await
    }
    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        if let Some(hook) = &self.on_unassign {
            hook(eni, ips);
        }
        self.inner.unassign_ips(eni, ips).await
    }
    async fn detach_eni(&self, eni: &EniId) -> CloudResult<()> {
        self.inner.detach_eni(eni).await
    }
    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        self.inner.delete_eni(eni).await
    }
    async fn tag_eni(&self, eni: &EniId, tags: &BTreeMap<String, String>) -> CloudResult<()> {
        self.inner.tag_eni(eni, tags).await
    }
}
