//! The agent frees the IPs of pods kubelet no longer runs: the chart hands it kubelet's
//! pod-resources socket at the path it mounts, with the grace and cooldown values, and
//! leaves both out when `agent.lostPods.enabled` is false.

use std::time::Duration;

use clap::{CommandFactory, Parser};
use eni_ipam_agent::cli::Cli;
use eni_ipam_chart_tests::{Helm, command_line, containers, parse_documents};

/// The agent's parsed command line and its mounts (path -> volume), rendered with `sets`.
fn agent(sets: &[&str]) -> (Cli, Vec<(String, String)>) {
    let objects = parse_documents(&Helm::default().render(&[], sets));
    let all = containers(&objects);
    let agent = all.iter().find(|c| c.name == "agent").expect("agent container");
    let line = command_line(agent, &Cli::command());
    (Cli::try_parse_from(&line.argv).expect("agent args parse"), agent.mounts.clone())
}

#[test]
fn the_agent_reads_kubelets_pod_resources_where_the_chart_mounts_them() {
    let (cli, mounts) = agent(&[]);
    let config = cli.lost_pods().expect("on by default");
    assert_eq!((config.grace, config.cooldown), (Duration::from_secs(120), Duration::from_secs(60)));
    let folder = config.socket.parent().unwrap().to_str().unwrap().to_owned();
    assert!(
        mounts.iter().any(|(path, _)| *path == folder),
        "the agent container mounts {folder}: {mounts:?}"
    );

    let (cli, _) = agent(&["agent.lostPods.grace=30s", "agent.lostPods.cooldown=0s"]);
    let config = cli.lost_pods().unwrap();
    assert_eq!((config.grace, config.cooldown), (Duration::from_secs(30), Duration::ZERO));

    let (cli, mounts) = agent(&["agent.lostPods.enabled=false"]);
    assert!(cli.lost_pods().is_none(), "off: no socket given");
    assert!(!mounts.iter().any(|(path, _)| path.contains("pod-resources")), "{mounts:?}");
}
