//! A small kubelet per node, enough for eni-ipam's parts to meet it as they
//! would a real one:
//! - the device plugin API: `Registration` on `<dir>/kubelet.sock`; after a
//!   plugin registers, kubelet dials it, follows `ListAndWatch` and writes the
//!   healthy count into the Node's `capacity`/`allocatable`;
//! - pod admission: a pod asking for the extended resource gets healthy device
//!   ids not held by another pod (`Allocate` is called), else it fails with
//!   `UnexpectedAdmissionError` as kubelet does;
//! - the pod-resources `List` service (which pods hold which ids);
//! - the pod sandbox: a network namespace per pod, the chart's CNI network
//!   configuration list run as libcni runs it (ADD through every plugin in
//!   order, each given the previous one's result; DEL in reverse order; the
//!   `portMappings` capability filled from the pod's `hostPort`s) for ADD
//!   (retried every second while it fails, as kubelet retries a sandbox) and
//!   DEL when the pod is deleted; the pod's status gets its IP and `Running`.
//!
//! It reads pods straight from the stand-in (no watch): the bed's kubelets are
//! a driver, the parts under test are the agent, plugin and device plugin.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eni_ipam_device_plugin::proto::deviceplugin::device_plugin_client::DevicePluginClient;
use eni_ipam_device_plugin::proto::deviceplugin::registration_server::{Registration, RegistrationServer};
use eni_ipam_device_plugin::proto::deviceplugin::{
    AllocateRequest, ContainerAllocateRequest, Empty, RegisterRequest,
};
use eni_ipam_device_plugin::proto::podresources::pod_resources_lister_server::{
    PodResourcesLister, PodResourcesListerServer,
};
use eni_ipam_device_plugin::proto::podresources::{
    ContainerDevices, ContainerResources, ListPodResourcesRequest, ListPodResourcesResponse, PodResources,
};
use eni_ipam_device_plugin::proto::{HEALTHY, KUBELET_SOCKET};
use eni_ipam_device_plugin::unix_channel;
use eni_ipam_kube_standin::{KubeStandin, NODES, PODS};
use eni_ipam_netns_testbed::Netns;
use serde_json::{Value, json};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The extended resource.
pub const RESOURCE: &str = "eni-ipam.io/ip";

/// A pod this kubelet runs.
pub struct RunningPod {
    /// The sandbox's container id.
    pub container: String,
    /// The pod's network namespace.
    pub netns: Netns,
    /// Its IP.
    pub ip: Ipv4Addr,
    /// The `portMappings` runtime config it was added with.
    pub port_mappings: Value,
    /// The result of its ADD (the chain's last), given back on DEL.
    pub result: Value,
}

#[derive(Default)]
struct State {
    /// Healthy device ids in the plugin's last list.
    healthy: BTreeSet<String>,
    /// Device ids held, by pod key.
    held: BTreeMap<String, Vec<String>>,
    /// Pods with a sandbox, by key.
    running: BTreeMap<String, Arc<RunningPod>>,
    /// The registered plugin's client.
    plugin: Option<DevicePluginClient<Channel>>,
    /// Failed CNI ADD attempts.
    add_failures: u64,
    /// Pods refused at admission.
    admission_failures: u64,
    /// Register calls received.
    registrations: u64,
    /// Pods whose sandbox was dropped without a CNI DEL ([`Kubelet::forget_without_del`]):
    /// never started again while their object lives.
    forgotten: BTreeSet<String>,
}

/// How to run the CNI plugins on this node.
#[derive(Clone, Debug)]
pub struct Cni {
    /// The network configuration list (the chart's conflist).
    pub conflist: Value,
    /// Folders searched for the plugin binaries (`CNI_PATH`).
    pub bin_dirs: Vec<PathBuf>,
    /// Network namespace of the node (the plugin runs in it).
    pub node_netns: PathBuf,
    /// The agent's socket.
    pub agent_socket: PathBuf,
}

/// One node's kubelet.
pub struct Kubelet {
    node: String,
    dir: PathBuf,
    standin: KubeStandin,
    cni: Cni,
    tag: String,
    state: Arc<Mutex<State>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    serial: Mutex<u64>,
}

struct Registrar {
    kubelet: Arc<KubeletLink>,
}

/// What the registration service needs of its kubelet.
struct KubeletLink {
    node: String,
    dir: PathBuf,
    standin: KubeStandin,
    state: Arc<Mutex<State>>,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        if request.resource_name != RESOURCE {
            return Err(Status::invalid_argument(format!("unexpected resource {}", request.resource_name)));
        }
        let link = self.kubelet.clone();
        link.state.lock().expect("kubelet state").registrations += 1;
        // kubelet dials the plugin after answering Register.
        tokio::spawn(async move { link.follow(request.endpoint).await });
        Ok(Response::new(Empty {}))
    }
}

impl KubeletLink {
    async fn follow(&self, endpoint: String) {
        let socket = self.dir.join(&endpoint);
        let Ok(channel) = unix_channel::connect(&socket, Duration::from_secs(2)).await else {
            tracing::warn!(node = %self.node, %endpoint, "cannot dial the device plugin");
            return;
        };
        let mut client = DevicePluginClient::new(channel);
        self.state.lock().expect("kubelet state").plugin = Some(client.clone());
        let Ok(stream) = client.list_and_watch(Empty {}).await else {
            tracing::warn!(node = %self.node, "ListAndWatch refused");
            return;
        };
        let mut stream = stream.into_inner();
        while let Ok(Some(list)) = stream.message().await {
            let healthy: BTreeSet<String> =
                list.devices.iter().filter(|d| d.health == HEALTHY).map(|d| d.id.clone()).collect();
            let count = healthy.len().to_string();
            self.state.lock().expect("kubelet state").healthy = healthy;
            let patch = json!({"status": {"capacity": {RESOURCE: count}, "allocatable": {RESOURCE: count}}});
            if let Err(e) = self.standin.merge_patch(NODES, "", &self.node, patch, true) {
                tracing::warn!(node = %self.node, error = %e, "cannot update the Node's allocatable");
            }
        }
        // The plugin went away: its devices are gone until it registers again.
        let mut state = self.state.lock().expect("kubelet state");
        state.healthy.clear();
        state.plugin = None;
        let patch = json!({"status": {"capacity": {RESOURCE: "0"}, "allocatable": {RESOURCE: "0"}}});
        let _ = self.standin.merge_patch(NODES, "", &self.node, patch, true);
    }
}

/// The first address of a CNI result.
fn pod_ip(result: &Value) -> Option<Ipv4Addr> {
    result["ips"][0]["address"].as_str()?.split('/').next()?.parse().ok()
}

#[tonic::async_trait]
impl PodResourcesLister for PodResourcesView {
    async fn list(
        &self,
        _request: Request<ListPodResourcesRequest>,
    ) -> Result<Response<ListPodResourcesResponse>, Status> {
        // As kubelet's List: every pod it admitted and has not finished removing (a sandbox
        // running or not yet made), with the devices it holds, if any.
        let state = self.0.lock().expect("kubelet state");
        let keys: BTreeSet<&String> = state.held.keys().chain(state.running.keys()).collect();
        let pod_resources = keys
            .into_iter()
            .map(|key| {
                let (namespace, name) = key.split_once('/').unwrap_or(("default", key));
                let devices = match state.held.get(key) {
                    Some(ids) => {
                        vec![ContainerDevices { resource_name: RESOURCE.into(), device_ids: ids.clone() }]
                    }
                    None => Vec::new(),
                };
                PodResources {
                    name: name.into(),
                    namespace: namespace.into(),
                    containers: vec![ContainerResources { name: "app".into(), devices }],
                }
            })
            .collect();
        Ok(Response::new(ListPodResourcesResponse { pod_resources }))
    }
}

#[derive(Clone)]
struct PodResourcesView(Arc<Mutex<State>>);

/// The `portMappings` runtime config of a pod: its containers' ports with a `hostPort`.
pub fn port_mappings(pod: &Value) -> Value {
    let mappings: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["hostPort"].as_u64().is_some_and(|h| h > 0))
        .map(|p| {
            json!({"hostPort": p["hostPort"], "containerPort": p["containerPort"],
                "protocol": p["protocol"].as_str().unwrap_or("TCP").to_ascii_lowercase()})
        })
        .collect();
    Value::Array(mappings)
}

/// The configuration one plugin of `conflist` gets on stdin (as libcni builds it): the
/// plugin's object with the list's `cniVersion` and `name`, the previous plugin's result,
/// and the runtime config of the capabilities it declares.
pub fn plugin_config(conflist: &Value, plugin: &Value, prev: Option<&Value>, port_mappings: &Value) -> Value {
    let mut config = plugin.clone();
    config["cniVersion"] = conflist["cniVersion"].clone();
    config["name"] = conflist["name"].clone();
    if let Some(prev) = prev {
        config["prevResult"] = prev.clone();
    }
    if plugin["capabilities"]["portMappings"] == true
        && port_mappings.as_array().is_some_and(|m| !m.is_empty())
    {
        config["runtimeConfig"] = json!({"portMappings": port_mappings});
    }
    config
}

/// `namespace/name` of a pod object.
pub fn pod_key(pod: &Value) -> String {
    format!(
        "{}/{}",
        pod["metadata"]["namespace"].as_str().unwrap_or("default"),
        pod["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// The count of the extended resource a pod requests (all containers).
pub fn requested(pod: &Value) -> u64 {
    pod["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    c["resources"]["requests"][RESOURCE].as_str().and_then(|v| v.parse::<u64>().ok())
                })
                .sum()
        })
        .unwrap_or(0)
}

impl Kubelet {
    /// Starts the kubelet of `node`: its device-plugin folder is `<dir>/device-plugins`,
    /// pod-resources at `<dir>/pod-resources.sock`.
    pub fn start(node: &str, dir: &Path, standin: KubeStandin, cni: Cni, tag: &str) -> Arc<Self> {
        std::fs::create_dir_all(dir.join("device-plugins")).expect("create the device plugin folder");
        let kubelet = Arc::new(Self {
            node: node.to_owned(),
            dir: dir.to_owned(),
            standin,
            cni,
            tag: tag.to_owned(),
            state: Arc::new(Mutex::new(State::default())),
            tasks: Mutex::new(Vec::new()),
            serial: Mutex::new(0),
        });
        kubelet.serve_registration();
        let view = PodResourcesView(kubelet.state.clone());
        let path = kubelet.pod_resources_socket();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind the pod-resources socket");
        let pods = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(PodResourcesListerServer::new(view))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        let looping = kubelet.clone();
        let sync = tokio::spawn(async move {
            loop {
                looping.sync_pods().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        kubelet.tasks.lock().expect("tasks").extend([pods, sync]);
        kubelet
    }

    /// kubelet's device plugin folder.
    pub fn device_plugin_dir(&self) -> PathBuf {
        self.dir.join("device-plugins")
    }

    /// kubelet's pod-resources socket.
    pub fn pod_resources_socket(&self) -> PathBuf {
        self.dir.join("pod-resources.sock")
    }

    fn serve_registration(&self) {
        let path = self.device_plugin_dir().join(KUBELET_SOCKET);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind kubelet.sock");
        let link = Arc::new(KubeletLink {
            node: self.node.clone(),
            dir: self.device_plugin_dir(),
            standin: self.standin.clone(),
            state: self.state.clone(),
        });
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(Registrar { kubelet: link }))
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await;
        });
        self.tasks.lock().expect("tasks").push(task);
    }

    /// Restarts kubelet's side of the device plugin API as a kubelet restart does: its socket
    /// and every plugin socket in the folder are deleted, then `kubelet.sock` is served anew.
    pub fn recreate_socket(&self) {
        let dir = self.device_plugin_dir();
        for entry in std::fs::read_dir(&dir).expect("read the device plugin folder").flatten() {
            if entry.path().extension().is_some_and(|e| e == "sock") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        self.serve_registration();
    }

    /// Register calls received so far.
    pub fn registrations(&self) -> u64 {
        self.state.lock().expect("kubelet state").registrations
    }

    /// Healthy device ids the plugin advertises now.
    pub fn healthy(&self) -> usize {
        self.state.lock().expect("kubelet state").healthy.len()
    }

    /// Pods with a sandbox on this node.
    pub fn running(&self) -> BTreeMap<String, Arc<RunningPod>> {
        self.state.lock().expect("kubelet state").running.clone()
    }

    /// Container ids of the running sandboxes (what a runtime lists).
    pub fn containers(&self) -> Vec<String> {
        self.running().values().map(|p| p.container.clone()).collect()
    }

    /// Drops a pod's sandbox as a crashed runtime would: its network namespace goes, no CNI
    /// DEL runs, kubelet forgets the pod (pod-resources no longer lists it) and never starts
    /// it again here. Its IP stays allocated until the agent notices. The IP it had, if its
    /// sandbox was running.
    pub fn forget_without_del(&self, key: &str) -> Option<Ipv4Addr> {
        let pod = {
            let mut state = self.state.lock().expect("kubelet state");
            state.forgotten.insert(key.to_owned());
            state.held.remove(key);
            state.running.remove(key)
        }?;
        let ip = pod.ip;
        // The last reference: dropping it deletes the sandbox's namespace (and the veth in it).
        drop(pod);
        Some(ip)
    }

    /// (failed CNI ADDs, pods refused at admission).
    pub fn failures(&self) -> (u64, u64) {
        let state = self.state.lock().expect("kubelet state");
        (state.add_failures, state.admission_failures)
    }

    async fn sync_pods(&self) {
        let pods: Vec<Value> = self
            .standin
            .list(PODS)
            .into_iter()
            .filter(|p| p["spec"]["nodeName"].as_str() == Some(self.node.as_str()))
            .collect();
        let live: BTreeSet<String> = pods.iter().map(pod_key).collect();
        let gone: Vec<(String, Arc<RunningPod>)> = {
            let state = self.state.lock().expect("kubelet state");
            state
                .running
                .iter()
                .filter(|(k, _)| !live.contains(*k))
                .map(|(k, p)| (k.clone(), p.clone()))
                .collect()
        };
        for (key, pod) in gone {
            let done = self
                .cni_run("DEL", &key, &pod.container, &pod.netns, &pod.port_mappings, Some(&pod.result))
                .await;
            if done.is_ok() {
                let mut state = self.state.lock().expect("kubelet state");
                state.running.remove(&key);
                state.held.remove(&key);
            }
        }
        {
            let mut state = self.state.lock().expect("kubelet state");
            state.held.retain(|k, _| live.contains(k));
            state.forgotten.retain(|k| live.contains(k));
        }
        for pod in pods {
            let key = pod_key(&pod);
            let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
            let skip = {
                let state = self.state.lock().expect("kubelet state");
                state.running.contains_key(&key) || state.forgotten.contains(&key)
            };
            if phase == "Failed" || skip {
                continue;
            }
            if !self.admit(&key, &pod).await {
                continue;
            }
            self.start_sandbox(&key, &pod).await;
        }
    }

    /// Device ids for the pod (kept across retries); false if it was refused.
    async fn admit(&self, key: &str, pod: &Value) -> bool {
        let want = requested(pod) as usize;
        let (ids, plugin) = {
            let mut state = self.state.lock().expect("kubelet state");
            if want == 0 || state.held.contains_key(key) {
                return true;
            }
            let taken: BTreeSet<&String> = state.held.values().flatten().collect();
            let free: Vec<String> =
                state.healthy.iter().filter(|id| !taken.contains(id)).take(want).cloned().collect();
            if free.len() < want {
                state.admission_failures += 1;
                drop(state);
                let status = json!({"status": {"phase": "Failed", "reason": "UnexpectedAdmissionError",
                    "message": format!("Allocate failed due to requested number of devices unavailable for {RESOURCE}. Requested: {want}, Available: {}", free.len())}});
                let (ns, name) = key.split_once('/').expect("a pod key");
                let _ = self.standin.merge_patch(PODS, ns, name, status, true);
                return false;
            }
            state.held.insert(key.to_owned(), free.clone());
            (free, state.plugin.clone())
        };
        if let Some(mut plugin) = plugin {
            let request =
                AllocateRequest { container_requests: vec![ContainerAllocateRequest { devices_ids: ids }] };
            if let Err(e) = plugin.allocate(request).await {
                tracing::warn!(node = %self.node, pod = %key, error = %e, "Allocate failed");
            }
        }
        true
    }

    async fn start_sandbox(&self, key: &str, pod: &Value) {
        let mappings = port_mappings(pod);
        let container = {
            let mut serial = self.serial.lock().expect("serial");
            *serial += 1;
            format!("{}{:06}", self.node.replace('-', ""), *serial)
        };
        let netns = Netns::create(format!("{}-p{}", self.tag, container));
        match self.cni_run("ADD", key, &container, &netns, &mappings, None).await {
            Ok(result) => {
                let Some(ip) = pod_ip(&result) else {
                    tracing::warn!(node = %self.node, pod = %key, %result, "CNI ADD printed no address");
                    let _ = self.cni_run("DEL", key, &container, &netns, &mappings, Some(&result)).await;
                    return;
                };
                let (ns, name) = key.split_once('/').expect("a pod key");
                let status = json!({"status": {"phase": "Running", "podIP": ip.to_string(),
                    "podIPs": [{"ip": ip.to_string()}],
                    "conditions": [{"type": "Ready", "status": "True"}]}});
                if self.standin.merge_patch(PODS, ns, name, status, true).is_err() {
                    // Deleted meanwhile: undo at once.
                    let _ = self.cni_run("DEL", key, &container, &netns, &mappings, Some(&result)).await;
                    return;
                }
                let pod = Arc::new(RunningPod { container, netns, ip, port_mappings: mappings, result });
                self.state.lock().expect("kubelet state").running.insert(key.to_owned(), pod);
            }
            Err(e) => {
                self.state.lock().expect("kubelet state").add_failures += 1;
                tracing::debug!(node = %self.node, pod = %key, error = %e, "CNI ADD failed; retrying");
                // kubelet tears a failed sandbox down before the next try.
                let _ = self.cni_run("DEL", key, &container, &netns, &mappings, None).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// Runs the conflist as a runtime does (libcni): ADD through each plugin in order with
    /// the previous result, DEL in reverse order; the last ADD result.
    async fn cni_run(
        &self,
        command: &str,
        key: &str,
        container: &str,
        netns: &Netns,
        mappings: &Value,
        cached: Option<&Value>,
    ) -> Result<Value, String> {
        let conflist = &self.cni.conflist;
        let mut plugins: Vec<Value> = conflist["plugins"].as_array().cloned().unwrap_or_default();
        if plugins.is_empty() {
            return Err(format!("the CNI network configuration has no plugins: {conflist}"));
        }
        if command == "DEL" {
            plugins.reverse();
        }
        let mut prev = cached.cloned();
        let mut last = Value::Null;
        let mut errors = Vec::new();
        for plugin in &plugins {
            let mut config = plugin_config(conflist, plugin, prev.as_ref(), mappings);
            if config["type"] == "eni-ipam-cni" {
                // The agent's socket, where the chart's hostPath volume puts it on this node.
                config["socket"] = json!(self.cni.agent_socket);
            }
            match self.cni_exec(command, key, container, netns, &config).await {
                Ok(result) if command == "ADD" => {
                    prev = Some(result.clone());
                    last = result;
                }
                Ok(_) => {}
                // DEL goes on through every plugin, as libcni does, and reports the first error.
                Err(e) if command == "DEL" => errors.push(e),
                Err(e) => return Err(e),
            }
        }
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(last),
        }
    }

    /// Runs one plugin binary (`type`, found in the CNI path) in the node's namespace.
    async fn cni_exec(
        &self,
        command: &str,
        key: &str,
        container: &str,
        netns: &Netns,
        config: &Value,
    ) -> Result<Value, String> {
        let (ns, name) = key.split_once('/').expect("a pod key");
        let kind = config["type"].as_str().unwrap_or_default();
        let binary =
            self.cni.bin_dirs.iter().map(|d| d.join(kind)).find(|p| p.exists()).ok_or_else(|| {
                format!(
                    "CNI plugin {kind} is in none of {:?} (scripts/install-test-tools)",
                    self.cni.bin_dirs
                )
            })?;
        let cni_path = std::env::join_paths(&self.cni.bin_dirs).map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new("nsenter")
            .arg(format!("--net={}", self.cni.node_netns.display()))
            .arg("--")
            .arg(&binary)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns.path())
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", cni_path)
            .env("CNI_ARGS", format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn the CNI plugin {kind}: {e}"))?;
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().expect("piped stdin");
            stdin.write_all(config.to_string().as_bytes()).await.map_err(|e| e.to_string())?;
        }
        let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
            .await
            .map_err(|_| format!("CNI {command} ({kind}) of {key} hung for 20 s"))?
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "CNI {command} ({kind}) of {key}: {} {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if command != "ADD" {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("CNI ADD ({kind}) output: {e}"))
    }

    /// Stops serving (the bed is torn down).
    pub fn stop(&self) {
        for task in self.tasks.lock().expect("tasks").drain(..) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plugin_gets_the_list_header_the_previous_result_and_its_capabilities() {
        let conflist = json!({"cniVersion": "1.0.0", "name": "eni-ipam", "plugins": [
            {"type": "eni-ipam-cni", "socket": "/s"},
            {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]});
        let pod = json!({"spec": {"containers": [{"ports": [
            {"containerPort": 8080, "hostPort": 18080, "protocol": "UDP"},
            {"containerPort": 9090},
            {"containerPort": 7070, "hostPort": 17070}]}]}});
        let mappings = port_mappings(&pod);
        assert_eq!(
            mappings,
            json!([{"hostPort": 18080, "containerPort": 8080, "protocol": "udp"},
                {"hostPort": 17070, "containerPort": 7070, "protocol": "tcp"}]),
            "only ports with a hostPort, protocol lower-case (TCP when unset)"
        );
        let first = plugin_config(&conflist, &conflist["plugins"][0], None, &mappings);
        assert_eq!(
            first,
            json!({"type": "eni-ipam-cni", "socket": "/s", "cniVersion": "1.0.0", "name": "eni-ipam"}),
            "no capability declared: no runtimeConfig; the first plugin has no prevResult"
        );
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/32"}]});
        let second = plugin_config(&conflist, &conflist["plugins"][1], Some(&prev), &mappings);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(second["runtimeConfig"], json!({"portMappings": mappings}));
        assert_eq!(second["snat"], true);
        assert_eq!(
            second["capabilities"],
            json!({"portMappings": true}),
            "libcni passes the object as it is"
        );
        let no_ports = plugin_config(&conflist, &conflist["plugins"][1], Some(&prev), &json!([]));
        assert!(no_ports.get("runtimeConfig").is_none(), "a pod without hostPort gets no runtimeConfig");
        assert_eq!(pod_ip(&prev), Some(Ipv4Addr::new(10, 0, 0, 5)));
    }
}
