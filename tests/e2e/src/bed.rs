//! The whole bed on one machine: cloud, stand-in apiserver, the VPC fabric
//! following the cloud, a scheduler and nodes; then, as the chart starts them
//! on a cluster whose nodes have no pool yet, the real webhook (the stand-in's
//! mutating admission) and two operator replicas with leader election, each
//! in a node's network namespace (`hostNetwork`) with the flags the chart
//! renders (`chart.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eni_ipam_cloud::tag;
use eni_ipam_kube_standin::{
    AdmissionPolicy, ENINODES, KubeStandin, LEASES, NODES, PODS, Pki, SERVICECIDRS, UserInfo,
};
use eni_ipam_netns_testbed::fabric::Fabric;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::chart::{self, ChartControlPlane, PodSupply, arg_value};
use crate::cloud::{CLUSTER, Cloud, CloudCounts, CloudKind};
use crate::daemon::Daemon;
use crate::kube_proxy::{self, ProxiedNodes};
use crate::kubelet::{Kubelet, pod_key};
use crate::node::{AgentSetup, Knobs, Node, management_link};
use crate::scheduler;
use crate::startup_taint::{self, SharedTaintLog};

/// The cluster's service range (EKS's default), served as a ServiceCIDR and given to the
/// chart as `agent.datapath.serviceCIDRs`.
pub const SERVICE_CIDR: &str = "10.100.0.0/16";

/// Which datapath the agents run, as chart values choose it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DatapathMode {
    /// eBPF programs attached through TCX links (`agent.datapath.tcAttach: tcx`).
    EbpfTcx,
    /// eBPF programs attached through netlink to a clsact qdisc (`tcAttach: netlink`).
    EbpfNetlink,
    /// No eBPF: the node's stack with policy routing (`agent.datapath.enabled: false`).
    None,
}

impl std::fmt::Display for DatapathMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::EbpfTcx => "ebpf/tcx",
            Self::EbpfNetlink => "ebpf/netlink",
            Self::None => "none",
        })
    }
}

impl DatapathMode {
    /// Every datapath.
    pub const ALL: [Self; 3] = [Self::EbpfTcx, Self::EbpfNetlink, Self::None];

    /// The chart values that choose it.
    pub fn chart_values(self) -> Vec<String> {
        let mut values = vec![format!("agent.datapath.serviceCIDRs={{{SERVICE_CIDR}}}")];
        match self {
            Self::EbpfTcx => {
                values.extend(["agent.datapath.enabled=true".into(), "agent.datapath.tcAttach=tcx".into()])
            }
            Self::EbpfNetlink => values
                .extend(["agent.datapath.enabled=true".into(), "agent.datapath.tcAttach=netlink".into()]),
            Self::None => values.push("agent.datapath.enabled=false".into()),
        }
        values
    }
}

/// What a bed is made of.
#[derive(Clone, Debug)]
pub struct BedConfig {
    /// The cloud.
    pub cloud: CloudKind,
    /// The agents' datapath.
    pub datapath: DatapathMode,
    /// Nodes.
    pub nodes: usize,
    /// Pool knobs of every node.
    pub knobs: Knobs,
}

/// When a pod was created, and when it was first seen Running.
pub type PodTimes = (Instant, Option<Instant>);

/// One operator replica: a pod of the chart's Deployment, on a node's host network.
pub struct Operator {
    /// Its pod name, hence its Lease identity.
    pub identity: String,
    /// The node it runs on (index into [`Bed::nodes`]).
    pub node: usize,
    daemon: Option<Daemon>,
}

/// The node the webhook replica runs on, next to an operator replica: their ports and
/// the agent's and device plugin's share that node's network.
pub const WEBHOOK_NODE: usize = 0;

/// The bed.
pub struct Bed {
    /// How it was made.
    pub config: BedConfig,
    /// The cloud.
    pub cloud: Arc<Cloud>,
    /// The stand-in apiserver.
    pub standin: KubeStandin,
    /// The nodes, in join order.
    pub nodes: Vec<Node>,
    /// Operator replicas (none before [`Bed::start_operators`]).
    pub operators: Vec<Operator>,
    /// What the chart renders for this bed (node 0's view of the cloud endpoint).
    pub chart: ChartControlPlane,
    /// Folder of files and logs.
    pub dir: PathBuf,
    /// When each pod was created, and when it was first seen Running.
    pub pods: Arc<Mutex<BTreeMap<String, PodTimes>>>,
    /// Addresses another CNI assigned on the nodes' ENIs (the audit leaves them to it).
    pub foreign_ips: BTreeSet<Ipv4Addr>,
    /// What the watcher of the chart's startup taint saw (`startup_taint.rs`).
    pub startup_taints: SharedTaintLog,
    fabric: Arc<Mutex<Fabric>>,
    proxied: ProxiedNodes,
    tag: String,
    host_links: Vec<String>,
    webhook: Option<Daemon>,
    http: reqwest::Client,
    tasks: Vec<JoinHandle<()>>,
    _tmp: Option<tempfile::TempDir>,
}

/// The bearer token the bed gives the agent of node `name` (its service account's bound token).
pub fn agent_token(name: &str) -> String {
    format!("agent-token-{name}")
}

/// `--eni-gc-interval` and `--eni-gc-grace` of the operators: one GC pass is at most twice this.
pub const GC_PERIOD: Duration = Duration::from_secs(3);

impl Bed {
    /// Starts everything but the nodes (they join with [`Bed::join`]).
    pub async fn start(config: BedConfig, dir: Option<PathBuf>) -> Self {
        eni_ipam_netns_testbed::require_root_and_bpffs();
        let (tmp, dir) = match dir {
            Some(d) => {
                std::fs::create_dir_all(&d).expect("create the bed folder");
                (None, d)
            }
            None => {
                let t = tempfile::tempdir().expect("a temp folder");
                let d = t.path().to_owned();
                (Some(t), d)
            }
        };
        let tag = format!("e2e{}", std::process::id() % 100_000);
        let cloud = Arc::new(Cloud::start(config.cloud, config.nodes).await);
        let (_, standin) = KubeStandin::start_on(SocketAddr::from(([0, 0, 0, 0], 0))).await;
        std::fs::write(dir.join("kubeconfig"), standin.kubeconfig()).expect("write the kubeconfig");
        let chart = ChartControlPlane::render(&chart_values(&cloud, host_address(0), config.datapath));
        // The chart's policies on agents' writes (ENINodes, Nodes), enforced as kube-apiserver
        // would (agents get tokens).
        for (policy, binding) in &chart.admission_policies {
            let compiled = AdmissionPolicy::compile(policy, binding).unwrap_or_else(|e| panic!("{e}"));
            standin.add_admission_policy(compiled);
        }
        let fabric = Arc::new(Mutex::new(Fabric::new(&tag)));
        let range = json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
            "metadata": {"name": "kubernetes"}, "spec": {"cidrs": [SERVICE_CIDR]}});
        standin.create(SERVICECIDRS, range).expect("create the ServiceCIDR");
        let (taint_watch, startup_taints) = match chart.startup_taint() {
            Some(key) => {
                let (task, log) = startup_taint::spawn(standin.clone(), key.to_owned());
                (Some(task), log)
            }
            None => (None, SharedTaintLog::default()),
        };
        let mut bed = Self {
            config,
            cloud,
            standin,
            nodes: Vec::new(),
            operators: Vec::new(),
            chart,
            dir,
            pods: Arc::new(Mutex::new(BTreeMap::new())),
            foreign_ips: BTreeSet::new(),
            startup_taints,
            fabric,
            proxied: ProxiedNodes::default(),
            tag,
            host_links: Vec::new(),
            webhook: None,
            http: reqwest::Client::new(),
            tasks: Vec::new(),
            _tmp: tmp,
        };
        bed.tasks.extend(taint_watch);
        bed.tasks.push(bed.follow_cloud());
        bed.tasks.push(scheduler::spawn(bed.standin.clone()));
        bed.tasks.push(bed.watch_pods());
        bed.tasks.push(kube_proxy::spawn(bed.standin.clone(), bed.proxied.clone()));
        bed
    }

    /// The VPC fabric (router, node namespaces, outside client, source check).
    pub fn fabric(&self) -> std::sync::MutexGuard<'_, Fabric> {
        self.fabric.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Packets the VPC's source check dropped so far, all ENIs together.
    pub fn source_check_drops(&self) -> u64 {
        self.fabric().source_check_drops().values().sum()
    }

    /// Starts the webhook replica the chart's Deployment runs, on node [`WEBHOOK_NODE`]'s
    /// host network, and registers it as the stand-in's mutating admission the way the
    /// chart's MutatingWebhookConfiguration does: through the Service's target port, whose
    /// endpoint is that node's address.
    pub fn start_webhook(&mut self) {
        assert!(self.webhook.is_none(), "the webhook runs already");
        let node = &self.nodes[WEBHOOK_NODE];
        let pki = Pki::for_hosts(&[&node.address.to_string()]);
        // The Secret volume: its keys as files in a folder per volume.
        let volumes = self.dir.join("webhook-volumes");
        for (_, volume) in &self.chart.webhook.mounts {
            let folder = volumes.join(volume);
            std::fs::create_dir_all(&folder).expect("create the webhook's volume folder");
            for (key, pem) in [("tls.crt", &pki.cert_pem), ("tls.key", &pki.key_pem), ("ca.crt", &pki.ca_pem)]
            {
                std::fs::write(folder.join(key), pem).expect("write the webhook's certificate");
            }
        }
        let supply =
            PodSupply { pod_name: "eni-ipam-webhook-a", secret: &[], volumes: &volumes, node_env: &[] };
        let command = chart::command(&self.chart.webhook, &node.netns, &supply, &[]);
        let daemon = Daemon::spawn("webhook", command, &self.dir.join("webhook.log"));
        let target = SocketAddr::from((node.address, self.chart.webhook_target_port));
        wait_for_port(target, &daemon);
        self.standin
            .set_pod_webhook(self.chart.pod_webhook(node.address, &pki.ca_pem))
            .expect("register the webhook");
        self.webhook = Some(daemon);
    }

    /// Starts the chart's two operator replicas on nodes 0 and 1 (its anti-affinity puts
    /// them on two nodes), each on its node's host network.
    pub fn start_operators(&mut self) {
        assert!(self.nodes.len() >= 2, "the chart's two operator replicas need two nodes");
        assert!(self.operators.is_empty(), "the operators run already");
        for (identity, node) in [("eni-ipam-operator-a", 0), ("eni-ipam-operator-b", 1)] {
            self.operators.push(Operator { identity: identity.into(), node, daemon: None });
        }
        for i in 0..self.operators.len() {
            self.start_operator(i);
        }
    }

    /// (Re)starts operator replica `i` on its node, with the command line the chart renders
    /// for this bed and, in place of the service account, a kubeconfig to the stand-in as the
    /// node reaches it.
    pub fn start_operator(&mut self, i: usize) {
        let (identity, n) = (self.operators[i].identity.clone(), self.operators[i].node);
        let host = host_address(n);
        let rendered = ChartControlPlane::render(&chart_values(&self.cloud, host, self.config.datapath));
        let kubeconfig = self.dir.join(format!("kubeconfig-{}", self.nodes[n].name));
        std::fs::write(&kubeconfig, self.standin.kubeconfig_via(host.into())).expect("write a kubeconfig");
        let (secret, node_env) = (self.cloud.secret(), self.cloud.node_env());
        let supply =
            PodSupply { pod_name: &identity, secret: &secret, volumes: &self.dir, node_env: &node_env };
        let extra = ["--kubeconfig".to_owned(), kubeconfig.display().to_string()];
        let command = chart::command(&rendered.operator, &self.nodes[n].netns, &supply, &extra);
        let log = self.dir.join(format!("{identity}.log"));
        self.operators[i].daemon = Some(Daemon::spawn(&identity, command, &log));
    }

    /// Waits until every operator replica listens on its node's address at the chart's port
    /// (so it runs: `nsenter` has entered the node's namespace and started it).
    pub fn wait_operators_listening(&self) {
        for operator in &self.operators {
            let daemon = operator.daemon.as_ref().expect("the operator was started");
            let addr = SocketAddr::from((self.nodes[operator.node].address, self.operator_metrics_port()));
            wait_for_port(addr, daemon);
        }
    }

    /// The operator's metrics port as the chart renders it (on its node's address).
    pub fn operator_metrics_port(&self) -> u16 {
        port_of(
            arg_value(&self.chart.operator.args, "--metrics-addr").expect("the chart sets --metrics-addr"),
        )
    }

    /// The pids of the chart's pods the bed runs, by what they are, with their node.
    pub fn control_plane(&self) -> Vec<(String, u32, &Node)> {
        let mut found: Vec<(String, u32, &Node)> = self
            .operators
            .iter()
            .filter_map(|o| Some((o.identity.clone(), o.daemon.as_ref()?.pid(), &self.nodes[o.node])))
            .collect();
        if let Some(webhook) = &self.webhook {
            found.push(("webhook".into(), webhook.pid(), &self.nodes[WEBHOOK_NODE]));
        }
        found
    }

    /// The identity holding the operator Lease, if any.
    pub fn leader(&self) -> Option<String> {
        let name =
            arg_value(&self.chart.operator.args, "--leader-elect-lease-name").unwrap_or("eni-ipam-operator");
        let lease = self.standin.get(LEASES, chart::NAMESPACE, name)?;
        lease["spec"]["holderIdentity"].as_str().map(String::from)
    }

    /// The leading replica's `/metrics`, if it answers.
    pub async fn leader_metrics(&self) -> Option<String> {
        let leader = self.leader()?;
        let node = &self.nodes[self.operators.iter().find(|o| o.identity == leader)?.node];
        let url = format!("http://{}:{}/metrics", node.address, self.operator_metrics_port());
        let answer = self.http.get(url).send().await.ok()?;
        answer.text().await.ok()
    }

    /// SIGKILLs the leading replica (no Lease release); returns its index.
    pub fn kill_leader(&mut self) -> Option<usize> {
        let leader = self.leader()?;
        let i = self.operators.iter().position(|o| o.identity == leader)?;
        if let Some(mut d) = self.operators[i].daemon.take() {
            d.kill();
        }
        Some(i)
    }

    /// Joins `count` more nodes: namespace, management link, Node object, kubelet, agent,
    /// device plugin. Returns their names.
    pub async fn join(&mut self, count: usize) -> Vec<String> {
        let mut names = Vec::new();
        for _ in 0..count {
            let i = self.nodes.len();
            let instance =
                self.cloud.instances.get(i).cloned().expect("the cloud launched an instance per node");
            let name = format!("node-{i}");
            let node = self.start_node(i, &name, instance);
            self.proxied.lock().expect("kube-proxy nodes").push((name.clone(), node.netns.clone()));
            self.nodes.push(node);
            eprintln!("  {name} joined: instance {}, agent and device plugin up", self.nodes[i].instance.id);
            names.push(name);
        }
        names
    }

    /// Node `i`'s VM is replaced under its name: its Node object goes, its kubelet, agent
    /// and device plugin stop, the VM is terminated; a new VM starts, and a Node of the same
    /// name registers with the new providerID, with a fresh disk (a new node folder; the old
    /// one is kept as `<name>-was-<instance>`) and its agent and device plugin. Returns the
    /// old instance.
    pub async fn replace_instance(&mut self, i: usize) -> crate::cloud::Instance {
        let name = self.nodes[i].name.clone();
        self.standin.delete(NODES, "", &name);
        let old = self.nodes.remove(i);
        let was = old.instance.clone();
        let old_dir = old.dir.clone();
        tokio::task::block_in_place(|| drop(old));
        self.cloud.terminate(&was.id).await;
        let _ = std::fs::rename(&old_dir, self.dir.join(format!("{name}-was-{}", was.id)));
        let instance =
            self.cloud.launch_elsewhere(1).await.pop().expect("the cloud launched the replacement VM");
        let node = self.start_node(i, &name, instance);
        for (n, netns) in self.proxied.lock().expect("kube-proxy nodes").iter_mut() {
            if *n == name {
                *netns = node.netns.clone();
            }
        }
        self.nodes.insert(i, node);
        eprintln!("  {name} is back on instance {} (was {})", self.nodes[i].instance.id, was.id);
        was
    }

    /// Starts node `i` named `name` on `instance`: namespace, management link, Node object,
    /// kubelet, agent, device plugin.
    fn start_node(&mut self, i: usize, name: &str, instance: crate::cloud::Instance) -> Node {
        let netns_name = {
            let mut fabric = self.fabric.lock().expect("fabric");
            fabric.add_node(&instance.id).name().to_owned()
        };
        let netns = PathBuf::from("/var/run/netns").join(&netns_name);
        let host_ip = host_address(i);
        let (link, address) = management_link(&netns_name, &format!("{}m{i}", self.tag), host_ip);
        self.host_links.push(link);
        let labels = json!({"node.kubernetes.io/instance-type": instance.instance_type,
            "topology.kubernetes.io/zone": instance.zone, "kubernetes.io/hostname": name});
        // As kubelet's --register-with-taints=<key>=:NoSchedule puts it, where the chart's agent removes it.
        let taints: Vec<Value> = self
            .chart
            .startup_taint()
            .map(|key| json!({"key": key, "effect": "NoSchedule"}))
            .into_iter()
            .collect();
        self.standin
            .create(
                NODES,
                json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels},
                    "spec": {"providerID": instance.provider_id, "taints": taints},
                    "status": {"capacity": {"pods": "110"}, "allocatable": {"pods": "110"},
                        "conditions": [{"type": "Ready", "status": "True"}]}}),
            )
            .expect("create the Node");
        let node_dir = self.dir.join(name);
        std::fs::create_dir_all(&node_dir).expect("node folder");
        let kubelet = Kubelet::start(
            name,
            &node_dir,
            self.standin.clone(),
            Node::cni(&netns, &node_dir, &self.chart.conflist),
            &self.tag,
        );
        let token = agent_token(name);
        let user =
            UserInfo::service_account_on_node(chart::NAMESPACE, &self.chart.agent_service_account, name);
        self.standin.add_token(&token, user);
        let kubeconfig = node_dir.join("agent-kubeconfig");
        std::fs::write(&kubeconfig, self.standin.kubeconfig_with_token(host_ip.into(), &token))
            .expect("write the agent's kubeconfig");
        let setup = AgentSetup {
            kubeconfig,
            cloud_args: self.cloud.agent_args(),
            knobs: self.config.knobs,
            agent_metrics_addr: self.chart.agent_metrics_addr.clone(),
            device_plugin_metrics_addr: self.chart.device_plugin_metrics_addr.clone(),
            datapath_args: self.chart.agent_datapath_args.clone(),
            startup_taint_args: self.chart.agent_startup_taint_args.clone(),
        };
        tokio::task::block_in_place(|| Node::start(name, instance, netns, address, &node_dir, kubelet, setup))
    }

    fn follow_cloud(&self) -> JoinHandle<()> {
        let cloud = self.cloud.clone();
        let fabric = self.fabric.clone();
        tokio::spawn(async move {
            loop {
                let enis = cloud.enis().await;
                let view = cloud.fabric_view(&enis);
                let fabric = fabric.clone();
                let synced = tokio::task::spawn_blocking(move || {
                    fabric.lock().unwrap_or_else(std::sync::PoisonError::into_inner).sync(&view)
                })
                .await;
                if let Err(e) = synced {
                    // An `ip` command failed (the message is above); the next round tries again.
                    eprintln!("VPC fabric sync failed: {e}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    fn watch_pods(&self) -> JoinHandle<()> {
        let standin = self.standin.clone();
        let pods = self.pods.clone();
        tokio::spawn(async move {
            loop {
                let running: BTreeSet<String> = standin
                    .list(PODS)
                    .iter()
                    .filter(|p| p["status"]["phase"] == "Running")
                    .map(pod_key)
                    .collect();
                let now = Instant::now();
                for (key, (_, seen)) in pods.lock().expect("pods").iter_mut() {
                    if seen.is_none() && running.contains(key) {
                        *seen = Some(now);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// Creates a pod through the REST API (so admission runs), as `kubectl apply` would.
    pub async fn create_pod(&self, name: &str) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "e2e"}},
            "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}});
        self.post_pod(pod).await;
    }

    /// Creates a pod bound to node `node` (as a DaemonSet's or a pinned pod is) with
    /// container `ports` (`hostPort`s among them).
    pub async fn create_pod_on(&self, name: &str, node: &str, ports: Value) {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
            "spec": {"nodeName": node,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "ports": ports}]}});
        self.post_pod(pod).await;
    }

    /// Creates `pod` in its namespace through the REST API (admission runs).
    pub(crate) async fn post_pod(&self, pod: Value) {
        let namespace = pod["metadata"]["namespace"].as_str().unwrap_or("default").to_owned();
        let name = pod["metadata"]["name"].as_str().expect("a pod name").to_owned();
        let port = self.standin.addr().port();
        let url = format!("http://127.0.0.1:{port}/api/v1/namespaces/{namespace}/pods");
        self.pods.lock().expect("pods").insert(format!("{namespace}/{name}"), (Instant::now(), None));
        let answer = self.http.post(&url).json(&pod).send().await.expect("POST a pod to the stand-in");
        let status = answer.status();
        let body = answer.text().await.unwrap_or_default();
        assert!(status.is_success(), "creating pod {name} failed with {status}: {body}");
    }

    /// Creation to Running of the pods created when `created` says, that run.
    pub fn times_to_running(&self, created: impl Fn(Instant) -> bool) -> Vec<Duration> {
        self.pods
            .lock()
            .expect("pods")
            .values()
            .filter(|(at, _)| created(*at))
            .filter_map(|(at, running)| running.map(|r| r - *at))
            .collect()
    }

    /// Deletes a pod.
    pub fn delete_pod(&self, name: &str) {
        self.standin.delete(PODS, "default", name);
    }

    /// Pods by phase.
    pub fn phases(&self) -> BTreeMap<String, usize> {
        let mut phases = BTreeMap::new();
        for p in self.standin.list(PODS) {
            *phases.entry(p["status"]["phase"].as_str().unwrap_or("Pending").to_owned()).or_default() += 1;
        }
        phases
    }

    /// Waits until every pod is Running (or fails the run with what is stuck).
    pub async fn wait_all_running(&self, within: Duration) {
        let start = Instant::now();
        loop {
            let pods = self.standin.list(PODS);
            if pods.iter().all(|p| p["status"]["phase"] == "Running") {
                return;
            }
            if start.elapsed() > within {
                let stuck: Vec<String> = pods
                    .iter()
                    .filter(|p| p["status"]["phase"] != "Running")
                    .take(5)
                    .map(|p| format!("{} on {:?}: {}", pod_key(p), p["spec"]["nodeName"], p["status"]))
                    .collect();
                let logs: Vec<String> =
                    self.nodes.iter().map(|n| format!("{}:\n{}", n.name, n.agent_log(15))).collect();
                panic!(
                    "pods not Running within {within:?} ({:?}); e.g. {stuck:#?}\nagents:\n{}",
                    self.phases(),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `done` holds, or panics naming `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Duration {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < within, "{what}: not within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        start.elapsed()
    }

    /// The operators' cloud calls so far.
    pub fn cloud_counts(&self) -> CloudCounts {
        self.cloud.counts()
    }

    /// Every ENINode by name.
    pub fn eninodes(&self) -> BTreeMap<String, Value> {
        self.standin
            .list(ENINODES)
            .into_iter()
            .map(|n| (n["metadata"]["name"].as_str().unwrap_or_default().to_owned(), n))
            .collect()
    }

    /// The node of an instance.
    pub fn node_of_instance(&self, instance: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.instance.id == instance)
    }

    /// The pods' IPs by pod (Running ones, from the apiserver).
    pub fn pod_ips(&self) -> BTreeMap<String, (String, Ipv4Addr)> {
        self.standin
            .list(PODS)
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter_map(|p| {
                let ip = p["status"]["podIP"].as_str()?.parse().ok()?;
                Some((pod_key(p), (p["spec"]["nodeName"].as_str()?.to_owned(), ip)))
            })
            .collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.nodes.clear();
        for op in &mut self.operators {
            if let Some(mut d) = op.daemon.take() {
                d.kill();
            }
        }
        if let Some(mut webhook) = self.webhook.take() {
            webhook.kill();
        }
        for link in &self.host_links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
    }
}

/// The host side of node `i`'s management link: a /30 in 169.254.K.0/24, K from the pid so
/// two beds on one machine do not share addresses.
pub(crate) fn host_address(i: usize) -> Ipv4Addr {
    let k = 100 + (std::process::id() % 150) as u8;
    Ipv4Addr::new(169, 254, k, (i as u8) * 4 + 1)
}

/// The chart's values for this bed: its cloud as a node reaches it through `host`, and
/// timings short enough for a test (2 s lease, 2 s release delay, a GC pass every few s).
pub(crate) fn chart_values(cloud: &Cloud, host: Ipv4Addr, datapath: DatapathMode) -> Vec<String> {
    let gc = format!("{}ms", GC_PERIOD.as_millis());
    let mut values = cloud.chart_values(host);
    values.extend(datapath.chart_values());
    values.extend([
        format!("clusterId={CLUSTER}"),
        "pool.releaseDelay=2s".into(),
        "cloudApi.resyncInterval=10s".into(),
        format!("cloudApi.eniGcInterval={gc}"),
        format!("cloudApi.eniGcGrace={gc}"),
        "operator.leaderElection.leaseDuration=2s".into(),
        "operator.leaderElection.renewDeadline=1500ms".into(),
        "operator.leaderElection.retryPeriod=300ms".into(),
        // Pods must not start without their IP request here.
        "webhook.failurePolicy=Fail".into(),
        format!("logLevel={}", std::env::var("ENI_E2E_OPERATOR_LOG").unwrap_or_else(|_| "info".into())),
    ]);
    values
}

/// The port of a `host:port` flag value.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{addr} names no port"))
}

fn wait_for_port(addr: SocketAddr, daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "{} does not listen on {addr}:\n{}", daemon.name, daemon.tail(20));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether an ENI carries the bed's cluster tag.
pub fn ours(eni: &eni_ipam_cloud::Eni) -> bool {
    eni.tags.get(tag::CLUSTER).map(String::as_str) == Some(CLUSTER)
}
