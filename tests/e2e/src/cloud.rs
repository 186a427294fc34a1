//! The cloud of a run: the Alibaba ECS/VPC emulator (in process, signed
//! OpenAPI) or moto's EC2 behind the test bed's proxy (which adds
//! pagination, limits, quotas and faults on the wire). The operator replicas
//! reach it only through its endpoint, from the nodes' network namespaces at
//! the host's address (both listen on every address); the bed reads the whole VPC directly
//! (emulator console, or the SDK straight at moto, past the proxy) so its own
//! reads neither use the quota nor show in the counts.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_aliyun_emulator::Emulator;
use eni_ipam_aliyun_emulator::emulator::FaultPlan;
use eni_ipam_aliyun_emulator::seed::Seed;
use eni_ipam_api::{EniId, InstanceId, SecurityGroupId, SubnetId, VpcId};
use eni_ipam_cloud::alibaba::Credentials;
use eni_ipam_cloud::{
    CallGuard, CloudProfile, CloudProvider, CreateEni, Eni, EniQuery, RetryPolicy, subnet_gateway,
};
use eni_ipam_cloud_aws::{AwsConfig, AwsProvider};
use eni_ipam_ec2_testbed::{Console, Ec2Proxy, Faults, Moto};
use eni_ipam_netns_testbed::fabric::CloudEni;

/// Which cloud a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CloudKind {
    /// The project's Alibaba ECS/VPC emulator.
    Alibaba,
    /// moto's EC2 server through the real aws-sdk-ec2.
    Aws,
}

impl std::fmt::Display for CloudKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloudKind::Alibaba => "alibaba",
            CloudKind::Aws => "aws",
        })
    }
}

/// An instance a node runs on.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Instance id.
    pub id: String,
    /// `spec.providerID` of its Node.
    pub provider_id: String,
    /// Zone label.
    pub zone: String,
    /// Instance type label.
    pub instance_type: String,
}

/// A subnet pods get addresses from.
#[derive(Clone, Debug)]
pub struct PodSubnet {
    /// Subnet (vSwitch) id.
    pub id: String,
    /// CIDR.
    pub cidr: String,
    /// Its gateway by the cloud's rule (`eni_ipam_cloud::subnet_gateway`, as the operator
    /// computes it): where the VPC fabric answers ARP for the router.
    pub gateway: Ipv4Addr,
}

/// Faults injected into the cloud's answers (zero: answer normally).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CloudFault {
    /// Share of calls answered "throttled" (EC2: mutating calls; ECS: all).
    pub throttle: f64,
    /// Share of calls answered with a 500.
    pub server_errors: f64,
}

/// What the cloud saw of the operators' calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CloudCounts {
    /// Calls received.
    pub calls: u64,
    /// Calls answered "throttled" (by quota or injected).
    pub throttled: u64,
    /// Calls answered with an injected 5xx.
    pub server_errors: u64,
}

/// The security group new ENIs get (ECS needs one).
pub const SECURITY_GROUP: &str = "sg-e2e";
/// The tag naming the cluster on every ENI the operator creates.
pub const CLUSTER: &str = "e2e";
const ALIBABA_KEY: (&str, &str) = ("e2e-key", "e2e-secret");
const ALIBABA_VPC: &str = "vpc-e2e";
/// The Secret (in the chart's values) holding the operator's cloud keys.
const CREDENTIALS_SECRET: &str = "e2e-cloud-keys";

enum Backend {
    Alibaba { emulator: Arc<Emulator>, port: u16 },
    Aws { _moto: Moto, proxy: Ec2Proxy, direct: Box<AwsProvider>, vpc: String },
}

/// The running cloud.
pub struct Cloud {
    /// Which one.
    pub kind: CloudKind,
    /// Instances launched for the nodes.
    pub instances: Vec<Instance>,
    /// Pod subnets.
    pub subnets: Vec<PodSubnet>,
    backend: Backend,
}

fn gateway_of(kind: eni_ipam_cloud::CloudKind, cidr: &str) -> Ipv4Addr {
    subnet_gateway(kind, cidr).expect("a pod subnet has room for the cloud's reserved addresses")
}

impl Cloud {
    /// Starts the cloud with `nodes` instances in one zone (more can join).
    pub async fn start(kind: CloudKind, nodes: usize) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        match kind {
            CloudKind::Alibaba => Self::start_alibaba(nodes).await,
            CloudKind::Aws => Self::start_aws(nodes).await,
        }
    }

    async fn start_alibaba(nodes: usize) -> Self {
        let mut profile = CloudProfile::alibaba();
        profile.attach_delay = Duration::from_millis(300);
        let keys = vec![Credentials::access_key(ALIBABA_KEY.0, ALIBABA_KEY.1)];
        let emulator = Emulator::new(profile, "cn-hangzhou".into(), VpcId::from(ALIBABA_VPC), keys, 7);
        let cidr = "172.16.0.0/20";
        let seed: Seed = serde_json::from_value(serde_json::json!({
            "vswitches": [{"name": "pods", "zone": "cn-hangzhou-h", "cidr": cidr}],
        }))
        .expect("a valid seed");
        let seeded = seed.apply(&mut emulator.cloud().console()).expect("seeding the emulator");
        let vswitch = seeded.vswitches["pods"].to_string();
        let emulator = Arc::new(emulator);
        // On every address: the operators reach it from nodes' network namespaces.
        let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.expect("bind the emulator");
        let port = listener.local_addr().expect("emulator address").port();
        let app = eni_ipam_aliyun_emulator::server::router(emulator.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut cloud = Self {
            kind: CloudKind::Alibaba,
            instances: Vec::new(),
            subnets: vec![PodSubnet {
                id: vswitch,
                cidr: cidr.into(),
                gateway: gateway_of(eni_ipam_cloud::CloudKind::Alibaba, cidr),
            }],
            backend: Backend::Alibaba { emulator, port },
        };
        cloud.launch(nodes).await;
        cloud
    }

    async fn start_aws(nodes: usize) -> Self {
        let moto = Moto::start();
        let faults = Faults { quotas: true, ..Faults::default() };
        // On every address: the operators reach it from nodes' network namespaces.
        let proxy = Ec2Proxy::start_on(([0, 0, 0, 0], 0).into(), &moto.url, faults, 7).await;
        let console = Console::new(&moto.url);
        let vpc = console.create_vpc("10.0.0.0/16").await;
        let cidr = "10.0.0.0/20";
        let subnet = console.create_subnet(&vpc, cidr, "us-east-1a").await;
        let retry = RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(1), 4, 3);
        let guard = Arc::new(CallGuard::for_profile(CloudProfile::aws(), 1.0, retry));
        let mut config = AwsConfig::for_region("us-east-1");
        config.endpoint = Some(moto.url.clone());
        config.static_credentials = Some(("testing".into(), "testing".into()));
        let direct =
            AwsProvider::connect(config, guard, &VpcId::from(vpc.as_str())).await.expect("moto answers");
        let mut cloud = Self {
            kind: CloudKind::Aws,
            instances: Vec::new(),
            subnets: vec![PodSubnet {
                id: subnet,
                cidr: cidr.into(),
                gateway: gateway_of(eni_ipam_cloud::CloudKind::Aws, cidr),
            }],
            backend: Backend::Aws { _moto: moto, proxy, direct: Box::new(direct), vpc },
        };
        cloud.launch(nodes).await;
        cloud
    }

    /// Launches `count` more instances (an autoscaler adding nodes); returns them.
    pub async fn launch(&mut self, count: usize) -> Vec<Instance> {
        let launched = self.launch_elsewhere(count).await;
        self.instances.extend(launched.iter().cloned());
        launched
    }

    /// Launches `count` instances in the VPC that are not the bed's nodes (another
    /// cluster's VMs, a VM replacing a node's); returns them.
    pub async fn launch_elsewhere(&self, count: usize) -> Vec<Instance> {
        let subnet = self.subnets[0].id.clone();
        match &self.backend {
            Backend::Alibaba { emulator, .. } => {
                let mut console = emulator.cloud().console();
                (0..count)
                    .map(|_| {
                        let id = console
                            .launch_instance("ecs.g7.large", &subnet.as_str().into())
                            .expect("launch an ECS instance");
                        Instance {
                            provider_id: format!("cn-hangzhou.{id}"),
                            id: id.to_string(),
                            zone: "cn-hangzhou-h".into(),
                            instance_type: "ecs.g7.large".into(),
                        }
                    })
                    .collect()
            }
            Backend::Aws { _moto, .. } => {
                let ids = Console::new(&_moto.url).run_instances("m5.large", &subnet, count as u32).await;
                ids.into_iter()
                    .map(|id| Instance {
                        provider_id: format!("aws:///us-east-1a/{id}"),
                        id,
                        zone: "us-east-1a".into(),
                        instance_type: "m5.large".into(),
                    })
                    .collect()
            }
        }
    }

    /// Terminates a VM (its ENIs go as the cloud's rules say: attached with
    /// DeleteOnTermination deleted, others left detached).
    pub async fn terminate(&self, instance: &str) {
        match &self.backend {
            Backend::Alibaba { emulator, .. } => {
                emulator.cloud().console().terminate_instance(&InstanceId::from(instance))
            }
            Backend::Aws { _moto, .. } => Console::new(&_moto.url).terminate(instance).await,
        }
    }

    /// Another CNI on `instance` (aws-node, Terway) gives its pods `count` secondary IPs,
    /// straight at the cloud: on EC2 on the primary ENI (device index 0, where aws-node
    /// starts); on ECS, whose index 0 eni-ipam never pools, on an ENI of its own, untagged,
    /// attached at the highest free device index. Returns the ENI and its new IPs.
    pub async fn assign_foreign(&self, instance: &str, count: u32) -> (EniId, Vec<Ipv4Addr>) {
        match &self.backend {
            Backend::Alibaba { emulator, .. } => {
                let id = InstanceId::from(instance);
                let mut console = emulator.cloud().console();
                let view = console.instances().into_iter().find(|v| v.id == id).expect("the instance runs");
                let limits = console.instance_limits(std::slice::from_ref(&view.instance_type));
                let max = limits.first().map_or(3, |l| l.max_enis);
                let index = (1..max)
                    .rev()
                    .find(|i| !view.enis.contains_key(i))
                    .unwrap_or_else(|| panic!("{instance} has no free device index for another CNI's ENI"));
                let create = CreateEni {
                    subnet: SubnetId::from(self.subnets[0].id.as_str()),
                    security_groups: vec![SecurityGroupId::from(SECURITY_GROUP)],
                    secondary_ips: count,
                    tags: Default::default(),
                    client_token: format!("another-cni-{instance}"),
                };
                let eni = console.create_eni(&create).expect("another CNI creates its ENI");
                console
                    .attach_eni(&eni.id, &id, index, tokio::time::Instant::now())
                    .expect("another CNI attaches its ENI");
                (eni.id, eni.secondary_ips)
            }
            Backend::Aws { direct, .. } => {
                let primary = self
                    .enis()
                    .await
                    .into_iter()
                    .find(|e| {
                        e.instance.as_ref().map(|i| i.as_str()) == Some(instance) && e.device_index == Some(0)
                    })
                    .expect("the instance has its primary ENI");
                // moto answers with every secondary IP of the ENI (the bed's EC2 proxy trims
                // that for the operator; this call goes past it): the new ones are the difference.
                direct.assign_ips(&primary.id, count).await.expect("another CNI assigns IPs");
                let after =
                    self.enis().await.into_iter().find(|e| e.id == primary.id).expect("the primary ENI");
                let ips = after
                    .secondary_ips
                    .into_iter()
                    .filter(|ip| !primary.secondary_ips.contains(ip))
                    .collect();
                (primary.id, ips)
            }
        }
    }

    /// Another CNI leaves the node: its IPs `ips` on `eni` go (on ECS with its ENI).
    pub async fn remove_foreign(&self, eni: &EniId, ips: &[Ipv4Addr]) {
        match &self.backend {
            Backend::Alibaba { emulator, .. } => {
                let mut console = emulator.cloud().console();
                console.unassign_ips(eni, ips).expect("another CNI unassigns its IPs");
                console.detach_eni(eni).expect("another CNI detaches its ENI");
                console.delete_eni(eni).expect("another CNI deletes its ENI");
            }
            Backend::Aws { direct, .. } => {
                direct.unassign_ips(eni, ips).await.expect("another CNI unassigns its IPs")
            }
        }
    }

    /// Another tenant of the pod subnet takes every address left in it, straight at the cloud
    /// (one unattached, untagged ENI): the subnet is exhausted until [`Cloud::free_subnet`].
    /// Returns that ENI and how many addresses it took.
    pub async fn fill_subnet(&self) -> (EniId, usize) {
        let subnet = SubnetId::from(self.subnets[0].id.as_str());
        match &self.backend {
            Backend::Alibaba { emulator, .. } => {
                let mut console = emulator.cloud().console();
                let vpc = VpcId::from(ALIBABA_VPC);
                let free = |console: &eni_ipam_cloud::fake::CloudState| {
                    console.list_subnets(&vpc).iter().find(|s| s.id == subnet).map_or(0, |s| s.free_ips)
                };
                let create = CreateEni {
                    subnet: subnet.clone(),
                    security_groups: vec![SecurityGroupId::from(SECURITY_GROUP)],
                    secondary_ips: 0,
                    tags: Default::default(),
                    client_token: "another-tenant".into(),
                };
                let eni = console.create_eni(&create).expect("another tenant creates its ENI");
                let mut taken = 1;
                // ECS assigns at most ten addresses a call.
                while free(&console) > 0 {
                    let count = free(&console).min(10);
                    taken +=
                        console.assign_ips(&eni.id, count).expect("another tenant takes addresses").len();
                }
                (eni.id, taken)
            }
            Backend::Aws { _moto, .. } => {
                let (eni, taken) = Console::new(&_moto.url).fill_subnet(subnet.as_str()).await;
                (EniId::from(eni.as_str()), taken)
            }
        }
    }

    /// The other tenant leaves: its ENI of [`Cloud::fill_subnet`] and every address on it go.
    pub async fn free_subnet(&self, eni: &EniId) {
        match &self.backend {
            Backend::Alibaba { emulator, .. } => {
                emulator.cloud().console().delete_eni(eni).expect("another tenant deletes its ENI")
            }
            Backend::Aws { _moto, .. } => {
                Console::new(&_moto.url).delete_network_interface(eni.as_str()).await
            }
        }
    }

    /// Every ENI of the VPC, read past the quota.
    pub async fn enis(&self) -> Vec<Eni> {
        match &self.backend {
            Backend::Alibaba { emulator, .. } => emulator.cloud().console().all_enis().cloned().collect(),
            Backend::Aws { direct, vpc, .. } => {
                let query = EniQuery::Vpc(VpcId::from(vpc.as_str()));
                let mut all = Vec::new();
                let mut token = None;
                loop {
                    let page = direct.list_enis(&query, 1000, token).await.expect("list moto's ENIs");
                    all.extend(page.items);
                    token = page.next_token;
                    if token.is_none() {
                        return all;
                    }
                }
            }
        }
    }

    /// The ENIs as the VPC fabric wires them.
    pub fn fabric_view(&self, enis: &[Eni]) -> Vec<CloudEni> {
        enis.iter()
            .filter_map(|e| {
                let subnet = self.subnets.iter().find(|s| s.id == e.subnet.as_str())?;
                Some(CloudEni {
                    id: e.id.to_string(),
                    instance: e.instance.as_ref().map(|i| i.to_string()),
                    device_index: e.device_index.unwrap_or_default(),
                    mac: e.mac.clone(),
                    primary_ip: e.primary_ip,
                    secondary_ips: e.secondary_ips.clone(),
                    gateway: subnet.gateway,
                    prefix_len: subnet.cidr.split('/').nth(1).and_then(|p| p.parse().ok()).unwrap_or(32),
                })
            })
            .collect()
    }

    /// Injects `fault` from now on.
    pub fn set_fault(&self, fault: CloudFault) {
        match &self.backend {
            Backend::Alibaba { emulator, .. } => {
                emulator.set_faults(FaultPlan {
                    throttle_rate: fault.throttle,
                    transient_rate: fault.server_errors,
                    ..FaultPlan::default()
                });
            }
            Backend::Aws { proxy, .. } => {
                proxy.set_faults(Faults {
                    quotas: true,
                    throttle_mutating: fault.throttle,
                    internal_error: fault.server_errors,
                    ..Faults::default()
                });
            }
        }
    }

    /// The operators' calls as the cloud saw them.
    pub fn counts(&self) -> CloudCounts {
        match &self.backend {
            Backend::Alibaba { emulator, .. } => {
                emulator.cloud().counts().values().fold(CloudCounts::default(), |acc, c| CloudCounts {
                    calls: acc.calls + c.calls,
                    throttled: acc.throttled + c.throttled,
                    server_errors: acc.server_errors + c.faulted,
                })
            }
            Backend::Aws { proxy, .. } => {
                proxy.counts().values().fold(CloudCounts::default(), |acc, c| CloudCounts {
                    calls: acc.calls + c.received,
                    throttled: acc.throttled + c.throttled,
                    server_errors: acc.server_errors + c.internal_errors,
                })
            }
        }
    }

    /// Chart values (`--set` pairs) naming this cloud, its endpoint as seen from a node
    /// whose way to the host is `host`, and the Secret holding the keys ([`Cloud::secret`]).
    pub fn chart_values(&self, host: Ipv4Addr) -> Vec<String> {
        let (cloud, region, vpc, port) = match &self.backend {
            Backend::Alibaba { port, .. } => ("alibaba", "cn-hangzhou", ALIBABA_VPC, *port),
            Backend::Aws { proxy, vpc, .. } => ("aws", "us-east-1", vpc.as_str(), proxy.port()),
        };
        vec![
            format!("cloud={cloud}"),
            format!("region={region}"),
            format!("vpcId={vpc}"),
            format!("apiEndpoint=http://{host}:{port}"),
            format!("credentials.existingSecret={CREDENTIALS_SECRET}"),
        ]
    }

    /// The keys of the Secret the chart's operator reads its access key from.
    pub fn secret(&self) -> Vec<(&'static str, String)> {
        match &self.backend {
            Backend::Alibaba { .. } => vec![
                ("ALIBABA_CLOUD_ACCESS_KEY_ID", ALIBABA_KEY.0.into()),
                ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ALIBABA_KEY.1.into()),
            ],
            Backend::Aws { .. } => {
                vec![("AWS_ACCESS_KEY_ID", "testing".into()), ("AWS_SECRET_ACCESS_KEY", "testing".into())]
            }
        }
    }

    /// Environment the bed's nodes give every process: no instance metadata service here.
    pub fn node_env(&self) -> Vec<(&'static str, String)> {
        match &self.backend {
            Backend::Alibaba { .. } => Vec::new(),
            Backend::Aws { .. } => vec![("AWS_EC2_METADATA_DISABLED", "true".into())],
        }
    }

    /// Flags every agent of this cloud gets: the security group of new ENIs (ECS needs one).
    /// No `--subnet`: as with the chart, the agent learns each ENI's subnet CIDR and gateway
    /// from the ENINode the operator writes.
    pub fn agent_args(&self) -> Vec<String> {
        vec!["--eni-security-group".into(), SECURITY_GROUP.into()]
    }
}
