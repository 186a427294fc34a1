//! The conflist the install step writes is one eni-ipam-cni reads: our
//! plugin's section goes through the plugin's own parser (`NetConf::parse`,
//! as the runtime would hand it over), and points at the agent's socket.

use clap::CommandFactory;
use clap::Parser;
use eni_ipam_agent::cni::spec::{NetConf, PLUGIN_TYPE};
use eni_ipam_chart_tests::{Helm, command_line, containers, parse_documents};
use serde_json::{Value, json};

/// The conflist and the agent's `--socket`, rendered with `values` and `sets`.
fn rendered(values: &[&str], sets: &[&str]) -> (Value, String) {
    let objects = parse_documents(&Helm::default().render(values, sets));
    let config_map = objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap" && o["metadata"]["name"].as_str().is_some_and(|n| n.ends_with("-cni"))
        })
        .expect("the CNI ConfigMap");
    let (name, text) = config_map["data"].as_object().and_then(|d| d.iter().next()).expect("one conflist");
    assert!(name.ends_with(".conflist"), "{name}");
    let conflist: Value = serde_json::from_str(text.as_str().expect("text")).expect("the conflist is JSON");
    let all = containers(&objects);
    let agent = all.iter().find(|c| c.name == "agent").expect("agent container");
    let line = command_line(agent, &eni_ipam_agent::cli::Cli::command());
    let cli = eni_ipam_agent::cli::Cli::try_parse_from(&line.argv).expect("agent args parse");
    (conflist, cli.paths.socket.display().to_string())
}

/// What the runtime passes our plugin: its section plus the list's name and version.
fn our_section(conflist: &Value) -> NetConf {
    let plugins = conflist["plugins"].as_array().expect("plugins");
    assert_eq!(plugins[0]["type"], PLUGIN_TYPE, "eni-ipam-cni must come first: it creates the interface");
    let mut section = plugins[0].clone();
    section["cniVersion"] = conflist["cniVersion"].clone();
    section["name"] = conflist["name"].clone();
    NetConf::parse(section.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("eni-ipam-cni refuses the rendered section: {}", e.to_json("1.0.0")))
}

#[test]
fn default_conflist_is_read_by_the_plugin_and_names_the_agents_socket() {
    let (conflist, agent_socket) = rendered(&[], &[]);
    let ours = our_section(&conflist);
    assert!(ours.is_main());
    assert_eq!(ours.socket, agent_socket);
    assert_eq!(ours.timeout.as_secs(), 10);
    assert_eq!(ours.mtu, 0);
    assert_eq!(conflist["cniVersion"], "1.0.0", "what libcni 1.1.x runs (it cannot read a 1.1.0 result)");
    assert_eq!(
        conflist["cniVersions"],
        json!(["1.0.0", "1.1.0"]),
        "libcni >= 1.2 picks 1.1.0: GC and STATUS"
    );
    assert_eq!(conflist["name"], "eni-ipam", "CNI GC is scoped to this name");
    assert_eq!(
        conflist["plugins"][1],
        json!({"type": "portmap", "capabilities": {"portMappings": true}, "snat": true})
    );
}

#[test]
fn aws_example_sets_the_mtu() {
    let (conflist, _) = rendered(&["examples/aws-values.yaml"], &[]);
    assert_eq!(our_section(&conflist).mtu, 9001);
}

#[test]
fn without_portmap_our_plugin_is_alone() {
    let (conflist, _) = rendered(&[], &["cni.portmap=false", "cni.timeoutSeconds=30"]);
    assert_eq!(conflist["plugins"].as_array().map(Vec::len), Some(1));
    assert_eq!(our_section(&conflist).timeout.as_secs(), 30);
}

#[test]
fn an_mtu_the_plugin_would_refuse_is_refused_at_install() {
    let message = Helm::default().template(&[], &["cni.mtu=50"]).expect_err("mtu 50 must be refused");
    println!("{message}");
    assert!(message.contains("cni.mtu: Must validate at least one schema (anyOf)"), "{message}");
}
