//! Restart storm on virtual time: after a converged fleet restarts at once, our
//! operator's first minute costs about one steady minute of cloud calls, while
//! node-side daemons meet the quota head on.

use eni_ipam_cloud::CloudKind;
use eni_ipam_operator::simulate::restart::{Restarter, restart_storm};

#[tokio::test(start_paused = true)]
async fn a_restart_costs_us_at_most_twice_a_steady_minute_and_daemons_far_more() {
    let nodes = 400;
    let mut runs = Vec::new();
    for restarter in Restarter::ALL {
        let run = restart_storm(CloudKind::Aws, nodes, restarter, 9).await.expect("the storm runs");
        eprintln!("{run:?}");
        runs.push(run);
    }
    let [ours, jitter, no_jitter] = [&runs[0], &runs[1], &runs[2]];
    assert!(ours.steady_calls_per_min >= 1.0, "the steady state lists the VPC every minute: {ours:?}");
    assert!(ours.ratio_to_steady <= 2.0, "restart storm within 2x steady state: {ours:?}");
    assert_eq!(ours.restart_throttled_first_min, 0, "{ours:?}");
    assert_eq!(ours.restart_writes_first_min, 0, "a restart rewrites no ENINode that is right: {ours:?}");
    assert!(ours.all_resynced_s.is_some_and(|t| t < 60.0), "{ours:?}");
    for daemons in [jitter, no_jitter] {
        assert!(
            daemons.restart_calls_first_min >= u64::from(nodes),
            "one list per node at least: {daemons:?}"
        );
        assert!(daemons.restart_throttled_first_min > 0, "the herd meets the quota: {daemons:?}");
    }
    // Without jitter, the throttled daemons retry in lockstep and take longer to all get through.
    assert!(
        no_jitter.all_resynced_s.unwrap_or(f64::MAX) > jitter.all_resynced_s.unwrap_or(f64::MAX)
            || no_jitter.all_resynced_s.is_none(),
        "{jitter:?} vs {no_jitter:?}"
    );
}
