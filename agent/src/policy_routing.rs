//! Policy routing: traffic the node's stack forwards for a pod leaves by the ENI that owns
//! the pod's IP, so the VPC's source check never drops it (and with `--datapath=none` this
//! is the whole datapath).
//!
//! - One route table per pool ENI, [`TABLE_BASE`] + the ENI link's interface index (stable
//!   while the ENI stays attached, across agent restarts; the kernel drops the route with the
//!   link): `default via <subnet gateway> dev <ENI link> onlink`.
//! - Per pod: pref [`PREF_TO_POD`] `to <pod>/32 lookup main` (pods of this node are reached
//!   through their veth routes) and pref [`PREF_FROM_POD`] `from <pod>/32 lookup <its ENI's
//!   table>`.
//! - Once: pref [`PREF_MARKED`] `fwmark 0x80/0x80 lookup main`: replies of connections that
//!   came in on an ENI for a node address (NodePort, hostPort; the nft table marks them) leave
//!   like the node's own traffic.
//!
//! Every rule and route the agent makes carries the protocol [`PROTOCOL`]: that is how the
//! reconcile and the uninstall know what is theirs and never touch anyone else's.
//!
//! The decisions ([`desired`], [`changes`]) are pure; [`PolicyRouter`] reads and applies them
//! over netlink.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use eni_ipam_datapath::MacAddr;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol};
use netlink_packet_route::route::{RouteScope, RouteType};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};

use crate::netlink::{Link, Netlink, NetlinkError};
use crate::pool::PoolIp;

/// `rtm_protocol` / `FRA_PROTOCOL` of every rule and route the agent makes (unassigned in
/// iproute2's `rt_protos`).
pub const PROTOCOL: u8 = 0xe1;
/// An ENI's table is this plus the ENI link's interface index.
pub const TABLE_BASE: u32 = 10_000;
/// `to <pod> lookup main`.
pub const PREF_TO_POD: u32 = 512;
/// `fwmark 0x80/0x80 lookup main`.
pub const PREF_MARKED: u32 = 1024;
/// `from <pod> lookup <ENI table>`.
pub const PREF_FROM_POD: u32 = 1536;
/// The mark of connections that came in on an ENI for a node address (set by the nft table).
pub const LOCAL_CONNECTION_MARK: u32 = 0x80;
/// The kernel's main table.
const MAIN_TABLE: u32 = 254;

/// One of the agent's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// `to <ip>/32 lookup main`.
    ToPod(Ipv4Addr),
    /// `fwmark 0x80/0x80 lookup main`.
    Marked,
    /// `from <ip>/32 lookup <table>`.
    FromPod(Ipv4Addr, u32),
}

impl Rule {
    /// The rule's preference.
    pub fn pref(&self) -> u32 {
        match self {
            Rule::ToPod(_) => PREF_TO_POD,
            Rule::Marked => PREF_MARKED,
            Rule::FromPod(..) => PREF_FROM_POD,
        }
    }

    /// The pod the rule is about, if any.
    pub fn pod(&self) -> Option<Ipv4Addr> {
        match self {
            Rule::ToPod(ip) | Rule::FromPod(ip, _) => Some(*ip),
            Rule::Marked => None,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::ToPod(ip) => write!(f, "{PREF_TO_POD}: to {ip}/32 lookup main"),
            Rule::Marked => write!(
                f,
                "{PREF_MARKED}: fwmark {LOCAL_CONNECTION_MARK:#x}/{LOCAL_CONNECTION_MARK:#x} lookup main"
            ),
            Rule::FromPod(ip, table) => write!(f, "{PREF_FROM_POD}: from {ip}/32 lookup {table}"),
        }
    }
}

/// The default route of an ENI's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EniRoute {
    /// The ENI link's interface index.
    pub ifindex: u32,
    /// The gateway of the ENI's subnet.
    pub gateway: Ipv4Addr,
}

/// Rules and tables: what the node must have, or what it has of ours.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// Table -> its default route.
    pub tables: BTreeMap<u32, EniRoute>,
    /// The rules.
    pub rules: BTreeSet<Rule>,
}

/// The table of the ENI whose link has index `ifindex`.
pub fn table_of(ifindex: u32) -> u32 {
    TABLE_BASE + ifindex
}

/// Where an ENI of the pool is on this node, from its pool entry and the node's links
/// (by MAC); `Err` says why it has no table.
pub fn eni_route(entry: &PoolIp, links: &[Link]) -> Result<(u32, EniRoute), String> {
    let mac: MacAddr =
        entry.mac.parse().map_err(|e| format!("ENI {}: {e} (no usable MAC in the pool)", entry.eni))?;
    let link = links.iter().find(|l| l.mac == mac.0).ok_or_else(|| {
        format!("ENI {}: no link with MAC {mac} on this node (ENI not attached yet?)", entry.eni)
    })?;
    let gateway = entry.gateway_addr()?;
    Ok((table_of(link.index), EniRoute { ifindex: link.index, gateway }))
}

/// What the node must have: a table for every pool ENI found on the node, the marked-traffic
/// rule, and both rules of every pod (`(ip, its pool entry)`) whose ENI has a table. The
/// second value lists what was left out, and why.
pub fn desired<'a>(
    pool_enis: impl IntoIterator<Item = &'a PoolIp>,
    pods: impl IntoIterator<Item = (Ipv4Addr, Option<&'a PoolIp>)>,
    links: &[Link],
) -> (Routing, Vec<String>) {
    let mut routing = Routing { rules: BTreeSet::from([Rule::Marked]), ..Default::default() };
    let mut skipped = Vec::new();
    let mut by_mac: BTreeMap<&str, u32> = BTreeMap::new();
    for entry in pool_enis {
        match eni_route(entry, links) {
            Ok((table, route)) => {
                routing.tables.insert(table, route);
                by_mac.insert(&entry.mac, table);
            }
            Err(reason) => skipped.push(reason),
        }
    }
    for (ip, entry) in pods {
        match entry.map(|e| by_mac.get(e.mac.as_str())) {
            Some(Some(table)) => {
                routing.rules.insert(Rule::ToPod(ip));
                routing.rules.insert(Rule::FromPod(ip, *table));
            }
            Some(None) => skipped.push(format!("pod {ip}: its ENI has no table (see above)")),
            None => skipped.push(format!("pod {ip}: the IP is no longer in the node's pool")),
        }
    }
    (routing, skipped)
}

/// What to do to turn `current` into `desired`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes to add or replace (first).
    pub put_tables: Vec<(u32, EniRoute)>,
    /// Rules to add (second).
    pub add_rules: Vec<Rule>,
    /// Rules to delete (third).
    pub delete_rules: Vec<Rule>,
    /// Tables to empty of our route (last).
    pub delete_tables: Vec<(u32, EniRoute)>,
}

impl Changes {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The difference between what the node has of ours and what it must have.
pub fn changes(desired: &Routing, current: &Routing) -> Changes {
    Changes {
        put_tables: desired
            .tables
            .iter()
            .filter(|(table, route)| current.tables.get(table) != Some(route))
            .map(|(t, r)| (*t, *r))
            .collect(),
        add_rules: desired.rules.difference(&current.rules).copied().collect(),
        delete_rules: current.rules.difference(&desired.rules).copied().collect(),
        delete_tables: current
            .tables
            .iter()
            .filter(|(table, _)| !desired.tables.contains_key(table))
            .map(|(t, r)| (*t, *r))
            .collect(),
    }
}

/// The agent's rules and routes, read and written over netlink.
#[derive(Debug)]
pub struct PolicyRouter {
    netlink: Netlink,
}

impl PolicyRouter {
    /// A router on a fresh netlink socket in this network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        Ok(Self { netlink: Netlink::open()? })
    }

    /// The netlink socket, for the other node reads.
    pub fn netlink(&mut self) -> &mut Netlink {
        &mut self.netlink
    }

    /// What the node has of ours. Rules and routes of ours in another shape (an older agent's)
    /// are returned apart, to be deleted.
    pub fn current(&mut self) -> Result<(Routing, Vec<RuleMessage>, Vec<RouteMessage>), NetlinkError> {
        let (rules, odd_rules) = self.current_rules()?;
        let mut routing = Routing { rules, ..Default::default() };
        let mut odd_routes = Vec::new();
        for message in self.netlink.routes()? {
            if u8::from(message.header.protocol) != PROTOCOL {
                continue;
            }
            match parse_route(&message) {
                Some((table, route)) if !routing.tables.contains_key(&table) => {
                    routing.tables.insert(table, route);
                }
                _ => odd_routes.push(message),
            }
        }
        Ok((routing, odd_rules, odd_routes))
    }

    /// The rules of ours, and those of ours in another shape.
    fn current_rules(&mut self) -> Result<(BTreeSet<Rule>, Vec<RuleMessage>), NetlinkError> {
        let mut rules = BTreeSet::new();
        let mut odd = Vec::new();
        for message in self.netlink.rules()? {
            if rule_protocol(&message) != Some(PROTOCOL) {
                continue;
            }
            match parse_rule(&message) {
                Some(rule) => {
                    rules.insert(rule);
                }
                None => odd.push(message),
            }
        }
        Ok((rules, odd))
    }

    /// Makes the node's rules and tables of ours equal to `desired`; what it changed.
    pub fn reconcile(&mut self, desired: &Routing) -> Result<Changes, NetlinkError> {
        let (current, odd_rules, odd_routes) = self.current()?;
        for message in odd_rules {
            self.netlink.delete_rule(message, "of eni-ipam in an unknown shape")?;
        }
        for message in odd_routes {
            self.netlink.delete_route(message, "of eni-ipam in an unknown shape")?;
        }
        let changes = changes(desired, &current);
        self.apply(&changes)?;
        Ok(changes)
    }

    /// Applies `changes` in their order.
    pub fn apply(&mut self, changes: &Changes) -> Result<(), NetlinkError> {
        for (table, route) in &changes.put_tables {
            self.put_table(*table, *route)?;
        }
        for rule in &changes.add_rules {
            self.netlink.add_rule(rule_message(rule, true), &rule.to_string())?;
        }
        for rule in &changes.delete_rules {
            self.netlink.delete_rule(rule_message(rule, true), &rule.to_string())?;
        }
        for (table, route) in &changes.delete_tables {
            self.netlink.delete_route(route_message(*table, *route), &describe_route(*table, *route))?;
        }
        Ok(())
    }

    /// Adds or replaces the default route of an ENI's table.
    pub fn put_table(&mut self, table: u32, route: EniRoute) -> Result<(), NetlinkError> {
        self.netlink.replace_route(route_message(table, route), &describe_route(table, route))
    }

    /// Installs both rules of a pod on `table` (after deleting a rule of ours that sends it
    /// elsewhere, left by an IP that moved to another ENI).
    pub fn add_pod(&mut self, ip: Ipv4Addr, table: u32) -> Result<(), NetlinkError> {
        let (current, _) = self.current_rules()?;
        let stale: Vec<Rule> = current
            .iter()
            .filter(|r| matches!(r, Rule::FromPod(pod, t) if *pod == ip && *t != table))
            .copied()
            .collect();
        for rule in stale {
            self.netlink.delete_rule(rule_message(&rule, true), &rule.to_string())?;
        }
        for rule in [Rule::ToPod(ip), Rule::FromPod(ip, table)] {
            if !current.contains(&rule) {
                self.netlink.add_rule(rule_message(&rule, true), &rule.to_string())?;
            }
        }
        Ok(())
    }

    /// Deletes both rules of a pod (whatever its table); gone already is fine.
    pub fn remove_pod(&mut self, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let to = Rule::ToPod(ip);
        while self.netlink.delete_rule(rule_message(&to, true), &to.to_string())? {}
        let from = Rule::FromPod(ip, 0);
        let what = format!("{PREF_FROM_POD}: from {ip}/32");
        while self.netlink.delete_rule(rule_message(&from, false), &what)? {}
        Ok(())
    }

    /// Deletes every rule and route of ours (the uninstall); one line per object removed.
    pub fn remove_all(&mut self) -> Result<Vec<String>, NetlinkError> {
        let mut removed = Vec::new();
        for message in self.netlink.rules()? {
            if rule_protocol(&message) == Some(PROTOCOL) {
                let what =
                    parse_rule(&message).map(|r| r.to_string()).unwrap_or_else(|| "of eni-ipam".into());
                if self.netlink.delete_rule(message, &what)? {
                    removed.push(format!("ip rule {what}"));
                }
            }
        }
        for message in self.netlink.routes()? {
            if u8::from(message.header.protocol) == PROTOCOL {
                let what = parse_route(&message)
                    .map(|(t, r)| describe_route(t, r))
                    .unwrap_or_else(|| "of eni-ipam".into());
                if self.netlink.delete_route(message, &what)? {
                    removed.push(format!("route {what}"));
                }
            }
        }
        Ok(removed)
    }
}

fn describe_route(table: u32, route: EniRoute) -> String {
    format!("default via {} dev #{} onlink table {table}", route.gateway, route.ifindex)
}

fn rule_protocol(message: &RuleMessage) -> Option<u8> {
    message.attributes.iter().find_map(|a| match a {
        RuleAttribute::Protocol(p) => Some(u8::from(*p)),
        _ => None,
    })
}

fn rule_table(message: &RuleMessage) -> u32 {
    message
        .attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(message.header.table))
}

/// One of our rule shapes, from the kernel's message.
fn parse_rule(message: &RuleMessage) -> Option<Rule> {
    let mut pref = None;
    let (mut source, mut destination, mut mark, mut mask) = (None, None, None, None);
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(p) => pref = Some(*p),
            RuleAttribute::Source(IpAddr::V4(ip)) if message.header.src_len == 32 => source = Some(*ip),
            RuleAttribute::Destination(IpAddr::V4(ip)) if message.header.dst_len == 32 => {
                destination = Some(*ip)
            }
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = Some(*m),
            RuleAttribute::Protocol(_) | RuleAttribute::Table(_) => {}
            _ => return None,
        }
    }
    let table = rule_table(message);
    let rule = match (pref?, source, destination, mark, mask) {
        (PREF_TO_POD, None, Some(ip), None, None) if table == MAIN_TABLE => Rule::ToPod(ip),
        (PREF_MARKED, None, None, Some(LOCAL_CONNECTION_MARK), Some(LOCAL_CONNECTION_MARK))
            if table == MAIN_TABLE =>
        {
            Rule::Marked
        }
        (PREF_FROM_POD, Some(ip), None, None, None) => Rule::FromPod(ip, table),
        _ => return None,
    };
    Some(rule)
}

/// The kernel message of a rule; without `with_table` it matches the rule in any table.
fn rule_message(rule: &Rule, with_table: bool) -> RuleMessage {
    let mut message = RuleMessage::default();
    message.header.family = AddressFamily::Inet;
    message.header.action = RuleAction::ToTable;
    let mut attributes =
        vec![RuleAttribute::Priority(rule.pref()), RuleAttribute::Protocol(RouteProtocol::from(PROTOCOL))];
    let table = match rule {
        Rule::ToPod(ip) => {
            message.header.dst_len = 32;
            attributes.push(RuleAttribute::Destination(IpAddr::V4(*ip)));
            MAIN_TABLE
        }
        Rule::Marked => {
            attributes.push(RuleAttribute::FwMark(LOCAL_CONNECTION_MARK));
            attributes.push(RuleAttribute::FwMask(LOCAL_CONNECTION_MARK));
            MAIN_TABLE
        }
        Rule::FromPod(ip, table) => {
            message.header.src_len = 32;
            attributes.push(RuleAttribute::Source(IpAddr::V4(*ip)));
            *table
        }
    };
    if with_table {
        message.header.table = u8::try_from(table).unwrap_or(0);
        attributes.push(RuleAttribute::Table(table));
    }
    message.attributes = attributes;
    message
}

/// One of our table routes, from the kernel's message.
fn parse_route(message: &RouteMessage) -> Option<(u32, EniRoute)> {
    if message.header.destination_prefix_length != 0 {
        return None;
    }
    let mut table = u32::from(message.header.table);
    let (mut gateway, mut ifindex) = (None, None);
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => ifindex = Some(*index),
            _ => {}
        }
    }
    Some((table, EniRoute { ifindex: ifindex?, gateway: gateway? }))
}

/// The kernel message of an ENI table's default route.
fn route_message(table: u32, route: EniRoute) -> RouteMessage {
    let mut message = RouteMessage::default();
    message.header.address_family = AddressFamily::Inet;
    message.header.table = u8::try_from(table).unwrap_or(0);
    message.header.protocol = RouteProtocol::from(PROTOCOL);
    message.header.scope = RouteScope::Universe;
    message.header.kind = RouteType::Unicast;
    message.header.flags = RouteFlags::Onlink;
    message.attributes = vec![
        RouteAttribute::Table(table),
        RouteAttribute::Gateway(RouteAddress::Inet(route.gateway)),
        RouteAttribute::Oif(route.ifindex),
    ];
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(index: u32, last: u8) -> Link {
        Link { index, name: format!("eth{index}"), mac: vec![0x0a, 0, 0, 0, 0, last], up: true }
    }

    fn eni(name: &str, last: u8, gateway: &str) -> PoolIp {
        PoolIp {
            eni: name.into(),
            mac: format!("0a:00:00:00:00:{last:02x}"),
            subnet_cidr: "10.0.0.0/16".into(),
            gateway: gateway.into(),
        }
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn each_pool_eni_found_on_the_node_gets_a_table_and_each_of_its_pods_both_rules() {
        let e1 = eni("eni-1", 1, "10.0.1.1");
        let e2 = eni("eni-2", 2, "10.0.2.1");
        let absent = eni("eni-3", 3, "10.0.3.1");
        let no_gateway = eni("eni-4", 4, "");
        let links = [link(3, 1), link(7, 2), link(9, 4)];
        type Case<'a> =
            (&'a str, Vec<(Ipv4Addr, Option<&'a PoolIp>)>, Vec<(u32, u32, &'a str)>, Vec<Rule>, usize);
        let cases: Vec<Case> = vec![
            (
                "no pods: tables and the marked rule only",
                vec![],
                vec![(10_003, 3, "10.0.1.1"), (10_007, 7, "10.0.2.1")],
                vec![Rule::Marked],
                2,
            ),
            (
                "one pod per ENI",
                vec![(ip("10.0.1.5"), Some(&e1)), (ip("10.0.2.5"), Some(&e2))],
                vec![(10_003, 3, "10.0.1.1"), (10_007, 7, "10.0.2.1")],
                vec![
                    Rule::ToPod(ip("10.0.1.5")),
                    Rule::ToPod(ip("10.0.2.5")),
                    Rule::Marked,
                    Rule::FromPod(ip("10.0.1.5"), 10_003),
                    Rule::FromPod(ip("10.0.2.5"), 10_007),
                ],
                2,
            ),
            (
                "pods whose ENI is not attached, has no gateway or left the pool get no rule",
                vec![
                    (ip("10.0.3.5"), Some(&absent)),
                    (ip("10.0.4.5"), Some(&no_gateway)),
                    (ip("10.0.9.9"), None),
                ],
                vec![(10_003, 3, "10.0.1.1"), (10_007, 7, "10.0.2.1")],
                vec![Rule::Marked],
                5,
            ),
        ];
        for (name, pods, tables, rules, skipped) in cases {
            let (routing, why) = desired([&e1, &e2, &absent, &no_gateway], pods, &links);
            let want_tables: BTreeMap<u32, EniRoute> = tables
                .into_iter()
                .map(|(t, ifindex, gw)| (t, EniRoute { ifindex, gateway: ip(gw) }))
                .collect();
            assert_eq!(routing.tables, want_tables, "{name}");
            assert_eq!(routing.rules.iter().copied().collect::<Vec<_>>(), rules, "{name}");
            assert_eq!(why.len(), skipped, "{name}: {why:?}");
        }
        let (_, why) = desired([&absent, &no_gateway], [], &links);
        assert!(why[0].contains("no link with MAC 0a:00:00:00:00:03"), "{why:?}");
        assert!(
            why[1].contains("status.enis gives no subnetCidr/gateway") && why[1].contains("--subnet"),
            "{why:?}"
        );
    }

    #[test]
    fn changes_add_what_is_missing_and_remove_only_what_nothing_needs() {
        let route = |ifindex: u32| EniRoute { ifindex, gateway: ip("10.0.1.1") };
        let routing = |tables: &[(u32, EniRoute)], rules: &[Rule]| Routing {
            tables: tables.iter().copied().collect(),
            rules: rules.iter().copied().collect(),
        };
        let pod = ip("10.0.1.5");
        let gone = ip("10.0.1.6");
        let cases = [
            (
                "in sync",
                routing(&[(10_003, route(3))], &[Rule::Marked]),
                routing(&[(10_003, route(3))], &[Rule::Marked]),
                Changes::default(),
            ),
            (
                "fresh node",
                routing(&[(10_003, route(3))], &[Rule::Marked, Rule::ToPod(pod), Rule::FromPod(pod, 10_003)]),
                routing(&[], &[]),
                Changes {
                    put_tables: vec![(10_003, route(3))],
                    add_rules: vec![Rule::ToPod(pod), Rule::Marked, Rule::FromPod(pod, 10_003)],
                    ..Default::default()
                },
            ),
            (
                "a pod gone while the agent was down, an ENI detached, a table whose gateway changed",
                routing(&[(10_003, route(3))], &[Rule::Marked]),
                routing(
                    &[(10_003, EniRoute { ifindex: 3, gateway: ip("10.0.1.254") }), (10_008, route(8))],
                    &[Rule::Marked, Rule::ToPod(gone), Rule::FromPod(gone, 10_008)],
                ),
                Changes {
                    put_tables: vec![(10_003, route(3))],
                    delete_rules: vec![Rule::ToPod(gone), Rule::FromPod(gone, 10_008)],
                    delete_tables: vec![(10_008, route(8))],
                    ..Default::default()
                },
            ),
            (
                "an IP moved to another ENI",
                routing(&[], &[Rule::FromPod(pod, 10_004)]),
                routing(&[], &[Rule::FromPod(pod, 10_003)]),
                Changes {
                    add_rules: vec![Rule::FromPod(pod, 10_004)],
                    delete_rules: vec![Rule::FromPod(pod, 10_003)],
                    ..Default::default()
                },
            ),
        ];
        for (name, desired, current, want) in cases {
            assert_eq!(changes(&desired, &current), want, "{name}");
        }
    }

    #[test]
    fn rules_round_trip_through_their_kernel_messages() {
        for rule in [Rule::ToPod(ip("10.0.1.5")), Rule::Marked, Rule::FromPod(ip("10.0.1.5"), 10_003)] {
            assert_eq!(parse_rule(&rule_message(&rule, true)), Some(rule), "{rule}");
            assert_eq!(rule_protocol(&rule_message(&rule, true)), Some(PROTOCOL));
        }
        let route = EniRoute { ifindex: 3, gateway: ip("10.0.1.1") };
        assert_eq!(parse_route(&route_message(10_003, route)), Some((10_003, route)));
        // Someone else's shape at our preference is not one of ours.
        let mut other = rule_message(&Rule::FromPod(ip("10.0.1.5"), 10_003), true);
        other.attributes.push(RuleAttribute::Iifname("eth0".into()));
        assert_eq!(parse_rule(&other), None);
    }
}
