//! The fabric follows the fake cloud (root): ENIs attached in the cloud appear
//! in their node's namespace with the cloud's MAC, the router routes their
//! addresses, two nodes reach each other through it, and what the cloud takes
//! away (an address, an ENI) goes away at the next sync.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;

use eni_ipam_api::VpcId;
use eni_ipam_cloud::fake::FakeCloud;
use eni_ipam_cloud::{CloudProfile, CreateEni, Eni, EniState};
use eni_ipam_netns_testbed::fabric::{CloudEni, Fabric};
use eni_ipam_netns_testbed::require_root_and_bpffs;
use eni_ipam_netns_testbed::traffic::ping;

/// The fabric's view of the cloud's ENIs; every subnet's gateway is its first host.
fn listing(cloud: &FakeCloud) -> Vec<CloudEni> {
    let console = cloud.console();
    let subnets = console.list_subnets(&VpcId::from("vpc-fabric"));
    let gateway = |e: &Eni| {
        let cidr = &subnets.iter().find(|s| s.id == e.subnet).expect("the ENI's subnet").cidr;
        let base: Ipv4Addr = cidr.split('/').next().unwrap().parse().unwrap();
        Ipv4Addr::from(u32::from(base) + 1)
    };
    console
        .all_enis()
        .filter(|e| e.state == EniState::InUse)
        .map(|e| CloudEni {
            id: e.id.to_string(),
            instance: e.instance.as_ref().map(ToString::to_string),
            device_index: e.device_index.unwrap_or(0),
            mac: e.mac.clone(),
            primary_ip: e.primary_ip,
            secondary_ips: e.secondary_ips.clone(),
            gateway: gateway(e),
        })
        .collect()
}

#[test]
fn enis_attached_in_the_cloud_are_plugged_routed_and_unplugged() {
    require_root_and_bpffs();
    let mut profile = CloudProfile::aws();
    profile.attach_delay = Duration::ZERO;
    let cloud = FakeCloud::new(profile, VpcId::from("vpc-fabric"), 3);
    let (subnet, a, b) = {
        let mut console = cloud.console();
        let subnet =
            console.add_subnet("us-east-1a".into(), Ipv4Addr::new(10, 9, 0, 0), 24, Default::default());
        let a = console.launch_instance("m5.large", &subnet).unwrap();
        let b = console.launch_instance("m5.large", &subnet).unwrap();
        (subnet, a, b)
    };
    let mut enis = Vec::new();
    for (instance, token) in [(&a, "a"), (&b, "b")] {
        let mut console = cloud.console();
        let request = CreateEni {
            subnet: subnet.clone(),
            security_groups: vec![],
            secondary_ips: 2,
            tags: Default::default(),
            client_token: token.into(),
        };
        let eni = console.create_eni(&request).unwrap();
        console.attach_eni(&eni.id, instance, 1, Instant::now()).unwrap();
        enis.push(eni.id);
    }
    cloud.console().settle(Instant::now() + Duration::from_secs(1));

    let mut fabric = Fabric::new("fabric");
    fabric.add_node(&a.to_string());
    fabric.add_node(&b.to_string());
    let first = fabric.sync(&listing(&cloud));
    assert_eq!(first.plugged.len(), 4, "two primaries and two secondaries: {first:?}");
    assert_eq!(first.routed.len(), 4 + 4, "every primary and secondary address: {first:?}");
    let second = fabric.sync(&listing(&cloud));
    assert_eq!(second, Default::default(), "a second sync changes nothing");

    // The link of A's ENI at index 1 carries the cloud's MAC.
    let view = listing(&cloud);
    let eni_a =
        view.iter().find(|e| e.instance.as_deref() == Some(&a.to_string()) && e.device_index == 1).unwrap();
    let eni_b =
        view.iter().find(|e| e.instance.as_deref() == Some(&b.to_string()) && e.device_index == 1).unwrap();
    let (_, mac) = fabric.node(&a.to_string()).link(&Fabric::eni_link(1));
    assert_eq!(mac.to_string(), eni_a.mac);

    // Each node uses one of its ENI's secondary addresses; they reach each other through the router.
    for (instance, eni) in [(&a, eni_a), (&b, eni_b)] {
        let node = fabric.node(&instance.to_string());
        let link = Fabric::eni_link(1);
        node.ip(&["addr", "add", &format!("{}/32", eni.secondary_ips[0]), "dev", &link]);
        node.ip(&["route", "add", "default", "via", &eni.gateway.to_string(), "dev", &link, "onlink"]);
    }
    let reply = ping(fabric.node(&a.to_string()), eni_b.secondary_ips[0], 3, "0.05", None);
    assert_eq!(reply.received, 3, "A reaches B over the fabric: {reply:?}");

    // An address that moves to another ENI between two syncs (one node released it, another
    // got it) is routed to its new link, whatever order the listing comes in.
    let ip = eni_a.secondary_ips[1];
    let mut moved = listing(&cloud);
    for e in &mut moved {
        if e.id == eni_a.id {
            e.secondary_ips.retain(|x| *x != ip);
        } else if e.id == eni_b.id {
            e.secondary_ips.push(ip);
        }
    }
    moved.sort_by_key(|e| e.id != eni_b.id);
    let report = fabric.sync(&moved);
    assert_eq!((report.routed.clone(), report.unrouted.clone()), (vec![ip], vec![ip]), "{report:?}");
    let route = fabric.router().ip(&["-o", "route", "show", &format!("{ip}/32")]);
    let (_, b_mac) = fabric.node(&b.to_string()).link(&Fabric::eni_link(1));
    let neighbour = fabric.router().ip(&["neigh", "show", &ip.to_string()]);
    assert!(!String::from_utf8_lossy(&route.stdout).is_empty(), "{ip} is still routed");
    assert!(String::from_utf8_lossy(&neighbour.stdout).contains(&b_mac.to_string()), "{ip} now goes to B");
    let back = fabric.sync(&listing(&cloud));
    assert_eq!((back.routed, back.unrouted), (vec![ip], vec![ip]), "and back to A");

    // The cloud takes an address and an ENI back: so does the fabric.
    cloud.console().unassign_ips(&enis[0], &[eni_a.secondary_ips[1]]).unwrap();
    let taken = fabric.sync(&listing(&cloud));
    assert_eq!(taken.unrouted, vec![eni_a.secondary_ips[1]]);
    cloud.console().detach_eni(&enis[1]).unwrap();
    cloud.console().settle(Instant::now() + Duration::from_secs(1));
    let detached = fabric.sync(&listing(&cloud));
    assert_eq!(detached.unplugged, vec![enis[1].to_string()]);
    let links = fabric.node(&b.to_string()).ip(&["-o", "link", "show"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&Fabric::eni_link(1)), "B's ENI 1 is gone");
}
