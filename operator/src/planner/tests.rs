//! The planner's behaviour, knob by knob. Each table row reads as a sentence
//! of the documentation: given this pool, the node needs / releases that.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use eni_ipam_api::{EniId, InstanceType, PoolKnobs, SubnetId, VpcId, Zone};
use eni_ipam_cloud::{CloudProfile, InstanceLimits, Subnet};

use super::*;

fn knobs(pre: u32, min: u32, max: u32, watermark: u32) -> PoolKnobs {
    PoolKnobs { pre_allocate: pre, min_allocate: min, max_allocate: max, max_above_watermark: watermark }
}

#[test]
fn needed_ips_table() {
    // (available, used, pre, min, max, needed, what it means)
    let rows = [
        (0, 0, 8, 0, 0, 8, "a new node gets its pre-allocation"),
        (8, 0, 8, 0, 0, 0, "a pool with pre-allocate free IPs needs nothing"),
        (8, 3, 8, 0, 0, 3, "each pod that takes an IP is replaced, to keep pre-allocate free"),
        (10, 10, 8, 0, 0, 8, "a full pool asks for pre-allocate more"),
        (0, 0, 8, 20, 0, 20, "min-allocate is reached at once, beyond pre-allocate"),
        (20, 0, 8, 20, 0, 0, "min-allocate reached, pre-allocate free: nothing"),
        (20, 15, 8, 20, 0, 3, "past min-allocate, pre-allocate rules again"),
        (0, 0, 8, 0, 5, 5, "max-allocate caps the pool"),
        (5, 5, 8, 0, 5, 0, "a pool at max-allocate asks nothing even when all used"),
        (7, 7, 8, 0, 10, 3, "the cap applies to the pool, not to the request"),
        (12, 0, 8, 0, 10, 0, "a pool above max-allocate never asks for more"),
        (0, 0, 0, 0, 0, 0, "pre-allocate 0: IPs only on demand"),
        (0, 1, 0, 0, 0, 1, "...and a used IP beyond the pool is still made up"),
    ];
    for (available, used, pre, min, max, want, meaning) in rows {
        assert_eq!(needed_ips(available, used, &knobs(pre, min, max, 0)), want, "{meaning}");
    }
}

#[test]
fn excess_ips_table() {
    // (available, used, pre, min, max, watermark, excess, what it means)
    let rows = [
        (8, 0, 8, 0, 0, 0, 0, "exactly pre-allocate free: nothing to give back"),
        (20, 0, 8, 0, 0, 0, 12, "free IPs beyond pre-allocate go back"),
        (20, 0, 8, 0, 0, 4, 8, "max-above-watermark more free IPs are kept"),
        (20, 0, 8, 16, 0, 0, 4, "never below min-allocate"),
        (20, 18, 8, 0, 0, 0, 0, "used IPs are never counted as excess"),
        (20, 5, 8, 0, 10, 0, 10, "a pool above max-allocate shrinks to it, even below pre-allocate free"),
        (20, 15, 2, 0, 10, 0, 5, "...but never below what pods use"),
        (0, 0, 8, 0, 0, 0, 0, "an empty pool has nothing to give"),
    ];
    for (available, used, pre, min, max, watermark, want, meaning) in rows {
        assert_eq!(excess_ips(available, used, &knobs(pre, min, max, watermark)), want, "{meaning}");
    }
}

/// A node of a small instance type (4 ENIs x 6 IPs: 5 pod IPs per ENI).
struct Node {
    snap: NodeSnapshot,
}

fn subnet(id: &str, zone: &str, free: u32) -> Subnet {
    Subnet {
        id: SubnetId::from(id),
        vpc: VpcId::from("vpc-1"),
        zone: Zone::from(zone),
        cidr: "10.0.0.0/24".into(),
        free_ips: free,
        tags: BTreeMap::new(),
    }
}

fn ip(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + n)
}

impl Node {
    fn new(first_index: u32, knobs: PoolKnobs) -> Self {
        let limits =
            InstanceLimits { instance_type: InstanceType::from("t.small"), max_enis: 4, ipv4_per_eni: 6 };
        let primary = EniView {
            id: EniId::from("eni-0"),
            device_index: 0,
            subnet: SubnetId::from("s-a"),
            secondary_ips: 0,
            in_use: true,
            owner: EniOwner::Primary,
        };
        Self {
            snap: NodeSnapshot {
                zone: Zone::from("z1"),
                limits,
                first_interface_index: first_index,
                knobs,
                enis: vec![primary],
                pool: vec![],
                subnets: vec![subnet("s-a", "z1", 100), subnet("s-b", "z1", 200), subnet("s-c", "z2", 900)],
                selector: SubnetSelector::default(),
                batch: CloudProfile::aws().batch,
                release_delay: Duration::from_secs(180),
            },
        }
    }

    /// Adds an in-use ENI at `index` holding `used` IPs in use and `free` free ones.
    fn eni(mut self, index: u32, used: u32, free: u32) -> Self {
        let id = EniId(format!("eni-{index}"));
        if index != 0 {
            self.snap.enis.push(EniView {
                id: id.clone(),
                device_index: index,
                subnet: SubnetId::from("s-a"),
                secondary_ips: 0,
                in_use: true,
                owner: EniOwner::Ours,
            });
        }
        let eni = self.snap.enis.iter_mut().find(|e| e.id == id).unwrap();
        eni.secondary_ips += used + free;
        let base = index * 100 + self.snap.pool.len() as u32;
        for n in 0..used + free {
            let free_since = (n >= used).then_some(Duration::ZERO);
            self.snap.pool.push(PoolIp { ip: ip(base + n), eni: id.clone(), free_since, release: None });
        }
        self
    }

    /// Sets the release-handshake state of every free pool IP (as the agent would answer).
    fn answered(mut self, state: ReleaseState) -> Self {
        for p in self.snap.pool.iter_mut().filter(|p| p.free_since.is_some()) {
            p.release = Some(state);
        }
        self
    }

    fn plan(&self) -> Plan {
        plan(&self.snap, Duration::from_secs(600))
    }
}

fn assign(eni: &str, count: u32) -> Action {
    Action::Assign { eni: EniId::from(eni), count }
}

fn create(subnet: &str, device_index: u32, ips: u32) -> Action {
    Action::CreateEni { subnet: SubnetId::from(subnet), device_index, ips }
}

#[test]
fn a_new_node_fills_its_primary_eni_first_when_allowed() {
    let p = Node::new(0, knobs(4, 0, 0, 0)).plan();
    assert_eq!(p.actions, vec![assign("eni-0", 4)]);
}

#[test]
fn with_first_index_1_the_primary_eni_is_never_used_and_the_richest_subnet_is_picked() {
    let p = Node::new(1, knobs(4, 0, 0, 0)).plan();
    assert_eq!(p.actions, vec![create("s-b", 1, 4)], "s-b has most free IPs in zone z1; s-c is in z2");
}

#[test]
fn a_deficit_beyond_one_eni_spills_onto_new_enis_in_one_plan() {
    // 5 pod IPs per ENI: 12 needed = 5 on eni-0, then 5 + 2 on two new ENIs.
    let p = Node::new(0, knobs(12, 0, 0, 0)).plan();
    assert_eq!(p.actions, vec![assign("eni-0", 5), create("s-b", 1, 5), create("s-b", 2, 2)]);
    assert_eq!(p.shortfall, None);
}

#[test]
fn max_above_watermark_tops_up_the_eni_being_filled() {
    // needs 2, ENI has room for 5: takes 2 + 2 surplus.
    let p = Node::new(0, knobs(2, 0, 0, 2)).plan();
    assert_eq!(p.actions, vec![assign("eni-0", 4)]);
}

#[test]
fn max_above_watermark_never_opens_an_eni_of_its_own() {
    // eni-0 has room for exactly the 3 needed; the surplus does not spill to a new ENI.
    let p = Node::new(0, knobs(3, 0, 0, 4)).eni(0, 2, 0).plan();
    assert_eq!(p.actions, vec![assign("eni-0", 3)]);
}

#[test]
fn max_above_watermark_rides_on_an_eni_created_anyway() {
    // eni-0 is full; 2 needed go on a new ENI, which takes 3 more (room 5).
    let p = Node::new(0, knobs(2, 0, 0, 3)).eni(0, 5, 0).plan();
    assert_eq!(p.actions, vec![create("s-b", 1, 5)]);
}

#[test]
fn max_above_watermark_respects_max_allocate() {
    let p = Node::new(0, knobs(2, 0, 3, 4)).plan();
    assert_eq!(p.actions, vec![assign("eni-0", 3)]);
}

#[test]
fn a_node_at_its_instance_limit_reports_the_shortfall() {
    let node = Node::new(0, knobs(8, 0, 0, 0)).eni(0, 5, 0).eni(1, 5, 0).eni(2, 5, 0).eni(3, 3, 0);
    let p = node.plan();
    assert_eq!(p.actions, vec![assign("eni-3", 2)]);
    assert_eq!(p.shortfall, Some(Shortfall::InstanceLimit { missing: 6 }));
}

#[test]
fn min_allocate_above_capacity_plans_what_fits_and_says_why_not_more() {
    // 4 ENIs x 5 = 20 pod IPs at most.
    let p = Node::new(0, knobs(0, 30, 0, 0)).plan();
    let planned: u32 = p
        .actions
        .iter()
        .map(|a| match a {
            Action::Assign { count, .. } => *count,
            Action::CreateEni { ips, .. } => *ips,
            Action::Release { .. } => 0,
        })
        .sum();
    assert_eq!(planned, 20);
    assert_eq!(p.shortfall, Some(Shortfall::InstanceLimit { missing: 10 }));
}

#[test]
fn an_exhausted_subnet_is_skipped_and_all_exhausted_is_reported() {
    let mut node = Node::new(1, knobs(4, 0, 0, 0));
    node.snap.subnets = vec![subnet("s-a", "z1", 1), subnet("s-b", "z1", 3)];
    // s-b: 3 free = the ENI's primary + 2 pod IPs.
    let p = node.plan();
    assert_eq!(p.actions, vec![create("s-b", 1, 2)]);
    assert_eq!(p.shortfall, Some(Shortfall::SubnetsExhausted { missing: 2 }));
}

#[test]
fn selectors_restrict_subnets_by_id_and_tag() {
    let mut node = Node::new(1, knobs(1, 0, 0, 0));
    node.snap.selector.ids = vec![SubnetId::from("s-a")];
    assert_eq!(node.plan().actions, vec![create("s-a", 1, 1)]);

    node.snap.selector.ids.clear();
    node.snap.selector.tags = BTreeMap::from([("tier".into(), "pods".into())]);
    assert_eq!(node.plan().shortfall, Some(Shortfall::NoMatchingSubnet { missing: 1 }));
    node.snap.subnets[0].tags.insert("tier".into(), "pods".into());
    assert_eq!(node.plan().actions, vec![create("s-a", 1, 1)]);
}

#[test]
fn alibaba_batches_assigns_and_creates_by_ten() {
    let mut node = Node::new(0, knobs(25, 0, 0, 0));
    node.snap.limits.ipv4_per_eni = 30; // 29 pod IPs per ENI
    node.snap.batch = CloudProfile::alibaba().batch;
    assert_eq!(node.plan().actions, vec![assign("eni-0", 10), assign("eni-0", 10), assign("eni-0", 5)]);

    let mut node = Node::new(1, knobs(25, 0, 0, 0));
    node.snap.limits.ipv4_per_eni = 30;
    node.snap.batch = CloudProfile::alibaba().batch;
    // One create carries 10; the other 15 are assigned once the ENI is in use.
    assert_eq!(node.plan().actions, vec![create("s-b", 1, 10)]);
}

#[test]
fn ips_on_an_attaching_eni_count_as_on_their_way() {
    let mut node = Node::new(1, knobs(4, 0, 0, 0));
    node.snap.enis.push(EniView {
        id: EniId::from("eni-1"),
        device_index: 1,
        subnet: SubnetId::from("s-b"),
        secondary_ips: 4,
        in_use: false,
        owner: EniOwner::Ours,
    });
    assert_eq!(node.plan(), Plan::default(), "no second ENI while the first is attaching");
}

/// Another CNI's ENI (untagged, at or above the first index) on the node, holding `ips`.
fn foreign(node: &mut Node, index: u32, ips: u32, in_use: bool) {
    node.snap.enis.push(EniView {
        id: EniId(format!("eni-foreign-{index}")),
        device_index: index,
        subnet: SubnetId::from("s-a"),
        secondary_ips: ips,
        in_use,
        owner: EniOwner::Foreign,
    });
}

#[test]
fn a_foreign_eni_gets_no_ip_but_keeps_its_device_slot() {
    // First index 1: the foreign ENI at 1 has room, but IPs go to a new ENI at 2.
    let mut node = Node::new(1, knobs(3, 0, 0, 0));
    foreign(&mut node, 1, 1, true);
    assert_eq!(node.plan().actions, vec![create("s-b", 2, 3)]);
    // Every slot but the primary's taken by foreign ENIs: an instance limit, not an assign to them.
    let mut node = Node::new(1, knobs(3, 0, 0, 0));
    for index in 1..4 {
        foreign(&mut node, index, 0, true);
    }
    let plan = node.plan();
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.shortfall, Some(Shortfall::InstanceLimit { missing: 3 }));
}

#[test]
fn the_primary_eni_takes_ips_around_the_ones_another_cni_holds() {
    // 5 pod IPs per ENI; another CNI holds 4 on the primary: 1 assigned there, the rest on a new ENI.
    let mut node = Node::new(0, knobs(3, 0, 0, 0));
    node.snap.enis[0].secondary_ips = 4;
    assert_eq!(node.plan().actions, vec![assign("eni-0", 1), create("s-b", 1, 2)]);
}

#[test]
fn a_foreign_eni_attaching_is_not_counted_as_on_its_way() {
    let mut node = Node::new(1, knobs(4, 0, 0, 0));
    foreign(&mut node, 1, 4, false);
    assert_eq!(node.plan().actions, vec![create("s-b", 2, 4)]);
}

#[test]
fn release_takes_free_ips_past_the_delay_emptying_the_freest_eni_first() {
    // 12 free, pre 5: 7 excess. eni-2 has 5 free (all go), then 2 of eni-1's.
    let node =
        Node::new(0, knobs(5, 0, 0, 0)).eni(0, 2, 3).eni(1, 0, 4).eni(2, 0, 5).answered(ReleaseState::Ready);
    let p = node.plan();
    assert_eq!(p.excess, 7);
    let released: Vec<(String, usize)> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::Release { eni, ips } => (eni.to_string(), ips.len()),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(released, vec![("eni-2".into(), 5), ("eni-1".into(), 2)]);
}

#[test]
fn ips_in_use_or_freed_too_recently_are_never_released() {
    let mut node = Node::new(0, knobs(0, 0, 0, 0)).eni(0, 3, 2).answered(ReleaseState::Ready);
    // Both free IPs were freed at t=500 s; at t=600 s the 180 s delay has not passed.
    for p in node.snap.pool.iter_mut().filter(|p| p.free_since.is_some()) {
        p.free_since = Some(Duration::from_secs(500));
    }
    let p = node.plan();
    assert_eq!((p.excess, p.actions.len(), p.release_waiting), (2, 0, 2));
    let later = plan(&node.snap, Duration::from_secs(680));
    let Action::Release { ips, .. } = &later.actions[0] else { panic!("{later:?}") };
    assert_eq!(ips.len(), 2);
    let in_use: Vec<_> = node.snap.pool.iter().filter(|p| p.free_since.is_none()).map(|p| p.ip).collect();
    assert!(ips.iter().all(|ip| !in_use.contains(ip)));
}

#[test]
fn alibaba_unassigns_at_most_ten_per_call() {
    let mut node = Node::new(0, knobs(0, 0, 0, 0));
    node.snap.limits.ipv4_per_eni = 30;
    node.snap.batch = CloudProfile::alibaba().batch;
    let node = node.eni(0, 0, 25).answered(ReleaseState::Ready);
    let sizes: Vec<usize> = node
        .plan()
        .actions
        .iter()
        .map(|a| if let Action::Release { ips, .. } = a { ips.len() } else { 0 })
        .collect();
    assert_eq!(sizes, vec![10, 10, 5]);
}

#[test]
fn a_node_at_target_does_nothing() {
    let node = Node::new(0, knobs(3, 0, 0, 2)).eni(0, 2, 4);
    assert_eq!(node.plan(), Plan::default(), "4 free is within pre 3 + watermark 2");
}

#[test]
fn release_handshake_table() {
    use ReleaseState::*;
    // One ENI with 2 used and 4 free IPs (ip 2..=5 free), pre-allocate 2: 2 excess.
    // (knobs pre, state of each free IP, cloud-released, marked, unmarked, awaiting, what it means)
    type Row =
        (u32, [Option<ReleaseState>; 4], &'static [u32], &'static [u32], &'static [u32], u32, &'static str);
    let rows: [Row; 8] = [
        (2, [None; 4], &[], &[2, 3], &[], 0, "excess IPs are marked first, never released unasked"),
        (2, [Some(Marked), Some(Marked), None, None], &[], &[], &[], 2, "marked IPs wait for the agent"),
        (
            2,
            [Some(Ready), Some(Ready), None, None],
            &[2, 3],
            &[],
            &[],
            0,
            "IPs the agent answered ready go back to the cloud",
        ),
        (
            2,
            [None, None, Some(Ready), Some(Ready)],
            &[4, 5],
            &[],
            &[],
            0,
            "IPs already in the handshake are chosen first",
        ),
        (
            2,
            [Some(DoNotRelease), Some(Ready), None, None],
            &[3],
            &[4],
            &[2],
            0,
            "a refusal is unmarked and another IP is marked instead",
        ),
        (
            2,
            [Some(Ready), Some(Marked), Some(Ready), None],
            &[2, 4],
            &[],
            &[3],
            0,
            "marks beyond the excess are taken back",
        ),
        (
            4,
            [Some(Ready), Some(Marked), None, None],
            &[],
            &[],
            &[2, 3],
            0,
            "no excess: every mark goes back to the agent",
        ),
        (
            6,
            [Some(Ready), None, None, None],
            &[],
            &[],
            &[2],
            0,
            "a node short of IPs takes its marks back before asking the cloud",
        ),
    ];
    for (pre, states, released, marked, unmarked, awaiting, meaning) in rows {
        let mut node = Node::new(0, knobs(pre, 0, 0, 0)).eni(0, 2, 4);
        for (p, state) in node.snap.pool.iter_mut().skip(2).zip(states) {
            p.release = state;
        }
        let p = node.plan();
        let got_released: Vec<Ipv4Addr> = p
            .actions
            .iter()
            .flat_map(|a| match a {
                Action::Release { ips, .. } => ips.clone(),
                _ => vec![],
            })
            .collect();
        let ips = |ns: &[u32]| ns.iter().map(|n| ip(*n)).collect::<Vec<_>>();
        assert_eq!(got_released, ips(released), "released: {meaning}");
        assert_eq!(p.mark, ips(marked), "marked: {meaning}");
        assert_eq!(p.unmark, ips(unmarked), "unmarked: {meaning}");
        assert_eq!(p.awaiting_agent, awaiting, "awaiting: {meaning}");
    }
}

#[test]
fn an_ip_a_pod_holds_is_never_released_even_if_answered_ready() {
    // The agent's answer is stale: the operator's `used` says a pod holds ip 0.
    let mut node = Node::new(0, knobs(0, 0, 0, 0)).eni(0, 1, 1).answered(ReleaseState::Ready);
    node.snap.pool[0].release = Some(ReleaseState::Ready);
    let p = node.plan();
    let released: Vec<Ipv4Addr> = p
        .actions
        .iter()
        .flat_map(|a| if let Action::Release { ips, .. } = a { ips.clone() } else { vec![] })
        .collect();
    assert_eq!(released, vec![ip(1)]);
    assert_eq!(p.unmark, vec![ip(0)], "the held IP's entry goes back to the agent");
}

#[test]
fn reachable_table() {
    // A t.small (4 ENIs x 5 pod IPs); subnet s-a holds the ENIs' addresses.
    let with_s_a = |node: Node, free: u32| {
        let mut node = node;
        node.snap.subnets = vec![subnet("s-a", "z1", free)];
        node
    };
    // (the node, target, reachable, why short, the case)
    let rows: Vec<(Node, u32, u32, Option<Shortfall>, &str)> = vec![
        (Node::new(0, knobs(3, 0, 0, 0)).eni(0, 0, 3), 20, 20, None, "room everywhere: the whole limit"),
        (
            Node::new(1, knobs(3, 0, 0, 0)).eni(1, 0, 3),
            15,
            15,
            None,
            "first index 1: three ENIs of five, the limit",
        ),
        (
            with_s_a(Node::new(0, knobs(3, 0, 0, 0)).eni(0, 2, 3), 0),
            20,
            5,
            Some(Shortfall::SubnetsExhausted { missing: 15 }),
            "the subnet exhausted: only the pool",
        ),
        (
            with_s_a(Node::new(0, knobs(3, 0, 0, 0)).eni(0, 0, 3), 4),
            20,
            6,
            Some(Shortfall::SubnetsExhausted { missing: 14 }),
            "four addresses left: three in the pool, two more on the primary ENI, a new ENI (its own \
             primary address) with one",
        ),
        (
            Node::new(0, knobs(3, 0, 0, 0)).eni(0, 5, 0).eni(1, 5, 0).eni(2, 5, 0).eni(3, 5, 0),
            20,
            20,
            None,
            "a full node reaches its limit: nothing short",
        ),
        (
            with_s_a(Node::new(0, knobs(3, 0, 0, 0)).eni(0, 2, 1).eni(1, 2, 1).eni(2, 2, 1).eni(3, 2, 1), 0),
            20,
            12,
            Some(Shortfall::SubnetsExhausted { missing: 8 }),
            "every ENI slot taken, the ENIs not full: the subnet is what stops it, not the instance",
        ),
        (
            Node::new(0, knobs(3, 0, 10, 0)).eni(0, 0, 3),
            10,
            10,
            None,
            "the target, not the knobs' ceiling, bounds the probe",
        ),
    ];
    for (node, target, want, short, case) in rows {
        assert_eq!(reachable(&node.snap, target), (want, short), "{case}");
    }
}
