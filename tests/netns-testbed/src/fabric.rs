//! A VPC fabric that follows a cloud: every ENI the cloud has attached to an
//! instance appears in that instance's node namespace as a link carrying the
//! ENI's MAC (as a hypervisor hot-plugs a NIC), the VPC router namespace
//! routes each of the ENI's addresses to it and answers ARP for the subnet's
//! gateway on it. ENIs detached, deleted or moved, and addresses
//! unassigned, are taken away at the next [`Fabric::sync`]. This is what lets
//! the end-to-end bed run the real operator against a cloud (fake, moto, the
//! Alibaba emulator) and the real agent and datapath against the addresses it
//! hands out.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use eni_ipam_datapath::MacAddr;

use crate::netns::Netns;

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
}

impl Fabric {
    /// A router namespace; `tag` makes names unique within the process.
    pub fn new(tag: &str) -> Self {
        let prefix = format!("eni-{}-{tag}", std::process::id());
        let router = Netns::create(format!("{prefix}-vpc"));
        router.sysctl("net.ipv4.ip_forward", "1");
        Self { prefix, router, nodes: BTreeMap::new(), wired: BTreeMap::new(), serial: 0 }
    }

    /// A namespace for `instance` (a node joins): ENIs attached to it appear there.
    pub fn add_node(&mut self, instance: &str) -> &Netns {
        let n = self.nodes.len();
        let ns = Netns::create(format!("{}-n{n}", self.prefix));
        self.nodes.entry(instance.to_owned()).or_insert(ns)
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
        for id in stale {
            let w = self.wired.remove(&id).expect("listed above");
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
        report
    }

    fn plug(&mut self, id: &str, instance: &str, eni: &CloudEni) {
        self.serial += 1;
        let node = &self.nodes[instance];
        let link = Self::eni_link(eni.device_index);
        let router_link = format!("v{}", self.serial);
        node.veth_into(&link, &router_link, &self.router);
        node.ip(&["link", "set", &link, "address", &eni.mac]);
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
