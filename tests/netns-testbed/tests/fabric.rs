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
    let cidr = |e: &Eni| subnets.iter().find(|s| s.id == e.subnet).expect("the ENI's subnet").cidr.clone();
    let gateway = |e: &Eni| {
        let base: Ipv4Addr = cidr(e).split('/').next().unwrap().parse().unwrap();
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
            prefix_len: cidr(e).split('/').nth(1).unwrap().parse().unwrap(),
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
        let peer = if eni.id == eni_a.id { eni_b } else { eni_a };
        let to_peer = format!("{}/32", peer.secondary_ips[0]);
        node.ip(&["route", "add", &to_peer, "via", &eni.gateway.to_string(), "dev", &link, "onlink"]);
    }
    let reply = ping(fabric.node(&a.to_string()), eni_b.secondary_ips[0], 3, "0.05", None);
    assert_eq!(reply.received, 3, "A reaches B over the fabric: {reply:?}");
    let drops = |fabric: &Fabric| fabric.source_check_drops().values().sum::<u64>();
    assert_eq!(drops(&fabric), 0, "every address A and B sent from is their ENI's own");

    // The primary ENI is set up as DHCP does: primary address with the subnet's prefix, and
    // the default route through the subnet's gateway.
    let primary_b =
        view.iter().find(|e| e.instance.as_deref() == Some(&b.to_string()) && e.device_index == 0).unwrap();
    let primary_a =
        view.iter().find(|e| e.instance.as_deref() == Some(&a.to_string()) && e.device_index == 0).unwrap();
    let addresses = fabric.node(&b.to_string()).ip_text(&["-4", "-o", "addr", "show", "dev", "eni0"]);
    assert!(addresses.contains(&format!("{}/24", primary_b.primary_ip)), "{addresses}");
    let default = fabric.node(&b.to_string()).ip_text(&["route", "show", "default"]);
    assert!(default.contains(&format!("via {} dev eni0", primary_b.gateway)), "{default}");

    // A sends from ENI 1's address out of its primary ENI: the VPC drops it and counts it
    // against the primary ENI.
    let spoofed =
        ping(fabric.node(&a.to_string()), primary_b.primary_ip, 3, "0.05", Some(eni_a.secondary_ips[0]));
    assert_eq!(spoofed.received, 0, "the source check drops it: {spoofed:?}");
    let by_eni = fabric.source_check_drops();
    assert_eq!(by_eni.get(&primary_a.id).copied(), Some(3), "{by_eni:?}");
    assert_eq!(drops(&fabric), 3, "{by_eni:?}");
    let own = ping(fabric.node(&a.to_string()), primary_b.primary_ip, 3, "0.05", None);
    assert_eq!(own.received, 3, "from the primary ENI's own address it passes: {own:?}");

    // A client outside the VPC reaches a node's primary address through the router.
    let outside = ping(fabric.outside_client(), primary_b.primary_ip, 3, "0.05", None);
    assert_eq!(outside.received, 3, "{outside:?}");

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
    assert_eq!(drops(&fabric), 3, "an unplugged ENI's drops are kept");
    let links = fabric.node(&b.to_string()).ip(&["-o", "link", "show"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&Fabric::eni_link(1)), "B's ENI 1 is gone");
}
