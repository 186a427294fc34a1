//! Keeps the node's networking equal to the IPAM: on start it reconciles the policy routing
//! ([`NodeNetwork`]: per-ENI tables, per-pod rules, the nft table) and, with eBPF, attaches to
//! the pool's ENIs and reconciles the endpoint map with the persisted allocations; on CNI ADD
//! it records the pod's veth (persisted first), installs the pod's rules and the endpoint; on
//! DEL it frees the IP and removes both. One lock orders the IPAM change and the kernel
//! changes of every call, so a DEL can never be overtaken by the ADD it follows.
//!
//! Who knows what: the CNI plugin knows the pod's veth and MAC; the agent knows which ENI
//! owns the IP and its MAC (the pool), finds that ENI's link by MAC, and reads the VPC
//! gateway's MAC from the node's neighbour table on that link (having the kernel resolve it
//! first when nothing has).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, MutexGuard};

use eni_ipam_api::EndpointRequest;
use eni_ipam_datapath::{Datapath, DatapathError, EndpointCounters, EndpointInfo, MacAddr};
use tracing::{info, warn};

use crate::allocator::{Allocation, AllocationKey, PodEndpoint};
use crate::ipam::{Ipam, IpamError};
use crate::node_links::{GATEWAY_ARP_WAIT, NodeLink, gateway_mac, ifindex_of, link_with_mac};
use crate::node_network::{NetworkReport, NodeNetwork};
use crate::pool::PoolIp;

/// Why an endpoint could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    /// The IPAM refused or failed.
    #[error(transparent)]
    Ipam(#[from] IpamError),
    /// The request does not describe a usable endpoint.
    #[error("invalid endpoint: {0}")]
    Invalid(String),
    /// What the datapath needs about the IP's ENI is not known on this node.
    #[error("pod IP {ip}: {reason}")]
    Unresolved { ip: String, reason: String },
    /// The datapath refused.
    #[error("pod IP {ip}: {source}")]
    Datapath { ip: String, source: DatapathError },
    /// The pod's policy routing could not be set.
    #[error("pod IP {ip}: policy routing: {reason}")]
    Routing { ip: String, reason: String },
    /// CHECK found the endpoint not as ADD left it.
    #[error("pod IP {ip}: {reason}")]
    Broken { ip: String, reason: String },
}

/// What [`Endpoints::reconcile`] did on start.
#[derive(Debug, Default)]
pub struct StartReport {
    /// ENI links the datapath is attached to.
    pub enis: Vec<NodeLink>,
    /// Endpoints installed from the state.
    pub endpoints: usize,
    /// Endpoints removed from the maps because the agent no longer owns them.
    pub removed: Vec<Ipv4Addr>,
    /// Allocations left to kernel routing, and why (veth gone, ENI not found, ...).
    pub skipped: Vec<String>,
    /// What the policy routing reconcile did (`None` with `--node-routing=false`).
    pub network: Option<NetworkReport>,
}

/// One endpoint's counters, with the owner for metric labels.
#[derive(Clone, Debug)]
pub struct EndpointStats {
    /// The pod IP (`0.0.0.0` for drops no endpoint can be charged with).
    pub pod_ip: Ipv4Addr,
    /// `namespace/pod`, or the container id; empty for `0.0.0.0`.
    pub pod: String,
    /// The counters, summed over CPUs.
    pub counters: EndpointCounters,
}

/// The IPAM with the node networking and the datapath it drives.
pub struct Endpoints {
    ipam: Arc<Ipam>,
    node: Mutex<Node>,
}

/// What the lock guards: the eBPF datapath (`None` with `--datapath=none`) and the policy
/// routing (`None` with `--node-routing=false`).
struct Node {
    datapath: Option<Datapath>,
    network: Option<NodeNetwork>,
}

impl std::fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoints").field("node", &self.ipam.node()).finish()
    }
}

impl Endpoints {
    /// Wraps the IPAM and, unless `None`, the loaded or adopted datapath and the node's
    /// policy routing.
    pub fn new(ipam: Arc<Ipam>, datapath: Option<Datapath>, network: Option<NodeNetwork>) -> Self {
        Self { ipam, node: Mutex::new(Node { datapath, network }) }
    }

    /// Whether an eBPF datapath is in use.
    pub fn has_datapath(&self) -> bool {
        self.lock().datapath.is_some()
    }

    /// Sets the prefixes pods reach through the node's stack (no-op without a datapath).
    pub fn set_host_routes(&self, prefixes: &[eni_ipam_datapath::Ipv4Prefix]) -> Result<(), DatapathError> {
        match self.lock().datapath.as_mut() {
            Some(datapath) => datapath.set_host_routes(prefixes),
            None => Ok(()),
        }
    }

    /// Start: the policy routing of every allocation with a registered veth (nothing else of
    /// ours stays); with eBPF, attaches to every pool ENI found on the node, installs the
    /// endpoint of every allocation whose veth still exists, and removes every other
    /// endpoint and pod link.
    pub fn reconcile(&self) -> Result<StartReport, EndpointError> {
        let mut guard = self.lock();
        let node = &mut *guard;
        let mut report = StartReport::default();
        if let Some(network) = node.network.as_mut() {
            let enis = self.ipam.pool_enis();
            let allocations = self.ipam.list();
            let pods: Vec<(Ipv4Addr, Option<PoolIp>)> = allocations
                .iter()
                .filter(|a| a.endpoint.is_some())
                .filter_map(|a| Some((a.ip.parse().ok()?, self.ipam.pool_entry(&a.ip))))
                .collect();
            let done = network
                .reconcile(&enis, pods.iter().map(|(ip, entry)| (*ip, entry.as_ref())))
                .map_err(|e| EndpointError::Routing { ip: "(reconcile)".into(), reason: e.to_string() })?;
            report.network = Some(done);
        }
        let Some(datapath) = node.datapath.as_mut() else { return Ok(report) };
        let macs: BTreeSet<String> = self.ipam.pool_macs();
        for mac in macs {
            match eni_link(&mac) {
                Ok(link) => {
                    datapath
                        .attach_eni(link.ifindex)
                        .map_err(|source| EndpointError::Datapath { ip: format!("ENI {mac}"), source })?;
                    report.enis.push(link);
                }
                Err(reason) => report.skipped.push(format!("ENI {mac}: {reason}")),
            }
        }
        let mut desired = BTreeMap::new();
        // Many pods share an ENI: its link and gateway are looked up once (an unanswered
        // gateway costs its ARP wait once, not once per pod).
        let mut enis: BTreeMap<Option<PoolIp>, Result<EniSide, String>> = BTreeMap::new();
        for allocation in self.ipam.list() {
            let Some(endpoint) = allocation.endpoint.clone() else { continue };
            let entry = self.ipam.pool_entry(&allocation.ip);
            let eni = enis.entry(entry).or_insert_with_key(|entry| eni_side(entry.as_ref())).clone();
            match resolve(&allocation, &endpoint, eni) {
                Ok((ip, info)) => {
                    desired.insert(ip, info);
                }
                Err(reason) => report.skipped.push(format!("{}: {reason}", allocation.key)),
            }
        }
        // A veth that vanished since it was resolved (its pod is going away) is not fatal.
        desired.retain(|ip, info| match datapath.attach_pod(info.pod_veth_ifindex) {
            Ok(()) => true,
            Err(error) => {
                report.skipped.push(format!("{ip}: {error}"));
                false
            }
        });
        let changed = datapath
            .reconcile(&desired)
            .map_err(|source| EndpointError::Datapath { ip: "(reconcile)".into(), source })?;
        report.endpoints = desired.len();
        report.removed = changed.removed;
        Ok(report)
    }

    /// CNI ADD's second step: records the pod's veth (persisted before the answer) and, with
    /// a datapath, installs the endpoint and attaches to the veth and the ENI.
    pub fn register(&self, request: &EndpointRequest) -> Result<Allocation, EndpointError> {
        let pod_mac: MacAddr =
            request.pod_mac.parse().map_err(|e| EndpointError::Invalid(format!("podMac: {e}")))?;
        if request.host_veth.is_empty() || request.host_veth_ifindex == 0 {
            return Err(EndpointError::Invalid(
                "hostVeth and hostVethIfindex name the host end of the pod's veth; both are required".into(),
            ));
        }
        let endpoint = PodEndpoint {
            host_veth: request.host_veth.clone(),
            host_veth_ifindex: request.host_veth_ifindex,
            pod_mac: pod_mac.to_string(),
        };
        // Learning a fresh ENI's gateway may take an ARP round trip: done before the lock, so
        // the node's other ADDs and DELs do not wait on it.
        let early = self.has_datapath().then(|| {
            let entry = self.ipam.pool_entry_of(&request.container_id, &request.if_name);
            let side = eni_side(entry.as_ref());
            (entry, side)
        });
        let mut guard = self.lock();
        let node = &mut *guard;
        let recorded = self.ipam.set_endpoint(&request.container_id, &request.if_name, endpoint.clone())?;
        let allocation = recorded.allocation;
        if let Some(network) = node.network.as_mut() {
            let routing = |reason: String| EndpointError::Routing { ip: allocation.ip.clone(), reason };
            let ip: Ipv4Addr = allocation
                .ip
                .parse()
                .map_err(|_| routing(format!("{:?} is not an IPv4 address", allocation.ip)))?;
            let entry = recorded
                .pool_entry
                .as_ref()
                .ok_or_else(|| routing("the IP is no longer in the node's pool".into()))?;
            network.add_pod(ip, entry, endpoint.host_veth_ifindex).map_err(|e| routing(e.to_string()))?;
        }
        let Some(datapath) = node.datapath.as_mut() else { return Ok(allocation) };
        let eni = match early {
            Some((entry, side)) if entry == recorded.pool_entry => side,
            _ => eni_side(recorded.pool_entry.as_ref()),
        };
        let (ip, info) = resolve(&allocation, &endpoint, eni)
            .map_err(|reason| EndpointError::Unresolved { ip: allocation.ip.clone(), reason })?;
        let failed = |source| EndpointError::Datapath { ip: allocation.ip.clone(), source };
        datapath.attach_eni(info.eni_ifindex).map_err(failed)?;
        datapath.upsert_endpoint(ip, info).map_err(failed)?;
        datapath.attach_pod(info.pod_veth_ifindex).map_err(failed)?;
        if let Some(previous) = recorded.previous.filter(|p| p.host_veth_ifindex != info.pod_veth_ifindex) {
            // A retried ADD replaced the veth: the old one's link pin goes too.
            detach_unused_veth(datapath, previous.host_veth_ifindex).map_err(failed)?;
        }
        info!(%ip, veth = %endpoint.host_veth, eni_ifindex = info.eni_ifindex, "endpoint installed");
        Ok(allocation)
    }

    /// CNI CHECK's agent side: the container interface holds an IP with a registered veth,
    /// that veth still has the registered index, and with eBPF the endpoint map sends the IP
    /// to that veth.
    pub fn check(&self, container_id: &str, if_name: &str) -> Result<(), EndpointError> {
        let guard = self.lock();
        let allocation = self.ipam.allocation_of(container_id, if_name)?;
        let broken = |reason: String| EndpointError::Broken { ip: allocation.ip.clone(), reason };
        let Some(endpoint) = &allocation.endpoint else {
            return Err(broken("no veth was registered for it (ADD did not finish)".into()));
        };
        match ifindex_of(&endpoint.host_veth) {
            Some(index) if index == endpoint.host_veth_ifindex => {}
            Some(index) => {
                return Err(broken(format!(
                    "veth {} has index {index}, not {} as registered",
                    endpoint.host_veth, endpoint.host_veth_ifindex
                )));
            }
            None => return Err(broken(format!("veth {} no longer exists", endpoint.host_veth))),
        }
        let Some(datapath) = guard.datapath.as_ref() else { return Ok(()) };
        let ip: Ipv4Addr = allocation.ip.parse().map_err(|_| broken("not an IPv4 address".into()))?;
        let endpoints = datapath
            .endpoints()
            .map_err(|source| EndpointError::Datapath { ip: allocation.ip.clone(), source })?;
        match endpoints.get(&ip) {
            Some(info) if info.pod_veth_ifindex == endpoint.host_veth_ifindex => Ok(()),
            Some(info) => Err(broken(format!(
                "the datapath sends it to interface #{}, not to its veth {} (#{})",
                info.pod_veth_ifindex, endpoint.host_veth, endpoint.host_veth_ifindex
            ))),
            None => Err(broken("it is missing from the datapath's endpoint map".into())),
        }
    }

    /// The IPAM this wraps.
    pub fn ipam(&self) -> &Arc<Ipam> {
        &self.ipam
    }

    /// CNI DEL: frees the IP (persisted first) and removes its endpoint and pod link.
    /// Idempotent like [`Ipam::release`].
    pub fn release(&self, container_id: &str, if_name: &str) -> Result<Option<Allocation>, EndpointError> {
        self.release_cooling(container_id, if_name, None)
    }

    /// The DEL that never came, for a pod kubelet no longer runs: [`Endpoints::release`]
    /// with the IP cooling down until `cool_until` (Unix seconds), and the pod's host veth
    /// deleted when it is still the one registered (a pod sandbox left behind keeps no
    /// path to the IP that is now free).
    pub fn release_lost(
        &self,
        key: &AllocationKey,
        cool_until: u64,
    ) -> Result<Option<Allocation>, EndpointError> {
        let freed = self.release_cooling(&key.container_id, &key.if_name, Some(cool_until))?;
        if let Some(endpoint) = freed.as_ref().and_then(|a| a.endpoint.as_ref())
            && ifindex_of(&endpoint.host_veth) == Some(endpoint.host_veth_ifindex)
            && let Err(error) = crate::cni::link::teardown(&endpoint.host_veth)
        {
            warn!(veth = %endpoint.host_veth, "cannot delete the host veth of a lost pod: {error}");
        }
        Ok(freed)
    }

    fn release_cooling(
        &self,
        container_id: &str,
        if_name: &str,
        cool_until: Option<u64>,
    ) -> Result<Option<Allocation>, EndpointError> {
        let mut guard = self.lock();
        let node = &mut *guard;
        let freed = self.ipam.release_cooling(container_id, if_name, cool_until)?;
        let Some(allocation) = freed.as_ref() else { return Ok(freed) };
        let Ok(ip) = allocation.ip.parse::<Ipv4Addr>() else { return Ok(freed) };
        if let Some(network) = node.network.as_mut() {
            network
                .remove_pod(ip)
                .map_err(|e| EndpointError::Routing { ip: allocation.ip.clone(), reason: e.to_string() })?;
        }
        let Some(datapath) = node.datapath.as_mut() else { return Ok(freed) };
        let failed = |source| EndpointError::Datapath { ip: allocation.ip.clone(), source };
        datapath.remove_endpoint(ip).map_err(failed)?;
        if let Some(endpoint) = &allocation.endpoint {
            detach_unused_veth(datapath, endpoint.host_veth_ifindex).map_err(failed)?;
        }
        info!(%ip, "endpoint removed");
        Ok(freed)
    }

    /// Counters of every endpoint in the datapath (empty without one).
    pub fn stats(&self) -> Result<Vec<EndpointStats>, DatapathError> {
        let guard = self.lock();
        let Some(datapath) = guard.datapath.as_ref() else { return Ok(Vec::new()) };
        let owners: BTreeMap<String, String> = self.ipam.used();
        Ok(datapath
            .counters()?
            .into_iter()
            .map(|(pod_ip, counters)| EndpointStats {
                pod_ip,
                pod: owners.get(&pod_ip.to_string()).cloned().unwrap_or_default(),
                counters,
            })
            .collect())
    }

    fn lock(&self) -> MutexGuard<'_, Node> {
        self.node.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Unpins the pod link of a veth that no endpoint uses any more. The veth is usually gone
/// already (the plugin deletes it first); its index may serve a new pod by now, whose link
/// must stay.
fn detach_unused_veth(datapath: &mut Datapath, ifindex: u32) -> Result<(), DatapathError> {
    if datapath.endpoints()?.values().any(|e| e.pod_veth_ifindex == ifindex) {
        return Ok(());
    }
    datapath.detach_pod(ifindex)
}

/// What an endpoint needs of the ENI its IP lives on, the same for every pod on that ENI.
#[derive(Clone, Copy, Debug)]
struct EniSide {
    ifindex: u32,
    mac: MacAddr,
    gateway_mac: MacAddr,
}

/// The ENI side of the pool entry `entry` (`None`: the IP left the pool) from the node's
/// links; may wait for the VPC gateway to answer ARP.
fn eni_side(entry: Option<&PoolIp>) -> Result<EniSide, String> {
    let entry = entry.ok_or("the IP is no longer in the node's pool")?;
    let eni = eni_link(&entry.mac).map_err(|reason| format!("ENI {}: {reason}", entry.eni))?;
    let mac: MacAddr = entry.mac.parse().map_err(|e| format!("ENI {} MAC: {e}", entry.eni))?;
    let gateway = entry.gateway_addr()?;
    let gateway_mac = gateway_mac(&eni, gateway, GATEWAY_ARP_WAIT)
        .map_err(|reason| format!("ENI {}: {reason}", entry.eni))?;
    Ok(EniSide { ifindex: eni.ifindex, mac, gateway_mac })
}

/// The datapath endpoint of an allocation: the pod side from the plugin, the ENI side as
/// [`eni_side`] found it.
fn resolve(
    allocation: &Allocation,
    endpoint: &PodEndpoint,
    eni: Result<EniSide, String>,
) -> Result<(Ipv4Addr, EndpointInfo), String> {
    let ip: Ipv4Addr =
        allocation.ip.parse().map_err(|_| format!("{:?} is not an IPv4 address", allocation.ip))?;
    match ifindex_of(&endpoint.host_veth) {
        Some(index) if index == endpoint.host_veth_ifindex => {}
        Some(index) => {
            return Err(format!(
                "veth {} has index {index}, not {} as registered: the pod was set up again without \
                 registering its veth",
                endpoint.host_veth, endpoint.host_veth_ifindex
            ));
        }
        None => return Err(format!("veth {} no longer exists", endpoint.host_veth)),
    }
    let pod_mac = endpoint.pod_mac.parse().map_err(|e| format!("pod MAC: {e}"))?;
    let eni = eni?;
    let info = EndpointInfo {
        pod_veth_ifindex: endpoint.host_veth_ifindex,
        pod_mac,
        eni_ifindex: eni.ifindex,
        eni_mac: eni.mac,
        gateway_mac: eni.gateway_mac,
    };
    Ok((ip, info))
}

/// The ENI link carrying `mac`.
fn eni_link(mac: &str) -> Result<NodeLink, String> {
    let parsed: MacAddr = mac.parse().map_err(|e| format!("{e} (the pool gives no usable ENI MAC)"))?;
    match link_with_mac(parsed) {
        Ok(Some(link)) => Ok(link),
        Ok(None) => Err(format!("no link with MAC {mac} on this node (ENI not attached yet?)")),
        Err(e) => Err(format!("cannot list the node's links: {e}")),
    }
}

/// Logs what the start reconcile did (warnings for what was left to kernel routing).
pub fn log_start(report: &StartReport) {
    if let Some(network) = &report.network {
        let changes = &network.changes;
        info!(
            tables = ?changes.put_tables.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            rules_added = changes.add_rules.len(),
            rules_removed = ?changes.delete_rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
            tables_removed = ?changes.delete_tables.iter().map(|(t, _)| t).collect::<Vec<_>>(),
            eni_links = ?network.eni_links,
            "policy routing reconciled with the IPAM state"
        );
        for skipped in &network.skipped {
            warn!("policy routing: {skipped}");
        }
    }
    let enis: Vec<&str> = report.enis.iter().map(|l| l.name.as_str()).collect();
    info!(?enis, endpoints = report.endpoints, removed = ?report.removed, "datapath reconciled with the IPAM state");
    for skipped in &report.skipped {
        warn!("datapath: {skipped}");
    }
}
