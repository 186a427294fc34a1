//! What a node advertises to the scheduler as its `eni-ipam.io/ip` capacity.
//!
//! Pure arithmetic over what the ENINode says: the instance's pod-IP limit
//! (`status.ipLimit`), the operator's shortfall (`status.shortfall.obtainable`),
//! the pool's size and `maxAllocate`. The agent reports the result on healthz;
//! the device plugin subtracts the IPs held by pods without the request.

use std::fmt;
use std::str::FromStr;

/// Which number a node's capacity follows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityMode {
    /// The IPs this node can have: its instance type's limit, lowered to what the operator
    /// reports obtainable when it cannot grow the pool. A pod is placed where an IP will come
    /// within the operator's refill time, and not where none can.
    #[default]
    InstanceLimit,
    /// The IPs the node's pool holds now (the warm spare ones included), or `maxAllocate` when
    /// that is set: the meaning before `ipLimit` existed.
    Pool,
}

impl CapacityMode {
    /// The names on the command line and in the chart, in [`CapacityMode`] order.
    pub const NAMES: [&'static str; 2] = ["instance-limit", "pool"];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityMode::InstanceLimit => Self::NAMES[0],
            CapacityMode::Pool => Self::NAMES[1],
        }
    }
}

impl fmt::Display for CapacityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CapacityMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "instance-limit" | "instanceLimit" => Ok(CapacityMode::InstanceLimit),
            "pool" => Ok(CapacityMode::Pool),
            other => Err(format!(
                "capacity mode {other:?} is not one of {}: instance-limit advertises what the instance \
                 type can hold, pool what the node's pool holds now",
                Self::NAMES.join(", ")
            )),
        }
    }
}

/// The pod IPs a node advertises, never fewer than its `pool` already holds.
///
/// - `ip_limit`: `status.ipLimit`, what the instance can ever hold for pods (`None`: not
///   published, by an operator older than this field; the pool is all that is known).
/// - `shortfall_obtainable`: `status.shortfall.obtainable`, what the operator can still reach
///   when it cannot grow the pool (`None`: no shortfall).
/// - `max_allocate`: the node's `maxAllocate` (`None` or 0: no ceiling).
///
/// In [`CapacityMode::InstanceLimit`] that is `min(ipLimit, obtainable, maxAllocate)`; in
/// [`CapacityMode::Pool`], and without an `ipLimit`, it is `maxAllocate` when set, else the pool.
pub fn advertised_ips(
    ip_limit: Option<u32>,
    shortfall_obtainable: Option<u32>,
    pool: u32,
    max_allocate: Option<u32>,
    mode: CapacityMode,
) -> u32 {
    let ceiling = max_allocate.filter(|m| *m > 0);
    let wanted = match (mode, ip_limit) {
        (CapacityMode::InstanceLimit, Some(limit)) => {
            [Some(limit), shortfall_obtainable, ceiling].into_iter().flatten().min().unwrap_or(limit)
        }
        // No limit published (an operator older than `ipLimit`): the pool meaning.
        (CapacityMode::Pool, _) | (CapacityMode::InstanceLimit, None) => ceiling.unwrap_or(pool),
    };
    wanted.max(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ips_table() {
        use CapacityMode::*;
        // (ipLimit, shortfall obtainable, pool, maxAllocate, mode, advertised, the case)
        type Row = (Option<u32>, Option<u32>, u32, Option<u32>, CapacityMode, u32, &'static str);
        let rows: [Row; 14] = [
            (
                Some(27),
                None,
                3,
                None,
                InstanceLimit,
                27,
                "a fresh m5.large: the instance's limit, not the pool",
            ),
            (Some(27), None, 27, None, InstanceLimit, 27, "a full node: the limit is the pool"),
            (Some(27), Some(12), 8, None, InstanceLimit, 12, "a shortfall lowers it to what is obtainable"),
            (Some(27), Some(8), 8, None, InstanceLimit, 8, "nothing obtainable beyond the pool: the pool"),
            (
                Some(27),
                Some(5),
                8,
                None,
                InstanceLimit,
                8,
                "never below the pool, whatever the shortfall says",
            ),
            (Some(27), None, 3, Some(10), InstanceLimit, 10, "maxAllocate caps it"),
            (Some(27), None, 3, Some(0), InstanceLimit, 27, "maxAllocate 0 means no ceiling"),
            (Some(10), None, 3, Some(24), InstanceLimit, 10, "a ceiling above the limit changes nothing"),
            (Some(27), Some(6), 3, Some(10), InstanceLimit, 6, "the lowest of limit, obtainable and ceiling"),
            (
                Some(27),
                None,
                12,
                Some(10),
                InstanceLimit,
                12,
                "a pool above a lowered maxAllocate stays counted",
            ),
            (None, None, 5, None, InstanceLimit, 5, "no ipLimit published (older operator): the pool"),
            (
                None,
                Some(2),
                5,
                Some(10),
                InstanceLimit,
                10,
                "no ipLimit: the pool meaning, maxAllocate when set",
            ),
            (Some(27), Some(12), 3, None, Pool, 3, "pool mode: the pool, as before ipLimit"),
            (Some(27), None, 3, Some(10), Pool, 10, "pool mode: maxAllocate when set, as before"),
        ];
        for (limit, obtainable, pool, max, mode, want, case) in rows {
            assert_eq!(advertised_ips(limit, obtainable, pool, max, mode), want, "{case}");
        }
    }

    #[test]
    fn mode_names_round_trip_and_a_typo_says_what_is_allowed() {
        for mode in [CapacityMode::InstanceLimit, CapacityMode::Pool] {
            assert_eq!(mode.as_str().parse::<CapacityMode>().unwrap(), mode);
        }
        assert_eq!("instanceLimit".parse::<CapacityMode>().unwrap(), CapacityMode::InstanceLimit);
        let error = "pools".parse::<CapacityMode>().unwrap_err();
        assert!(error.contains("instance-limit, pool"), "{error}");
    }
}
