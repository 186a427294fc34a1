//! The client side of the fake cloud: a [`CloudProvider`] whose calls cross
//! a simulated network (latency with jitter) and the [`CallGuard`], exactly
//! like the real providers' calls do.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use async_trait::async_trait;
use eni_ipam_api::{EniId, InstanceId, InstanceType, VpcId};
use tokio::time::Instant;

use super::cloud::FakeCloud;
use crate::Api;
use crate::error::{CloudResult, gone_is_done};
use crate::guard::CallGuard;
use crate::profile::{BatchLimits, CloudKind};
use crate::provider::{CloudProvider, INSTANCES_PER_DESCRIBE};
use crate::types::{CreateEni, Eni, EniQuery, InstanceLimits, InstanceState, Page, Subnet};

/// A provider talking to a [`FakeCloud`].
#[derive(Debug, Clone)]
pub struct FakeProvider {
    cloud: Arc<FakeCloud>,
    guard: Arc<CallGuard>,
}

impl FakeProvider {
    /// A client of `cloud` whose calls go through `guard`.
    pub fn new(cloud: Arc<FakeCloud>, guard: Arc<CallGuard>) -> Self {
        Self { cloud, guard }
    }

    /// The guard (for its counters).
    pub fn guard(&self) -> &CallGuard {
        &self.guard
    }

    async fn network(&self, api: Api) {
        let p = self.cloud.profile();
        let base = if api.is_read() { p.read_latency } else { p.write_latency };
        tokio::time::sleep(base.mul_f64(self.cloud.jitter())).await;
    }

    async fn call<T>(
        &self,
        api: Api,
        object: &str,
        apply: impl Fn(&mut super::CloudState) -> CloudResult<T> + Send + Sync,
    ) -> CloudResult<T> {
        self.guard
            .call(api, || async {
                self.network(api).await;
                self.cloud.serve(api, object, &apply)
            })
            .await
    }
}

#[async_trait]
impl CloudProvider for FakeProvider {
    fn kind(&self) -> CloudKind {
        self.cloud.profile().kind
    }

    fn batch_limits(&self) -> BatchLimits {
        self.cloud.profile().batch
    }

    async fn instance_limits(&self, types: &[InstanceType]) -> CloudResult<Vec<InstanceLimits>> {
        self.call(Api::DescribeInstanceTypes, "instance-types", |s| Ok(s.instance_limits(types))).await
    }

    async fn instance_catalog(&self) -> CloudResult<Vec<InstanceLimits>> {
        let page_size = self.cloud.profile().batch.max_page_size as usize;
        let mut token: Option<String> = None;
        let mut all = Vec::new();
        loop {
            let page = self
                .call(Api::DescribeInstanceTypes, "instance-types", |s| {
                    Ok(s.instance_types_page(&[], token.as_deref(), page_size))
                })
                .await?;
            all.extend(page.items);
            match page.next_token {
                Some(next) => token = Some(next),
                None => return Ok(all),
            }
        }
    }

    async fn instance_states(&self, ids: &[InstanceId]) -> CloudResult<BTreeMap<InstanceId, InstanceState>> {
        let mut out = BTreeMap::new();
        for chunk in ids.chunks(INSTANCES_PER_DESCRIBE) {
            out.extend(
                self.call(Api::DescribeInstances, "instances", |s| Ok(s.instance_states(chunk))).await?,
            );
        }
        Ok(out)
    }

    async fn list_enis(
        &self,
        query: &EniQuery,
        page_size: u32,
        token: Option<String>,
    ) -> CloudResult<Page<Eni>> {
        self.call(Api::DescribeNetworkInterfaces, "network-interfaces", |s| {
            s.list_enis(query, page_size, token.as_deref())
        })
        .await
    }

    async fn list_subnets(&self, vpc: &VpcId) -> CloudResult<Vec<Subnet>> {
        self.call(Api::DescribeSubnets, vpc.as_str(), |s| Ok(s.list_subnets(vpc))).await
    }

    async fn create_eni(&self, request: &CreateEni) -> CloudResult<Eni> {
        self.call(Api::CreateNetworkInterface, request.subnet.as_str(), |s| s.create_eni(request)).await
    }

    async fn attach_eni(&self, eni: &EniId, instance: &InstanceId, device_index: u32) -> CloudResult<()> {
        self.call(Api::AttachNetworkInterface, eni.as_str(), |s| {
            s.attach_eni(eni, instance, device_index, Instant::now())
        })
        .await
    }

    async fn assign_ips(&self, eni: &EniId, count: u32) -> CloudResult<Vec<Ipv4Addr>> {
        self.call(Api::AssignPrivateIpAddresses, eni.as_str(), |s| s.assign_ips(eni, count)).await
    }

    async fn unassign_ips(&self, eni: &EniId, ips: &[Ipv4Addr]) -> CloudResult<()> {
        let result =
            self.call(Api::UnassignPrivateIpAddresses, eni.as_str(), |s| s.unassign_ips(eni, ips)).await;
        gone_is_done(result)
    }

    async fn detach_eni(&self, eni: &EniId) -> CloudResult<()> {
        let result = self.call(Api::DetachNetworkInterface, eni.as_str(), |s| s.detach_eni(eni)).await;
        gone_is_done(result)
    }

    async fn delete_eni(&self, eni: &EniId) -> CloudResult<()> {
        let result = self.call(Api::DeleteNetworkInterface, eni.as_str(), |s| s.delete_eni(eni)).await;
        gone_is_done(result)
    }

    async fn tag_eni(&self, eni: &EniId, tags: &BTreeMap<String, String>) -> CloudResult<()> {
        self.call(Api::CreateTags, eni.as_str(), |s| s.tag_eni(eni, tags)).await
    }
}
