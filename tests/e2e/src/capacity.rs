//! Scenarios 1c and 1d (issue 23): what the device plugin advertises as a node's
//! `eni-ipam.io/ip` is the IPs the node can have, not the IPs its pool holds now.
//!
//! 1c: on the last node, with its ENINode's maxAllocate lifted, the operator's
//! `status.ipLimit` is the instance type's pod-IP limit (AWS's published rule for
//! m5.large, the same rule from index 1 for ecs.g7.large), kubelet's Healthy devices
//! follow it though the pool is a few IPs, and pods filling the node to that limit,
//! far beyond its warm pool, are all admitted and all run.
//!
//! 1d: another tenant takes every address left in the pod subnet. The operator sees it
//! at its next listing and publishes a shortfall; every node's devices come down to what
//! its pool can still reach (the pool itself). The tenant leaves, the shortfall goes and
//! the capacity is the instance's limit again.

use std::time::{Duration, Instant};

use eni_ipam_kube_standin::{CONFIGMAPS, ENINODES};
use serde_json::{Value, json};

use crate::bed::Bed;
use crate::chart::arg_value;
use crate::cloud::CloudKind;
use crate::scenarios::{CONVERGE, Run};

/// Bound on the operator noticing a subnet change: its resync every 10 s, and a pass.
const NOTICED: Duration = Duration::from_secs(40);

fn eninode(bed: &Bed, node: &str) -> Value {
    bed.eninodes().remove(node).unwrap_or_default()
}

fn pool_size(eninode: &Value) -> usize {
    eninode["spec"]["pool"].as_object().map_or(0, |p| p.len())
}

fn ip_limit(eninode: &Value) -> Option<u64> {
    eninode["status"]["ipLimit"].as_u64()
}

/// Pods running on `node` now.
fn running_on(bed: &Bed, node: &str) -> usize {
    bed.pod_ips().values().filter(|(n, _)| n == node).count()
}

/// What the node's ENINode and kubelet say of its capacity, for a failure message.
fn capacity_view(bed: &Bed, index: usize) -> String {
    let node = &bed.nodes[index];
    let e = eninode(bed, &node.name);
    format!(
        "{}: ipLimit {:?}, shortfall {}, effective maxAllocate {}, spec.ipam {}, pool {}, Healthy devices {}; agent:\n{}",
        node.name,
        ip_limit(&e),
        e["status"]["shortfall"],
        e["status"]["effectiveIpam"]["maxAllocate"],
        e["spec"]["ipam"],
        pool_size(&e),
        node.kubelet.healthy(),
        node.agent_log(10)
    )
}

/// Waits until `done` holds, or panics naming `what` and what node `index` says of its capacity.
async fn wait_capacity(
    bed: &Bed,
    index: usize,
    what: &str,
    within: Duration,
    done: impl Fn(&Bed) -> bool,
) -> Duration {
    let start = Instant::now();
    while !done(bed) {
        assert!(start.elapsed() < within, "{what}: not within {within:?}; {}", capacity_view(bed, index));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

impl Run<'_> {
    /// The pod IPs one bed instance can hold, by the cloud's published rule: ENIs from the
    /// first usable index, times the IPv4 addresses per ENI less the ENI's own.
    fn instance_ip_limit(&self) -> usize {
        match self.bed.config.cloud {
            // m5.large: 3 ENIs x 10 IPv4; AWS's max pods 29 = 3 x (10 - 1) + 2.
            CloudKind::Aws => 27,
            // ecs.g7.large: 3 ENIs x 6 IPv4, the primary ENI (index 0) not for pods.
            CloudKind::Alibaba => 10,
        }
    }

    /// The knobs ConfigMap the operator watches, as an empty configuration: the built-in
    /// defaults every node was first worked with, so nothing changes but that an ENINode's own
    /// `spec.ipam` edit now takes effect (while the ConfigMap the chart would install is
    /// missing, the operator keeps each node's last knobs).
    fn install_knobs_configmap(&self) {
        let at =
            arg_value(&self.bed.chart.operator.args, "--knob-config").expect("the chart sets --knob-config");
        let (namespace, name) = at.split_once('/').expect("--knob-config is NAMESPACE/NAME");
        if self.bed.standin.get(CONFIGMAPS, namespace, name).is_none() {
            let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace}, "data": {"knobs.yaml": "defaults: {}\n"}});
            self.bed.standin.create(CONFIGMAPS, map).expect("create the knobs ConfigMap");
        }
    }

    fn set_max_allocate(&self, node: &str, max: u32) {
        let patch = json!({"spec": {"ipam": {"maxAllocate": max}}});
        self.bed
            .standin
            .merge_patch(ENINODES, "", node, patch, false)
            .expect("patch the ENINode's maxAllocate");
    }

    /// Scenarios 1c and 1d.
    pub async fn capacity_meaning(&mut self) {
        self.capacity_is_the_instance_limit().await;
        self.capacity_follows_an_exhausted_subnet().await;
    }

    /// Scenario 1c: a node's capacity is its instance's IP limit; pods fill it to that limit.
    async fn capacity_is_the_instance_limit(&mut self) {
        let since = Instant::now();
        let calls = self.bed.cloud_counts();
        let index = self.bed.nodes.len() - 1;
        let node = self.bed.nodes[index].name.clone();
        let limit = self.instance_ip_limit();
        self.say(&format!("capacity: {node} without maxAllocate advertises its instance's {limit} IPs"));
        self.install_knobs_configmap();
        self.set_max_allocate(&node, 0);
        // The pool comes back from scenario 1b's extra pods (release delay 2 s) meanwhile.
        let what = "ipLimit, and as many Healthy devices, not the pool";
        let took = wait_capacity(self.bed, index, what, CONVERGE, |bed| {
            let e = eninode(bed, &node);
            ip_limit(&e) == Some(limit as u64)
                && bed.nodes[index].kubelet.healthy() == limit
                && pool_size(&e) < limit
        })
        .await;
        let pool = pool_size(&eninode(self.bed, &node));
        self.say(&format!(
            "capacity: {limit} Healthy devices on {node} {took:?} after the patch; its pool {pool}"
        ));

        // Pods to the node's limit, far beyond its warm pool: kubelet admits every one on a
        // device, and every one gets its IP once the operator has grown the pool.
        let refused_before = self.bed.nodes[index].kubelet.failures().1;
        let burst = limit - running_on(self.bed, &node);
        let names: Vec<String> = (0..burst).map(|k| format!("to-the-limit-{k:02}")).collect();
        for name in &names {
            self.bed.create_pod_on(name, &node, json!([])).await;
        }
        self.bed.wait_all_running(CONVERGE).await;
        assert_eq!(running_on(self.bed, &node), limit, "{node} runs as many pods as its instance has IPs");
        assert_eq!(
            self.bed.nodes[index].kubelet.failures().1,
            refused_before,
            "no pod refused at admission: every one had a device"
        );
        let steady = limit - burst;
        for name in &names {
            self.bed.delete_pod(name);
        }
        let pre = self.bed.config.knobs.pre_allocate as usize;
        self.bed
            .wait_for("the pool to shrink back after the burst", CONVERGE, |bed| {
                pool_size(&eninode(bed, &node)) <= steady + pre
            })
            .await;
        self.finish("1c capacity = instance limit", since, calls, 0).await;
    }

    /// Scenario 1d: an exhausted subnet lowers every node's capacity to its pool; freed, back.
    async fn capacity_follows_an_exhausted_subnet(&mut self) {
        let since = Instant::now();
        let calls = self.bed.cloud_counts();
        let index = self.bed.nodes.len() - 1;
        let node = self.bed.nodes[index].name.clone();
        let limit = self.instance_ip_limit();
        let (tenant, taken) = self.bed.cloud.fill_subnet().await;
        self.say(&format!("capacity: another tenant takes the subnet's last {taken} addresses"));
        // The node without maxAllocate says why; every node (the others at most their
        // maxAllocate, which a pool already there still reaches) advertises its pool.
        let lowered = |bed: &Bed| {
            let e = eninode(bed, &node);
            let short = &e["status"]["shortfall"];
            short["reason"] == "SubnetsExhausted"
                && short["obtainable"].as_u64() == Some(pool_size(&e) as u64)
                && bed.nodes.iter().all(|n| n.kubelet.healthy() == pool_size(&eninode(bed, &n.name)))
        };
        let took =
            wait_capacity(self.bed, index, "every node's capacity down to its pool", NOTICED, lowered).await;
        let pool = pool_size(&eninode(self.bed, &node));
        assert!(pool < limit, "{node}'s capacity came down from {limit} to {pool}");
        self.say(&format!("capacity: {node} advertises {pool} (its pool) {took:?} after the subnet filled"));

        self.bed.cloud.free_subnet(&tenant).await;
        let took = wait_capacity(
            self.bed,
            index,
            "the shortfall to clear and the limit to come back",
            NOTICED,
            |bed| {
                let e = eninode(bed, &node);
                e["status"]["shortfall"].is_null() && bed.nodes[index].kubelet.healthy() == limit
            },
        )
        .await;
        self.say(&format!("capacity: subnet free again, {node} advertises {limit} {took:?} later"));
        // Back to the bed's knobs for the scenarios that follow.
        let max = self.bed.config.knobs.max_allocate;
        self.set_max_allocate(&node, max);
        wait_capacity(self.bed, index, "maxAllocate to cap the capacity again", CONVERGE, |bed| {
            bed.nodes[index].kubelet.healthy() == max as usize
        })
        .await;
        self.finish("1d subnet exhausted, then freed", since, calls, 0).await;
    }
}
