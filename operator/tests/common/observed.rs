//! A cloud provider that delegates to the fake cloud's and lets a test watch
//! the calls that change things (creates and unassigns) as they are made.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use eni_ipam_api::{EniId, InstanceId, InstanceType, VpcId};
use eni_ipam_cloud::fake::FakeProvider;
use eni_ipam_cloud::{
    Api, BatchLimits, CloudError, CloudKind, CloudProvider, CloudResult, CreateEni, Eni, EniQuery,
    ErrorClass, InstanceLimits, InstanceState, Page, Subnet,
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
    /// The cloud's eventual consistency and EC2's error shapes, on demand.
    pub lag: Arc<Mutex<Lag>>,
}

/// What a real cloud does that the fake cloud does not, switched on by a test.
#[derive(Debug, Default)]
pub struct Lag {
    /// The next this many ENIs created are left out of every listing (EC2's
    /// listings lag its writes) and their attach is answered not-found.
    pub hide_next_creates: u32,
    /// ENIs left out of every listing.
    pub unlisted: BTreeSet<EniId>,
    /// Addresses a stale listing still shows on their ENI (after a release).
    pub stale: Vec<(EniId, Ipv4Addr)>,
    /// Assigns are refused as EC2 refuses them on a full subnet: the error names the ENI.
    pub assign_subnet_full: bool,
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
    async fn instance_catalog(&self) -> CloudResult<Vec<InstanceLimits>> {
        self.inner.instance_catalog().await
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
        let mut page = self.inner.list_enis(query, page_size, token).await?;
        let lag = self.lag.lock().unwrap();
        page.items.retain(|e| !lag.unlisted.contains(&e.id));
        for eni in &mut page.items {
            for (id, ip) in &lag.stale {
                if id == &eni.id && !eni.secondary_ips.contains(ip) {
                    eni.secondary_ips.push(*ip);
                }
            }
        }
        Ok(page)
    }
    async fn list_subnets(&self, vpc: &VpcId) -> CloudResult<Vec<Subnet>> {
        self.inner.list_subnets(vpc).await
    }
    async fn create_eni(&self, request: &CreateEni) -> CloudResult<Eni> {
        if let Some(hook) = &self.on_create {
            hook(request);
        }
        let created = self.inner.create_eni(request).await?;
        let mut lag = self.lag.lock().unwrap();
        if lag.hide_next_creates > 0 {
            lag.hide_next_creates -= 1;
            lag.unlisted.insert(created.id.clone());
        }
        Ok(created)
    }
    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, device_index: u32) -> CloudResult<()> {
        if self.lag.lock().unwrap().unlisted.contains(eni) {
            let message = format!("The networkInterface ID '{eni}' does not exist");
            return Err(CloudError::new(
                Api::AttachNetworkInterface,
                ErrorClass::NotFound,
                "InvalidNetworkInterfaceID.NotFound",
                eni.as_str(),
                message,
            ));
        }
        self.inner.attach_eni(eni, instance, device_index).await
    }
    async fn assign_ips(&self, eni: &EniId, count: u32) -> CloudResult<Vec<Ipv4Addr>> {
        if self.lag.lock().unwrap().assign_subnet_full {
            return Err(CloudError::new(
                Api::AssignPrivateIpAddresses,
                ErrorClass::SubnetFull,
                "InsufficientFreeAddressesInSubnet",
                eni.as_str(),
                "The specified subnet does not have enough free addresses",
            ));
        }
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
