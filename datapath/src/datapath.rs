//! The loaded datapath: programs and maps pinned in bpffs, adopted again after a restart.
//!
//! Pin layout under the pin directory (default [`DEFAULT_PIN_DIR`]):
//! - `maps/endpoints`, `maps/pod_veths`, `maps/host_routes`, `maps/endpoint_counters`,
//!   `maps/nat_flows`
//! - `programs/from_pod`, `programs/from_eni`, `programs/nat_learn`
//! - `links/pod-<ifindex>`, `links/eni-<ifindex>` (TCX links, TC ingress),
//!   `links/egress-pod-<ifindex>`, `links/egress-eni-<ifindex>` (`nat_learn`, TC egress)
//!
//! Everything the kernel needs to forward packets is pinned, so dropping a [`Datapath`]
//! (the agent exiting) leaves traffic flowing; [`Datapath::load_or_adopt`] picks the pins up.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::{SchedClassifier, links::FdLink},
};
use tracing::{debug, info};

use crate::{
    DatapathError, EndpointCounters, EndpointInfo, Ipv4Prefix,
    abi::{
        CounterValue, EndpointKey, EndpointValue, MAX_ENDPOINTS, NatFlowKey, UNATTRIBUTED_SLOT, VethOwner,
    },
    hook::Hook,
    probe::probe,
};

/// Where the agent pins the datapath.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/eni-ipam";

const OBJECT_NAME: &str = "eni_ipam.bpf.o";
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eni_ipam.bpf.o"));

const ENDPOINTS: &str = "endpoints";
const POD_VETHS: &str = "pod_veths";
const COUNTERS: &str = "endpoint_counters";
const HOST_ROUTES: &str = "host_routes";
const NAT_FLOWS: &str = "nat_flows";

/// Reported as the endpoint of the counters of drops on attached veths without an endpoint.
const UNATTRIBUTED: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

/// Whether [`Datapath::load_or_adopt`] found a running datapath or started a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Programs were loaded and pinned now.
    Loaded,
    /// Pinned programs (and their attached links) were found and are kept as they are.
    Adopted,
}

/// What [`Datapath::reconcile`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Endpoints written (new or changed).
    pub upserted: Vec<Ipv4Addr>,
    /// Endpoints the agent no longer owns, removed from the maps.
    pub removed: Vec<Ipv4Addr>,
    /// Pod veth links detached because no desired endpoint uses that veth.
    pub detached_pod_veths: Vec<u32>,
}

/// Handle on the pinned datapath of this node.
pub struct Datapath {
    pin_dir: PathBuf,
    origin: Origin,
    from_pod: SchedClassifier,
    from_eni: SchedClassifier,
    nat_learn: SchedClassifier,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    pod_veths: HashMap<MapData, u32, VethOwner>,
    counters: PerCpuArray<MapData, CounterValue>,
    host_routes: LpmTrie<MapData, u32, u32>,
    nat_flows: HashMap<MapData, NatFlowKey, u64>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath").field("pin_dir", &self.pin_dir).field("origin", &self.origin).finish()
    }
}

impl Datapath {
    /// Probes the kernel, then loads and pins the programs and maps under `pin_dir`, or adopts
    /// them if they are pinned already (agent restart: traffic is not interrupted).
    pub fn load_or_adopt(pin_dir: impl AsRef<Path>) -> Result<Self, DatapathError> {
        let pin_dir = pin_dir.as_ref().to_owned();
        probe(&pin_dir)?;
        for sub in ["maps", "programs", "links"] {
            let dir = pin_dir.join(sub);
            std::fs::create_dir_all(&dir)
                .map_err(|source| DatapathError::PinDirectory { path: dir, source })?;
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir.join("maps"))
            .load(OBJECT)
            .map_err(|source| DatapathError::LoadObject {
                object: OBJECT_NAME,
                pin_dir: pin_dir.clone(),
                source: Box::new(source),
            })?;
        let mut adopted = 0;
        let mut programs: Vec<Hook> = Hook::ALL.to_vec();
        programs.dedup_by_key(|hook| hook.program());
        for &hook in &programs {
            let pin = hook.program_pin(&pin_dir);
            if pin.exists() {
                adopted += 1;
                continue;
            }
            let program: &mut SchedClassifier = ebpf
                .program_mut(hook.program())
                .ok_or(DatapathError::Missing { object: OBJECT_NAME, kind: "program", name: hook.program() })?
                .try_into()
                .map_err(|source| program_error(hook, "type check", &pin, source))?;
            program.load().map_err(|source| program_error(hook, "load (verifier)", &pin, source))?;
            program.pin(&pin).map_err(|source| pin_error(&pin, "pin program", source))?;
            info!(program = hook.program(), pin = %pin.display(), "loaded and pinned eBPF program");
        }
        let origin = if adopted == programs.len() { Origin::Adopted } else { Origin::Loaded };
        let open = |hook: Hook| {
            let pin = hook.program_pin(&pin_dir);
            SchedClassifier::from_pin(&pin).map_err(|source| program_error(hook, "open pinned", &pin, source))
        };
        let datapath = Self {
            from_pod: open(Hook::Pod)?,
            from_eni: open(Hook::Eni)?,
            nat_learn: open(Hook::PodEgress)?,
            endpoints: take_map(&mut ebpf, ENDPOINTS)?,
            pod_veths: take_map(&mut ebpf, POD_VETHS)?,
            counters: take_map(&mut ebpf, COUNTERS)?,
            host_routes: take_map(&mut ebpf, HOST_ROUTES)?,
            nat_flows: take_map(&mut ebpf, NAT_FLOWS)?,
            pin_dir,
            origin,
        };
        info!(pin_dir = %datapath.pin_dir.display(), ?origin, "eBPF datapath ready");
        Ok(datapath)
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Attaches `nat_learn` to TC egress and then `from_pod` to TC ingress of a pod's
    /// host-side veth (in the calling thread's network namespace). Idempotent: an attached,
    /// pinned link is kept.
    pub fn attach_pod(&mut self, veth_ifindex: u32) -> Result<(), DatapathError> {
        self.attach(Hook::PodEgress, veth_ifindex)?;
        self.attach(Hook::Pod, veth_ifindex)
    }

    /// Attaches `nat_learn` to TC egress and then `from_eni` to TC ingress of an ENI.
    /// Idempotent.
    pub fn attach_eni(&mut self, eni_ifindex: u32) -> Result<(), DatapathError> {
        self.attach(Hook::EniEgress, eni_ifindex)?;
        self.attach(Hook::Eni, eni_ifindex)
    }

    /// Detaches `from_pod` and `nat_learn` from a pod veth (no-op if not attached).
    pub fn detach_pod(&mut self, veth_ifindex: u32) -> Result<(), DatapathError> {
        unpin_link(&Hook::Pod.link_pin(&self.pin_dir, veth_ifindex))?;
        unpin_link(&Hook::PodEgress.link_pin(&self.pin_dir, veth_ifindex))
    }

    /// Detaches `from_eni` and `nat_learn` from an ENI (no-op if not attached).
    pub fn detach_eni(&mut self, eni_ifindex: u32) -> Result<(), DatapathError> {
        unpin_link(&Hook::Eni.link_pin(&self.pin_dir, eni_ifindex))?;
        unpin_link(&Hook::EniEgress.link_pin(&self.pin_dir, eni_ifindex))
    }

    /// The reply tuples of NATed flows `nat_learn` has recorded (replies that go through the
    /// node's stack), with the last time a packet of each flow was seen (kernel monotonic ns).
    pub fn nat_flows(&self) -> Result<Vec<(NatFlowKey, u64)>, DatapathError> {
        self.nat_flows
            .iter()
            .map(|entry| entry.map_err(|source| DatapathError::map(NAT_FLOWS, "*", "iterate", source)))
            .collect()
    }

    fn attach(&mut self, hook: Hook, ifindex: u32) -> Result<(), DatapathError> {
        let pin = hook.link_pin(&self.pin_dir, ifindex);
        let name = interface_name(ifindex)?;
        let program = match hook {
            Hook::Pod => &mut self.from_pod,
            Hook::Eni => &mut self.from_eni,
            Hook::PodEgress | Hook::EniEgress => &mut self.nat_learn,
        };
        let program_id =
            program.info().map_err(|source| program_error(hook, "read program info", &pin, source))?.id();
        let (_, attached) = SchedClassifier::query_tcx(&name, hook.attach_type())
            .map_err(|source| program_error(hook, "query TCX links", &pin, source))?;
        let is_attached = attached.iter().any(|p| p.id() == program_id);
        if is_attached && pin.exists() {
            debug!(program = hook.program(), interface = %name, ifindex, "already attached");
            return Ok(());
        }
        // A pin without an attachment is a link whose interface went away (ifindex reused).
        unpin_link(&pin)?;
        let link_id = program
            .attach(&name, hook.attach_type())
            .map_err(|source| program_error(hook, "attach (TCX)", &pin, source))?;
        let link =
            program.take_link(link_id).map_err(|source| program_error(hook, "take link", &pin, source))?;
        let link = FdLink::try_from(link).map_err(|source| pin_error(&pin, "convert link", source))?;
        link.pin(&pin).map_err(|source| pin_error(&pin, "pin link", source))?;
        info!(program = hook.program(), interface = %name, ifindex, pin = %pin.display(), "attached");
        Ok(())
    }

    /// Adds or replaces the endpoint of `pod_ip`. Its counters start at zero when new and
    /// are kept when it is replaced.
    pub fn upsert_endpoint(&mut self, pod_ip: Ipv4Addr, endpoint: EndpointInfo) -> Result<(), DatapathError> {
        let key = EndpointKey::new(pod_ip);
        let counter_slot = match self.endpoints.get(&key, 0) {
            Ok(old) => {
                if old.pod_veth_ifindex != endpoint.pod_veth_ifindex {
                    self.forget_veth_of(key, old.pod_veth_ifindex)?;
                }
                old.counter_slot
            }
            Err(_) => {
                let slot = self.free_counter_slot(pod_ip)?;
                self.zero_counters(slot)?;
                slot
            }
        };
        self.pod_veths
            .insert(endpoint.pod_veth_ifindex, VethOwner { pod_ip: key.pod_ip, counter_slot }, 0)
            .map_err(|source| DatapathError::map(POD_VETHS, endpoint.pod_veth_ifindex, "insert", source))?;
        self.endpoints
            .insert(key, endpoint.to_value(counter_slot), 0)
            .map_err(|source| DatapathError::map(ENDPOINTS, pod_ip, "insert", source))?;
        debug!(%pod_ip, ?endpoint, counter_slot, "endpoint upserted");
        Ok(())
    }

    /// Removes the endpoint of `pod_ip` and zeroes its counters. Removing an absent endpoint
    /// is a no-op.
    pub fn remove_endpoint(&mut self, pod_ip: Ipv4Addr) -> Result<(), DatapathError> {
        let key = EndpointKey::new(pod_ip);
        let Ok(old) = self.endpoints.get(&key, 0) else {
            return Ok(());
        };
        self.forget_veth_of(key, old.pod_veth_ifindex)?;
        remove_if_present(self.endpoints.remove(&key), ENDPOINTS, pod_ip)?;
        self.zero_counters(old.counter_slot)?;
        debug!(%pod_ip, "endpoint removed");
        Ok(())
    }

    fn forget_veth_of(&mut self, key: EndpointKey, veth_ifindex: u32) -> Result<(), DatapathError> {
        match self.pod_veths.get(&veth_ifindex, 0) {
            Ok(owner) if owner.pod_ip == key.pod_ip => {
                remove_if_present(self.pod_veths.remove(&veth_ifindex), POD_VETHS, veth_ifindex)
            }
            _ => Ok(()),
        }
    }

    /// Sets the destinations pods reach through the node's own network stack instead of out
    /// of their ENI (node addresses, the service CIDR for kube-proxy, link-local, ...).
    /// Replaces the previous set; empty (the default) sends every non-pod destination out
    /// of the pod's ENI.
    pub fn set_host_routes(&mut self, prefixes: &[Ipv4Prefix]) -> Result<(), DatapathError> {
        let wanted: BTreeSet<(u32, u32)> =
            prefixes.iter().map(|p| (u32::from(p.len), u32::from_ne_bytes(p.addr.octets()))).collect();
        let current: Vec<Key<u32>> = self.host_routes.keys().filter_map(Result::ok).collect();
        for key in current.iter().filter(|k| !wanted.contains(&(k.prefix_len(), k.data()))) {
            let prefix = format!("{}/{}", Ipv4Addr::from(key.data().to_ne_bytes()), key.prefix_len());
            remove_if_present(self.host_routes.remove(key), HOST_ROUTES, prefix)?;
        }
        for prefix in prefixes {
            let key = Key::new(u32::from(prefix.len), u32::from_ne_bytes(prefix.addr.octets()));
            self.host_routes
                .insert(&key, 1, 0)
                .map_err(|source| DatapathError::map(HOST_ROUTES, prefix, "insert", source))?;
        }
        info!(count = prefixes.len(), "host routes set");
        Ok(())
    }

    /// The endpoints currently in the map.
    pub fn endpoints(&self) -> Result<BTreeMap<Ipv4Addr, EndpointInfo>, DatapathError> {
        self.endpoints
            .iter()
            .map(|entry| {
                entry
                    .map(|(key, value)| (key.ip(), EndpointInfo::from_value(value)))
                    .map_err(|source| DatapathError::map(ENDPOINTS, "*", "iterate", source))
            })
            .collect()
    }

    /// Makes the maps equal to `desired` (the agent's IPAM state): writes every desired
    /// endpoint, removes the others with their counters, and detaches pod veths no desired
    /// endpoint uses. ENI links are left alone (the agent detaches ENIs explicitly).
    pub fn reconcile(
        &mut self,
        desired: &BTreeMap<Ipv4Addr, EndpointInfo>,
    ) -> Result<ReconcileReport, DatapathError> {
        let current = self.endpoints()?;
        let mut report = ReconcileReport::default();
        for (ip, _) in current.iter().filter(|(ip, _)| !desired.contains_key(ip)) {
            self.remove_endpoint(*ip)?;
            report.removed.push(*ip);
        }
        for (ip, endpoint) in desired {
            if current.get(ip) != Some(endpoint) {
                self.upsert_endpoint(*ip, *endpoint)?;
                report.upserted.push(*ip);
            }
        }
        let wanted_veths: BTreeSet<u32> = desired.values().map(|e| e.pod_veth_ifindex).collect();
        let stale_owners: Vec<u32> =
            self.pod_veths.keys().filter_map(Result::ok).filter(|i| !wanted_veths.contains(i)).collect();
        for ifindex in stale_owners {
            remove_if_present(self.pod_veths.remove(&ifindex), POD_VETHS, ifindex)?;
        }
        for ifindex in Hook::Pod.pinned_links(&self.pin_dir) {
            if !wanted_veths.contains(&ifindex) {
                self.detach_pod(ifindex)?;
                report.detached_pod_veths.push(ifindex);
            }
        }
        info!(
            upserted = report.upserted.len(),
            removed = report.removed.len(),
            detached = report.detached_pod_veths.len(),
            "datapath reconciled"
        );
        Ok(report)
    }

    /// Counters of every endpoint, summed over CPUs. `0.0.0.0` holds drops on attached veths
    /// that have no endpoint.
    pub fn counters(&self) -> Result<BTreeMap<Ipv4Addr, EndpointCounters>, DatapathError> {
        let mut slots = vec![(UNATTRIBUTED, UNATTRIBUTED_SLOT)];
        for entry in self.endpoints.iter() {
            let (key, value) =
                entry.map_err(|source| DatapathError::map(ENDPOINTS, "*", "iterate", source))?;
            slots.push((key.ip(), value.counter_slot));
        }
        slots.into_iter().map(|(ip, slot)| Ok((ip, self.read_counters(ip, slot)?))).collect()
    }

    /// Counters of one endpoint (or of `0.0.0.0`, the unattributed drops), summed over CPUs.
    pub fn endpoint_counters(&self, pod_ip: Ipv4Addr) -> Result<EndpointCounters, DatapathError> {
        let slot = if pod_ip == UNATTRIBUTED {
            UNATTRIBUTED_SLOT
        } else {
            self.endpoints
                .get(&EndpointKey::new(pod_ip), 0)
                .map_err(|source| DatapathError::map(ENDPOINTS, pod_ip, "read", source))?
                .counter_slot
        };
        self.read_counters(pod_ip, slot)
    }

    fn read_counters(&self, pod_ip: Ipv4Addr, slot: u32) -> Result<EndpointCounters, DatapathError> {
        self.counters.get(&slot, 0).map(|per_cpu| EndpointCounters::sum(per_cpu.iter())).map_err(|source| {
            DatapathError::map(COUNTERS, format!("slot {slot} of {pod_ip}"), "read", source)
        })
    }

    fn zero_counters(&mut self, slot: u32) -> Result<(), DatapathError> {
        let zero =
            PerCpuValues::try_from(vec![CounterValue::default(); possible_cpus()?]).map_err(|source| {
                DatapathError::Pin {
                    pin: self.pin_dir.join("maps").join(COUNTERS),
                    action: "build per-CPU zero counters",
                    source: Box::new(source),
                }
            })?;
        self.counters.set(slot, zero, 0).map_err(|source| DatapathError::map(COUNTERS, slot, "zero", source))
    }

    /// Lowest counter slot no endpoint uses (slot 0 is the unattributed one).
    fn free_counter_slot(&self, pod_ip: Ipv4Addr) -> Result<u32, DatapathError> {
        let used: BTreeSet<u32> =
            self.endpoints.iter().filter_map(Result::ok).map(|(_, v)| v.counter_slot).collect();
        (1..=MAX_ENDPOINTS as u32)
            .find(|slot| !used.contains(slot))
            .ok_or(DatapathError::Full { pod_ip, max: MAX_ENDPOINTS })
    }
}

fn take_map<V: TryFrom<Map, Error = aya::maps::MapError>>(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
) -> Result<V, DatapathError> {
    let map = ebpf.take_map(name).ok_or(DatapathError::Missing { object: OBJECT_NAME, kind: "map", name })?;
    V::try_from(map).map_err(|source| DatapathError::map(name, "-", "open", source))
}

fn remove_if_present(
    result: Result<(), aya::maps::MapError>,
    map: &'static str,
    key: impl ToString,
) -> Result<(), DatapathError> {
    match result {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(ref e))
            if e.io_error.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        Err(source) => Err(DatapathError::map(map, key, "remove", source)),
    }
}

fn unpin_link(pin: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(pin) {
        Ok(()) => {
            info!(pin = %pin.display(), "link unpinned (detached)");
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(pin_error(pin, "unpin link", source)),
    }
}

pub(crate) fn interface_name(ifindex: u32) -> Result<String, DatapathError> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return Err(DatapathError::NoSuchInterface { ifindex, source: std::io::Error::last_os_error() });
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    Ok(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

fn possible_cpus() -> Result<usize, DatapathError> {
    aya::util::nr_cpus().map_err(|(path, source)| DatapathError::Pin {
        pin: PathBuf::from(path),
        action: "read the number of possible CPUs",
        source: Box::new(source),
    })
}

fn program_error(
    hook: Hook,
    action: &'static str,
    pin: &Path,
    source: aya::programs::ProgramError,
) -> DatapathError {
    DatapathError::Program { program: hook.program(), action, pin: pin.to_owned(), source: Box::new(source) }
}

fn pin_error(
    pin: &Path,
    action: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> DatapathError {
    DatapathError::Pin { pin: pin.to_owned(), action, source: Box::new(source) }
}
