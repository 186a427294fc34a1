//! A test kubelet: the `Registration` service on `kubelet.sock`, a client of
//! the plugin's `DevicePlugin` service (as kubelet dials it after
//! registration), and the pod-resources `List` service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eni_ipam_device_plugin::proto::deviceplugin::device_plugin_client::DevicePluginClient;
use eni_ipam_device_plugin::proto::deviceplugin::registration_server::{Registration, RegistrationServer};
use eni_ipam_device_plugin::proto::deviceplugin::{Device, Empty, ListAndWatchResponse, RegisterRequest};
use eni_ipam_device_plugin::proto::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use eni_ipam_device_plugin::proto::podresources::{
    ContainerDevices, ContainerResources, ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use eni_ipam_device_plugin::proto::{HEALTHY, KUBELET_SOCKET};
use eni_ipam_device_plugin::unix_channel;
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

struct Registrar {
    seen: mpsc::UnboundedSender<RegisterRequest>,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let _ = self.seen.send(request.into_inner());
        Ok(Response::new(Empty {}))
    }
}

/// kubelet's registration side, serving `kubelet.sock` in a folder.
pub struct TestKubelet {
    dir: PathBuf,
    registrations: mpsc::UnboundedReceiver<RegisterRequest>,
    server: JoinHandle<()>,
}

impl TestKubelet {
    /// Serves `Registration` on `<dir>/kubelet.sock`.
    pub fn start(dir: &Path) -> Self {
        let path = dir.join(KUBELET_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the test kubelet's socket");
        let (seen, registrations) = mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(Registrar { seen }))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
                .expect("test kubelet serves");
        });
        Self { dir: dir.to_owned(), registrations, server }
    }

    /// The next Register call, or a panic after `within`.
    pub async fn next_registration(&mut self, within: Duration) -> RegisterRequest {
        tokio::time::timeout(within, self.registrations.recv())
            .await
            .unwrap_or_else(|_| panic!("the plugin did not register within {within:?}"))
            .expect("registration channel open")
    }

    /// Whether a Register call arrives within `within`.
    pub async fn registers_within(&mut self, within: Duration) -> bool {
        matches!(tokio::time::timeout(within, self.registrations.recv()).await, Ok(Some(_)))
    }

    /// Stops like a restarting kubelet: its socket is gone, and (as kubelet
    /// does when it starts) every plugin socket in the folder is deleted too.
    pub fn stop_and_wipe_folder(self) {
        self.server.abort();
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|ext| ext == "sock") && entry.file_name() != "agent.sock"
            {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
    }

    /// Stops and removes only kubelet's socket.
    pub fn stop(self) {
        self.server.abort();
        std::fs::remove_file(self.dir.join(KUBELET_SOCKET)).unwrap();
    }
}

/// kubelet's client of the plugin, dialing the registered endpoint.
pub async fn dial_plugin(dir: &Path, registration: &RegisterRequest) -> DevicePluginClient<Channel> {
    let channel = unix_channel::connect(&dir.join(&registration.endpoint), Duration::from_secs(2))
        .await
        .expect("dial the plugin's socket");
    DevicePluginClient::new(channel)
}

/// Opens ListAndWatch.
pub async fn list_and_watch(plugin: &mut DevicePluginClient<Channel>) -> Streaming<ListAndWatchResponse> {
    plugin.list_and_watch(Empty {}).await.expect("ListAndWatch opens").into_inner()
}

/// Healthy ids of a list.
pub fn healthy_ids(devices: &[Device]) -> Vec<String> {
    devices.iter().filter(|d| d.health == HEALTHY).map(|d| d.id.clone()).collect()
}

/// Reads lists until one has `healthy` healthy devices; returns it and the
/// time it took. Panics after `within`.
pub async fn wait_for_healthy(
    stream: &mut Streaming<ListAndWatchResponse>,
    healthy: usize,
    within: Duration,
) -> (Vec<Device>, Duration) {
    let started = Instant::now();
    let mut last = None;
    loop {
        let left = within.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(list))) => {
                if healthy_ids(&list.devices).len() == healthy {
                    return (list.devices, started.elapsed());
                }
                last = Some(healthy_ids(&list.devices).len());
            }
            Ok(Ok(None)) => panic!("ListAndWatch ended while waiting for {healthy} healthy"),
            Ok(Err(status)) => panic!("ListAndWatch failed while waiting for {healthy} healthy: {status}"),
            Err(_) => panic!("no list with {healthy} healthy devices within {within:?}; last had {last:?}"),
        }
    }
}

/// kubelet's pod-resources `List`: the pods the test says hold devices.
#[derive(Clone, Default)]
pub struct PodResourcesState {
    pods: Arc<Mutex<Vec<PodResources>>>,
}

impl PodResourcesState {
    /// Records a pod holding `ids` of `resource`.
    pub fn add_pod(&self, name: &str, resource: &str, ids: Vec<String>) {
        self.pods.lock().unwrap().push(PodResources {
            name: name.into(),
            namespace: "default".into(),
            containers: vec![ContainerResources {
                name: "app".into(),
                devices: vec![ContainerDevices { resource_name: resource.into(), device_ids: ids }],
            }],
        });
    }

    /// Forgets a pod, as kubelet does once it no longer runs it.
    pub fn remove_pod(&self, name: &str) {
        self.pods.lock().unwrap().retain(|pod| pod.name != name);
    }

    /// Serves `List` on `path`.
    pub fn serve(&self, path: &Path) -> JoinHandle<()> {
        let listener = UnixListener::bind(path).expect("bind the pod-resources socket");
        let service = PodResourcesListerServer::new(self.clone());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
                .expect("pod-resources serves");
        })
    }
}

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesState {
    async fn list(
        &self,
        _request: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        Ok(Response::new(ListPodResourcesResponse { pod_resources: self.pods.lock().unwrap().clone() }))
    }
}
