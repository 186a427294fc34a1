//! The node's IP pool as the agent hands it out: every pool IP with the ENI,
//! MAC, subnet CIDR and gateway a pod on it needs, plus the release marks.
//!
//! In production the pool comes from the node's `ENINode` (`spec.pool`,
//! `status.enis`, `status.release`): the operator writes each ENI's subnet CIDR
//! and gateway into `status.enis`; a `--subnet` flag overrides them for its subnet.
//! Standalone and in tests it comes from a JSON pool file of the same shape.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use eni_ipam_api::{CapacityMode, ENINode, EniStatus, PoolEntry, ReleaseState, advertised_ips};
use serde::{Deserialize, Serialize};

/// One IP the agent may give a pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolIp {
    /// The ENI the IP is assigned to.
    pub eni: String,
    /// That ENI's MAC address (empty when not known yet).
    #[serde(default)]
    pub mac: String,
    /// The ENI subnet's CIDR (`10.0.32.0/19`).
    pub subnet_cidr: String,
    /// The subnet's gateway address.
    pub gateway: String,
}

/// A snapshot of the pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePool {
    /// IPv4 address -> where it lives.
    pub ips: BTreeMap<String, PoolIp>,
    /// IPs the operator asked to release (`marked`); the agent stops handing them out.
    #[serde(default)]
    pub marked_for_release: BTreeSet<String>,
    /// Pod IPs the node advertises (see [`CapacityRule`]); 0 = the pool size.
    #[serde(default)]
    pub capacity: u32,
}

/// How the agent counts the capacity it reports: `--capacity-mode`, or `--capacity` when given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapacityRule {
    /// What the capacity follows when no fixed number is given.
    pub mode: CapacityMode,
    /// A fixed number of pod IPs (`--capacity`), capped by maxAllocate; 0 = none.
    pub fixed: u32,
}

impl CapacityRule {
    /// The capacity of a node whose pool holds `pool` IPs, by the ENINode's `status.ipLimit`,
    /// `status.shortfall` and maxAllocate (0: none).
    pub fn capacity(&self, node: &ENINode, pool: u32, max_allocate: u32) -> u32 {
        let status = node.status.as_ref();
        let max_allocate = Some(max_allocate);
        if self.fixed > 0 {
            // An explicit number stands for the instance's limit; the operator's shortfall still lowers it.
            let obtainable = status.and_then(|s| s.shortfall.as_ref()).map(|s| s.obtainable);
            return advertised_ips(
                Some(self.fixed),
                obtainable,
                pool,
                max_allocate,
                CapacityMode::InstanceLimit,
            );
        }
        let ip_limit = status.and_then(|s| s.ip_limit);
        let obtainable = status.and_then(|s| s.shortfall.as_ref()).map(|s| s.obtainable);
        advertised_ips(ip_limit, obtainable, pool, max_allocate, self.mode)
    }
}

impl PoolIp {
    /// The gateway pods on this IP route through, or why it is not known (both the datapath
    /// endpoint and the policy route need it).
    pub fn gateway_addr(&self) -> Result<std::net::Ipv4Addr, String> {
        self.gateway.parse().map_err(|_| {
            format!(
                "ENI {}: the gateway of subnet {} is not known: the ENINode's status.enis gives no \
                 subnetCidr/gateway for it (an operator older than this agent, or the subnet not listed \
                 yet); upgrade the operator or give --subnet SUBNET_ID=CIDR[,GATEWAY]",
                self.eni, self.subnet_cidr
            )
        })
    }
}

#[cfg(test)]
impl NodePool {
    /// A test pool: `n` IPs, 10.0.0.11 upwards, all on one ENI (eni-1) of 10.0.0.0/24.
    pub(crate) fn on_one_eni(n: u8) -> Self {
        let entry = PoolIp {
            eni: "eni-1".into(),
            mac: "0a:00:00:00:00:01".into(),
            subnet_cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
        };
        NodePool {
            ips: (1..=n).map(|i| (format!("10.0.0.{}", 10 + i), entry.clone())).collect(),
            ..Default::default()
        }
    }
}

/// Subnet id -> (CIDR, gateway), from `--subnet` flags: overrides of what the ENINode says.
pub type SubnetMap = BTreeMap<String, (String, String)>;

/// Why a pool file or a `--subnet` flag could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The pool file could not be read.
    #[error("cannot read pool file {path}: {source}; check --pool-file")]
    Read { path: String, source: std::io::Error },
    /// The pool file is not the expected JSON.
    #[error(
        "pool file {path} is not a valid pool ({source}); expected {{\"ips\": {{\"10.0.0.5\": {{\"eni\", \"subnetCidr\", \"gateway\"}}}}}}"
    )]
    Parse { path: String, source: serde_json::Error },
    /// A `--subnet` value is malformed.
    #[error(
        "--subnet {0:?} is not SUBNET_ID=CIDR[,GATEWAY] (e.g. subnet-1=10.0.32.0/19 or vsw-1=10.0.0.0/24,10.0.0.253)"
    )]
    SubnetFlag(String),
}

impl NodePool {
    /// Reads a pool file.
    pub fn from_file(path: &Path) -> Result<Self, PoolError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| PoolError::Read { path: path.display().to_string(), source })?;
        serde_json::from_str(&text)
            .map_err(|source| PoolError::Parse { path: path.display().to_string(), source })
    }

    /// The pool of an `ENINode`: `spec.pool` joined with `status.enis` (MACs, subnet CIDRs and
    /// gateways) and the `--subnet` overrides (see [`subnet_of`]).
    /// `capacity` is what `rule` makes of the ENINode's `status.ipLimit` and `status.shortfall`
    /// and the node's maxAllocate (the operator's `status.effectiveIpam`, else the ENINode's own
    /// `spec.ipam`).
    ///
    /// A pool the operator built for another instance than the ENINode's (the node name came
    /// back on a new VM and was adopted; the operator has not rebuilt the pool yet) is served
    /// empty: its IPs live on the old VM's ENIs.
    pub fn from_eninode(node: &ENINode, subnets: &SubnetMap, rule: CapacityRule) -> Self {
        let status = node.status.clone().unwrap_or_default();
        let built_for_us =
            node.spec.pool_instance_id.as_ref().is_none_or(|built| built == &node.spec.instance_id);
        let ips: BTreeMap<String, PoolIp> = node
            .spec
            .pool
            .iter()
            .filter(|_| built_for_us)
            .map(|(ip, entry)| {
                let eni = status.enis.get(entry.eni.as_str());
                let mac = eni.map(|e| e.mac.clone()).unwrap_or_default();
                let (subnet_cidr, gateway) = subnet_of(ip, entry, eni, subnets);
                (ip.clone(), PoolIp { eni: entry.eni.to_string(), mac, subnet_cidr, gateway })
            })
            .collect();
        let marked_for_release = status
            .release
            .iter()
            .filter(|(_, state)| {
                matches!(state, ReleaseState::Marked | ReleaseState::Ready | ReleaseState::Released)
            })
            .map(|(ip, _)| ip.clone())
            .collect();
        // maxAllocate caps what the operator will ever put on this node.
        let max_allocate = status
            .effective_ipam
            .as_ref()
            .map(|e| e.max_allocate)
            .or(node.spec.ipam.max_allocate)
            .unwrap_or(0);
        let capacity = rule.capacity(node, ips.len() as u32, max_allocate);
        Self { ips, marked_for_release, capacity }
    }

    /// Writes the pool atomically (temp file, fsync, rename): the cache a restarted agent serves
    /// from until the apiserver answers.
    pub fn save_cache(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self).expect("a pool always serializes"))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// What healthz reports as `capacity`: never below what the pool already holds.
    pub fn reachable_capacity(&self) -> u32 {
        self.capacity.max(self.ips.len() as u32)
    }
}

/// The subnet CIDR and gateway a pod on pool IP `ip` gets, first found wins:
/// 1. a `--subnet` flag for the IP's subnet (an explicit override, e.g. a gateway the cloud's
///    rule does not give);
/// 2. what the operator wrote for the IP's ENI in `status.enis` (`subnetCidr`, `gateway`);
/// 3. neither (an ENINode written by an older operator, or a subnet not listed yet): the IP
///    as /32 with no gateway, so the pod gets its address but no datapath endpoint or policy route.
pub fn subnet_of(
    ip: &str,
    entry: &PoolEntry,
    eni: Option<&EniStatus>,
    overrides: &SubnetMap,
) -> (String, String) {
    if let Some(flag) = overrides.get(entry.subnet.as_str()) {
        return flag.clone();
    }
    match eni {
        Some(eni) if !eni.subnet_cidr.is_empty() => (eni.subnet_cidr.clone(), eni.gateway.clone()),
        _ => (format!("{ip}/32"), String::new()),
    }
}

/// Parses one `--subnet SUBNET_ID=CIDR[,GATEWAY]`; the gateway defaults to the first host (AWS).
pub fn parse_subnet_flag(flag: &str) -> Result<(String, (String, String)), PoolError> {
    let bad = || PoolError::SubnetFlag(flag.to_owned());
    let (id, rest) = flag.split_once('=').ok_or_else(bad)?;
    let (cidr, gateway) = match rest.split_once(',') {
        Some((cidr, gw)) => (cidr, Some(gw)),
        None => (rest, None),
    };
    let (net, prefix) = cidr.split_once('/').ok_or_else(bad)?;
    let net: std::net::Ipv4Addr = net.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if id.is_empty() || prefix > 32 {
        return Err(bad());
    }
    let gateway = match gateway {
        Some(gw) => gw.parse::<std::net::Ipv4Addr>().map_err(|_| bad())?.to_string(),
        None => std::net::Ipv4Addr::from(u32::from(net).wrapping_add(1)).to_string(),
    };
    Ok((id.to_owned(), (cidr.to_owned(), gateway)))
}

#[cfg(test)]
mod tests {
    use eni_ipam_api::{ENINodeSpec, ENINodeStatus};

    use super::*;

    #[test]
    fn cache_round_trips_in_the_pool_file_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool-cache.json");
        let entry = PoolIp {
            eni: "eni-1".into(),
            mac: "0a:00:00:00:00:01".into(),
            subnet_cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.1".into(),
        };
        let pool = NodePool {
            ips: [("10.0.0.5".to_owned(), entry)].into(),
            marked_for_release: ["10.0.0.5".to_owned()].into(),
            capacity: 9,
        };
        pool.save_cache(&path).unwrap();
        assert_eq!(NodePool::from_file(&path).unwrap(), pool);
    }

    #[test]
    fn subnet_flags() {
        type Want = Option<(&'static str, &'static str, &'static str)>;
        let cases: &[(&str, Want)] = &[
            ("subnet-1=10.0.32.0/19", Some(("subnet-1", "10.0.32.0/19", "10.0.32.1"))),
            ("vsw-1=10.0.0.0/24,10.0.0.253", Some(("vsw-1", "10.0.0.0/24", "10.0.0.253"))),
            ("subnet-1", None),
            ("=10.0.0.0/24", None),
            ("s=10.0.0.0", None),
            ("s=10.0.0.0/33", None),
            ("s=10.0.0.0/24,gw", None),
        ];
        for (flag, want) in cases {
            let got = parse_subnet_flag(flag).ok();
            let want = want.map(|(id, cidr, gw)| (id.to_owned(), (cidr.to_owned(), gw.to_owned())));
            assert_eq!(got, want, "{flag}");
        }
    }

    #[test]
    fn subnet_comes_from_the_flag_then_the_eninode_then_a_host_route() {
        let entry = PoolEntry { eni: "eni-1".into(), subnet: "vsw-1".into() };
        let written = EniStatus {
            subnet: "vsw-1".into(),
            subnet_cidr: "10.0.0.0/24".into(),
            gateway: "10.0.0.253".into(),
            ..Default::default()
        };
        let older = EniStatus { subnet: "vsw-1".into(), ..Default::default() };
        let flag = SubnetMap::from([parse_subnet_flag("vsw-1=10.0.0.0/24,10.0.0.254").unwrap()]);
        let other_flag = SubnetMap::from([parse_subnet_flag("vsw-2=10.0.1.0/24").unwrap()]);
        let none = SubnetMap::new();
        // (case, the ENI's status entry, --subnet flags, expected (CIDR, gateway))
        type Case<'a> = (&'a str, Option<&'a EniStatus>, &'a SubnetMap, (&'a str, &'a str));
        let table: [Case; 6] = [
            ("operator wrote it", Some(&written), &none, ("10.0.0.0/24", "10.0.0.253")),
            ("--subnet overrides it", Some(&written), &flag, ("10.0.0.0/24", "10.0.0.254")),
            ("another subnet's --subnet", Some(&written), &other_flag, ("10.0.0.0/24", "10.0.0.253")),
            ("older operator, --subnet given", Some(&older), &flag, ("10.0.0.0/24", "10.0.0.254")),
            ("older operator, no --subnet", Some(&older), &none, ("10.0.0.7/32", "")),
            ("ENI not in status yet", None, &none, ("10.0.0.7/32", "")),
        ];
        for (case, eni, overrides, (cidr, gateway)) in table {
            let got = subnet_of("10.0.0.7", &entry, eni, overrides);
            assert_eq!((got.0.as_str(), got.1.as_str()), (cidr, gateway), "{case}");
        }
    }

    #[test]
    fn a_pool_built_for_another_instance_is_not_served() {
        let mut spec = ENINodeSpec { instance_id: "i-new".into(), ..ENINodeSpec::default() };
        spec.pool.insert("10.0.0.5".into(), PoolEntry { eni: "eni-old".into(), subnet: "subnet-1".into() });
        // (the instance the operator built the pool for, IPs served, the case)
        let rows = [
            (Some("i-old"), 0, "the name came back on a new VM: the old VM's IPs are not handed out"),
            (Some("i-new"), 1, "built for this instance: served"),
            (None, 1, "written by an operator that did not record it: served as before"),
        ];
        for (built_for, served, case) in rows {
            spec.pool_instance_id = built_for.map(Into::into);
            let pool = NodePool::from_eninode(
                &ENINode::new("n1", spec.clone()),
                &SubnetMap::new(),
                CapacityRule::default(),
            );
            assert_eq!(pool.ips.len(), served, "{case}");
        }
    }

    #[test]
    fn pool_from_eninode_joins_macs_subnets_and_marks() {
        let mut spec = ENINodeSpec::default();
        spec.pool.insert("10.0.0.5".into(), PoolEntry { eni: "eni-1".into(), subnet: "subnet-1".into() });
        spec.pool.insert("10.0.0.6".into(), PoolEntry { eni: "eni-1".into(), subnet: "subnet-9".into() });
        let mut node = ENINode::new("n1", spec);
        let mut status = ENINodeStatus::default();
        status.enis.insert(
            "eni-1".into(),
            EniStatus {
                mac: "0a:00:00:00:00:01".into(),
                device_index: 1,
                subnet: "subnet-1".into(),
                ..Default::default()
            },
        );
        node.spec
            .pool
            .insert("10.0.1.5".into(), PoolEntry { eni: "eni-2".into(), subnet: "subnet-2".into() });
        status.enis.insert(
            "eni-2".into(),
            EniStatus {
                mac: "0a:00:00:00:00:02".into(),
                device_index: 2,
                subnet: "subnet-2".into(),
                subnet_cidr: "10.0.1.0/24".into(),
                gateway: "10.0.1.1".into(),
                ..Default::default()
            },
        );
        status.release.insert("10.0.0.6".into(), ReleaseState::Marked);
        status.release.insert("10.0.0.5".into(), ReleaseState::DoNotRelease);
        node.status = Some(status);
        let subnets = SubnetMap::from([parse_subnet_flag("subnet-1=10.0.0.0/24").unwrap()]);
        let pool = NodePool::from_eninode(&node, &subnets, CapacityRule::default());
        assert_eq!(pool.ips["10.0.0.5"].mac, "0a:00:00:00:00:01");
        assert_eq!(pool.ips["10.0.0.5"].gateway, "10.0.0.1");
        assert_eq!(pool.ips["10.0.0.6"].subnet_cidr, "10.0.0.6/32");
        assert_eq!(
            (pool.ips["10.0.1.5"].subnet_cidr.as_str(), pool.ips["10.0.1.5"].gateway.as_str()),
            ("10.0.1.0/24", "10.0.1.1")
        );
        assert_eq!(pool.marked_for_release, BTreeSet::from(["10.0.0.6".to_owned()]));
        assert_eq!(pool.reachable_capacity(), 3, "no ipLimit published, no --capacity: the pool size");
        let fixed = CapacityRule { fixed: 29, ..CapacityRule::default() };
        assert_eq!(NodePool::from_eninode(&node, &subnets, fixed).reachable_capacity(), 29);
        node.spec.ipam.max_allocate = Some(20);
        assert_eq!(
            NodePool::from_eninode(&node, &subnets, fixed).reachable_capacity(),
            20,
            "maxAllocate caps"
        );
        node.spec.ipam.max_allocate = Some(1);
        assert_eq!(
            NodePool::from_eninode(&node, &subnets, fixed).reachable_capacity(),
            3,
            "never below the pool"
        );
        // The operator's effective knobs (cluster-wide, node pool) win over a stale spec value.
        node.status.as_mut().unwrap().effective_ipam =
            Some(eni_ipam_api::EffectiveIpam { max_allocate: 12, ..Default::default() });
        assert_eq!(
            NodePool::from_eninode(&node, &subnets, fixed).reachable_capacity(),
            12,
            "effective maxAllocate"
        );
    }

    #[test]
    fn capacity_follows_the_rule_and_the_operators_numbers() {
        let mut spec = ENINodeSpec::default();
        for i in 0..3 {
            spec.pool
                .insert(format!("10.0.0.{i}"), PoolEntry { eni: "eni-1".into(), subnet: "subnet-1".into() });
        }
        let shortfall = |obtainable| eni_ipam_api::IpShortfall {
            reason: "SubnetsExhausted".into(),
            obtainable,
            since: String::new(),
        };
        let limit = CapacityRule::default();
        let pool = CapacityRule { mode: CapacityMode::Pool, fixed: 0 };
        let fixed = CapacityRule { fixed: 20, ..CapacityRule::default() };
        // (the rule, status.ipLimit, status.shortfall, maxAllocate, capacity, the case)
        type Row = (CapacityRule, Option<u32>, Option<u32>, u32, u32, &'static str);
        let rows: [Row; 8] = [
            (limit, Some(27), None, 0, 27, "the instance's limit, not the pool of 3"),
            (limit, Some(27), Some(5), 0, 5, "a shortfall lowers it to what is obtainable"),
            (limit, Some(27), None, 10, 10, "maxAllocate caps it"),
            (limit, None, None, 0, 3, "an operator that publishes no ipLimit: the pool"),
            (pool, Some(27), None, 0, 3, "--capacity-mode pool: the pool"),
            (pool, Some(27), None, 10, 10, "--capacity-mode pool: maxAllocate when set"),
            (fixed, Some(27), None, 0, 20, "--capacity wins over ipLimit"),
            (fixed, Some(27), Some(8), 0, 8, "...and a shortfall still lowers it"),
        ];
        for (rule, ip_limit, obtainable, max_allocate, want, case) in rows {
            let mut node = ENINode::new("n1", spec.clone());
            node.spec.ipam.max_allocate = Some(max_allocate);
            node.status =
                Some(ENINodeStatus { ip_limit, shortfall: obtainable.map(shortfall), ..Default::default() });
            let got = NodePool::from_eninode(&node, &SubnetMap::new(), rule).reachable_capacity();
            assert_eq!(got, want, "{case}");
        }
    }
}
