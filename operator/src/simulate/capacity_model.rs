//! The `eni-ipam.io/ip` capacity a node's device plugin advertises, in the two
//! meanings the simulator compares: the pool (the old meaning) and the
//! instance's IP limit, lowered to what is obtainable on a shortfall (the new).
//! The arithmetic is the agent's own ([`eni_ipam_api::advertised_ips`]).

pub use eni_ipam_api::{CapacityMode, advertised_ips};

/// How the report names a capacity meaning: `old` (the pool) or `new` (the instance's limit).
pub fn label(mode: CapacityMode) -> &'static str {
    match mode {
        CapacityMode::InstanceLimit => "new",
        CapacityMode::Pool => "old",
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
            (
                Some(56),
                None,
                8,
                Some(20),
                Pool,
                20,
                "old: maxAllocate when set (kubelet's allocatable from the start)",
            ),
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
