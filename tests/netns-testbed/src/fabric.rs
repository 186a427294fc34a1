//! A VPC fabric that follows a cloud: every ENI the cloud has attached to an
//! instance appears in that instance's node namespace as a link carrying the
//! ENI's MAC (as a hypervisor hot-plugs a NIC), the VPC router namespace
//! routes each of the ENI's addresses to it and answers ARP for the subnet's
//! gateway on it. ENIs detached, deleted or moved, and addresses
//! unassigned, are taken away at the next [`Fabric::sync`]. This is what lets
//! the end-to-end bed run the real operator against a cloud (fake, moto, the
//! Alibaba emulator) and the real agent and datapath against the addresses it
//! hands out.
//!
//! What a real VPC and node do besides is done too: the node's primary ENI (device index 0)
//! carries its primary address with the subnet's prefix and the default route via the
//! subnet's gateway (as DHCP sets them on a cloud node), nodes forward and filter reverse
//! paths loosely (`rp_filter=2`, as systemd distributions set it), the router answers ARP
//! for every address it routes (the VPC answers for the whole subnet), drops and counts
//! what fails the source check ([`crate::source_check`]), and an outside client (an address
//! outside the VPC, routed through the router) can reach the nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use eni_ipam_datapath::MacAddr;

use crate::netns::Netns;
use crate::source_check;

/// The outside client's address (TEST-NET-2: outside every VPC of the bed).
pub const OUTSIDE_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The router's address on the outside client's link.
const OUTSIDE_GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// One ENI as the cloud describes it (a cloud-neutral copy of its listing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudEni {
    /// The ENI's id.
    pub id: String,
    /// The instance it is attached to, if any.
    pub instance: Option<String>,
    /// Its device index on that instance.
    pub device_index: u32,
    /// Its MAC address (`02:..`).
    pub mac: String,
    /// Its primary address.
    pub primary_ip: Ipv4Addr,
    /// Its secondary addresses.
    pub secondary_ips: Vec<Ipv4Addr>,
    /// The gateway of its subnet.
    pub gateway: Ipv4Addr,
    /// The prefix length of its subnet.
    pub prefix_len: u8,
}

/// An ENI wired into the namespaces.
#[derive(Clone, Debug)]
struct Wired {
    instance: String,
    device_index: u32,
    mac: String,
    router_link: String,
    routes: BTreeSet<Ipv4Addr>,
}

/// What one sync changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// ENIs plugged into a node.
    pub plugged: Vec<String>,
    /// ENIs unplugged.
    pub unplugged: Vec<String>,
    /// Addresses the router learned.
    pub routed: Vec<Ipv4Addr>,
    /// Addresses the router forgot.
    pub unrouted: Vec<Ipv4Addr>,
}

/// The router and one namespace per instance, kept in step with the cloud.
pub struct Fabric {
    prefix: String,
    router: Netns,
    nodes: BTreeMap<String, Netns>,
    wired: BTreeMap<String, Wired>,
    serial: u32,
    /// Router links under the source check, with the addresses allowed from each.
    checked: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    /// Source-check drops of ENIs unplugged since, by ENI id.
    dropped_before: BTreeMap<String, u64>,
    outside: Option<Netns>,
}

impl Fabric {
    /// A router namespace; `tag` makes names unique within the process.
    pub fn new(tag: &str) -> Self {
        let prefix = format!("eni-{}-{tag}", std::process::id());
        let router = Netns::create(format!("{prefix}-vpc"));
        router.sysctl("net.ipv4.ip_forward", "1");
        // The VPC answers ARP for every address of the subnet, not only its gateway's.
        router.sysctl("net.ipv4.conf.all.proxy_arp", "1");
        router.sysctl("net.ipv4.conf.default.proxy_arp", "1");
        Self {
            prefix,
            router,
            nodes: BTreeMap::new(),
            wired: BTreeMap::new(),
            serial: 0,
            checked: BTreeMap::new(),
            dropped_before: BTreeMap::new(),
            outside: None,
        }
    }

    /// A namespace for `instance` (a node joins): ENIs attached to it appear there. It
    /// forwards and has loose reverse-path filtering, as a node's distribution sets them.
    pub fn add_node(&mut self, instance: &str) -> &Netns {
        let n = self.nodes.len();
        let ns = Netns::create(format!("{}-n{n}", self.prefix));
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.ipv4.conf.all.rp_filter", "2");
        ns.sysctl("net.ipv4.conf.default.rp_filter", "2");
        self.nodes.entry(instance.to_owned()).or_insert(ns)
    }

    /// A client outside the VPC ([`OUTSIDE_CLIENT`]), on its own link to the router, whose
    /// default route is the router: it reaches every address the VPC routes (NodePorts,
    /// hostPorts on the nodes' primary addresses). Made once.
    pub fn outside_client(&mut self) -> &Netns {
        if self.outside.is_none() {
            let ns = Netns::create(format!("{}-out", self.prefix));
            ns.veth_into("eth0", "outside", &self.router);
            ns.ip(&["addr", "add", &format!("{OUTSIDE_CLIENT}/24"), "dev", "eth0"]);
            ns.ip(&["route", "add", "default", "via", &OUTSIDE_GATEWAY.to_string()]);
            self.router.ip(&["addr", "add", &format!("{OUTSIDE_GATEWAY}/24"), "dev", "outside"]);
            self.outside = Some(ns);
        }
        self.outside.as_ref().expect("made above")
    }

    /// Packets the source check dropped so far, by ENI id (unplugged ENIs included).
    pub fn source_check_drops(&self) -> BTreeMap<String, u64> {
        let mut drops = self.dropped_before.clone();
        for (link, packets) in self.read_counters() {
            if let Some((id, _)) = self.wired.iter().find(|(_, w)| w.router_link == link) {
                *drops.entry(id.clone()).or_default() += packets;
            }
        }
        drops
    }

    fn read_counters(&self) -> BTreeMap<String, u64> {
        if self.checked.is_empty() {
            return BTreeMap::new();
        }
        let listing = self
            .router
            .command("nft")
            .args(["list", "counters", "table", "ip", source_check::TABLE])
            .output();
        let listing = listing.expect("run nft in the router namespace (scripts/install-test-tools)");
        assert!(listing.status.success(), "nft list counters: {}", String::from_utf8_lossy(&listing.stderr));
        source_check::parse_counters(&String::from_utf8_lossy(&listing.stdout))
    }

    /// Rewrites the source check for the ENIs wired now (links gone: their drops are kept).
    fn check_sources(&mut self, gone: &BTreeMap<String, String>) {
        let after: BTreeMap<String, BTreeSet<Ipv4Addr>> =
            self.wired.values().map(|w| (w.router_link.clone(), w.routes.clone())).collect();
        if after == self.checked {
            return;
        }
        let counters = self.read_counters();
        for (link, id) in gone {
            *self.dropped_before.entry(id.clone()).or_default() += counters.get(link).copied().unwrap_or(0);
        }
        let before: BTreeSet<String> = self.checked.keys().cloned().collect();
        let script = source_check::script(&before, &after);
        let mut nft = self
            .router
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run nft in the router namespace (scripts/install-test-tools)");
        {
            use std::io::Write;
            nft.stdin.take().expect("piped").write_all(script.as_bytes()).expect("write the nft script");
        }
        let done = nft.wait_with_output().expect("wait for nft");
        assert!(
            done.status.success(),
            "nft -f (source check):\n{script}\n{}",
            String::from_utf8_lossy(&done.stderr)
        );
        self.checked = after;
    }

    /// The node namespace of `instance`.
    pub fn node(&self, instance: &str) -> &Netns {
        &self.nodes[instance]
    }

    /// The VPC router.
    pub fn router(&self) -> &Netns {
        &self.router
    }

    /// The name of the link of `instance`'s ENI at `device_index` in its namespace.
    pub fn eni_link(device_index: u32) -> String {
        format!("eni{device_index}")
    }

    /// Brings the namespaces in line with `enis` (every ENI of the VPC).
    pub fn sync(&mut self, enis: &[CloudEni]) -> SyncReport {
        let mut report = SyncReport::default();
        let wanted: BTreeMap<&str, &CloudEni> = enis
            .iter()
            .filter(|e| e.instance.as_ref().is_some_and(|i| self.nodes.contains_key(i)))
            .map(|e| (e.id.as_str(), e))
            .collect();
        // Unplug what is gone, detached, or plugged elsewhere.
        let stale: Vec<String> = self
            .wired
            .iter()
            .filter(|(id, w)| {
                wanted.get(id.as_str()).is_none_or(|e| {
                    e.instance.as_deref() != Some(w.instance.as_str()) || e.device_index != w.device_index
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut gone = BTreeMap::new();
        for id in stale {
            let w = self.wired.remove(&id).expect("listed above");
            gone.insert(w.router_link.clone(), id.clone());
            // Deleting the router end deletes the pair, and with it the routes through it.
            self.router.ip(&["link", "del", &w.router_link]);
            report.unrouted.extend(w.routes);
            report.unplugged.push(id);
        }
        let addresses = |eni: &CloudEni| -> BTreeSet<Ipv4Addr> {
            std::iter::once(eni.primary_ip).chain(eni.secondary_ips.iter().copied()).collect()
        };
        // Unroute first, everywhere: an address that moved to another ENI is then routed to
        // its new link below, whatever order the ENIs come in.
        for (id, eni) in &wanted {
            let Some(w) = self.wired.get_mut(*id) else { continue };
            let want = addresses(eni);
            for ip in w.routes.difference(&want) {
                // Gone already if the address was routed elsewhere meanwhile: not an error.
                let _ = self
                    .router
                    .command("ip")
                    .args(["route", "del", &format!("{ip}/32"), "dev", &w.router_link])
                    .output();
                let _ = self
                    .router
                    .command("ip")
                    .args(["neigh", "del", &ip.to_string(), "dev", &w.router_link])
                    .output();
                report.unrouted.push(*ip);
            }
            w.routes.retain(|ip| want.contains(ip));
        }
        for (id, eni) in wanted {
            let instance = eni.instance.clone().expect("filtered on it");
            if !self.wired.contains_key(id) {
                self.plug(id, &instance, eni);
                report.plugged.push(id.to_owned());
            }
            let w = self.wired.get_mut(id).expect("plugged");
            let want = addresses(eni);
            let mac: MacAddr = w.mac.parse().expect("the cloud's MACs parse");
            for ip in want.difference(&w.routes) {
                self.router.ip(&["route", "replace", &format!("{ip}/32"), "dev", &w.router_link]);
                self.router.permanent_neighbour(&ip.to_string(), mac, &w.router_link);
                report.routed.push(*ip);
            }
            w.routes = want;
        }
        self.check_sources(&gone);
        report
    }

    fn plug(&mut self, id: &str, instance: &str, eni: &CloudEni) {
        self.serial += 1;
        let node = &self.nodes[instance];
        let link = Self::eni_link(eni.device_index);
        let router_link = format!("v{}", self.serial);
        node.veth_into(&link, &router_link, &self.router);
        node.ip(&["link", "set", &link, "address", &eni.mac]);
        if eni.device_index == 0 {
            // What DHCP gives a cloud node on its primary ENI.
            let address = format!("{}/{}", eni.primary_ip, eni.prefix_len);
            node.ip(&["addr", "replace", &address, "dev", &link]);
            node.ip(&["route", "replace", "default", "via", &eni.gateway.to_string(), "dev", &link]);
        }
        // The router answers ARP for the subnet's gateway, as the VPC does: the node (the
        // agent) resolves it on this ENI itself.
        self.router.own_address(eni.gateway);
        let wired = Wired {
            instance: instance.to_owned(),
            device_index: eni.device_index,
            mac: eni.mac.clone(),
            router_link,
            routes: BTreeSet::new(),
        };
        self.wired.insert(id.to_owned(), wired);
    }
}
