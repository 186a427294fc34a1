//! IPs of pods that went away without a CNI DEL (a runtime crash, a lost DEL): the agent
//! compares its allocations with the pods kubelet runs (kubelet's pod-resources `List`,
//! through the device plugin's client) and frees an IP once its pod has been missing from
//! every listing for a grace period; the freed IP then cools down before it is handed out
//! again. A listing that fails frees nothing and restarts every grace. The most common lost
//! DEL leaves the pod alive: the runtime restarted, kubelet made the pod a new sandbox, and
//! the old sandbox's DEL never came; of two allocations of one pod's interface on one
//! network, the older is then the lost one.
//!
//! [`decide`] is the pure rule; [`run`] polls kubelet and applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::allocator::{Allocation, AllocationKey};
use crate::endpoints::{EndpointError, Endpoints};
use crate::ipam::unix_now;
use crate::metrics::Metrics;

/// A pod as kubelet names it: (namespace, name).
pub type PodRef = (String, String);

/// The reconciler's settings.
#[derive(Clone, Debug)]
pub struct LostPodsConfig {
    /// kubelet's pod-resources socket.
    pub socket: PathBuf,
    /// How long a pod must be missing from every listing before its IP is freed.
    pub grace: Duration,
    /// How long a freed IP is not handed out again.
    pub cooldown: Duration,
    /// Bound on one `List` call.
    pub timeout: Duration,
}

impl LostPodsConfig {
    /// How often kubelet is asked: at least three listings fall within a grace, at most
    /// one every 10 s.
    pub fn interval(&self) -> Duration {
        (self.grace / 3).clamp(Duration::from_millis(100), Duration::from_secs(10))
    }
}

/// Which allocations to free now, given the pods kubelet runs (`live`) at `now`: those whose
/// pod, or whose place as the pod's newest sandbox on that interface and network, has been
/// missing for `grace`. `missing_since` remembers when each was first seen missing; it is
/// updated here. An allocation whose pod is unknown (the runtime passed no pod name) is
/// never freed: nothing can tell whether it still runs; nor is one as old as its pod's
/// newest (made in the same second, or before the time was recorded).
pub fn decide(
    allocations: &[Allocation],
    live: &BTreeSet<PodRef>,
    missing_since: &mut BTreeMap<AllocationKey, Instant>,
    now: Instant,
    grace: Duration,
) -> Vec<AllocationKey> {
    let held: BTreeSet<&AllocationKey> = allocations.iter().map(|a| &a.key).collect();
    missing_since.retain(|key, _| held.contains(key));
    let slot = |a: &Allocation| {
        (a.pod_namespace.clone(), a.pod_name.clone(), a.key.if_name.clone(), a.network.clone())
    };
    let mut newest: BTreeMap<(String, String, String, String), u64> = BTreeMap::new();
    for allocation in allocations {
        let at = newest.entry(slot(allocation)).or_default();
        *at = (*at).max(allocation.allocated_at);
    }
    let mut free = Vec::new();
    for allocation in allocations {
        let pod = (allocation.pod_namespace.clone(), allocation.pod_name.clone());
        let superseded = allocation.allocated_at < newest[&slot(allocation)];
        if allocation.pod_name.is_empty() || (live.contains(&pod) && !superseded) {
            missing_since.remove(&allocation.key);
            continue;
        }
        let since = *missing_since.entry(allocation.key.clone()).or_insert(now);
        if now.duration_since(since) >= grace {
            free.push(allocation.key.clone());
        }
    }
    free
}

/// Polls kubelet every [`LostPodsConfig::interval`] and frees the IPs [`decide`] picks,
/// with their cooldown (through [`Endpoints`]: the datapath endpoint, the pod's routing
/// and its host veth go too). Runs until the process stops.
pub async fn run(config: LostPodsConfig, endpoints: Arc<Endpoints>, metrics: Arc<Metrics>) {
    let mut missing_since = BTreeMap::new();
    let mut failing = false;
    loop {
        tokio::time::sleep(config.interval()).await;
        let live =
            match eni_ipam_device_plugin::pod_resources::live_pods(&config.socket, config.timeout).await {
                Ok(live) => {
                    if failing {
                        info!(socket = %config.socket.display(), "kubelet's pod-resources API answers again");
                    }
                    failing = false;
                    live
                }
                Err(error) => {
                    if !failing {
                        warn!("lost-pod check: {error}; no IP is freed until kubelet answers again");
                    }
                    failing = true;
                    missing_since.clear();
                    continue;
                }
            };
        let allocations = endpoints.ipam().list();
        let free = decide(&allocations, &live, &mut missing_since, Instant::now(), config.grace);
        for key in free {
            let cool_until = unix_now() + config.cooldown.as_secs();
            // Waits for fsync and netlink: on the blocking pool, as the socket's calls are.
            let (endpoints, release_key) = (endpoints.clone(), key.clone());
            let released =
                tokio::task::spawn_blocking(move || endpoints.release_lost(&release_key, cool_until))
                    .await
                    .unwrap_or_else(|join| {
                        Err(EndpointError::Invalid(format!("release task failed: {join}")))
                    });
            match released {
                Ok(Some(freed)) => {
                    metrics.count_lost_pod_ip_freed();
                    warn!(
                        ip = %freed.ip, pod = %freed.owner(), %key, grace = ?config.grace, cooldown = ?config.cooldown,
                        "freed the IP of a lost sandbox: kubelet no longer runs it, and its CNI DEL never came"
                    );
                }
                Ok(None) => {}
                Err(error) => warn!(%key, "lost-pod check: cannot free the IP: {error}"),
            }
            missing_since.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocation(container: &str, namespace: &str, pod: &str) -> Allocation {
        Allocation {
            key: AllocationKey::new(container, "eth0"),
            ip: "10.0.0.9".into(),
            pod_namespace: namespace.into(),
            pod_name: pod.into(),
            network: "eni-ipam".into(),
            allocated_at: 100,
            endpoint: None,
        }
    }

    fn made_at(allocation: Allocation, at: u64) -> Allocation {
        Allocation { allocated_at: at, ..allocation }
    }

    fn on_network(allocation: Allocation, network: &str) -> Allocation {
        Allocation { network: network.into(), ..allocation }
    }

    fn pods(names: &[&str]) -> BTreeSet<PodRef> {
        names.iter().map(|n| ("default".to_owned(), n.to_string())).collect()
    }

    #[test]
    fn lost_pod_decisions() {
        const GRACE: Duration = Duration::from_secs(60);
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        struct Case {
            what: &'static str,
            allocations: Vec<Allocation>,
            live: BTreeSet<PodRef>,
            /// (container, seconds after start it was first seen missing)
            missing_since: &'static [(&'static str, u64)],
            now: u64,
            free: &'static [&'static str],
            /// Containers remembered as missing afterwards.
            remembered: &'static [&'static str],
        }
        let cases = [
            Case {
                what: "a live pod keeps its IP",
                allocations: vec![allocation("a", "default", "web")],
                live: pods(&["web"]),
                missing_since: &[],
                now: 0,
                free: &[],
                remembered: &[],
            },
            Case {
                what: "a pod seen missing for the first time starts its grace, nothing freed",
                allocations: vec![allocation("a", "default", "web")],
                live: pods(&[]),
                missing_since: &[],
                now: 500,
                free: &[],
                remembered: &["a"],
            },
            Case {
                what: "still missing but within the grace: kept",
                allocations: vec![allocation("a", "default", "web")],
                live: pods(&["other"]),
                missing_since: &[("a", 10)],
                now: 69,
                free: &[],
                remembered: &["a"],
            },
            Case {
                what: "missing for the whole grace: freed",
                allocations: vec![allocation("a", "default", "web")],
                live: pods(&["other"]),
                missing_since: &[("a", 10)],
                now: 70,
                free: &["a"],
                remembered: &["a"],
            },
            Case {
                what: "back in a listing within the grace: the clock is reset",
                allocations: vec![allocation("a", "default", "web")],
                live: pods(&["web"]),
                missing_since: &[("a", 10)],
                now: 200,
                free: &[],
                remembered: &[],
            },
            Case {
                what: "same name in another namespace is not the pod",
                allocations: vec![allocation("a", "prod", "web")],
                live: pods(&["web"]),
                missing_since: &[("a", 0)],
                now: 60,
                free: &["a"],
                remembered: &["a"],
            },
            Case {
                what: "an allocation without a pod name is never freed",
                allocations: vec![allocation("a", "", "")],
                live: pods(&[]),
                missing_since: &[("a", 0)],
                now: 1000,
                free: &[],
                remembered: &[],
            },
            Case {
                what: "an older sandbox of a live pod (kubelet made a new one, the old DEL was lost): freed after the grace",
                allocations: vec![
                    allocation("old", "default", "web"),
                    made_at(allocation("new", "default", "web"), 200),
                ],
                live: pods(&["web"]),
                missing_since: &[("old", 0)],
                now: 60,
                free: &["old"],
                remembered: &["old"],
            },
            Case {
                what: "an older sandbox starts its grace like a missing pod",
                allocations: vec![
                    allocation("old", "default", "web"),
                    made_at(allocation("new", "default", "web"), 200),
                ],
                live: pods(&["web"]),
                missing_since: &[],
                now: 0,
                free: &[],
                remembered: &["old"],
            },
            Case {
                what: "two sandboxes made in the same second (or before times were recorded): both kept",
                allocations: vec![allocation("a", "default", "web"), allocation("b", "default", "web")],
                live: pods(&["web"]),
                missing_since: &[("a", 0)],
                now: 600,
                free: &[],
                remembered: &[],
            },
            Case {
                what: "the same pod on another network is not an older sandbox",
                allocations: vec![
                    allocation("a", "default", "web"),
                    made_at(on_network(allocation("b", "default", "web"), "other"), 200),
                ],
                live: pods(&["web"]),
                missing_since: &[],
                now: 600,
                free: &[],
                remembered: &[],
            },
            Case {
                what: "an allocation released meanwhile (its DEL came) is forgotten",
                allocations: vec![allocation("b", "default", "db")],
                live: pods(&["db"]),
                missing_since: &[("a", 0)],
                now: 1000,
                free: &[],
                remembered: &[],
            },
        ];
        for case in cases {
            let mut missing: BTreeMap<AllocationKey, Instant> =
                case.missing_since.iter().map(|(c, s)| (AllocationKey::new(*c, "eth0"), at(*s))).collect();
            let got = decide(&case.allocations, &case.live, &mut missing, at(case.now), GRACE);
            let got: Vec<&str> = got.iter().map(|k| k.container_id.as_str()).collect();
            assert_eq!(got, case.free, "{}", case.what);
            let remembered: Vec<&str> = missing.keys().map(|k| k.container_id.as_str()).collect();
            assert_eq!(remembered, case.remembered, "{}", case.what);
        }
    }

    #[test]
    fn at_least_three_listings_fall_within_a_grace() {
        let config = |grace| LostPodsConfig {
            socket: PathBuf::new(),
            grace,
            cooldown: Duration::ZERO,
            timeout: Duration::from_secs(1),
        };
        assert_eq!(config(Duration::from_secs(120)).interval(), Duration::from_secs(10));
        assert_eq!(config(Duration::from_secs(3)).interval(), Duration::from_secs(1));
        assert_eq!(config(Duration::ZERO).interval(), Duration::from_millis(100));
    }
}
