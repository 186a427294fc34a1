//! The operator's own footprint at fleet scale, apart from the cloud that
//! serves it: a fake VPC of `nodes` instances holding `ips_per_node` pod IPs
//! each is built first; then what `run` keeps (the instances cache filled by
//! one bulk resync, the ENINode cache with every pool, the Node cache as `run`
//! trims it, and the fleet's free-since clocks) is built and measured by the
//! heap bytes it adds. The CPU time and the calls of the bulk resync are
//! measured on the way.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_api::{ENINode, ENINodeSpec, ENINodeStatus, EniStatus, PoolEntry, VpcId};
use eni_ipam_cloud::fake::{FakeCloud, FakeProvider};
use eni_ipam_cloud::{
    CallGuard, CloudProfile, CloudProvider, EniQuery, RetryPolicy, list_all_enis, subnet_gateway,
};
use k8s_openapi::api::core::v1::{Node, NodeSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

use super::cloud_setup;
use crate::instances::InstancesCache;

/// Heap accounting of the process: bytes allocated now, and the most since the last reset.
pub trait HeapProbe {
    /// Bytes allocated and not freed.
    fn current(&self) -> usize;
    /// The most `current` was since `reset_peak`.
    fn peak(&self) -> usize;
    /// Starts a new peak.
    fn reset_peak(&self);
}

/// What the footprint run measured.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct Footprint {
    /// Nodes (instances) in the VPC.
    pub nodes: u32,
    /// Pod IPs in all pools.
    pub pool_ips: u64,
    /// ENIs listed by the bulk resync.
    pub enis: u64,
    /// List calls of the bulk resync.
    pub resync_calls: u32,
    /// `ceil(ENIs / page size)`.
    pub expected_calls: u32,
    /// CPU time of the bulk resync (list, parse, cache), ms.
    pub resync_cpu_ms: f64,
    /// Heap the operator's state holds after the resync, MiB.
    pub operator_heap_mib: f64,
    /// Most heap the operator's side held at once (resync pages included), MiB.
    pub operator_peak_heap_mib: f64,
    /// Heap of the fake cloud (not the operator's), MiB.
    pub cloud_heap_mib: f64,
    /// Of the operator's heap: the instances cache, MiB.
    pub instances_cache_mib: f64,
    /// Of the operator's heap: the ENINode cache and free-since clocks, MiB.
    pub eninode_cache_mib: f64,
    /// Of the operator's heap: the Node cache, MiB.
    pub node_cache_mib: f64,
    /// Resident memory the operator's side added to the process, MiB (heap
    /// plus the allocator's own overhead and fragmentation).
    pub operator_rss_mib: f64,
    /// Resident memory of the process before the operator's side (code,
    /// runtime, the fake cloud), MiB.
    pub base_rss_mib: f64,
}

/// A memory line of /proc/self/status (`VmRSS`, `VmHWM`, ...), MiB.
pub fn proc_status_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The process's resident memory now, MiB.
pub fn rss_mib() -> f64 {
    proc_status_mib("VmRSS")
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// CPU time of the calling thread, in nanoseconds' resolution (/proc schedstat).
pub fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(stat.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0))
}

/// CPU time of this process so far (user + system), from /proc.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// Builds the VPC, then the operator's state, and measures both apart.
pub async fn measure(nodes: u32, ips_per_node: f64, heap: &dyn HeapProbe) -> anyhow::Result<Footprint> {
    let start = heap.current();
    let mut profile = CloudProfile::aws();
    profile.buckets.clear();
    profile.read_latency = Duration::ZERO;
    profile.write_latency = Duration::ZERO;
    let vpc = VpcId::from("vpc-footprint");
    let cloud = Arc::new(FakeCloud::new(profile.clone(), vpc.clone(), 1));
    let fleet = cloud_setup::launch(&cloud, nodes, "m5.4xlarge", ips_per_node.ceil() as u32)?;
    let mut pool_ips = 0u64;
    {
        let mut console = cloud.console();
        let primaries: Vec<_> = console.all_enis().map(|e| e.id.clone()).collect();
        for (n, eni) in primaries.iter().enumerate() {
            // e.g. 17.5 a node: 17 and 18 in turn.
            let count =
                ((n as f64 + 1.0) * ips_per_node).floor() as u32 - (n as f64 * ips_per_node).floor() as u32;
            pool_ips += u64::from(count);
            console.assign_ips(eni, count)?;
        }
    }
    let guard = Arc::new(CallGuard::new(profile.clone(), BTreeMap::new(), RetryPolicy::cloud_default(1)));
    let provider = FakeProvider::new(cloud.clone(), guard);
    let cloud_heap = heap.current().saturating_sub(start);

    // The operator's side.
    let base_rss = rss_mib();
    let base = heap.current();
    heap.reset_peak();
    let cache = InstancesCache::new();
    // One thread does all of it (the caller's runtime is single-threaded).
    let cpu = thread_cpu_time();
    let (enis, calls) = list_all_enis(&provider, &EniQuery::Vpc(vpc.clone())).await?;
    let listed = enis.len() as u64;
    cache.replace_all(enis);
    let resync_cpu = thread_cpu_time().saturating_sub(cpu);
    // The subnets too, as the operator keeps them (their CIDRs go into status.enis).
    cache.set_subnets(provider.list_subnets(&vpc).await?);
    let after_cache = heap.current();
    let mut eninodes = Vec::with_capacity(nodes as usize);
    let mut free_since: Vec<BTreeMap<Ipv4Addr, Duration>> = Vec::with_capacity(nodes as usize);
    let name_of = |i: usize| format!("ip-10-{}-{}-{}.ec2.internal", i / 65536, (i / 256) % 256, i % 256);
    for (i, (instance, zone)) in fleet.instances.iter().enumerate() {
        let node_enis = cache.enis_of(instance);
        let mut spec = ENINodeSpec {
            instance_id: instance.clone(),
            instance_type: "m5.4xlarge".into(),
            zone: zone.clone(),
            vpc_id: vpc.clone(),
            ..ENINodeSpec::default()
        };
        let mut status = ENINodeStatus::default();
        let mut free = BTreeMap::new();
        for eni in &node_enis {
            for (k, ip) in eni.secondary_ips.iter().enumerate() {
                spec.pool
                    .insert(ip.to_string(), PoolEntry { eni: eni.id.clone(), subnet: eni.subnet.clone() });
                // A quarter of the pool in use by pods.
                if k % 4 == 0 {
                    status.used.insert(ip.to_string(), format!("default/pod-{i}-{k}"));
                } else {
                    free.insert(*ip, Duration::from_secs(k as u64));
                }
            }
            let eni_status = EniStatus {
                mac: eni.mac.clone(),
                device_index: eni.device_index.unwrap_or(0),
                subnet: eni.subnet.clone(),
                subnet_cidr: cache.subnet_cidr(&eni.subnet).unwrap_or_default(),
                gateway: cache
                    .subnet_cidr(&eni.subnet)
                    .and_then(|cidr| subnet_gateway(profile.kind, &cidr))
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
                ips: eni.secondary_ips.iter().map(|ip| ip.to_string()).collect(),
            };
            status.enis.insert(eni.id.to_string(), eni_status);
        }
        status.available = spec.pool.len() as u32;
        status.in_use = status.used.len() as u32;
        status.eni_count = status.enis.len() as u32;
        let mut eninode = ENINode::new(&name_of(i), spec);
        eninode.status = Some(status);
        eninodes.push(Arc::new(eninode));
        free_since.push(free);
    }
    let after_eninodes = heap.current();
    let mut node_cache = Vec::with_capacity(nodes as usize);
    for (i, (instance, zone)) in fleet.instances.iter().enumerate() {
        let name = name_of(i);
        // What `run` keeps of a Node (its `trim_node`): the name, the labels (node-pool
        // overrides select on them; these are the ones an EKS managed node carries) and the providerID.
        let labels = [
            ("beta.kubernetes.io/arch", "amd64".to_owned()),
            ("beta.kubernetes.io/instance-type", "m5.xlarge".to_owned()),
            ("beta.kubernetes.io/os", "linux".to_owned()),
            ("eks.amazonaws.com/capacityType", "ON_DEMAND".to_owned()),
            ("eks.amazonaws.com/nodegroup", "general-purpose".to_owned()),
            ("eks.amazonaws.com/nodegroup-image", "ami-0123456789abcdef0".to_owned()),
            ("failure-domain.beta.kubernetes.io/region", "us-east-1".to_owned()),
            ("failure-domain.beta.kubernetes.io/zone", zone.to_string()),
            ("k8s.io/cloud-provider-aws", "0123456789abcdef0123456789abcdef".to_owned()),
            ("kubernetes.io/arch", "amd64".to_owned()),
            ("kubernetes.io/hostname", name.clone()),
            ("kubernetes.io/os", "linux".to_owned()),
            ("node.kubernetes.io/instance-type", "m5.xlarge".to_owned()),
            ("topology.kubernetes.io/region", "us-east-1".to_owned()),
            ("topology.kubernetes.io/zone", zone.to_string()),
        ];
        let labels = labels.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        node_cache.push(Arc::new(Node {
            metadata: ObjectMeta { name: Some(name), labels: Some(labels), ..ObjectMeta::default() },
            spec: Some(NodeSpec {
                provider_id: Some(format!("aws:///{zone}/{instance}")),
                ..NodeSpec::default()
            }),
            status: None,
        }));
    }
    let held = heap.current().saturating_sub(base);
    let peak = heap.peak().saturating_sub(base);
    let footprint = Footprint {
        nodes,
        pool_ips,
        enis: listed,
        resync_calls: calls,
        expected_calls: (listed as u32).div_ceil(profile.batch.max_page_size),
        resync_cpu_ms: resync_cpu.as_secs_f64() * 1000.0,
        operator_heap_mib: mib(held),
        operator_peak_heap_mib: mib(peak),
        cloud_heap_mib: mib(cloud_heap),
        instances_cache_mib: mib(after_cache.saturating_sub(base)),
        eninode_cache_mib: mib(after_eninodes.saturating_sub(after_cache)),
        node_cache_mib: mib(heap.current().saturating_sub(after_eninodes)),
        operator_rss_mib: rss_mib() - base_rss,
        base_rss_mib: base_rss,
    };
    drop((eninodes, node_cache, free_since, cache));
    Ok(footprint)
}
