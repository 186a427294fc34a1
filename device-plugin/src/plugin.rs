//! Starting the plugin and keeping it known to kubelet: serve our socket,
//! register, watch the device plugin folder, serve again when our socket is
//! deleted and register again when kubelet's socket is recreated (kubelet
//! restarted).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;

use crate::agent_client::AgentClient;
use crate::devices::device_list;
use crate::metrics::Metrics;
use crate::pod_resources::PodResourcesClient;
use crate::poller::Poller;
use crate::proto::KUBELET_SOCKET;
use crate::proto::deviceplugin::device_plugin_server::DevicePluginServer;
use crate::registration::register;
use crate::service::IpSlotService;

/// Everything the plugin needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// kubelet's device plugin folder (holds `kubelet.sock` and our socket).
    pub device_plugin_dir: PathBuf,
    /// Extended resource name, `<domain>/<name>`.
    pub resource_name: String,
    /// The agent's unix socket.
    pub agent_socket: PathBuf,
    /// kubelet's pod-resources socket; `None` counts every allocated IP as requested.
    pub pod_resources_socket: Option<PathBuf>,
    /// Slots advertised: ids `ip-0` .. `ip-{max_slots-1}`.
    pub max_slots: u32,
    /// Time between two reads of the agent's numbers.
    pub poll_interval: Duration,
    /// Bound on one agent exchange.
    pub agent_timeout: Duration,
    /// How long the last answer stands while the agent does not answer (a restart).
    pub agent_grace: Duration,
    /// Bound on one call to kubelet (Register, pod-resources List).
    pub kubelet_timeout: Duration,
}

/// Why the plugin cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The device plugin folder does not exist.
    #[error(
        "the kubelet device plugin folder {dir} does not exist; mount the host's /var/lib/kubelet/device-plugins \
         into the pod or pass --device-plugin-dir with kubelet's folder"
    )]
    FolderMissing { dir: PathBuf },
    /// The path exists but is not a folder.
    #[error("--device-plugin-dir {dir} is not a folder; pass kubelet's device plugin folder")]
    NotAFolder { dir: PathBuf },
    /// The resource name is not `<domain>/<name>`.
    #[error(
        "--resource-name {name:?} is not an extended resource name: {why}; write it as domain/name, e.g. eni-ipam.io/ip"
    )]
    BadResourceName { name: String, why: &'static str },
    /// `--max-slots 0`.
    #[error("--max-slots must be at least 1 (the most pod IPs a node of this cluster can have, e.g. 110)")]
    NoSlots,
    /// Our socket cannot be served.
    #[error(
        "cannot serve the device plugin socket {path}: {source}; check the folder is writable by this process"
    )]
    Bind { path: PathBuf, source: std::io::Error },
}

/// The file name of our socket in the device plugin folder (the `endpoint`
/// of the registration): `eni-ipam.io/ip` -> `eni-ipam.io_ip.sock`.
pub fn endpoint_name(resource_name: &str) -> String {
    format!("{}.sock", resource_name.replace('/', "_"))
}

fn check_resource_name(name: &str) -> Result<(), PluginError> {
    let bad = |why| Err(PluginError::BadResourceName { name: name.to_owned(), why });
    let Some((domain, resource)) = name.split_once('/') else { return bad("it has no '/'") };
    if domain.is_empty() || resource.is_empty() || resource.contains('/') {
        return bad("it needs exactly one '/' between a non-empty domain and name");
    }
    if domain.starts_with("kubernetes.io") || domain.ends_with(".kubernetes.io") {
        return bad("the kubernetes.io domain is reserved");
    }
    Ok(())
}

/// A running plugin. Dropping it stops every task.
#[derive(Debug)]
pub struct RunningPlugin {
    tasks: Vec<JoinHandle<()>>,
    socket_path: PathBuf,
    metrics: Arc<Metrics>,
}

impl RunningPlugin {
    /// Our socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The plugin's metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Stops every task and removes our socket, so kubelet drops the resource's endpoint.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for RunningPlugin {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

/// Checks the configuration, serves our socket, and starts the poller and
/// the folder supervisor (which registers with kubelet as soon as it can).
pub fn start(config: Config, metrics: Arc<Metrics>) -> Result<RunningPlugin, PluginError> {
    check_resource_name(&config.resource_name)?;
    if config.max_slots == 0 {
        return Err(PluginError::NoSlots);
    }
    let dir = config.device_plugin_dir.clone();
    match std::fs::metadata(&dir) {
        Err(_) => return Err(PluginError::FolderMissing { dir }),
        Ok(meta) if !meta.is_dir() => return Err(PluginError::NotAFolder { dir }),
        Ok(_) => {}
    }
    metrics.advertised_slots.set(i64::from(config.max_slots));
    let (devices_tx, devices_rx) = watch::channel(device_list(config.max_slots, &Default::default()));
    let service = IpSlotService::new(devices_rx, config.max_slots, &config.resource_name, metrics.clone());
    let endpoint = endpoint_name(&config.resource_name);
    let socket_path = dir.join(&endpoint);
    let server = serve(&socket_path, service.clone(), &metrics)?;

    let poller = Poller {
        agent: AgentClient::new(&config.agent_socket, config.agent_timeout),
        pod_resources: config.pod_resources_socket.as_ref().map(|socket| {
            PodResourcesClient::new(socket, &config.resource_name, config.max_slots, config.kubelet_timeout)
        }),
        max_slots: config.max_slots,
        interval: config.poll_interval,
        agent_grace: config.agent_grace,
        devices: devices_tx,
        metrics: metrics.clone(),
    };
    let supervisor = Supervisor {
        kubelet_socket: dir.join(KUBELET_SOCKET),
        dir,
        socket_path: socket_path.clone(),
        endpoint,
        resource_name: config.resource_name.clone(),
        service,
        metrics: metrics.clone(),
        kubelet_timeout: config.kubelet_timeout,
        check_interval: config.poll_interval,
        server: Some(server),
        registered_with: None,
        last_register_error: None,
    };
    tracing::info!(
        socket = %socket_path.display(),
        resource = %config.resource_name,
        max_slots = config.max_slots,
        agent_socket = %config.agent_socket.display(),
        "device plugin serving"
    );
    Ok(RunningPlugin {
        tasks: vec![tokio::spawn(poller.run()), tokio::spawn(supervisor.run())],
        socket_path,
        metrics,
    })
}

/// Identity of a file: a recreated socket differs in inode or change time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    ctime: i64,
    ctime_nsec: i64,
}

fn file_id(path: &Path) -> Option<FileId> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some(FileId { dev: meta.dev(), ino: meta.ino(), ctime: meta.ctime(), ctime_nsec: meta.ctime_nsec() })
}

struct Served {
    task: JoinHandle<()>,
    file: Option<FileId>,
}

/// Binds our socket (replacing a stale file) and serves the DevicePlugin service on it.
fn serve(path: &Path, service: IpSlotService, metrics: &Metrics) -> Result<Served, PluginError> {
    let bind_error = |source| PluginError::Bind { path: path.to_owned(), source };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(bind_error(source)),
    }
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    metrics.socket_binds.inc();
    let file = file_id(path);
    let shown = path.display().to_string();
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(service))
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await;
        if let Err(error) = served {
            tracing::error!(socket = %shown, %error, "device plugin gRPC server stopped");
        }
    });
    Ok(Served { task, file })
}

struct Supervisor {
    dir: PathBuf,
    kubelet_socket: PathBuf,
    socket_path: PathBuf,
    endpoint: String,
    resource_name: String,
    service: IpSlotService,
    metrics: Arc<Metrics>,
    kubelet_timeout: Duration,
    check_interval: Duration,
    server: Option<Served>,
    /// The kubelet socket we last registered with.
    registered_with: Option<FileId>,
    last_register_error: Option<String>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Some(served) = &self.server {
            served.task.abort();
        }
    }
}

impl Supervisor {
    async fn run(mut self) {
        let (events_tx, mut events) = mpsc::unbounded_channel();
        // Folder events wake the loop at once; the periodic check covers a
        // missed event (or no inotify at all).
        let _watcher = match notify::recommended_watcher(move |event| {
            let _ = events_tx.send(event);
        })
        .and_then(|mut watcher| watcher.watch(&self.dir, RecursiveMode::NonRecursive).map(|()| watcher))
        {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    %error,
                    interval = ?self.check_interval,
                    "cannot watch the device plugin folder; checking it periodically instead"
                );
                None
            }
        };
        let mut ticks = tokio::time::interval(self.check_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let kubelet_created = tokio::select! {
                _ = ticks.tick() => false,
                Some(event) = events.recv() => match event {
                    Ok(event) => {
                        matches!(event.kind, EventKind::Create(_))
                            && event.paths.iter().any(|p| p.file_name() == Some(KUBELET_SOCKET.as_ref()))
                    }
                    Err(error) => {
                        tracing::warn!(dir = %self.dir.display(), %error, "folder watch error");
                        false
                    }
                },
            };
            self.check(kubelet_created).await;
        }
    }

    async fn check(&mut self, kubelet_created: bool) {
        let ours = file_id(&self.socket_path);
        if ours.is_none() || ours != self.server.as_ref().and_then(|served| served.file) {
            if let Some(old) = self.server.take() {
                old.task.abort();
                tracing::info!(socket = %self.socket_path.display(), "our socket was deleted or replaced; serving it again");
            }
            match serve(&self.socket_path, self.service.clone(), &self.metrics) {
                Ok(served) => self.server = Some(served),
                Err(error) => {
                    tracing::error!(%error, "retrying at the next check");
                    return;
                }
            }
            // kubelet must dial the new socket: register again.
            self.registered_with = None;
            self.metrics.set_registered(false);
        }

        let Some(kubelet) = file_id(&self.kubelet_socket) else {
            let missing = "kubelet socket missing".to_string();
            if self.registered_with.take().is_some() || self.last_register_error.as_ref() != Some(&missing) {
                self.metrics.set_registered(false);
                tracing::warn!(
                    kubelet_socket = %self.kubelet_socket.display(),
                    "no kubelet socket (kubelet starting or restarting?); will register as soon as it appears"
                );
            }
            self.last_register_error = Some(missing);
            return;
        };
        if self.registered_with == Some(kubelet) && !kubelet_created {
            return;
        }
        match register(&self.kubelet_socket, &self.endpoint, &self.resource_name, self.kubelet_timeout).await
        {
            Ok(()) => {
                Metrics::count(&self.metrics.registrations, "ok");
                self.registered_with = Some(kubelet);
                self.last_register_error = None;
                self.metrics.set_registered(true);
                tracing::info!(
                    kubelet_socket = %self.kubelet_socket.display(),
                    endpoint = %self.endpoint,
                    resource = %self.resource_name,
                    "registered with kubelet"
                );
            }
            Err(error) => {
                Metrics::count(&self.metrics.registrations, "failed");
                self.registered_with = None;
                self.metrics.set_registered(false);
                let text = error.to_string();
                if self.last_register_error.as_ref() != Some(&text) {
                    tracing::warn!(%error, "registration with kubelet failed");
                }
                self.last_register_error = Some(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_is_a_file_name_from_the_resource() {
        assert_eq!(endpoint_name("eni-ipam.io/ip"), "eni-ipam.io_ip.sock");
    }

    #[test]
    fn resource_names_must_be_domain_slash_name() {
        assert!(check_resource_name("eni-ipam.io/ip").is_ok());
        for bad in ["ip", "/ip", "eni-ipam.io/", "a/b/c", "kubernetes.io/ip", "x.kubernetes.io/ip"] {
            let error = check_resource_name(bad).unwrap_err().to_string();
            assert!(error.contains("domain/name"), "{bad}: {error}");
        }
    }
}
