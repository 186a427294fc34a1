//! `status.shortfall`: whether the operator can grow a node's pool to the IPs its
//! instance can hold, and if not, how far. Pure: the fleet asks after every piece of
//! work on a node and publishes the answer; the agent lowers the node's advertised
//! capacity to `obtainable` while it is set.

use eni_ipam_api::IpShortfall;
use eni_ipam_cloud::ErrorClass;

use crate::executor::ExecError;
use crate::planner::Shortfall;

/// What one look at a node says about how far its pool can grow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Growth {
    /// The pool can reach its target (`ipLimit`, capped by `maxAllocate`).
    Reaches,
    /// It cannot grow past `obtainable` IPs, for `reason`.
    Short {
        /// CamelCase, as in the ENINode.
        reason: &'static str,
        /// IPs the pool can reach.
        obtainable: u32,
    },
    /// Nothing learned (a throttle, a timeout): what is published stays.
    Unknown,
}

/// Reasons the planner finds in the cache; a published shortfall with another reason
/// came from the cloud refusing a call, which only more work can clear.
const PLANNED: [&str; 3] = ["SubnetsExhausted", "NoMatchingSubnet", "InstanceLimitReached"];

/// The growth the planner sees: the pool can reach `reachable` of its `target` IPs, and
/// `short` says why not more.
pub fn planned_growth(reachable: u32, target: u32, short: Option<&Shortfall>) -> Growth {
    match short {
        Some(s) if reachable < target => Growth::Short { reason: s.reason(), obtainable: reachable },
        _ => Growth::Reaches,
    }
}

/// The growth a failed piece of work shows; `pool` is the node's pool as published. Refusals
/// that more work does not lift (a quota, credentials, a request the cloud rejects, a full
/// subnet) stop the pool where it is; throttles and timeouts say nothing.
pub fn growth_after_failure(error: &ExecError, pool: u32) -> Growth {
    let class = match error {
        ExecError::Cloud { source, .. } => Some(source.class),
        ExecError::NotConverged { last_failure, .. } => *last_failure,
        _ => None,
    };
    let reason = match class {
        Some(ErrorClass::Quota) => "CloudQuotaExceeded",
        Some(ErrorClass::Auth) => "CloudAuthError",
        Some(ErrorClass::SubnetFull) => "SubnetsExhausted",
        Some(ErrorClass::InvalidRequest) => "CloudRefused",
        _ => return Growth::Unknown,
    };
    Growth::Short { reason, obtainable: pool }
}

/// The `status.shortfall` to publish after `growth`, from the `published` one; `since` is
/// kept while the reason stays, else it is `now` (RFC 3339).
pub fn next_shortfall(published: Option<&IpShortfall>, growth: &Growth, now: &str) -> Option<IpShortfall> {
    match growth {
        Growth::Reaches => None,
        Growth::Unknown => published.cloned(),
        Growth::Short { reason, obtainable } => {
            let since = match published {
                Some(old) if old.reason == *reason && !old.since.is_empty() => old.since.clone(),
                _ => now.to_owned(),
            };
            Some(IpShortfall { reason: (*reason).to_owned(), obtainable: *obtainable, since })
        }
    }
}

/// Whether the ENINode's `ipLimit` and shortfall are out of date by what the cache shows now
/// (`ip_limit`, `growth`): the node is worked again to publish them. A shortfall the cloud's
/// refusal set is left to the retries, or every status write would call the cloud again.
pub fn published_is_stale(
    published_limit: Option<u32>,
    published: Option<&IpShortfall>,
    ip_limit: u32,
    growth: &Growth,
) -> bool {
    if published_limit != Some(ip_limit) {
        return true;
    }
    match (published, growth) {
        (_, Growth::Unknown) => false,
        (None, Growth::Reaches) => false,
        (Some(old), Growth::Reaches) => PLANNED.contains(&old.reason.as_str()),
        (None, Growth::Short { .. }) => true,
        (Some(old), Growth::Short { reason, obtainable }) => {
            old.reason != *reason || old.obtainable != *obtainable
        }
    }
}

#[cfg(test)]
mod tests {
    use eni_ipam_cloud::{Api, CloudError};

    use super::*;

    fn short(reason: &'static str, obtainable: u32) -> Growth {
        Growth::Short { reason, obtainable }
    }

    fn published(reason: &str, obtainable: u32, since: &str) -> IpShortfall {
        IpShortfall { reason: reason.into(), obtainable, since: since.into() }
    }

    #[test]
    fn planned_growth_table() {
        let full = Shortfall::SubnetsExhausted { missing: 4 };
        let slots = Shortfall::InstanceLimit { missing: 2 };
        // (reachable, target, the planner's shortfall, growth, the case)
        let rows = [
            (27, 27, None, Growth::Reaches, "the limit is reachable"),
            (10, 10, Some(&full), Growth::Reaches, "maxAllocate reachable: no shortfall"),
            (12, 27, Some(&full), short("SubnetsExhausted", 12), "subnets hold 12 at most"),
            (18, 20, Some(&slots), short("InstanceLimitReached", 18), "ENI slots taken"),
        ];
        for (reachable, target, plan, want, case) in rows {
            assert_eq!(planned_growth(reachable, target, plan), want, "{case}");
        }
    }

    #[test]
    fn failures_that_stop_the_pool_and_those_that_say_nothing() {
        let cloud = |class| ExecError::Cloud {
            node: "n1".into(),
            source: CloudError::new(Api::AssignPrivateIpAddresses, class, "Code", "message", "eni-1"),
        };
        let stuck = |last| ExecError::NotConverged { node: "n1".into(), passes: 6, last_failure: last };
        // (error, growth, the case)
        let rows = [
            (cloud(ErrorClass::Auth), short("CloudAuthError", 8), "credentials refused: the pool stays"),
            (cloud(ErrorClass::InvalidRequest), short("CloudRefused", 8), "a rejected request"),
            (cloud(ErrorClass::Throttled), Growth::Unknown, "a throttle past the retries says nothing"),
            (cloud(ErrorClass::Transient), Growth::Unknown, "a 5xx says nothing"),
            (stuck(Some(ErrorClass::Quota)), short("CloudQuotaExceeded", 8), "an account quota every pass"),
            (stuck(Some(ErrorClass::SubnetFull)), short("SubnetsExhausted", 8), "the cloud says full"),
            (stuck(None), Growth::Unknown, "passes ran out without a refusal"),
        ];
        for (error, want, case) in rows {
            assert_eq!(growth_after_failure(&error, 8), want, "{case}");
        }
    }

    #[test]
    fn next_shortfall_table() {
        let old = published("SubnetsExhausted", 8, "2026-01-01T00:00:00Z");
        let now = "2026-01-02T00:00:00Z";
        // (published, growth, next, the case)
        let rows = [
            (None, Growth::Reaches, None, "nothing short, nothing published"),
            (Some(&old), Growth::Reaches, None, "growth works again: cleared"),
            (Some(&old), Growth::Unknown, Some(old.clone()), "a throttle keeps what is published"),
            (None, Growth::Unknown, None, "...and publishes nothing new"),
            (
                None,
                short("SubnetsExhausted", 8),
                Some(published("SubnetsExhausted", 8, now)),
                "a new shortfall starts now",
            ),
            (
                Some(&old),
                short("SubnetsExhausted", 11),
                Some(published("SubnetsExhausted", 11, "2026-01-01T00:00:00Z")),
                "the same reason keeps its start, the obtainable moves",
            ),
            (
                Some(&old),
                short("InstanceLimitReached", 20),
                Some(published("InstanceLimitReached", 20, now)),
                "another reason starts again",
            ),
        ];
        for (before, growth, want, case) in rows {
            assert_eq!(next_shortfall(before, &growth, now), want, "{case}");
        }
    }

    #[test]
    fn stale_table() {
        let planned = published("SubnetsExhausted", 8, "t");
        let refused = published("CloudQuotaExceeded", 8, "t");
        // (published ipLimit, published shortfall, ipLimit now, growth now, stale, the case)
        let rows = [
            (Some(27), None, 27, Growth::Reaches, false, "all published"),
            (None, None, 27, Growth::Reaches, true, "no ipLimit yet"),
            (Some(27), None, 18, Growth::Reaches, true, "another CNI took a slot: a new limit"),
            (Some(27), None, 27, short("SubnetsExhausted", 8), true, "a subnet filled up"),
            (Some(27), Some(&planned), 27, short("SubnetsExhausted", 8), false, "the same shortfall"),
            (Some(27), Some(&planned), 27, short("SubnetsExhausted", 12), true, "addresses came back"),
            (Some(27), Some(&planned), 27, Growth::Reaches, true, "the subnet has room again"),
            (Some(27), Some(&refused), 27, Growth::Reaches, false, "a refusal is left to the retries"),
            (Some(27), Some(&planned), 27, Growth::Unknown, false, "nothing learned"),
        ];
        for (limit, before, now_limit, growth, want, case) in rows {
            assert_eq!(published_is_stale(limit, before, now_limit, &growth), want, "{case}");
        }
    }
}
