//! When temporary keys are refreshed: a pure function of the clock, so the
//! table below documents it. Early enough that no call is signed with a key
//! about to expire; never more than about once a second, so a cloud handing
//! out already-expired keys (or a skewed clock) cannot cause an STS storm.

use time::{Duration, OffsetDateTime};

/// The longest a refresh is done before expiry (the lifetime's third when shorter).
pub const REFRESH_MARGIN: Duration = Duration::minutes(5);
/// The shortest time between two fetches.
pub const MIN_INTERVAL: Duration = Duration::seconds(1);
/// The longest pause after a failed refresh while the keys still work.
pub const MAX_RETRY_PAUSE: Duration = Duration::seconds(30);

/// When to refresh keys fetched at `fetched` that expire at `expires`.
pub fn refresh_at(fetched: OffsetDateTime, expires: OffsetDateTime) -> OffsetDateTime {
    let lifetime = expires - fetched;
    let margin = REFRESH_MARGIN.min(lifetime / 3);
    (expires - margin).max(fetched + MIN_INTERVAL)
}

/// When to try again after a refresh failed at `now`, the keys expiring at
/// `expires`: a quarter of the time left, within [1 s, 30 s].
pub fn retry_after_failure(now: OffsetDateTime, expires: OffsetDateTime) -> OffsetDateTime {
    let quarter: Duration = (expires - now) / 4;
    now + quarter.clamp(MIN_INTERVAL, MAX_RETRY_PAUSE)
}

/// The refresh schedule of cached temporary keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RefreshPlan {
    /// Fetch again at or after this instant.
    pub refresh_at: OffsetDateTime,
    /// The keys stop working here.
    pub expires: OffsetDateTime,
}

impl RefreshPlan {
    /// The plan for keys fetched at `fetched`, expiring at `expires`.
    pub fn for_keys(fetched: OffsetDateTime, expires: OffsetDateTime) -> Self {
        Self { refresh_at: refresh_at(fetched, expires), expires }
    }

    /// Whether a fetch is due at `now`.
    pub fn due(&self, now: OffsetDateTime) -> bool {
        now >= self.refresh_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::seconds(seconds)
    }

    #[test]
    fn refresh_comes_before_expiry_and_never_twice_a_second() {
        // (fetched, expires, refresh at), seconds
        let rows = [
            (0, 3600, 3300), // an hour: 5 minutes before
            (0, 900, 600),   // STS's shortest: 5 minutes before
            (0, 600, 400),   // shorter than 15 minutes: at two thirds
            (0, 6, 4),       // a test's 6 s keys: at 4 s
            (0, 1, 1),       // 1 s: not before a second has passed
            (100, 90, 101),  // already expired (clock skew): once a second at most
            (100, 100, 101), // expiring now: the same
        ];
        for (fetched, expires, want) in rows {
            assert_eq!(
                refresh_at(at(fetched), at(expires)),
                at(want),
                "fetched {fetched}, expires {expires}"
            );
        }
    }

    #[test]
    fn a_failed_refresh_is_retried_after_a_quarter_of_the_time_left() {
        // (now, expires, retry at), seconds
        let rows = [
            (0, 3600, 30), // far from expiry: 30 s at most
            (0, 60, 15),   // a quarter of what is left
            (0, 2, 1),     // close to expiry: not sooner than a second
        ];
        for (now, expires, want) in rows {
            assert_eq!(retry_after_failure(at(now), at(expires)), at(want), "now {now}, expires {expires}");
        }
    }

    #[test]
    fn a_plan_is_due_from_its_refresh_time() {
        let plan = RefreshPlan::for_keys(at(0), at(15));
        assert!(!plan.due(at(9)));
        assert!(plan.due(at(10)));
        assert!(plan.due(at(16)));
    }
}
