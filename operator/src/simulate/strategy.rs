//! The strategies the simulator compares eni-ipam's with. Each is a way of
//! working that peers document, played by the same simulator, planner and
//! fake cloud; they are labelled as strategies, not as anyone's code.

use std::time::Duration;

use eni_ipam_cloud::RetryPolicy;
use serde::Serialize;

use crate::resync::Listing;

/// One way of running the fleet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// eni-ipam: coalesced resync, pool seen at once, full-jitter backoff,
    /// one shared limiter, central deficit-ordered workers.
    #[default]
    Ours,
    /// (a) Every resync lists ENIs subnet by subnet.
    PerSubnetListing,
    /// (b) A node sees its pool (and reports its use) on a fixed 15 s timer.
    #[serde(rename = "fixed-node-update-15s")]
    FixedNodeUpdate15s,
    /// (c) Exponential backoff from 10 s to 5 min, no jitter.
    NoJitterBackoff,
    /// (d) An IPAM daemon on every node: one ENI action per node per 15 s,
    /// each node listing its own instance, no shared limiter.
    NodeSideDaemons,
}

impl Strategy {
    /// All of them, ours first.
    pub const ALL: [Strategy; 5] = [
        Strategy::Ours,
        Strategy::PerSubnetListing,
        Strategy::FixedNodeUpdate15s,
        Strategy::NoJitterBackoff,
        Strategy::NodeSideDaemons,
    ];

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Strategy::Ours => "ours",
            Strategy::PerSubnetListing => "(a) per-subnet listing",
            Strategy::FixedNodeUpdate15s => "(b) 15 s node update",
            Strategy::NoJitterBackoff => "(c) 10s..5min no jitter",
            Strategy::NodeSideDaemons => "(d) node-side daemons",
        }
    }

    /// How resyncs are served.
    pub fn listing(self) -> Listing {
        match self {
            Strategy::PerSubnetListing => Listing::PerSubnet,
            Strategy::NodeSideDaemons => Listing::PerInstance,
            _ => Listing::Coalesced,
        }
    }

    /// When a node's agent sees its pool: at once (watch) or on a timer.
    pub fn node_update_interval(self) -> Option<Duration> {
        match self {
            Strategy::FixedNodeUpdate15s | Strategy::NodeSideDaemons => Some(Duration::from_secs(15)),
            _ => None,
        }
    }

    /// The client retry policy.
    pub fn retry(self, seed: u64) -> RetryPolicy {
        match self {
            Strategy::NoJitterBackoff => {
                RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(300), 8, seed).without_jitter()
            }
            _ => RetryPolicy::cloud_default(seed),
        }
    }

    /// The backoff before a failed node is worked again.
    pub fn requeue(self, seed: u64) -> RetryPolicy {
        match self {
            Strategy::NoJitterBackoff => {
                RetryPolicy::new(Duration::from_secs(10), Duration::from_secs(300), u32::MAX, seed)
                    .without_jitter()
            }
            _ => RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(60), u32::MAX, seed),
        }
    }

    /// Whether the fleet shares one client limiter.
    pub fn shared_limiter(self) -> bool {
        self != Strategy::NodeSideDaemons
    }

    /// One action per pass and a pause between passes (node-side daemons).
    pub fn pacing(self) -> (Option<usize>, Duration) {
        match self {
            Strategy::NodeSideDaemons => (Some(1), Duration::from_secs(15)),
            _ => (None, Duration::ZERO),
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "ours" => Strategy::Ours,
            "per-subnet-listing" => Strategy::PerSubnetListing,
            "fixed-node-update-15s" => Strategy::FixedNodeUpdate15s,
            "no-jitter-backoff" => Strategy::NoJitterBackoff,
            "node-side-daemons" => Strategy::NodeSideDaemons,
            other => {
                return Err(format!(
                    "unknown strategy '{other}': use ours, per-subnet-listing, fixed-node-update-15s, no-jitter-backoff or node-side-daemons"
                ));
            }
        })
    }
}

/// When an agent polling every `interval` (first poll at `phase`) sees
/// something that happened at `at`.
pub fn seen_at(at: Duration, phase: Duration, interval: Duration) -> Duration {
    if at <= phase {
        return phase;
    }
    let ticks = ((at - phase).as_secs_f64() / interval.as_secs_f64()).ceil();
    phase + interval.mul_f64(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_delays_what_it_sees_to_its_next_tick() {
        let s = Duration::from_secs;
        assert_eq!(seen_at(s(1), s(3), s(15)), s(3));
        assert_eq!(seen_at(s(4), s(3), s(15)), s(18));
        assert_eq!(seen_at(s(18), s(3), s(15)), s(18));
        assert_eq!(seen_at(s(19), s(3), s(15)), s(33));
    }

    #[test]
    fn only_our_strategy_has_every_advantage() {
        let ours = Strategy::Ours;
        assert!(ours.retry(1).jitter && ours.shared_limiter() && ours.node_update_interval().is_none());
        assert!(!Strategy::NoJitterBackoff.retry(1).jitter);
        assert_eq!(Strategy::PerSubnetListing.listing(), Listing::PerSubnet);
        assert!(!Strategy::NodeSideDaemons.shared_limiter());
    }
}
