//! The scenarios: a fresh cluster (`fresh_cluster.rs`), scale up, pod churn,
//! faults (each alone, then together), and
//! after each the audit of scenario 4 (no leaks once a GC pass is over, no IP
//! held twice, traffic kept flowing). Each returns its row of the summary.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eni_ipam_cloud::Eni;
use eni_ipam_kube_standin::PODS;
use eni_ipam_netns_testbed::echo::{self, EchoServer, UdpSummary};

use crate::audit::{Findings, Snapshot, audit};
use crate::bed::{Bed, GC_PERIOD, ours};
use crate::cloud::{CloudCounts, CloudFault, CloudKind};
use crate::kubelet::{RESOURCE, RunningPod, requested};
use crate::report::Row;

/// How big a run is.
#[derive(Clone, Copy, Debug)]
pub struct Size {
    /// Pods kept running per node while churning.
    pub pods_per_node: usize,
    /// Pod creates (and as many deletes) in the churn scenario.
    pub churn: usize,
    /// How long the cloud throttles half the calls.
    pub throttle_for: Duration,
    /// Pods created during each fault.
    pub pods_per_fault: usize,
}

impl Size {
    /// `scripts/test`'s size, or the full size.
    pub fn new(full: bool) -> Self {
        if full {
            Self { pods_per_node: 6, churn: 1000, throttle_for: Duration::from_secs(60), pods_per_fault: 6 }
        } else {
            Self { pods_per_node: 4, churn: 150, throttle_for: Duration::from_secs(15), pods_per_fault: 12 }
        }
    }
}

/// A run of scenarios on one bed, with what it measured.
pub struct Run<'a> {
    /// The bed.
    pub bed: &'a mut Bed,
    /// The size.
    pub size: Size,
    /// Rows so far.
    pub rows: Vec<Row>,
    /// Progress lines go here.
    pub progress: &'a (dyn Fn(&str) + Sync),
    serial: usize,
}

/// Bound on anything that should converge.
pub(crate) const CONVERGE: Duration = Duration::from_secs(90);

impl<'a> Run<'a> {
    /// A run on `bed`.
    pub fn new(bed: &'a mut Bed, size: Size, progress: &'a (dyn Fn(&str) + Sync)) -> Self {
        Self { bed, size, rows: Vec::new(), progress, serial: 0 }
    }

    pub(crate) fn say(&self, text: &str) {
        (self.progress)(text);
    }

    pub(crate) async fn create_pods(&mut self, count: usize) -> Vec<String> {
        let mut names = Vec::new();
        for _ in 0..count {
            self.serial += 1;
            let name = format!("pod-{:05}", self.serial);
            self.bed.create_pod(&name).await;
            names.push(name);
        }
        names
    }

    /// The oldest `count` pods, deleted.
    fn delete_oldest(&self, count: usize) -> usize {
        let mut pods: Vec<String> = self
            .bed
            .standin
            .list(PODS)
            .iter()
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
        pods.sort();
        for name in pods.iter().take(count) {
            self.bed.delete_pod(name);
        }
        count.min(pods.len())
    }

    fn first_pool_index(&self) -> u32 {
        match self.bed.config.cloud {
            CloudKind::Alibaba => 1,
            CloudKind::Aws => 0,
        }
    }

    /// Audits the cloud's `enis` and the running `pods` against the ENINodes as they are now.
    fn audit_against(&self, enis: &[Eni], pods: &BTreeMap<String, (String, Ipv4Addr)>) -> Findings {
        let eninodes = self.bed.eninodes();
        let nodes: BTreeMap<String, String> =
            self.bed.nodes.iter().map(|n| (n.name.clone(), n.instance.id.clone())).collect();
        audit(&Snapshot {
            enis,
            eninodes: &eninodes,
            nodes: &nodes,
            pods,
            ours: &ours,
            first_pool_index: self.first_pool_index(),
            foreign: &self.bed.foreign_ips,
        })
    }

    /// One audit snapshot, pods read before and after the cloud (see [`Run::audit_now`]).
    pub async fn audit_now(&self) -> Findings {
        let before = self.bed.pod_ips();
        let enis = self.bed.cloud.enis().await;
        let after = self.bed.pod_ips();
        // Only pods running with the same IP before and after the cloud was read are judged.
        let pods: BTreeMap<String, (String, Ipv4Addr)> =
            before.into_iter().filter(|(k, v)| after.get(k) == Some(v)).collect();
        let mut findings = self.audit_against(&enis, &pods);
        // Bookkeeping that trails by design (status is written every 200 ms) is judged only settled.
        findings.in_use_mismatch.clear();
        findings.status_mismatch.clear();
        findings
    }

    /// Waits until the cloud, ENINodes and pods agree (a GC pass included); the last findings.
    pub(crate) async fn settle(&self) -> Findings {
        let start = Instant::now();
        let bound = GC_PERIOD * 2 + Duration::from_secs(30);
        loop {
            let before = self.bed.pod_ips();
            let enis = self.bed.cloud.enis().await;
            let mut findings = self.audit_against(&enis, &before);
            let metrics = self.bed.leader_metrics().await.unwrap_or_default();
            findings.counter_mismatch = crate::audit::counters(&metrics, &findings, before.len());
            if findings.clean() || start.elapsed() > bound {
                return findings;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Ends a scenario: waits for every pod to run, settles, checks scenario 4's invariants,
    /// and records the row.
    pub(crate) async fn finish(
        &mut self,
        name: &str,
        since: Instant,
        calls_before: crate::cloud::CloudCounts,
        lost: u64,
    ) {
        self.bed.wait_all_running(CONVERGE).await;
        let findings = self.settle().await;
        let calls = self.bed.cloud_counts();
        let times = self.bed.times_to_running(|created| created >= since);
        let row = Row::new(
            name,
            times,
            CloudCounts {
                calls: calls.calls - calls_before.calls,
                throttled: calls.throttled - calls_before.throttled,
                server_errors: calls.server_errors - calls_before.server_errors,
            },
            findings.leaked_enis.len(),
            findings.double_ips.len(),
            lost,
        );
        self.say(&row.line());
        assert!(
            findings.clean(),
            "{name}: the cloud, ENINodes and pods disagree after settling: {findings:#?}"
        );
        self.rows.push(row);
    }

    /// Scenario 1, on the nodes of scenario 0: pods come up through admission, scheduling
    /// and CNI; a pod reaches a pod on another node.
    pub async fn scale_up(&mut self) {
        let since = Instant::now();
        let calls = self.bed.cloud_counts();
        let nodes = self.bed.config.nodes;
        let pods = self.size.pods_per_node * nodes;
        self.say(&format!("scale up: {pods} pods"));
        self.create_pods(pods).await;
        self.running_with_progress("scale up").await;
        for pod in self.bed.standin.list(PODS) {
            assert_eq!(requested(&pod), 1, "the webhook gave every pod one {RESOURCE}: {}", pod["spec"]);
        }
        let eninodes = self.bed.eninodes();
        for (key, (node, ip)) in self.bed.pod_ips() {
            let pool = &eninodes[&node]["spec"]["pool"];
            assert!(pool.get(ip.to_string()).is_some(), "{key} got {ip}, not from {node}'s pool");
        }
        let (from, to) = self.cross_node_pair();
        let server = EchoServer::udp(&to.netns, to.ip);
        let interval = Duration::from_millis(50);
        let sent =
            tokio::task::block_in_place(|| echo::udp_echo_client(&from.netns, server.addr, 5, 56, interval));
        assert_eq!(sent.received, 5, "{} reaches {} on another node (UDP echo)", from.ip, to.ip);
        self.finish("1 scale up", since, calls, 0).await;
        self.cluster_full().await;
    }

    /// Scenario 1, continued: more pods than the nodes have IPs. Pods fill every node to its
    /// pool's limit and the rest stay Pending: none is placed on a node without a slot, so
    /// none fails admission or waits in CNI.
    async fn cluster_full(&mut self) {
        let since = Instant::now();
        let calls = self.bed.cloud_counts();
        let capacity = self.capacity();
        let before = self.bed.standin.list(PODS).len();
        let over = 2;
        self.say(&format!("cluster full: {} more pods for {capacity} IPs", capacity - before + over));
        let extra = self.create_pods(capacity - before + over).await;
        self.bed
            .wait_for("every IP of the cluster to be used", CONVERGE, |bed| {
                bed.phases().get("Running").copied().unwrap_or(0) == capacity
            })
            .await;
        // Stable: the last ones stay Pending, unplaced; nothing failed.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let pods = self.bed.standin.list(PODS);
        let pending: Vec<&serde_json::Value> =
            pods.iter().filter(|p| p["status"]["phase"] != "Running").collect();
        assert_eq!(pending.len(), over, "exactly the pods beyond the IPs wait: {:?}", self.bed.phases());
        for p in &pending {
            assert!(p["spec"]["nodeName"].is_null(), "a pod without an IP left is not placed: {}", p["spec"]);
        }
        let (add_failures, refused) =
            self.bed.nodes.iter().map(|n| n.kubelet.failures()).fold((0, 0), |a, f| (a.0 + f.0, a.1 + f.1));
        assert_eq!(refused, 0, "no pod was refused at admission for want of a slot");
        self.say(&format!(
            "cluster full: {capacity} running, {over} pending; CNI ADD retries so far {add_failures}"
        ));
        // Back to the steady population: the newest go.
        for name in extra.iter().rev().take(capacity - before + over) {
            self.bed.delete_pod(name);
        }
        self.finish("1b cluster full", since, calls, 0).await;
    }

    /// Waits for every pod to run, saying how many do whenever that changes.
    async fn running_with_progress(&self, what: &str) {
        let start = Instant::now();
        let mut last = BTreeMap::new();
        loop {
            let phases = self.bed.phases();
            if phases != last {
                self.say(&format!("{what}: pods {phases:?}"));
                last = phases;
            }
            if last.keys().all(|phase| phase == "Running") || start.elapsed() > CONVERGE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.bed.wait_all_running(Duration::from_secs(1)).await;
    }

    /// A running pod on the first node and the IP of one on the second.
    fn cross_node_pair(&self) -> (Arc<RunningPod>, Arc<RunningPod>) {
        let pa = self.bed.nodes[0].kubelet.running().into_values().next().expect("a pod on the first node");
        let pb = self.bed.nodes[1].kubelet.running().into_values().next().expect("a pod on the second node");
        (pa, pb)
    }

    /// `count` UDP echoes 10 ms apart (the datapath's fast path) from a pod on the first node to
    /// one on the second, in the background; the server comes along (keep it until they end).
    fn spawn_cross_node_echoes(&self, count: u32) -> (EchoServer, std::thread::JoinHandle<UdpSummary>) {
        let (from, to) = self.cross_node_pair();
        let server = EchoServer::udp(&to.netns, to.ip);
        let echoes =
            echo::spawn_udp_echo_client(&from.netns, server.addr, count, 56, Duration::from_millis(10));
        (server, echoes)
    }

    /// Scenario 2: pod churn; the pool grows and shrinks within the knobs and no IP in use is
    /// ever released.
    pub async fn churn(&mut self) {
        let since = Instant::now();
        let calls = self.bed.cloud_counts();
        let total = self.size.churn;
        let steady = self.size.pods_per_node * self.bed.config.nodes;
        let max = self.bed.config.knobs.max_allocate as usize;
        let mut done = 0;
        let mut largest_pool = 0;
        let mut last_audit = Instant::now();
        while done < total {
            let batch = 10.min(total - done);
            self.create_pods(batch).await;
            // Each wave runs before the oldest go: pods are churned, not deleted unborn.
            self.bed.wait_all_running(CONVERGE).await;
            if self.bed.standin.list(PODS).len() > steady {
                self.delete_oldest(batch);
            }
            done += batch;
            if last_audit.elapsed() > Duration::from_millis(500) {
                let f = self.audit_now().await;
                assert!(f.released_in_use.is_empty(), "an IP in use was released: {:?}", f.released_in_use);
                assert!(f.double_ips.is_empty(), "an IP is held twice: {:?}", f.double_ips);
                largest_pool = largest_pool.max(f.pool_sizes.values().copied().max().unwrap_or(0));
                assert!(largest_pool <= max, "a pool grew to {largest_pool}, above --max-allocate {max}");
                last_audit = Instant::now();
                self.say(&format!("churn: {done}/{total} pods created, {:?}", self.bed.phases()));
            }
        }
        self.bed.wait_all_running(CONVERGE).await;
        // Shrink: with every pod gone, pools come back to the pre-allocation.
        self.delete_oldest(usize::MAX);
        let pre = self.bed.config.knobs.pre_allocate as usize;
        let bound = Duration::from_secs(60);
        self.bed
            .wait_for("pools shrink back to the pre-allocation", bound, |bed| {
                bed.eninodes()
                    .values()
                    .all(|n| n["spec"]["pool"].as_object().is_some_and(|p| p.len() <= pre.max(1)))
            })
            .await;
        self.say(&format!("churn: largest pool {largest_pool} (max {max}); pools back to {pre}"));
        self.create_pods(steady).await;
        self.finish("2 pod churn", since, calls, 0).await;
    }

    async fn fault(&mut self, name: &str, inject: impl AsyncFnOnce(&mut Self) -> u64) {
        let since = Instant::now();
        let calls = self.bed.cloud_counts();
        self.say(&format!("fault: {name}"));
        let lost = inject(self).await;
        self.delete_oldest(self.size.pods_per_fault);
        self.finish(name, since, calls, lost).await;
    }

    /// Pod IPs the cluster can hold: every node at its max-allocate.
    fn capacity(&self) -> usize {
        self.bed.config.nodes * self.bed.config.knobs.max_allocate as usize
    }

    /// Keeps the pools moving for `time`: waves of pods come (the pools grow: assign calls)
    /// and go (past the release delay the pools shrink: unassign calls), so a cloud fault
    /// meets mutating calls, not only listings.
    async fn waves_for(&mut self, time: Duration) {
        let end = Instant::now() + time;
        // Two pods a node, as far as the cluster has IPs left for them.
        let wave =
            (self.bed.nodes.len() * 2).min(self.capacity().saturating_sub(self.bed.standin.list(PODS).len()));
        assert!(wave > 0, "no IP left in the cluster for a wave of pods: size the scenarios down");
        while Instant::now() < end {
            self.create_pods(wave).await;
            self.bed.wait_all_running(CONVERGE).await;
            self.delete_oldest(wave);
            // The operators run with a 2 s release delay.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }

    /// Scenario 3: each fault alone, then all together.
    pub async fn faults(&mut self) {
        let n = self.size.pods_per_fault;
        self.fault("3a operator leader killed", async |run: &mut Self| {
            run.create_pods(n).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let killed = run.bed.kill_leader().expect("a leader to kill");
            run.bed
                .wait_for("another replica to lead", Duration::from_secs(15), |bed| {
                    bed.leader().is_some_and(|l| l != bed.operators[killed].identity)
                })
                .await;
            run.bed.start_operator(killed);
            0
        })
        .await;
        self.fault("3b agent killed mid-ADD", async |run: &mut Self| {
            let (_server, echoes) = run.spawn_cross_node_echoes(300);
            run.create_pods(n).await;
            // Kill once a new pod is placed on the node and its sandbox is not up yet.
            let node = run.bed.nodes[1].name.clone();
            for _ in 0..60 {
                let placed = run.bed.standin.list(PODS).iter().any(|p| {
                    p["spec"]["nodeName"].as_str() == Some(node.as_str()) && p["status"]["phase"] != "Running"
                });
                if placed {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::task::block_in_place(|| {
                run.bed.nodes[1].kill_agent();
                std::thread::sleep(Duration::from_millis(300));
                run.bed.nodes[1].start_agent();
            });
            let summary = tokio::task::block_in_place(|| echoes.join().expect("the echo client"));
            u64::from(summary.sent - summary.received)
        })
        .await;
        let throttle_for = self.size.throttle_for;
        self.fault("3c cloud throttling 50%", async |run: &mut Self| {
            run.bed.cloud.set_fault(CloudFault { throttle: 0.5, ..CloudFault::default() });
            // Waves from the base load, so every pool grows and shrinks (mutating calls).
            run.waves_for(throttle_for).await;
            run.create_pods(n).await;
            run.bed.cloud.set_fault(CloudFault::default());
            0
        })
        .await;
        self.fault("3d cloud 5xx 30%", async |run: &mut Self| {
            run.bed.cloud.set_fault(CloudFault { server_errors: 0.3, ..CloudFault::default() });
            // Waves from the base load, so every pool grows and shrinks (mutating calls).
            run.waves_for(throttle_for / 2).await;
            run.create_pods(n).await;
            run.bed.cloud.set_fault(CloudFault::default());
            0
        })
        .await;
        self.fault("3e apiserver restarted", async |run: &mut Self| {
            let seen = run.bed.standin.requests().len();
            run.bed.standin.restart().await;
            run.create_pods(n).await;
            run.bed.wait_all_running(CONVERGE).await;
            // Every cut watch is opened again (after the watchers' backoff): the operators'.
            let rewatched = |bed: &Bed, path: &str| {
                bed.standin.requests()[seen..].iter().any(|r| {
                    r.path == path && (r.query.contains("watch=true") || r.query.contains("watch=1"))
                })
            };
            for path in ["/apis/eni-ipam.io/v1alpha1/eninodes", "/api/v1/nodes"] {
                let what = format!("a new watch of {path} after the restart");
                let took = run.bed.wait_for(&what, Duration::from_secs(60), |bed| rewatched(bed, path)).await;
                run.say(&format!("apiserver restarted: {path} watched again {took:?} after its pods ran"));
            }
            0
        })
        .await;
        self.fault("3f kubelet socket recreated", async |run: &mut Self| {
            let before = run.bed.nodes[0].kubelet.registrations();
            run.bed.nodes[0].kubelet.recreate_socket();
            run.bed
                .wait_for("the device plugin to register again", Duration::from_secs(20), |bed| {
                    bed.nodes[0].kubelet.registrations() > before && bed.nodes[0].kubelet.healthy() > 0
                })
                .await;
            run.create_pods(n).await;
            0
        })
        .await;
        self.fault("3g all together", async |run: &mut Self| {
            let (_server, echoes) = run.spawn_cross_node_echoes(500);
            run.bed.cloud.set_fault(CloudFault { throttle: 0.5, server_errors: 0.1 });
            run.create_pods(n).await;
            let killed = run.bed.kill_leader();
            tokio::task::block_in_place(|| {
                run.bed.nodes[1].kill_agent();
                std::thread::sleep(Duration::from_millis(300));
                run.bed.nodes[1].start_agent();
            });
            run.bed.standin.restart().await;
            run.bed.nodes[0].kubelet.recreate_socket();
            tokio::time::sleep(Duration::from_secs(5)).await;
            run.bed.cloud.set_fault(CloudFault::default());
            if let Some(i) = killed {
                run.bed.start_operator(i);
            }
            let summary = tokio::task::block_in_place(|| echoes.join().expect("the echo client"));
            u64::from(summary.sent - summary.received)
        })
        .await;
    }

    /// Only the bring-up: the fresh cluster, its startup taints and scenario 1.
    pub async fn bring_up(&mut self) {
        self.fresh_cluster().await;
        self.startup_taint().await;
        self.scale_up().await;
    }

    /// Every scenario in order; the injected cloud faults must have met calls.
    pub async fn all(&mut self) {
        self.fresh_cluster().await;
        self.startup_taint().await;
        self.scale_up().await;
        self.capacity_meaning().await;
        self.churn().await;
        self.faults().await;
        let row = |name: &str| self.rows.iter().find(|r| r.scenario.starts_with(name)).expect("a row");
        assert!(row("3c").throttled > 0, "the throttling met no call: {:?}", row("3c"));
        assert!(row("3d").server_errors > 0, "the 500s met no call: {:?}", row("3d"));
    }
}
