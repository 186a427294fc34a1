//! The agent's netlink module against the real kernel, in a private network namespace:
//! links and addresses are read, per-link forwarding and rp_filter are set, rules and routes
//! are added, found and deleted, and a refused request carries the kernel's errno and names
//! the object. Needs root; the namespace carries the pid and is removed on drop.

mod common;

use std::net::{IpAddr, Ipv4Addr};

use eni_ipam_agent::netlink::Netlink;
use eni_ipam_netns_testbed::Netns;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_owned()
}

#[test]
fn links_addresses_sysctls_rules_and_routes_through_netlink_root() {
    common::require_root();
    let ns = Netns::create(format!("eni-{}-netlink", std::process::id()));
    ns.ip(&["link", "add", "nla", "type", "veth", "peer", "name", "nlb"]);
    ns.ip(&["link", "set", "nla", "up"]);
    ns.ip(&["addr", "add", "192.0.2.7/24", "dev", "nla"]);
    let (index, mac) = ns.link("nla");
    ns.run(move || {
        let mut netlink = Netlink::open().unwrap();
        let links = netlink.links().unwrap();
        let link = links.iter().find(|l| l.name == "nla").expect("nla is listed");
        assert_eq!((link.index, link.mac.as_slice()), (index, mac.0.as_slice()));
        let addresses = netlink.ipv4_addresses().unwrap();
        assert!(addresses.contains(&(index, Ipv4Addr::new(192, 0, 2, 7))), "{addresses:?}");
        assert!(addresses.iter().any(|(_, ip)| ip.is_loopback()), "{addresses:?}");

        // A fresh namespace forwards nothing: forwarding and rp_filter per link.
        assert_eq!(read("/proc/sys/net/ipv4/conf/nla/forwarding"), "0");
        netlink.enable_forwarding(index, Some(2), "nla").unwrap();
        assert_eq!(read("/proc/sys/net/ipv4/conf/nla/forwarding"), "1");
        assert_eq!(read("/proc/sys/net/ipv4/conf/nla/rp_filter"), "2");
        assert_eq!(read("/proc/sys/net/ipv4/conf/nlb/forwarding"), "0", "only the link asked for");

        // Neighbours: a permanent entry is read back with its MAC; a managed one is made.
        let gateway = Ipv4Addr::new(192, 0, 2, 1);
        netlink.replace_neighbour(index, gateway, Some([0x0a, 0, 0, 0, 0, 9]), "test").unwrap();
        let entries = netlink.neighbours(index, "nla").unwrap();
        let entry = entries.iter().find(|n| n.ip == gateway).unwrap_or_else(|| panic!("{entries:?}"));
        assert_eq!(entry.mac.as_deref(), Some(&[0x0a, 0, 0, 0, 0, 9][..]), "{entries:?}");
        assert!(!entry.managed);
        let other = Ipv4Addr::new(192, 0, 2, 2);
        netlink.replace_neighbour(index, other, None, "test").unwrap();
        let entries = netlink.neighbours(index, "nla").unwrap();
        assert!(entries.iter().any(|n| n.ip == other && n.managed), "{entries:?}");
        assert!(netlink.delete_neighbour(index, other, "test").unwrap());
        assert!(!netlink.delete_neighbour(index, other, "test").unwrap());

        // A rule: added once (an equal one is reported, not doubled), listed, deleted once.
        let mut rule = RuleMessage::default();
        rule.header.family = AddressFamily::Inet;
        rule.header.action = RuleAction::ToTable;
        rule.header.src_len = 32;
        rule.attributes = vec![
            RuleAttribute::Priority(1536),
            RuleAttribute::Source(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50))),
            RuleAttribute::Table(10_042),
            RuleAttribute::Protocol(RouteProtocol::from(0xe1)),
        ];
        assert!(netlink.add_rule(rule.clone(), "test").unwrap());
        assert!(!netlink.add_rule(rule.clone(), "test").unwrap(), "EEXIST is not an error");
        let found = netlink.rules().unwrap();
        let ours: Vec<_> = found
            .iter()
            .filter(|r| r.attributes.contains(&RuleAttribute::Protocol(RouteProtocol::from(0xe1))))
            .collect();
        assert_eq!(ours.len(), 1, "{found:?}");
        assert!(netlink.delete_rule(rule.clone(), "test").unwrap());
        assert!(!netlink.delete_rule(rule, "test").unwrap(), "already gone is not an error");

        // A route in a numbered table, replaced in place, then deleted.
        let route = |gateway: Ipv4Addr, oif: u32| {
            let mut route = RouteMessage::default();
            route.header.address_family = AddressFamily::Inet;
            route.header.protocol = RouteProtocol::from(0xe1);
            route.header.kind = netlink_packet_route::route::RouteType::Unicast;
            route.header.flags = RouteFlags::Onlink;
            route.attributes = vec![
                RouteAttribute::Table(10_042),
                RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
                RouteAttribute::Oif(oif),
            ];
            route
        };
        netlink.replace_route(route(Ipv4Addr::new(192, 0, 2, 1), index), "test").unwrap();
        netlink.replace_route(route(Ipv4Addr::new(192, 0, 2, 254), index), "test").unwrap();
        let in_table: Vec<RouteMessage> = netlink
            .routes()
            .unwrap()
            .into_iter()
            .filter(|r| r.attributes.contains(&RouteAttribute::Table(10_042)))
            .collect();
        assert_eq!(in_table.len(), 1, "replaced, not added: {in_table:?}");
        assert!(
            in_table[0]
                .attributes
                .contains(&RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(192, 0, 2, 254))))
        );
        assert!(netlink.delete_route(route(Ipv4Addr::new(192, 0, 2, 254), index), "test").unwrap());

        // The kernel's refusal: its errno, the object named.
        let error = netlink
            .replace_route(route(Ipv4Addr::new(192, 0, 2, 1), 999_999), "via a missing link")
            .unwrap_err();
        assert_eq!(error.errno, libc::ENODEV, "{error}");
        let text = error.to_string();
        assert!(text.contains("replace route via a missing link") && text.contains("errno 19"), "{text}");
    });
}
