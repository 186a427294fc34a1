//! The eBPF datapath's host routes: destinations a pod reaches through the node's stack
//! (where kube-proxy's rules and conntrack are) instead of straight out of its ENI. They are
//! the cluster's service ranges, each IPv4 address of the node as a /32, and the
//! `--host-route` extras (externalIPs, load-balancer IPs), refreshed while the agent runs.
//!
//! Service ranges come from the ServiceCIDR API (`networking.k8s.io/v1`, GA in Kubernetes
//! 1.33) where the cluster serves it, and from `--service-cidr` (chart value
//! `agent.datapath.serviceCIDRs`); with neither the agent refuses to run the eBPF datapath,
//! since every Service packet would leave the node un-NATed.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use eni_ipam_datapath::Ipv4Prefix;
use k8s_openapi::api::networking::v1::ServiceCIDR;
use kube::Api;
use kube::api::ListParams;

use crate::endpoints::Endpoints;
use crate::netlink::Netlink;

/// What the ServiceCIDR API answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRanges {
    /// No cluster to ask (a pool file).
    NoCluster,
    /// The apiserver does not serve the API (before 1.33, or the kind is disabled).
    NotServed,
    /// The apiserver did not answer; try again.
    Unreachable,
    /// The IPv4 ranges of every ServiceCIDR.
    Listed(Vec<Ipv4Prefix>),
}

/// The error when neither source gives a range.
pub const MISSING: &str = "the eBPF datapath needs the cluster's service ranges and none is known: \
     the cluster serves no ServiceCIDR (networking.k8s.io/v1, Kubernetes 1.33+) or it lists none; set \
     --service-cidr CIDR (env ENI_IPAM_SERVICE_CIDRS, chart value agent.datapath.serviceCIDRs) to the \
     apiserver's --service-cluster-ip-range, or run with --datapath=none";

/// The service ranges to use: the flags' and the API's together. `Ok(None)`: not known yet
/// (the apiserver did not answer and no flag gives one); `Err`: known to be missing.
pub fn service_ranges(flags: &[Ipv4Prefix], api: &ApiRanges) -> Result<Option<Vec<Ipv4Prefix>>, String> {
    let mut ranges: BTreeSet<Ipv4Prefix> = flags.iter().copied().collect();
    if let ApiRanges::Listed(listed) = api {
        ranges.extend(listed.iter().copied());
    }
    if !ranges.is_empty() {
        return Ok(Some(ranges.into_iter().collect()));
    }
    match api {
        ApiRanges::Unreachable => Ok(None),
        _ => Err(MISSING.to_owned()),
    }
}

/// Service ranges, the node's addresses as /32 and the extras: sorted, without duplicates.
pub fn host_routes(
    services: &[Ipv4Prefix],
    node_addresses: &BTreeSet<Ipv4Addr>,
    extras: &[Ipv4Prefix],
) -> Vec<Ipv4Prefix> {
    let mut all: BTreeSet<Ipv4Prefix> = services.iter().chain(extras).copied().collect();
    all.extend(node_addresses.iter().filter_map(|ip| Ipv4Prefix::new(*ip, 32)));
    all.into_iter().collect()
}

/// Parses ServiceCIDR `spec.cidrs`: the IPv4 ones (IPv6 ranges are not the datapath's).
pub fn ipv4_ranges<'a>(cidrs: impl IntoIterator<Item = &'a str>) -> Vec<Ipv4Prefix> {
    cidrs
        .into_iter()
        .filter_map(|cidr| {
            let (addr, len) = cidr.split_once('/')?;
            Ipv4Prefix::new(addr.parse().ok()?, len.parse().ok()?)
        })
        .collect()
}

/// Lists every ServiceCIDR, from the apiserver's watch cache (`resourceVersion=0`): every
/// node asks again every few seconds, which must not become quorum reads of etcd.
pub async fn list(client: Option<&kube::Client>) -> ApiRanges {
    let Some(client) = client else { return ApiRanges::NoCluster };
    let api: Api<ServiceCIDR> = Api::all(client.clone());
    let params = ListParams::default().match_any();
    match tokio::time::timeout(Duration::from_secs(5), api.list(&params)).await {
        Ok(Ok(list)) => ApiRanges::Listed(ipv4_ranges(
            list.items
                .iter()
                .flat_map(|s| s.spec.iter().flat_map(|spec| spec.cidrs.iter().flatten()))
                .map(String::as_str),
        )),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => ApiRanges::NotServed,
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot list ServiceCIDRs; retrying");
            ApiRanges::Unreachable
        }
        Err(_) => {
            tracing::warn!("listing ServiceCIDRs timed out; retrying");
            ApiRanges::Unreachable
        }
    }
}

/// The node's IPv4 addresses, over netlink.
pub async fn node_addresses() -> Result<BTreeSet<Ipv4Addr>, String> {
    tokio::task::spawn_blocking(|| {
        let mut netlink = Netlink::open().map_err(|e| e.to_string())?;
        let addresses = netlink.ipv4_addresses().map_err(|e| e.to_string())?;
        Ok(addresses.into_iter().map(|(_, ip)| ip).collect())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Keeps the datapath's host routes current.
pub struct HostRoutes {
    /// `--service-cidr`.
    pub flags: Vec<Ipv4Prefix>,
    /// `--host-route`.
    pub extras: Vec<Ipv4Prefix>,
    /// The cluster, when there is one.
    pub client: Option<kube::Client>,
    /// What was last written.
    written: Option<Vec<Ipv4Prefix>>,
}

impl HostRoutes {
    /// Host routes from these flags and this cluster.
    pub fn new(flags: Vec<Ipv4Prefix>, extras: Vec<Ipv4Prefix>, client: Option<kube::Client>) -> Self {
        Self { flags, extras, client, written: None }
    }

    /// Reads every source and writes the host routes when they changed. `Err` when the
    /// service ranges are known to be missing.
    pub async fn refresh(&mut self, endpoints: &Arc<Endpoints>) -> Result<(), String> {
        let api = list(self.client.as_ref()).await;
        let services = match service_ranges(&self.flags, &api)? {
            Some(services) => services,
            None if self.written.is_some() => return Ok(()),
            None => Vec::new(),
        };
        let addresses = node_addresses().await?;
        let routes = host_routes(&services, &addresses, &self.extras);
        if self.written.as_ref() == Some(&routes) {
            return Ok(());
        }
        let endpoints = endpoints.clone();
        let wanted = routes.clone();
        tokio::task::spawn_blocking(move || endpoints.set_host_routes(&wanted))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("cannot set the datapath's host routes: {e}"))?;
        let shown: Vec<String> = routes.iter().map(|p| format!("{}/{}", p.addr, p.len)).collect();
        tracing::info!(host_routes = ?shown, "datapath host routes set");
        self.written = Some(routes);
        Ok(())
    }

    /// Refreshes every `interval` until the service ranges turn out missing.
    pub async fn run(mut self, endpoints: Arc<Endpoints>, interval: Duration) -> Result<(), String> {
        loop {
            tokio::time::sleep(interval).await;
            self.refresh(&endpoints).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> Ipv4Prefix {
        ipv4_ranges([text])[0]
    }

    #[test]
    fn service_ranges_come_from_the_flags_and_the_api_and_are_required() {
        let flag = prefix("10.100.0.0/16");
        let listed = prefix("172.20.0.0/16");
        type Want = Result<Option<Vec<Ipv4Prefix>>, ()>;
        let cases: Vec<(&str, Vec<Ipv4Prefix>, ApiRanges, Want)> = vec![
            ("flag, no cluster", vec![flag], ApiRanges::NoCluster, Ok(Some(vec![flag]))),
            ("API only", vec![], ApiRanges::Listed(vec![listed]), Ok(Some(vec![listed]))),
            ("both", vec![flag], ApiRanges::Listed(vec![listed, flag]), Ok(Some(vec![flag, listed]))),
            ("flag, API not served", vec![flag], ApiRanges::NotServed, Ok(Some(vec![flag]))),
            ("flag, apiserver down", vec![flag], ApiRanges::Unreachable, Ok(Some(vec![flag]))),
            ("nothing yet: apiserver down", vec![], ApiRanges::Unreachable, Ok(None)),
            ("neither: not served", vec![], ApiRanges::NotServed, Err(())),
            ("neither: served but empty", vec![], ApiRanges::Listed(vec![]), Err(())),
            ("neither: no cluster", vec![], ApiRanges::NoCluster, Err(())),
        ];
        for (name, flags, api, want) in cases {
            let got = service_ranges(&flags, &api);
            assert_eq!(got.clone().map_err(|_| ()), want, "{name}");
            if let Err(message) = got {
                assert!(
                    message.contains("--service-cidr") && message.contains("agent.datapath.serviceCIDRs"),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn host_routes_join_services_node_addresses_and_extras() {
        let services = [prefix("10.100.0.0/16")];
        let addresses = BTreeSet::from([Ipv4Addr::new(10, 0, 0, 7), Ipv4Addr::new(127, 0, 0, 1)]);
        let extras = [prefix("203.0.113.0/24"), prefix("10.100.0.0/16")];
        let routes: Vec<String> = host_routes(&services, &addresses, &extras)
            .iter()
            .map(|p| format!("{}/{}", p.addr, p.len))
            .collect();
        assert_eq!(routes, ["10.0.0.7/32", "10.100.0.0/16", "127.0.0.1/32", "203.0.113.0/24"]);
        assert_eq!(ipv4_ranges(["10.96.0.0/12", "fd00::/108", "bad"]), [prefix("10.96.0.0/12")]);
    }
}
