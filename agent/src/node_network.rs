//! The node's side of pod networking that does not depend on eBPF: policy routing per ENI
//! and pod ([`crate::policy_routing`]), the nft table and sysctls
//! ([`crate::node_netfilter`]). With `--datapath=none` it is the whole datapath; with eBPF it
//! carries whatever the programs leave to the stack. [`crate::endpoints::Endpoints`] drives
//! it under the same lock as the IPAM and the eBPF maps.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use eni_ipam_datapath::Ipv4Prefix;
use netlink_packet_route::route::RouteAttribute;

use crate::netlink::{Link, NetlinkError};
use crate::node_netfilter;
use crate::policy_routing::{self, Changes, PolicyRouter};
use crate::pool::PoolIp;

/// What [`NodeNetwork::reconcile`] did.
#[derive(Debug, Default)]
pub struct NetworkReport {
    /// Rules and tables added and removed.
    pub changes: Changes,
    /// ENI links in the nft set.
    pub eni_links: BTreeSet<u32>,
    /// What was left out, and why.
    pub skipped: Vec<String>,
}

/// Why the node's networking could not be set.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The nft table could not be written.
    #[error(transparent)]
    Nft(#[from] node_netfilter::NftError),
    /// A sysctl could not be set, or the pool gives no usable ENI.
    #[error("{0}")]
    Node(String),
}

/// `rp_filter` 2: a packet passes when its source is routable by any link.
const LOOSE_RP_FILTER: i32 = 2;

/// Policy routing, the nft table and sysctls of this network namespace.
#[derive(Debug)]
pub struct NodeNetwork {
    router: PolicyRouter,
    /// The ENI links last written into the nft set.
    eni_links: Option<BTreeSet<u32>>,
    /// Destinations pods may not reach (`--block-pod-destination`).
    blocked: Vec<Ipv4Prefix>,
}

impl NodeNetwork {
    /// Opens a netlink socket in this network namespace; pods' traffic to `blocked` is dropped.
    pub fn open(blocked: Vec<Ipv4Prefix>) -> Result<Self, NetworkError> {
        Ok(Self { router: PolicyRouter::open()?, eni_links: None, blocked })
    }

    /// Start: a table for every pool ENI on the node, the rules of every pod in `pods`
    /// (`(ip, pool entry)`), nothing else of ours; the nft table and sysctls.
    pub fn reconcile<'a>(
        &mut self,
        pool_enis: impl IntoIterator<Item = &'a PoolIp>,
        pods: impl IntoIterator<Item = (Ipv4Addr, Option<&'a PoolIp>)>,
    ) -> Result<NetworkReport, NetworkError> {
        let links = self.router.netlink().links()?;
        let (desired, skipped) = policy_routing::desired(pool_enis, pods, &links);
        let changes = self.router.reconcile(&desired)?;
        let pool_links: BTreeSet<u32> = desired.tables.values().map(|r| r.ifindex).collect();
        let eni_links = self.write_netfilter(&pool_links, &links)?;
        Ok(NetworkReport { changes, eni_links, skipped })
    }

    /// CNI ADD: forwarding on the pod's veth (host end, index `veth`), the table of the pod's
    /// ENI (and the ENI in the nft set, the first time) and the pod's rules.
    pub fn add_pod(&mut self, ip: Ipv4Addr, entry: &PoolIp, veth: u32) -> Result<(), NetworkError> {
        self.router.netlink().enable_forwarding(veth, None, &format!("veth of {ip}"))?;
        let links = self.router.netlink().links()?;
        let (table, route) = policy_routing::eni_route(entry, &links).map_err(NetworkError::Node)?;
        self.router.put_table(table, route)?;
        if !self.eni_links.as_ref().is_some_and(|known| known.contains(&route.ifindex)) {
            let mut pool_links = self.eni_links.clone().unwrap_or_default();
            pool_links.insert(route.ifindex);
            self.write_netfilter(&pool_links, &links)?;
        }
        self.router.add_pod(ip, table)?;
        Ok(())
    }

    /// CNI DEL: the pod's rules go (its ENI's table stays for the ENI's other pods).
    pub fn remove_pod(&mut self, ip: Ipv4Addr) -> Result<(), NetworkError> {
        Ok(self.router.remove_pod(ip)?)
    }

    /// Writes the nft table with `pool_links` plus the links of the main table's default
    /// routes, and the sysctls of those links; the set written.
    fn write_netfilter(
        &mut self,
        pool_links: &BTreeSet<u32>,
        links: &[Link],
    ) -> Result<BTreeSet<u32>, NetworkError> {
        let mut eni_links = pool_links.clone();
        eni_links.extend(self.default_route_links()?);
        let names: BTreeMap<u32, &str> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
        if let Err(reason) = node_netfilter::enable_ip_forward() {
            tracing::warn!("{reason}");
        }
        for index in &eni_links {
            let name = names.get(index).copied().unwrap_or("?");
            // A pod's reply arrives on its ENI while the main table routes its source
            // elsewhere: loose reverse-path filtering.
            self.router.netlink().enable_forwarding(*index, Some(LOOSE_RP_FILTER), name)?;
        }
        node_netfilter::install(&eni_links, &self.blocked)?;
        // What is remembered is the pool's part: the default routes are read again each time.
        self.eni_links = Some(pool_links.clone());
        Ok(eni_links)
    }

    /// Output links of the main table's default routes (the node's primary interface).
    fn default_route_links(&mut self) -> Result<BTreeSet<u32>, NetworkError> {
        let routes = self.router.netlink().routes()?;
        Ok(routes
            .iter()
            .filter(|r| r.header.destination_prefix_length == 0)
            .filter(|r| {
                let table = r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Table(t) => Some(*t),
                    _ => None,
                });
                table.unwrap_or(u32::from(r.header.table)) == 254
            })
            .filter_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(index) => Some(*index),
                    _ => None,
                })
            })
            .collect())
    }
}

/// Removes every rule and route of ours and the nft table (the uninstall); one line per
/// object removed.
pub fn remove_all() -> Result<Vec<String>, NetworkError> {
    let mut removed = PolicyRouter::open()?.remove_all()?;
    if node_netfilter::remove()? {
        removed.push(format!("nft table {}", node_netfilter::TABLE));
    }
    Ok(removed)
}
