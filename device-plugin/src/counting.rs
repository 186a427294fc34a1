//! How many `eni-ipam.io/ip` slots are healthy: pure arithmetic, no I/O.
//!
//! kubelet sets `allocatable[eni-ipam.io/ip]` to the number of healthy
//! devices, and kube-scheduler subtracts the request of every pod on the node
//! that asks for `eni-ipam.io/ip`. So the plugin must not subtract those pods
//! again: it subtracts only the IPs held by what kubelet does not count.

use std::collections::BTreeSet;

/// What the count is made of, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotCount {
    /// Slots reported `Healthy`: kubelet's allocatable.
    pub healthy: u32,
    /// IPs held by pods kubelet does not count (admitted without the request).
    pub held_outside_kubelet: u32,
}

/// Healthy slots for the agent's numbers:
///
/// ```text
/// held_outside_kubelet = allocated - counted_by_kubelet      (0 if negative)
/// healthy              = min(max_slots, capacity - held_outside_kubelet)   (0 if negative)
/// ```
///
/// - `capacity` is the agent's `IpamHealth::capacity`: the pod IPs the node
///   can reach in total (IPs already handed out included) within the
///   instance type's ENI/IP limits and the subnets' free addresses. It counts
///   pod IPs only, so the agent's own addresses (ENI primary IPs) are not in
///   it and there is nothing to take off for them.
/// - `allocated` is `IpamHealth::allocated`: IPs handed to pods of both kinds.
/// - `counted_by_kubelet` is how many of our device ids kubelet has handed to
///   live pods (kubelet's pod-resources API). Every such pod already lowers
///   the scheduler's view by one, so only `allocated - counted_by_kubelet`
///   IPs are held outside kubelet's count. When kubelet cannot tell (`None`),
///   every allocated IP is taken to belong to a pod with the request, which is
///   what the webhook makes true for every non-hostNetwork pod; subtracting
///   `allocated` instead would count each such pod twice.
///
/// Then the scheduler's view, `healthy - counted_by_kubelet`, equals
/// `capacity - allocated`: the IPs the node can really still give.
pub fn count_slots(
    max_slots: u32,
    capacity: u32,
    allocated: u32,
    counted_by_kubelet: Option<u32>,
) -> SlotCount {
    let held_outside_kubelet = match counted_by_kubelet {
        Some(counted) => allocated.saturating_sub(counted),
        None => 0,
    };
    let healthy = capacity.saturating_sub(held_outside_kubelet).min(max_slots);
    SlotCount { healthy, held_outside_kubelet }
}

/// Which slots are healthy, given how many: the slots kubelet has handed to
/// live pods first (so kubelet's own "free healthy devices" equals the
/// scheduler's view), then the lowest free slot numbers. Slot numbers at or
/// above `max_slots` are ignored.
pub fn healthy_slot_ids(max_slots: u32, healthy: u32, in_use: &BTreeSet<u32>) -> BTreeSet<u32> {
    let healthy = healthy.min(max_slots) as usize;
    let mut chosen: BTreeSet<u32> =
        in_use.iter().copied().filter(|slot| *slot < max_slots).take(healthy).collect();
    let mut free = (0..max_slots).filter(|slot| !in_use.contains(slot));
    while chosen.len() < healthy {
        match free.next() {
            Some(slot) => {
                chosen.insert(slot);
            }
            None => break,
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads as the documentation of the count.
    #[test]
    fn healthy_slots_follow_reachable_capacity_minus_ips_kubelet_does_not_count() {
        struct Case {
            what: &'static str,
            max_slots: u32,
            capacity: u32,
            allocated: u32,
            counted_by_kubelet: Option<u32>,
            healthy: u32,
            held_outside: u32,
        }
        let cases = [
            Case {
                what: "empty node: everything the node can reach",
                max_slots: 110,
                capacity: 30,
                allocated: 0,
                counted_by_kubelet: Some(0),
                healthy: 30,
                held_outside: 0,
            },
            Case {
                what: "pods with the request are not subtracted again",
                max_slots: 110,
                capacity: 30,
                allocated: 5,
                counted_by_kubelet: Some(5),
                healthy: 30,
                held_outside: 0,
            },
            Case {
                what: "pods without the request are subtracted",
                max_slots: 110,
                capacity: 30,
                allocated: 8,
                counted_by_kubelet: Some(5),
                healthy: 27,
                held_outside: 3,
            },
            Case {
                what: "only pods without the request",
                max_slots: 110,
                capacity: 30,
                allocated: 4,
                counted_by_kubelet: Some(0),
                healthy: 26,
                held_outside: 4,
            },
            Case {
                what: "kubelet cannot tell: every allocated IP taken as counted",
                max_slots: 110,
                capacity: 30,
                allocated: 8,
                counted_by_kubelet: None,
                healthy: 30,
                held_outside: 0,
            },
            Case {
                what: "admitted pods not wired yet (kubelet counts more than the agent handed out)",
                max_slots: 110,
                capacity: 30,
                allocated: 2,
                counted_by_kubelet: Some(5),
                healthy: 30,
                held_outside: 0,
            },
            Case {
                what: "capped by the slots advertised",
                max_slots: 16,
                capacity: 30,
                allocated: 0,
                counted_by_kubelet: Some(0),
                healthy: 16,
                held_outside: 0,
            },
            Case {
                what: "subnet exhausted: capacity shrank to what is held",
                max_slots: 110,
                capacity: 3,
                allocated: 3,
                counted_by_kubelet: Some(0),
                healthy: 0,
                held_outside: 3,
            },
            Case {
                what: "more held outside than reachable never goes negative",
                max_slots: 110,
                capacity: 2,
                allocated: 6,
                counted_by_kubelet: Some(1),
                healthy: 0,
                held_outside: 5,
            },
            Case {
                what: "agent reports nothing reachable",
                max_slots: 110,
                capacity: 0,
                allocated: 0,
                counted_by_kubelet: None,
                healthy: 0,
                held_outside: 0,
            },
        ];
        for case in cases {
            let got = count_slots(case.max_slots, case.capacity, case.allocated, case.counted_by_kubelet);
            assert_eq!(
                got,
                SlotCount { healthy: case.healthy, held_outside_kubelet: case.held_outside },
                "{}",
                case.what
            );
        }
    }

    #[test]
    fn scheduler_view_equals_ips_really_free_for_pods_of_both_kinds() {
        let capacity = 40;
        for with_request in 0..=12u32 {
            for without_request in 0..=12u32 {
                let allocated = with_request + without_request;
                let count = count_slots(256, capacity, allocated, Some(with_request));
                assert_eq!(
                    i64::from(count.healthy) - i64::from(with_request),
                    i64::from(capacity - allocated),
                    "{with_request} pods with the request, {without_request} without"
                );
            }
        }
    }

    #[test]
    fn slots_in_use_stay_healthy_and_the_rest_fill_from_the_lowest() {
        let in_use = BTreeSet::from([3, 7]);
        assert_eq!(healthy_slot_ids(10, 4, &in_use), BTreeSet::from([0, 1, 3, 7]));
        assert_eq!(healthy_slot_ids(10, 2, &in_use), BTreeSet::from([3, 7]));
        assert_eq!(healthy_slot_ids(10, 1, &in_use), BTreeSet::from([3]));
        assert_eq!(healthy_slot_ids(10, 0, &in_use), BTreeSet::new());
        assert_eq!(healthy_slot_ids(4, 9, &BTreeSet::from([2, 12])), BTreeSet::from([0, 1, 2, 3]));
        assert_eq!(healthy_slot_ids(5, 3, &BTreeSet::new()), BTreeSet::from([0, 1, 2]));
    }
}
