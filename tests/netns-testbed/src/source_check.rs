//! The VPC's source check (EC2's "source/destination check", on by default; ECS checks the
//! same): a packet an ENI sends whose source address is not assigned to that ENI, in the
//! cloud's own listing, is dropped. The router namespace does it with an nft table: per ENI
//! link a set of its addresses, a chain that drops (and counts, in a named counter) every
//! IPv4 packet from that link whose source is not in the set. The fabric rewrites the sets
//! at every sync that changes addresses; counters live as long as their ENI is plugged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The nft table in the router namespace.
pub const TABLE: &str = "vpc_source_check";

/// The nft script that brings the table from the links in `before` to the links and
/// addresses in `after` (router link name -> the ENI's addresses), in one transaction.
/// Counters of links that stay are kept; those of links that go are deleted (read them
/// first with [`parse_counters`]).
pub fn script(before: &BTreeSet<String>, after: &BTreeMap<String, BTreeSet<Ipv4Addr>>) -> String {
    let mut s = format!("add table ip {TABLE}\n");
    s += &format!(
        "add chain ip {TABLE} check {{ type filter hook prerouting priority raw; policy accept; }}\n"
    );
    s += &format!("flush chain ip {TABLE} check\n");
    for link in before.iter().filter(|l| !after.contains_key(*l)) {
        s += &format!("delete chain ip {TABLE} eni_{link}\n");
        s += &format!("delete set ip {TABLE} src_{link}\n");
        s += &format!("delete counter ip {TABLE} drop_{link}\n");
    }
    for (link, addresses) in after {
        if !before.contains(link) {
            s += &format!("add counter ip {TABLE} drop_{link}\n");
            s += &format!("add set ip {TABLE} src_{link} {{ type ipv4_addr; }}\n");
            s += &format!("add chain ip {TABLE} eni_{link}\n");
            s += &format!(
                "add rule ip {TABLE} eni_{link} ip saddr != @src_{link} counter name drop_{link} drop\n"
            );
        }
        s += &format!("flush set ip {TABLE} src_{link}\n");
        if !addresses.is_empty() {
            let list: Vec<String> = addresses.iter().map(Ipv4Addr::to_string).collect();
            s += &format!("add element ip {TABLE} src_{link} {{ {} }}\n", list.join(", "));
        }
        s += &format!("add rule ip {TABLE} check iifname \"{link}\" jump eni_{link}\n");
    }
    s
}

/// Packets dropped per router link, from `nft list counters table ip <TABLE>`.
pub fn parse_counters(listing: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in listing.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("counter drop_") {
            current = Some(name.trim_end_matches('{').trim().to_owned());
        } else if let (Some(link), Some(rest)) = (&current, line.strip_prefix("packets ")) {
            let packets = rest.split_whitespace().next().and_then(|p| p.parse().ok()).unwrap_or(0);
            found.insert(link.clone(), packets);
            current = None;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(list: &[&str]) -> BTreeSet<Ipv4Addr> {
        list.iter().map(|i| i.parse().unwrap()).collect()
    }

    #[test]
    fn new_links_get_a_counter_set_and_chain_and_gone_links_lose_them() {
        let before = BTreeSet::from(["v1".to_owned(), "v2".to_owned()]);
        let after =
            BTreeMap::from([("v1".to_owned(), ips(&["10.0.0.5", "10.0.0.9"])), ("v3".to_owned(), ips(&[]))]);
        let s = script(&before, &after);
        let lines: Vec<&str> = s.lines().collect();
        // v2 goes: its chain, set and counter are deleted.
        for what in ["chain", "set", "counter"] {
            let prefix = match what {
                "chain" => "eni",
                "set" => "src",
                _ => "drop",
            };
            assert!(lines.contains(&format!("delete {what} ip {TABLE} {prefix}_v2").as_str()), "{s}");
        }
        // v1 stays: no new counter (it keeps counting), its set is rewritten.
        assert!(!s.contains("add counter ip vpc_source_check drop_v1"), "{s}");
        assert!(lines.contains(&"add element ip vpc_source_check src_v1 { 10.0.0.5, 10.0.0.9 }"), "{s}");
        // v3 comes with no address yet: everything it sends is dropped.
        assert!(s.contains("add counter ip vpc_source_check drop_v3"), "{s}");
        assert!(!s.contains("add element ip vpc_source_check src_v3"), "{s}");
        // Every plugged link is checked, from a flushed base chain.
        let flush = lines.iter().position(|l| *l == "flush chain ip vpc_source_check check").unwrap();
        let jumps: Vec<usize> =
            lines.iter().enumerate().filter(|(_, l)| l.contains(" jump eni_")).map(|(i, _)| i).collect();
        assert_eq!(jumps.len(), 2, "{s}");
        assert!(jumps.iter().all(|j| *j > flush));
    }

    #[test]
    fn counters_are_read_per_link() {
        let listing = "table ip vpc_source_check {\n\tcounter drop_v1 {\n\t\tpackets 3 bytes 252\n\t}\n\tcounter drop_v12 {\n\t\tpackets 0 bytes 0\n\t}\n}\n";
        assert_eq!(parse_counters(listing), BTreeMap::from([("v1".into(), 3), ("v12".into(), 0)]));
        assert!(parse_counters("").is_empty());
    }
}
