//! kube-scheduler as the pod simulation needs it: a pod fits a node that is
//! schedulable, below its `maxPods`, and (when the pod requests one) has an
//! `eni-ipam.io/ip` left of its allocatable; among the nodes that fit, the one
//! with the fewest pods wins (what `LeastAllocated` does with pods of equal
//! requests), the first by name on a tie.

/// A node as the scheduler (and an autoscaler's copy of it) sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedNode {
    /// Ready, and no startup taint: the agent has its pool.
    pub schedulable: bool,
    /// kubelet's `maxPods`.
    pub max_pods: u32,
    /// `eni-ipam.io/ip` allocatable: what the device plugin advertises, less
    /// the IPs held by pods that do not request the resource.
    pub ip_allocatable: u32,
    /// Pods bound to the node.
    pub pods: u32,
    /// Bound pods that request `eni-ipam.io/ip` (whether or not they have their IP yet).
    pub ip_requested: u32,
}

impl SchedNode {
    /// Pods of one shape the node can still take.
    pub fn room(&self, requests_ip: bool) -> u32 {
        if !self.schedulable {
            return 0;
        }
        let by_pods = self.max_pods.saturating_sub(self.pods);
        if requests_ip { by_pods.min(self.ip_allocatable.saturating_sub(self.ip_requested)) } else { by_pods }
    }

    fn bind(&mut self, requests_ip: bool) {
        self.pods += 1;
        if requests_ip {
            self.ip_requested += 1;
        }
    }
}

/// Binds up to `pending` pods of one shape; returns each bound pod's node, in
/// the order the pods were waiting. Pods of one shape are interchangeable, so
/// the first that fits nowhere ends the pass.
pub fn schedule(nodes: &mut [SchedNode], pending: usize, requests_ip: bool) -> Vec<usize> {
    let mut bound = Vec::new();
    while bound.len() < pending {
        let best = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.room(requests_ip) > 0)
            .min_by_key(|(i, n)| (n.pods, *i))
            .map(|(i, _)| i);
        let Some(i) = best else { break };
        nodes[i].bind(requests_ip);
        bound.push(i);
    }
    bound
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(max_pods: u32, ip_allocatable: u32, pods: u32) -> SchedNode {
        SchedNode { schedulable: true, max_pods, ip_allocatable, pods, ip_requested: pods }
    }

    #[test]
    fn a_pod_fits_where_pods_and_ips_are_left() {
        // (node, pod requests an IP, room, why)
        let tainted = SchedNode { schedulable: false, ..node(56, 56, 0) };
        let rows = [
            (node(56, 8, 0), true, 8, "old capacity: the pool is the limit"),
            (node(56, 56, 0), true, 56, "new capacity: the instance limit"),
            (node(56, 8, 8), true, 0, "every advertised IP requested"),
            (node(20, 56, 0), true, 20, "maxPods below the IPs"),
            (node(56, 8, 8), false, 48, "a pod without the request sees only maxPods"),
            (tainted, false, 0, "not ready: nothing lands"),
        ];
        for (n, requests_ip, room, why) in rows {
            assert_eq!(n.room(requests_ip), room, "{why}");
        }
    }

    #[test]
    fn pods_spread_to_the_emptiest_node_and_stop_when_nothing_fits() {
        let mut nodes = [node(56, 8, 3), node(56, 8, 0), node(56, 8, 8)];
        let bound = schedule(&mut nodes, 20, true);
        assert_eq!(&bound[..4], &[1, 1, 1, 0], "node 1 first until it has as many as node 0");
        assert_eq!(bound.len(), 5 + 8, "node 0 had 5 IPs left, node 1 had 8, node 2 none");
        assert_eq!(nodes.iter().map(|n| n.pods).collect::<Vec<_>>(), [8, 8, 8]);
    }
}
