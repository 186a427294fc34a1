//! The `eni-ipam.io/ip` capacity a node's device plugin advertises, in the two
//! meanings the simulator compares: the pool (the old meaning) and the
//! instance's IP limit, lowered to what is obtainable on a shortfall (the new).

use serde::Serialize;

/// What a node's `eni-ipam.io/ip` capacity means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityMode {
    /// The IPs the instance can ever hold, lowered on a shortfall (the new default).
    InstanceLimit,
    /// The IPs in the pool now (the old meaning).
    Pool,
}

impl CapacityMode {
    /// The name the report and the flags use.
    pub fn label(self) -> &'static str {
        match self {
            CapacityMode::InstanceLimit => "new",
            CapacityMode::Pool => "old",
        }
    }
}

// lead: replace with eni_ipam_api::capacity::advertised_ips
/// The capacity a node advertises: in `Pool` mode its pool; in `InstanceLimit`
/// mode the instance's IP limit (or, once the operator reports a shortfall it
/// cannot fix, what is obtainable), capped by `max_allocate`; never below the
/// pool, and the pool alone while the limit is not published yet.
pub(crate) fn advertised_ips(
    ip_limit: Option<u32>,
    shortfall_obtainable: Option<u32>,
    pool: u32,
    max_allocate: Option<u32>,
    mode: CapacityMode,
) -> u32 {
    match (mode, ip_limit) {
        (CapacityMode::Pool, _) | (CapacityMode::InstanceLimit, None) => pool,
        (CapacityMode::InstanceLimit, Some(limit)) => {
            let reachable = shortfall_obtainable.map_or(limit, |o| o.min(limit));
            let capped = max_allocate.filter(|m| *m > 0).map_or(reachable, |m| m.min(reachable));
            capped.max(pool)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CapacityMode::{InstanceLimit, Pool};
    use super::*;

    #[test]
    fn capacity_follows_its_mode() {
        // (ip limit, shortfall obtainable, pool, max allocate, mode, advertised, why)
        let rows = [
            (Some(56), None, 8, None, Pool, 8, "old: the pool"),
            (Some(56), None, 8, None, InstanceLimit, 56, "new: what the instance can hold"),
            (None, None, 8, None, InstanceLimit, 8, "new before the limit is published: the pool"),
            (Some(56), Some(20), 8, None, InstanceLimit, 20, "a shortfall lowers it"),
            (Some(56), Some(20), 24, None, InstanceLimit, 24, "never below the pool"),
            (Some(56), None, 8, Some(30), InstanceLimit, 30, "max-allocate caps it"),
            (Some(56), None, 8, Some(0), InstanceLimit, 56, "max-allocate 0 is no limit"),
            (Some(56), Some(70), 8, None, InstanceLimit, 56, "obtainable never raises the limit"),
        ];
        for (limit, short, pool, max, mode, want, why) in rows {
            assert_eq!(advertised_ips(limit, short, pool, max, mode), want, "{why}");
        }
    }
}
