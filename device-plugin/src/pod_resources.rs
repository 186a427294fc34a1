//! kubelet's pod-resources API (`List`): which of our device ids kubelet has handed
//! to live pods (the count kubelet and the scheduler already subtract, so the plugin
//! must not subtract it again), and which pods kubelet runs at all (the agent frees
//! the IPs of pods that went away without a CNI DEL).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::devices::parse_slot_id;
use crate::proto::podresources::pod_resources_lister_client::PodResourcesListerClient;
use crate::proto::podresources::{ListPodResourcesRequest, ListPodResourcesResponse};
use crate::unix_channel;

/// Why kubelet's pod-resources API could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    /// kubelet's pod-resources socket cannot be dialed.
    #[error(
        "cannot connect to kubelet's pod-resources API at {socket}: {message}; mount kubelet's \
         pod-resources folder into this container, or pass --pod-resources-socket \"\" (see --help \
         for what that turns off)"
    )]
    Connect { socket: PathBuf, message: String },
    /// The `List` call failed.
    #[error("kubelet's pod-resources API at {socket} failed List: {status}")]
    List { socket: PathBuf, status: tonic::Status },
}

/// Device ids of one resource held by live pods, as kubelet reports them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DevicesInUse {
    /// Every id of the resource kubelet reports held (each counted once).
    pub ids: BTreeSet<String>,
    /// The slot numbers among them that this plugin advertises.
    pub slots: BTreeSet<u32>,
}

/// Client of kubelet's pod-resources `List`.
#[derive(Clone, Debug)]
pub struct PodResourcesClient {
    socket: PathBuf,
    resource_name: String,
    max_slots: u32,
    timeout: Duration,
}

impl PodResourcesClient {
    /// A client of the API on `socket`, looking for `resource_name` devices.
    pub fn new(socket: impl Into<PathBuf>, resource_name: &str, max_slots: u32, timeout: Duration) -> Self {
        Self { socket: socket.into(), resource_name: resource_name.to_owned(), max_slots, timeout }
    }

    /// The socket this client dials.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The ids of our resource that kubelet has handed to live pods.
    pub async fn devices_in_use(&self) -> Result<DevicesInUse, PodResourcesError> {
        let answer = list(&self.socket, self.timeout).await?;
        let ids: BTreeSet<String> = answer
            .pod_resources
            .iter()
            .flat_map(|pod| &pod.containers)
            .flat_map(|container| &container.devices)
            .filter(|devices| devices.resource_name == self.resource_name)
            .flat_map(|devices| devices.device_ids.iter().cloned())
            .collect();
        let slots = ids.iter().filter_map(|id| parse_slot_id(id, self.max_slots)).collect();
        Ok(DevicesInUse { ids, slots })
    }
}

/// One `List` call on kubelet's pod-resources API at `socket`.
pub async fn list(socket: &Path, timeout: Duration) -> Result<ListPodResourcesResponse, PodResourcesError> {
    let channel = unix_channel::connect(socket, timeout)
        .await
        .map_err(|e| PodResourcesError::Connect { socket: socket.to_owned(), message: source_chain(&e) })?;
    let answer = PodResourcesListerClient::new(channel)
        .list(ListPodResourcesRequest {})
        .await
        .map_err(|status| PodResourcesError::List { socket: socket.to_owned(), status })?;
    Ok(answer.into_inner())
}

/// The pods kubelet runs now, as (namespace, name): every pod it admitted and has not
/// finished removing, with or without devices.
pub async fn live_pods(
    socket: &Path,
    timeout: Duration,
) -> Result<BTreeSet<(String, String)>, PodResourcesError> {
    let answer = list(socket, timeout).await?;
    Ok(answer.pod_resources.into_iter().map(|pod| (pod.namespace, pod.name)).collect())
}

/// An error with its causes, `a: b: c` (tonic's transport errors hide the io error).
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
