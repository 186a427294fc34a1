//! The GC decision, one row per case: what it sees and what it must do.

use std::net::Ipv4Addr;

use super::*;

const GRACE: Duration = Duration::from_secs(600);

fn identity() -> ClusterIdentity {
    ClusterIdentity { id: "prod".into(), uid: Some("uid-prod".into()) }
}

/// Our tags, another cluster's, or none.
#[derive(Clone, Copy)]
enum Tags {
    Ours,
    OurIdOtherUid,
    OtherCluster,
    None,
}

fn eni(tags: Tags, instance: Option<&str>, device_index: Option<u32>, state: EniState) -> Eni {
    let made = [(tag::CREATED_BY, tag::CREATOR), (tag::NODE, "node-1")];
    let identity: &[(&str, &str)] = match tags {
        Tags::Ours => &[(tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "uid-prod")],
        Tags::OurIdOtherUid => &[(tag::CLUSTER, "prod"), (tag::CLUSTER_UID, "uid-other")],
        Tags::OtherCluster => &[(tag::CLUSTER, "staging"), (tag::CLUSTER_UID, "uid-staging")],
        Tags::None => &[],
    };
    let tags = match tags {
        Tags::None => BTreeMap::new(),
        _ => made.iter().chain(identity).map(|(k, v)| (k.to_string(), v.to_string())).collect(),
    };
    Eni {
        id: "eni-x".into(),
        subnet: "subnet-1".into(),
        vpc: "vpc-1".into(),
        zone: "z1".into(),
        mac: String::new(),
        instance: instance.map(InstanceId::from),
        device_index,
        state,
        primary_ip: Ipv4Addr::new(10, 0, 0, 9),
        secondary_ips: vec![Ipv4Addr::new(10, 0, 0, 10)],
        tags,
    }
}

/// One case: its name, the ENI, the cloud's word on i-1 (`None`: not known this pass),
/// whether a Node names i-1, how long it has been seen dead (`None`: never), the verdict.
struct Row(&'static str, Eni, Option<InstanceState>, bool, Option<Duration>, Verdict);

#[test]
fn gc_verdict_for_each_case() {
    use EniState::{Attaching, Detached, Detaching, InUse};
    use InstanceState::{Gone, Running, Stopped, Terminated};
    let on = Some("i-1");
    let past = Some(GRACE);
    let within = Some(GRACE / 2);
    #[rustfmt::skip]
    let rows = [
        Row("another cluster's ENI (other id), detached long ago: never", eni(Tags::OtherCluster, None, None, Detached), None, false, past, Verdict::Keep(Keep::OtherCluster)),
        Row("another cluster's ENI on a terminated instance: never", eni(Tags::OtherCluster, on, Some(1), InUse), Some(Terminated), false, past, Verdict::Keep(Keep::OtherCluster)),
        Row("our id with another cluster's UID: never", eni(Tags::OurIdOtherUid, on, Some(1), InUse), Some(Gone), false, past, Verdict::Keep(Keep::OtherCluster)),
        Row("untagged, detached long ago: never", eni(Tags::None, None, None, Detached), None, false, past, Verdict::Keep(Keep::Untagged)),
        Row("untagged on a terminated instance: never", eni(Tags::None, on, Some(1), InUse), Some(Terminated), false, past, Verdict::Keep(Keep::Untagged)),
        Row("ours, primary (index 0) of a terminated instance: never", eni(Tags::Ours, on, Some(0), InUse), Some(Terminated), false, past, Verdict::Keep(Keep::Primary)),
        Row("ours, a Node names the instance: kept", eni(Tags::Ours, on, Some(1), InUse), None, true, None, Verdict::Keep(Keep::NodeNamesInstance)),
        Row("ours, a Node names the instance the cloud says is terminated: kept", eni(Tags::Ours, on, Some(1), InUse), Some(Terminated), true, past, Verdict::Keep(Keep::NodeNamesInstance)),
        Row("ours, Node missing, instance running (deleted Node, lagging watch): kept", eni(Tags::Ours, on, Some(1), InUse), Some(Running), false, past, Verdict::Keep(Keep::InstanceRunning)),
        Row("ours, Node missing, instance stopped: kept", eni(Tags::Ours, on, Some(1), InUse), Some(Stopped), false, past, Verdict::Keep(Keep::InstanceStopped)),
        Row("ours, Node missing, instance state not known this pass: kept", eni(Tags::Ours, on, Some(1), InUse), None, false, past, Verdict::Keep(Keep::InstanceStateUnknown)),
        Row("ours, instance terminated, first seen now: kept for the grace", eni(Tags::Ours, on, Some(1), InUse), Some(Terminated), false, None, Verdict::Keep(Keep::WithinGrace)),
        Row("ours, instance terminated, within the grace: kept", eni(Tags::Ours, on, Some(1), InUse), Some(Terminated), false, within, Verdict::Keep(Keep::WithinGrace)),
        Row("ours, instance terminated past the grace: detach and delete", eni(Tags::Ours, on, Some(1), InUse), Some(Terminated), false, past, Verdict::DetachAndDelete),
        Row("ours, instance unknown to the cloud past the grace: detach and delete", eni(Tags::Ours, on, Some(2), InUse), Some(Gone), false, past, Verdict::DetachAndDelete),
        Row("ours, instance unknown to the cloud within the grace: kept", eni(Tags::Ours, on, Some(2), Attaching), Some(Gone), false, within, Verdict::Keep(Keep::WithinGrace)),
        Row("ours, detached, first seen now: kept for the grace", eni(Tags::Ours, None, None, Detached), None, false, None, Verdict::Keep(Keep::WithinGrace)),
        Row("ours, detached within the grace: kept", eni(Tags::Ours, None, None, Detached), None, false, within, Verdict::Keep(Keep::WithinGrace)),
        Row("ours, detached past the grace: delete", eni(Tags::Ours, None, None, Detached), None, false, past, Verdict::Delete),
        Row("ours, detaching without an instance: wait for it to settle", eni(Tags::Ours, None, None, Detaching), None, false, past, Verdict::Keep(Keep::InTransition)),
    ];
    let now = Instant::now() + GRACE * 2;
    let nodes_with = BTreeSet::from([InstanceId::from("i-1")]);
    let no_nodes = BTreeSet::new();
    for Row(case, eni, cloud, node, dead_for, want) in rows {
        let instances: BTreeMap<InstanceId, InstanceState> =
            cloud.map(|s| (InstanceId::from("i-1"), s)).into_iter().collect();
        let since: HashMap<EniId, Instant> =
            dead_for.map(|d| (eni.id.clone(), now - d)).into_iter().collect();
        let id = identity();
        let world = World {
            enis: std::slice::from_ref(&eni),
            instances: &instances,
            node_instances: if node { &nodes_with } else { &no_nodes },
            since: &since,
            now,
            grace: GRACE,
            identity: &id,
        };
        let decision = decide(&world);
        assert_eq!(decision.verdicts, vec![(eni.id.clone(), want)], "{case}");
    }
}

/// One ENI's decision with i-1 terminated in the cloud and Nodes naming `nodes`.
fn decide_one(eni: Eni, nodes: &[&str], since: &HashMap<EniId, Instant>, now: Instant) -> Decision {
    let instances = BTreeMap::from([(InstanceId::from("i-1"), InstanceState::Terminated)]);
    let node_instances: BTreeSet<InstanceId> = nodes.iter().map(|n| InstanceId::from(*n)).collect();
    decide(&World {
        enis: &[eni],
        instances: &instances,
        node_instances: &node_instances,
        since,
        now,
        grace: GRACE,
        identity: &identity(),
    })
}

#[test]
fn clocks_start_when_first_seen_dead_run_through_a_detach_and_stop_when_alive() {
    let t0 = Instant::now();
    let x = EniId::from("eni-x");
    let attached = || eni(Tags::Ours, Some("i-1"), Some(1), EniState::InUse);
    let first = decide_one(attached(), &[], &HashMap::new(), t0);
    assert_eq!(first.since[&x], t0, "the clock starts at the first dead sighting");
    let second = decide_one(attached(), &[], &first.since, t0 + GRACE);
    assert_eq!(second.verdicts[0].1, Verdict::DetachAndDelete);
    assert_eq!(second.since[&x], t0, "the clock keeps its start");
    // Detaching (no instance any more), then detached: the same clock, so no second grace.
    let third = decide_one(eni(Tags::Ours, None, None, EniState::Detaching), &[], &second.since, t0 + GRACE);
    assert_eq!(third.since[&x], t0);
    let fourth = decide_one(eni(Tags::Ours, None, None, EniState::Detached), &[], &third.since, t0 + GRACE);
    assert_eq!(fourth.verdicts[0].1, Verdict::Delete);
    // Attached again to an instance a Node names: the clock is dropped.
    let back = decide_one(eni(Tags::Ours, Some("i-2"), Some(1), EniState::InUse), &["i-2"], &third.since, t0);
    assert!(back.since.is_empty());
    // A detaching ENI never seen dead does not start a clock.
    let fresh = decide_one(eni(Tags::Ours, None, None, EniState::Detaching), &[], &HashMap::new(), t0);
    assert!(fresh.since.is_empty());
}

#[test]
fn only_instances_of_our_non_primary_enis_without_a_node_are_asked() {
    let id = identity();
    let mut enis = vec![
        eni(Tags::Ours, Some("i-node"), Some(1), EniState::InUse),
        eni(Tags::Ours, Some("i-nonode"), Some(1), EniState::InUse),
        eni(Tags::Ours, Some("i-nonode"), Some(2), EniState::InUse),
        eni(Tags::Ours, Some("i-primary-only"), Some(0), EniState::InUse),
        eni(Tags::OtherCluster, Some("i-theirs"), Some(1), EniState::InUse),
        eni(Tags::None, Some("i-untagged"), Some(1), EniState::InUse),
        eni(Tags::Ours, None, None, EniState::Detached),
    ];
    for (n, e) in enis.iter_mut().enumerate() {
        e.id = EniId::from(format!("eni-{n}").as_str());
    }
    let nodes = BTreeSet::from([InstanceId::from("i-node")]);
    assert_eq!(instances_to_ask(&enis, &id, &nodes), vec![InstanceId::from("i-nonode")]);
}
