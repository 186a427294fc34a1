//! Pure allocation decisions: which IP a container gets, what to free on
//! restart, and how to answer the operator's release marks. No I/O here; the
//! [`crate::ipam`] service applies these decisions and persists them.

use std::collections::{BTreeMap, BTreeSet};

use eni_ipam_api::ReleaseState;
use serde::{Deserialize, Serialize};

use crate::pool::NodePool;

/// What identifies an allocation: the CNI container id and the interface in the pod.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationKey {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_IFNAME`.
    pub if_name: String,
}

impl AllocationKey {
    /// Builds a key.
    pub fn new(container_id: impl Into<String>, if_name: impl Into<String>) -> Self {
        Self { container_id: container_id.into(), if_name: if_name.into() }
    }
}

impl std::fmt::Display for AllocationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "container {} interface {}", self.container_id, self.if_name)
    }
}

/// One IP held by one container interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Who holds it.
    #[serde(flatten)]
    pub key: AllocationKey,
    /// The IPv4 address.
    pub ip: String,
    /// The pod's namespace, when the runtime passed it.
    #[serde(default)]
    pub pod_namespace: String,
    /// The pod's name, when the runtime passed it.
    #[serde(default)]
    pub pod_name: String,
    /// The CNI network (conflist `name`) the IP was allocated for; empty in allocations made
    /// before the plugin sent it (CNI GC leaves those to the lost-DEL reconciler).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network: String,
    /// When it was made (Unix seconds; 0 in allocations made before it was recorded): of two
    /// sandboxes of one pod, the older one's DEL was lost.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allocated_at: u64,
    /// The pod's host veth, once the CNI plugin registered it (main mode only). State files
    /// written before the datapath have none; the agent then leaves the pod to kernel routing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<PodEndpoint>,
}

/// The pod's side of its datapath endpoint, as the CNI plugin reported it: enough to find
/// the veth again after a restart and to fill the datapath's endpoint map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodEndpoint {
    /// Host end of the pod's veth (its name is stable, its index is checked against it).
    pub host_veth: String,
    /// The host end's interface index when the plugin made it.
    pub host_veth_ifindex: u32,
    /// MAC of the pod's interface.
    pub pod_mac: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Allocation {
    /// `namespace/pod` for `status.used`, or the container id when the pod is not known.
    pub fn owner(&self) -> String {
        if self.pod_name.is_empty() {
            self.key.container_id.clone()
        } else {
            format!("{}/{}", self.pod_namespace, self.pod_name)
        }
    }
}

/// Why a container cannot get an IP, in words for the pod's events.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    /// The operator has not put any IP in the pool yet.
    #[error(
        "the node's pool is empty: the operator has not attached any IP to this node yet; check `kubectl get eninode <node>` conditions"
    )]
    EmptyPool,
    /// Every pool IP is held, on its way out or cooling down.
    #[error(
        "all {pool} pool IPs are taken ({held} held by pods, {marked} marked for release by the operator, {cooling} freed from lost pods and cooling down); the operator grows the pool up to the instance limit, check the ENINode's PoolReady condition"
    )]
    AllTaken {
        /// IPs in the pool.
        pool: usize,
        /// IPs held by pods.
        held: usize,
        /// Free IPs the operator is releasing.
        marked: usize,
        /// Free IPs taken back from pods that went away without a DEL, not handed out again
        /// until their cooldown ends (the old container may still use the address).
        cooling: usize,
    },
}

/// The answer for one allocate request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The container interface already holds this IP (a retried ADD): answer it again.
    Existing(String),
    /// Give it this free IP.
    Take(String),
    /// Nothing to give.
    Exhausted(Exhausted),
}

/// Decides which IP `key` gets. Free = in the pool, not held, not marked for release, not
/// cooling down (`cooling`: IPs freed from lost pods whose cooldown has not ended).
/// Among free IPs, the one released longest ago (never released first, then by address)
/// so a just-freed address is not handed to the next pod at once.
pub fn decide(
    pool: &NodePool,
    held: &BTreeMap<AllocationKey, Allocation>,
    released_at: &BTreeMap<String, u64>,
    cooling: &BTreeSet<String>,
    key: &AllocationKey,
) -> Decision {
    if let Some(existing) = held.get(key) {
        return Decision::Existing(existing.ip.clone());
    }
    let held_ips: BTreeSet<&str> = held.values().map(|a| a.ip.as_str()).collect();
    let free = pool
        .ips
        .keys()
        .filter(|ip| {
            !held_ips.contains(ip.as_str())
                && !pool.marked_for_release.contains(*ip)
                && !cooling.contains(*ip)
        })
        .min_by_key(|ip| (released_at.get(*ip).copied(), ip_order(ip)));
    match free {
        Some(ip) => Decision::Take(ip.clone()),
        None if pool.ips.is_empty() => Decision::Exhausted(Exhausted::EmptyPool),
        None => Decision::Exhausted(Exhausted::AllTaken {
            pool: pool.ips.len(),
            held: pool.ips.keys().filter(|ip| held_ips.contains(ip.as_str())).count(),
            marked: pool
                .marked_for_release
                .iter()
                .filter(|ip| pool.ips.contains_key(*ip) && !held_ips.contains(ip.as_str()))
                .count(),
            cooling: cooling
                .iter()
                .filter(|ip| {
                    pool.ips.contains_key(*ip)
                        && !held_ips.contains(ip.as_str())
                        && !pool.marked_for_release.contains(*ip)
                })
                .count(),
        }),
    }
}

fn ip_order(ip: &str) -> u32 {
    ip.parse::<std::net::Ipv4Addr>().map(u32::from).unwrap_or(u32::MAX)
}

/// What a restart must fix in the reloaded allocations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reconciliation {
    /// Containers the runtime no longer runs: free their IPs.
    pub gone: Vec<AllocationKey>,
    /// Held IPs no longer in the pool: kept (the pod still uses the address), reported.
    pub outside_pool: Vec<AllocationKey>,
}

/// Compares reloaded allocations with the pool and the live containers (`None` = no list
/// source configured: nothing is freed).
pub fn reconcile(
    pool: &NodePool,
    held: &BTreeMap<AllocationKey, Allocation>,
    live_containers: Option<&BTreeSet<String>>,
) -> Reconciliation {
    let mut out = Reconciliation::default();
    for (key, allocation) in held {
        if live_containers.is_some_and(|live| !live.contains(&key.container_id)) {
            out.gone.push(key.clone());
        } else if !pool.ips.contains_key(&allocation.ip) {
            out.outside_pool.push(key.clone());
        }
    }
    out
}

/// The agent's answers to the operator's release marks: `do-not-release` for an IP a pod
/// holds (it was handed out before the mark arrived), `ready` for a free one. Only entries
/// that change are returned; other states are the operator's.
pub fn release_answers(
    release: &BTreeMap<String, ReleaseState>,
    held_ips: &BTreeSet<String>,
) -> BTreeMap<String, ReleaseState> {
    release
        .iter()
        .filter(|(_, state)| **state == ReleaseState::Marked)
        .map(|(ip, _)| {
            let answer = if held_ips.contains(ip) { ReleaseState::DoNotRelease } else { ReleaseState::Ready };
            (ip.clone(), answer)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolIp;

    fn pool(ips: &[&str], marked: &[&str]) -> NodePool {
        NodePool {
            ips: ips
                .iter()
                .map(|ip| {
                    let entry = PoolIp {
                        eni: "eni-1".into(),
                        mac: String::new(),
                        subnet_cidr: "10.0.0.0/24".into(),
                        gateway: "10.0.0.1".into(),
                    };
                    (ip.to_string(), entry)
                })
                .collect(),
            marked_for_release: marked.iter().map(|s| s.to_string()).collect(),
            capacity: 0,
        }
    }

    fn held(pairs: &[(&str, &str)]) -> BTreeMap<AllocationKey, Allocation> {
        pairs
            .iter()
            .map(|(container, ip)| {
                let key = AllocationKey::new(*container, "eth0");
                let allocation = Allocation {
                    key: key.clone(),
                    ip: ip.to_string(),
                    pod_namespace: String::new(),
                    pod_name: String::new(),
                    network: String::new(),
                    allocated_at: 0,
                    endpoint: None,
                };
                (key, allocation)
            })
            .collect()
    }

    #[test]
    fn allocation_decisions() {
        struct Case {
            what: &'static str,
            pool: NodePool,
            held: &'static [(&'static str, &'static str)],
            released_at: &'static [(&'static str, u64)],
            cooling: &'static [&'static str],
            container: &'static str,
            want: Decision,
        }
        let cases = [
            Case {
                what: "first pod gets the lowest address (numeric, not string order)",
                pool: pool(&["10.0.0.10", "10.0.0.9"], &[]),
                held: &[],
                released_at: &[],
                cooling: &[],
                container: "a",
                want: Decision::Take("10.0.0.9".into()),
            },
            Case {
                what: "a retried ADD gets the same IP",
                pool: pool(&["10.0.0.9", "10.0.0.10"], &[]),
                held: &[("a", "10.0.0.10")],
                released_at: &[],
                cooling: &[],
                container: "a",
                want: Decision::Existing("10.0.0.10".into()),
            },
            Case {
                what: "held IPs are skipped",
                pool: pool(&["10.0.0.9", "10.0.0.10"], &[]),
                held: &[("a", "10.0.0.9")],
                released_at: &[],
                cooling: &[],
                container: "b",
                want: Decision::Take("10.0.0.10".into()),
            },
            Case {
                what: "never-released IPs before just-released ones",
                pool: pool(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], &[]),
                held: &[],
                released_at: &[("10.0.0.1", 7), ("10.0.0.2", 3)],
                cooling: &[],
                container: "a",
                want: Decision::Take("10.0.0.3".into()),
            },
            Case {
                what: "among released IPs, the one released longest ago",
                pool: pool(&["10.0.0.1", "10.0.0.2"], &[]),
                held: &[],
                released_at: &[("10.0.0.1", 7), ("10.0.0.2", 3)],
                cooling: &[],
                container: "a",
                want: Decision::Take("10.0.0.2".into()),
            },
            Case {
                what: "IPs marked for release are not handed out",
                pool: pool(&["10.0.0.1", "10.0.0.2"], &["10.0.0.1"]),
                held: &[],
                released_at: &[],
                cooling: &[],
                container: "a",
                want: Decision::Take("10.0.0.2".into()),
            },
            Case {
                what: "empty pool says the operator has not filled it",
                pool: pool(&[], &[]),
                held: &[],
                released_at: &[],
                cooling: &[],
                container: "a",
                want: Decision::Exhausted(Exhausted::EmptyPool),
            },
            Case {
                what: "all held or marked: counts say why",
                pool: pool(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], &["10.0.0.3"]),
                held: &[("a", "10.0.0.1"), ("b", "10.0.0.2")],
                released_at: &[],
                cooling: &[],
                container: "c",
                want: Decision::Exhausted(Exhausted::AllTaken { pool: 3, held: 2, marked: 1, cooling: 0 }),
            },
            Case {
                what: "a held IP that left the pool does not count as pool usage",
                pool: pool(&["10.0.0.1"], &[]),
                held: &[("a", "10.0.0.1"), ("b", "10.0.0.99")],
                released_at: &[],
                cooling: &[],
                container: "c",
                want: Decision::Exhausted(Exhausted::AllTaken { pool: 1, held: 1, marked: 0, cooling: 0 }),
            },
            Case {
                what: "an IP freed from a lost pod is not handed out while it cools down",
                pool: pool(&["10.0.0.1", "10.0.0.2"], &[]),
                held: &[],
                released_at: &[("10.0.0.2", 3)],
                cooling: &["10.0.0.1"],
                container: "a",
                want: Decision::Take("10.0.0.2".into()),
            },
            Case {
                what: "only cooling IPs left: exhausted, and the count says so",
                pool: pool(&["10.0.0.1", "10.0.0.2", "10.0.0.3"], &["10.0.0.3"]),
                held: &[("a", "10.0.0.1")],
                released_at: &[],
                cooling: &["10.0.0.2", "10.0.0.3", "10.0.0.9"],
                container: "c",
                want: Decision::Exhausted(Exhausted::AllTaken { pool: 3, held: 1, marked: 1, cooling: 1 }),
            },
        ];
        for case in cases {
            let released: BTreeMap<String, u64> =
                case.released_at.iter().map(|(ip, at)| (ip.to_string(), *at)).collect();
            let cooling: BTreeSet<String> = case.cooling.iter().map(|ip| ip.to_string()).collect();
            let got = decide(
                &case.pool,
                &held(case.held),
                &released,
                &cooling,
                &AllocationKey::new(case.container, "eth0"),
            );
            assert_eq!(got, case.want, "{}", case.what);
        }
    }

    #[test]
    fn same_container_other_interface_is_another_allocation() {
        let pool = pool(&["10.0.0.1", "10.0.0.2"], &[]);
        let held = held(&[("a", "10.0.0.1")]);
        let got = decide(&pool, &held, &BTreeMap::new(), &BTreeSet::new(), &AllocationKey::new("a", "net1"));
        assert_eq!(got, Decision::Take("10.0.0.2".into()));
    }

    #[test]
    fn reconcile_frees_gone_containers_and_reports_ips_outside_the_pool() {
        let pool = pool(&["10.0.0.1", "10.0.0.2"], &[]);
        let held = held(&[("live", "10.0.0.1"), ("gone", "10.0.0.2"), ("moved", "10.0.0.50")]);
        let live: BTreeSet<String> = ["live", "moved"].iter().map(|s| s.to_string()).collect();
        let got = reconcile(&pool, &held, Some(&live));
        assert_eq!(got.gone, [AllocationKey::new("gone", "eth0")]);
        assert_eq!(got.outside_pool, [AllocationKey::new("moved", "eth0")]);
        let without_list = reconcile(&pool, &held, None);
        assert!(without_list.gone.is_empty(), "no list source: nothing may be freed");
    }

    #[test]
    fn release_handshake_answers() {
        let release: BTreeMap<String, ReleaseState> = [
            ("10.0.0.1", ReleaseState::Marked),
            ("10.0.0.2", ReleaseState::Marked),
            ("10.0.0.3", ReleaseState::Released),
            ("10.0.0.4", ReleaseState::Ready),
        ]
        .iter()
        .map(|(ip, s)| (ip.to_string(), *s))
        .collect();
        let held_ips: BTreeSet<String> = ["10.0.0.2".to_string()].into();
        let got = release_answers(&release, &held_ips);
        let want: BTreeMap<String, ReleaseState> = [
            ("10.0.0.1".to_string(), ReleaseState::Ready),
            ("10.0.0.2".to_string(), ReleaseState::DoNotRelease),
        ]
        .into();
        assert_eq!(got, want);
    }
}
