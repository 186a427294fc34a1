//! The loaded datapath: programs and maps pinned in bpffs, adopted again after a restart and
//! replaced on an upgrade without losing a packet.
//!
//! The pin directory (default [`DEFAULT_PIN_DIR`]) is laid out by build (see `pins.rs`):
//! `programs/<object version>/`, `maps/<map layout>/`, and the attachments (`links/` for
//! TCX, `filters/` and `clsact/` for netlink). Everything the kernel needs to forward packets
//! outlives the process, so dropping a [`Datapath`] (the agent exiting) leaves traffic
//! flowing; [`Datapath::load_or_adopt`] picks the pins up.
//!
//! Upgrade (pins of another build found): the new programs are loaded next to the old ones
//! (with new, empty maps when the layout changed), the caller fills the maps
//! ([`Datapath::reconcile`]), and only then are the new programs swapped in on every
//! attachment, atomically, and the old pins removed. Until then the old programs forward.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    EbpfLoader,
    maps::{HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::SchedClassifier,
};
use tracing::{debug, info};

use crate::{
    AttachMode, DatapathError, DatapathObject, EndpointCounters, EndpointInfo, Ipv4Prefix,
    abi::{
        CounterValue, EndpointKey, EndpointValue, MAX_ENDPOINTS, NatFlowKey, UNATTRIBUTED_SLOT, VethOwner,
    },
    attach::{self, pin_error},
    hook::{self, Hook, Target},
    object::CURRENT,
    pins::{PinLayout, remove_pin_tree},
    probe::probe,
};

/// Where the agent pins the datapath.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/eni-ipam";

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
    /// Programs were loaded and pinned now; no other build was found.
    Loaded,
    /// This build's pinned programs were found and are kept as they are.
    Adopted,
    /// Pins of another build were found: this build's programs replace them on
    /// [`Datapath::reconcile`] (or [`Datapath::complete_upgrade`]).
    Upgrading,
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
    /// Pins of other builds removed after this build's programs took over (an upgrade).
    pub retired: Vec<PathBuf>,
}

/// Handle on the pinned datapath of this node.
pub struct Datapath {
    pins: PinLayout,
    origin: Origin,
    mode: AttachMode,
    object: &'static DatapathObject,
    /// Pins of other builds are still in place (their programs may still be attached).
    upgrade_pending: bool,
    programs: BTreeMap<&'static str, SchedClassifier>,
    endpoints: HashMap<MapData, EndpointKey, EndpointValue>,
    pod_veths: HashMap<MapData, u32, VethOwner>,
    counters: PerCpuArray<MapData, CounterValue>,
    host_routes: LpmTrie<MapData, u32, u32>,
    nat_flows: HashMap<MapData, NatFlowKey, u64>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("pin_dir", &self.pins.root())
            .field("origin", &self.origin)
            .field("mode", &self.mode)
            .field("version", &self.object.version)
            .finish()
    }
}

impl Datapath {
    /// [`Datapath::load_or_adopt_with`] in [`AttachMode::Auto`].
    pub fn load_or_adopt(pin_dir: impl AsRef<Path>) -> Result<Self, DatapathError> {
        Self::load_or_adopt_with(pin_dir, AttachMode::Auto)
    }

    /// Probes the kernel, then loads and pins this build's programs and maps under
    /// `pin_dir`, or adopts them if they are pinned already (agent restart: traffic is not
    /// interrupted). Pins of another build are kept, still forwarding, until
    /// [`Datapath::reconcile`] has filled the maps (see [`Origin::Upgrading`]).
    pub fn load_or_adopt_with(pin_dir: impl AsRef<Path>, mode: AttachMode) -> Result<Self, DatapathError> {
        Self::load_object(pin_dir, mode, &CURRENT)
    }

    /// [`Datapath::load_or_adopt_with`] for another compiled object (the upgrade test loads
    /// a "next version" this way).
    #[doc(hidden)]
    pub fn load_object(
        pin_dir: impl AsRef<Path>,
        mode: AttachMode,
        object: &'static DatapathObject,
    ) -> Result<Self, DatapathError> {
        let pins = PinLayout::new(pin_dir.as_ref());
        probe(pins.root())?;
        let mode = mode.resolve()?;
        pins.create(object)?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.maps(object))
            .load(object.bytes)
            .map_err(|source| DatapathError::LoadObject {
                object: object.name,
                pin_dir: pins.root().to_owned(),
                source: Box::new(source),
            })?;
        let mut adopted = 0;
        let mut programs = BTreeMap::new();
        for name in Hook::programs() {
            let pin = pins.programs(object).join(name);
            let failed = |action, source| DatapathError::Program {
                program: name,
                action,
                pin: pin.clone(),
                source: Box::new(source),
            };
            if pin.exists() {
                adopted += 1;
            } else {
                let program: &mut SchedClassifier = ebpf
                    .program_mut(name)
                    .ok_or(DatapathError::Missing { object: object.name, kind: "program", name })?
                    .try_into()
                    .map_err(|e| failed("type check", e))?;
                program.load().map_err(|e| failed("load (verifier)", e))?;
                program.pin(&pin).map_err(|e| pin_error(&pin, "pin program", e))?;
                info!(program = name, pin = %pin.display(), "loaded and pinned eBPF program");
            }
            programs.insert(name, SchedClassifier::from_pin(&pin).map_err(|e| failed("open pinned", e))?);
        }
        let stale = pins.stale(object);
        let origin = if !stale.is_empty() {
            Origin::Upgrading
        } else if adopted == programs.len() {
            Origin::Adopted
        } else {
            Origin::Loaded
        };
        let datapath = Self {
            endpoints: take_map(&mut ebpf, object, ENDPOINTS)?,
            pod_veths: take_map(&mut ebpf, object, POD_VETHS)?,
            counters: take_map(&mut ebpf, object, COUNTERS)?,
            host_routes: take_map(&mut ebpf, object, HOST_ROUTES)?,
            nat_flows: take_map(&mut ebpf, object, NAT_FLOWS)?,
            programs,
            pins,
            origin,
            mode,
            object,
            upgrade_pending: !stale.is_empty(),
        };
        info!(
            pin_dir = %datapath.pins.root().display(),
            ?origin,
            %mode,
            version = object.version,
            layout = object.layout,
            stale = ?stale,
            "eBPF datapath ready"
        );
        Ok(datapath)
    }

    pub fn pin_dir(&self) -> &Path {
        self.pins.root()
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// The attach mode in use (`Tcx` or `Netlink`, never `Auto`).
    pub fn attach_mode(&self) -> AttachMode {
        self.mode
    }

    /// Kernel ids of the loaded programs, by program name.
    pub fn program_ids(&self) -> Result<BTreeMap<&'static str, u32>, DatapathError> {
        self.programs
            .iter()
            .map(|(name, program)| {
                let pin = self.pins.programs(self.object).join(name);
                let info = program.info().map_err(|source| DatapathError::Program {
                    program: name,
                    action: "read program info",
                    pin,
                    source: Box::new(source),
                })?;
                Ok((*name, info.id()))
            })
            .collect()
    }

    /// Attaches the pod hooks (`nat_learn` at TC egress, then `from_pod` at TC ingress) to a
    /// pod's host-side veth, in the
    /// calling thread's network namespace. Idempotent.
    pub fn attach_pod(&mut self, veth_ifindex: u32) -> Result<(), DatapathError> {
        self.attach_target(Target::Pod, veth_ifindex)
    }

    /// Attaches the ENI hooks (`nat_learn` at TC egress, then `from_eni` at TC ingress) to an
    /// ENI. Idempotent.
    pub fn attach_eni(&mut self, eni_ifindex: u32) -> Result<(), DatapathError> {
        self.attach_target(Target::Eni, eni_ifindex)
    }

    /// Detaches the pod hooks from a pod veth (no-op if not attached).
    pub fn detach_pod(&mut self, veth_ifindex: u32) -> Result<(), DatapathError> {
        Hook::of(Target::Pod).try_for_each(|hook| attach::detach(&self.pins, hook, veth_ifindex))
    }

    /// Detaches the ENI hooks from an ENI (no-op if not attached).
    pub fn detach_eni(&mut self, eni_ifindex: u32) -> Result<(), DatapathError> {
        Hook::of(Target::Eni).try_for_each(|hook| attach::detach(&self.pins, hook, eni_ifindex))
    }

    /// The reply tuples of NATed flows `nat_learn` has recorded (replies that go through the
    /// node's stack), with the last time a packet of each flow was seen (kernel monotonic ns).
    pub fn nat_flows(&self) -> Result<Vec<(NatFlowKey, u64)>, DatapathError> {
        self.nat_flows
            .iter()
            .map(|entry| entry.map_err(|source| DatapathError::map(NAT_FLOWS, "*", "iterate", source)))
            .collect()
    }

    fn attach_target(&mut self, target: Target, ifindex: u32) -> Result<(), DatapathError> {
        for hook in Hook::of(target) {
            if self.upgrade_pending && self.is_recorded(hook, ifindex) {
                // The old build keeps forwarding here until the maps are filled.
                debug!(program = hook.program, ifindex, "upgrade pending: swapped in on reconcile");
                continue;
            }
            self.attach_hook(hook, ifindex)?;
        }
        Ok(())
    }

    fn attach_hook(&mut self, hook: &Hook, ifindex: u32) -> Result<(), DatapathError> {
        let program = self.programs.get_mut(hook.program).ok_or(DatapathError::Missing {
            object: self.object.name,
            kind: "program",
            name: hook.program,
        })?;
        attach::attach(&self.pins, self.mode, hook, ifindex, program)
    }

    fn is_recorded(&self, hook: &Hook, ifindex: u32) -> bool {
        let record = hook.record_name(ifindex);
        self.pins.links().join(&record).exists() || self.pins.filters().join(&record).exists()
    }

    /// Every attachment recorded in the pin directory (either mode), by hook and ifindex.
    fn recorded(&self) -> BTreeSet<(&'static str, u32)> {
        [self.pins.links(), self.pins.filters()]
            .iter()
            .flat_map(|dir| hook::records(dir))
            .map(|(hook, ifindex, _)| (hook.name, ifindex))
            .collect()
    }

    /// Finishes an upgrade (no-op otherwise): puts this build's programs on every recorded
    /// attachment, in this datapath's attach mode (each swap is atomic), then removes the
    /// pins of other builds. Call it once the maps are filled; [`Datapath::reconcile`] does.
    pub fn complete_upgrade(&mut self) -> Result<Vec<PathBuf>, DatapathError> {
        if !self.upgrade_pending {
            return Ok(Vec::new());
        }
        for (name, ifindex) in self.recorded() {
            let hook = Hook::named(name).expect("records name known hooks");
            match self.attach_hook(hook, ifindex) {
                Ok(()) => {}
                Err(DatapathError::NoSuchInterface { .. }) => attach::detach(&self.pins, hook, ifindex)?,
                Err(error) => return Err(error),
            }
        }
        let stale = self.pins.stale(self.object);
        for path in &stale {
            remove_pin_tree(path)?;
        }
        self.upgrade_pending = false;
        info!(version = self.object.version, retired = ?stale, "upgrade complete: the pins of other builds are removed");
        Ok(stale)
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
    /// endpoint uses. ENI links are left alone (the agent detaches ENIs explicitly). Then,
    /// the maps being filled, completes a pending upgrade ([`Datapath::complete_upgrade`]).
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
        let pod_hooks: Vec<&str> = Hook::of(Target::Pod).map(|hook| hook.name).collect();
        let stale_veths: BTreeSet<u32> = self
            .recorded()
            .into_iter()
            .filter(|(hook, ifindex)| pod_hooks.contains(hook) && !wanted_veths.contains(ifindex))
            .map(|(_, ifindex)| ifindex)
            .collect();
        for ifindex in stale_veths {
            self.detach_pod(ifindex)?;
            report.detached_pod_veths.push(ifindex);
        }
        report.retired = self.complete_upgrade()?;
        info!(
            upserted = report.upserted.len(),
            removed = report.removed.len(),
            detached = report.detached_pod_veths.len(),
            retired = report.retired.len(),
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
                    pin: self.pins.maps(self.object).join(COUNTERS),
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
    object: &DatapathObject,
    name: &'static str,
) -> Result<V, DatapathError> {
    let map = ebpf.take_map(name).ok_or(DatapathError::Missing { object: object.name, kind: "map", name })?;
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
