//! The `DevicePlugin` gRPC service kubelet calls on the plugin's socket.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::devices::{parse_slot_id, slot_id};
use crate::metrics::Metrics;
use crate::proto::HEALTHY;
use crate::proto::deviceplugin::device_plugin_server::DevicePlugin;
use crate::proto::deviceplugin::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse, ContainerPreferredAllocationResponse,
    Device, DevicePluginOptions, Empty, ListAndWatchResponse, PreStartContainerRequest,
    PreStartContainerResponse, PreferredAllocationRequest, PreferredAllocationResponse,
};

/// What this plugin tells kubelet at registration and on request.
pub fn plugin_options() -> DevicePluginOptions {
    DevicePluginOptions { pre_start_required: false, get_preferred_allocation_available: true }
}

/// The service: reads the current device list from a watch channel fed by
/// the poller; every change is one ListAndWatch message.
#[derive(Clone, Debug)]
pub struct IpSlotService {
    devices: watch::Receiver<Vec<Device>>,
    max_slots: u32,
    resource_name: String,
    metrics: Arc<Metrics>,
}

impl IpSlotService {
    /// A service over the device lists published on `devices`.
    pub fn new(
        devices: watch::Receiver<Vec<Device>>,
        max_slots: u32,
        resource_name: &str,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { devices, max_slots, resource_name: resource_name.to_owned(), metrics }
    }

    fn healthy_ids(&self) -> BTreeSet<String> {
        self.devices.borrow().iter().filter(|d| d.health == HEALTHY).map(|d| d.id.clone()).collect()
    }
}

type DeviceListStream = Pin<Box<dyn Stream<Item = Result<ListAndWatchResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl DevicePlugin for IpSlotService {
    async fn get_device_plugin_options(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(plugin_options()))
    }

    type ListAndWatchStream = DeviceListStream;

    async fn list_and_watch(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        tracing::info!(resource = %self.resource_name, "kubelet opened ListAndWatch");
        // The current list at once, then one message per change; the poller
        // only publishes a list that differs from the last one.
        let stream =
            WatchStream::new(self.devices.clone()).map(|devices| Ok(ListAndWatchResponse { devices }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        let healthy = self.healthy_ids();
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|container| {
                let size = usize::try_from(container.allocation_size).unwrap_or(0);
                let mut chosen: Vec<String> = container.must_include_device_i_ds.clone();
                let mut available: Vec<&String> =
                    container.available_device_i_ds.iter().filter(|id| !chosen.contains(id)).collect();
                // Healthy ids first, then in slot order, so the choice is stable.
                available.sort_by_key(|id| (!healthy.contains(*id), parse_slot_id(id, self.max_slots)));
                for id in available {
                    if chosen.len() >= size {
                        break;
                    }
                    chosen.push(id.clone());
                }
                ContainerPreferredAllocationResponse { device_i_ds: chosen }
            })
            .collect();
        Ok(Response::new(PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let request = request.into_inner();
        let unknown: Vec<&str> = request
            .container_requests
            .iter()
            .flat_map(|container| &container.devices_ids)
            .filter(|id| parse_slot_id(id, self.max_slots).is_none())
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            Metrics::count(&self.metrics.allocations, "invalid");
            tracing::warn!(resource = %self.resource_name, ?unknown, "Allocate asked for ids never advertised");
            return Err(Status::invalid_argument(format!(
                "Allocate for {} asked for device ids this plugin never advertised: {}; it advertises {} to {} \
                 only. Is another device plugin registered under the same resource name?",
                self.resource_name,
                unknown.join(", "),
                slot_id(0),
                slot_id(self.max_slots.saturating_sub(1)),
            )));
        }
        Metrics::count(&self.metrics.allocations, "ok");
        // The IP itself comes from the CNI plugin; the container needs nothing
        // from us (no env, mounts or devices).
        let container_responses =
            request.container_requests.iter().map(|_| ContainerAllocateResponse::default()).collect();
        Ok(Response::new(AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
