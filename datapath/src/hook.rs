//! Where the datapath's programs attach: one row of [`HOOKS`] per program and attachment
//! point, and the names under which each attachment is recorded in the pin directory.
//!
//! Adding a program is adding a row: the loader loads, attaches, upgrades and removes every
//! hook the same way.

use std::path::{Path, PathBuf};

use aya::programs::{TcAttachType, tc::TcHandle};

/// The kind of interface a hook attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// Host side of a pod's veth.
    Pod,
    /// An ENI.
    Eni,
}

/// TC direction of a hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Packets arriving on the interface.
    Ingress,
    /// Packets leaving by the interface.
    Egress,
}

impl Direction {
    pub(crate) fn tc(self) -> TcAttachType {
        match self {
            Direction::Ingress => TcAttachType::Ingress,
            Direction::Egress => TcAttachType::Egress,
        }
    }
}

/// One program attached at one TC hook of one kind of interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hook {
    /// Names the attachment records: `links/<name>-<ifindex>`, `filters/<name>-<ifindex>`.
    pub(crate) name: &'static str,
    /// Program (function) name in `bpf/eni_ipam.bpf.c`.
    pub(crate) program: &'static str,
    pub(crate) target: Target,
    pub(crate) direction: Direction,
    /// Priority of the netlink (`tc filter`) attachment; with [`FILTER_HANDLE`] it finds our
    /// filter again after a restart or an upgrade.
    pub(crate) priority: u16,
}

/// Priority of the datapath's netlink filters (`tc filter ... pref 225`).
pub(crate) const FILTER_PRIORITY: u16 = 0xe1;

/// Handle of every netlink filter of the datapath (`tc filter ... handle 0xe1`).
pub(crate) const FILTER_HANDLE: TcHandle = TcHandle::new(0, 0xe1);

/// Every hook of the datapath.
/// Per interface, the egress hook comes first: `nat_learn` records NATed flows before the
/// ingress program starts sending their replies anywhere.
pub(crate) const HOOKS: &[Hook] = &[
    Hook::new("egress-pod", "nat_learn", Target::Pod, Direction::Egress),
    Hook::new("pod", "from_pod", Target::Pod, Direction::Ingress),
    Hook::new("egress-eni", "nat_learn", Target::Eni, Direction::Egress),
    Hook::new("eni", "from_eni", Target::Eni, Direction::Ingress),
];

impl Hook {
    /// A hook whose netlink filter sits at [`FILTER_PRIORITY`] (each hook has its own
    /// interface kind and direction, hence its own `clsact` parent).
    const fn new(name: &'static str, program: &'static str, target: Target, direction: Direction) -> Self {
        Hook { name, program, target, direction, priority: FILTER_PRIORITY }
    }

    /// The hooks of one kind of interface.
    pub(crate) fn of(target: Target) -> impl Iterator<Item = &'static Hook> {
        HOOKS.iter().filter(move |hook| hook.target == target)
    }

    /// The hook whose records are named `name`.
    pub(crate) fn named(name: &str) -> Option<&'static Hook> {
        HOOKS.iter().find(|hook| hook.name == name)
    }

    /// The distinct program names of the datapath.
    pub(crate) fn programs() -> Vec<&'static str> {
        let mut programs: Vec<&'static str> = HOOKS.iter().map(|hook| hook.program).collect();
        programs.sort_unstable();
        programs.dedup();
        programs
    }

    pub(crate) fn record_name(&self, ifindex: u32) -> String {
        format!("{}-{ifindex}", self.name)
    }
}

/// Parses a record name `<hook>-<ifindex>`.
pub(crate) fn parse_record(name: &str) -> Option<(&'static Hook, u32)> {
    let (hook, ifindex) = name.rsplit_once('-')?;
    Some((Hook::named(hook)?, ifindex.parse().ok()?))
}

/// The attachments recorded in `dir` (a `links/` or `filters/` directory), by hook and
/// interface index; unknown names are left out.
pub(crate) fn records(dir: &Path) -> Vec<(&'static Hook, u32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<_> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let (hook, ifindex) = parse_record(entry.file_name().to_str()?)?;
            Some((hook, ifindex, entry.path()))
        })
        .collect();
    found.sort_by(|a, b| a.2.cmp(&b.2));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_round_trip() {
        for hook in HOOKS {
            assert_eq!(parse_record(&hook.record_name(42)), Some((hook, 42)));
        }
        assert_eq!(parse_record("pod-7").map(|(h, i)| (h.program, i)), Some(("from_pod", 7)));
        assert_eq!(parse_record("eni-3").map(|(h, i)| (h.program, i)), Some(("from_eni", 3)));
        assert_eq!(parse_record("pod-x"), None);
        assert_eq!(parse_record("someone-else-1"), None);
        assert_eq!(parse_record("pod7"), None);
    }

    #[test]
    fn hooks_are_distinct_per_interface_and_direction() {
        for (i, a) in HOOKS.iter().enumerate() {
            for b in &HOOKS[i + 1..] {
                assert_ne!(a.name, b.name, "record names must differ");
                assert!(
                    (a.target, a.direction) != (b.target, b.direction),
                    "{} and {} share a TC hook: one filter handle each is assumed",
                    a.name,
                    b.name
                );
            }
        }
        assert_eq!(Hook::of(Target::Pod).map(|h| h.program).collect::<Vec<_>>(), ["nat_learn", "from_pod"]);
        assert_eq!(Hook::programs(), ["from_eni", "from_pod", "nat_learn"]);
    }
}
