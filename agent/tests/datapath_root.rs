//! The real agent with the eBPF datapath in a node namespace of the test bed, pods added and
//! deleted through the real eni-ipam-cni: traffic leaves through the ENI owning the pod IP,
//! /metrics counts exactly what was sent, DEL removes the endpoint, and a SIGKILL + restart
//! of the agent during a 10 ms UDP echo (the fast path) loses nothing and reconciles the maps, a SIGTERM (no
//! uninstall mark) keeps everything, and `eni-ipam-agent uninstall` leaves the node namespace
//! as it was before the agent came. Needs root and bpffs; namespaces and pins carry the pid
//! and are removed on drop, also on panic.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::agent_node::{AgentNode, POOL, VPC_HOST};
use common::{Agent, address_of};
use eni_ipam_datapath::{EndpointInfo, MacAddr};
use eni_ipam_netns_testbed::{Netns, echo};
use serde_json::{Value, json};

/// The value of the sample of `metric` whose labels include every `labels` pair.
fn sample(metrics: &str, metric: &str, labels: &[(&str, &str)]) -> Option<u64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(metric)?.strip_prefix('{')?;
        let (label_text, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
            .then(|| value.parse().ok())?
    })
}

#[test]
fn cni_add_installs_the_endpoint_counts_exactly_and_del_removes_it_root() {
    common::require_root();
    let mut node = AgentNode::start("agentdp");
    let a = node.add_pod("ctra");
    let b = node.add_pod("ctrb");
    assert_ne!(AgentNode::owning_eni(a), AgentNode::owning_eni(b), "one pod on each ENI");

    let state: Value = serde_json::from_str(&std::fs::read_to_string(&node.agent.state).unwrap()).unwrap();
    let recorded =
        state["allocations"].as_array().unwrap().iter().filter(|a| a["endpoint"].is_object()).count();
    assert_eq!(recorded, 2, "both veths are persisted on their allocations: {state}");
    // ENI 1's gateway was not in the neighbour table: the agent had the kernel resolve it
    // (a managed entry, kept fresh), and it holds the router end's MAC.
    let eni1 = &node.bed.nodes[0].enis[1];
    let gateway = POOL[1].2.to_string();
    let neigh = node.bed.nodes[0].ns.ip(&["-j", "neigh", "show", &gateway, "dev", &eni1.name]);
    let neigh: Value = serde_json::from_slice(&neigh.stdout).unwrap();
    assert_eq!(neigh[0]["lladdr"], eni1.gateway_mac.to_string(), "{neigh}");
    assert!(neigh[0].as_object().unwrap().contains_key("managed"), "{neigh}");

    const SENT: u64 = 20;
    let vpc_host = echo::EchoServer::udp(&node.bed.router, VPC_HOST);
    let udp = |node: &AgentNode, container: &str, count: u32| {
        echo::udp_echo_client(&node.pods[container], vpc_host.addr, count, 56, Duration::from_millis(10))
    };
    for (container, ip) in [("ctra", a), ("ctrb", b)] {
        let before = node.router_rx();
        let sent = udp(&node, container, SENT as u32);
        assert_eq!((sent.sent, sent.received), (SENT as u32, SENT as u32));
        let delta: Vec<u64> = node.router_rx().iter().zip(&before).map(|(after, b)| after - b).collect();
        let owner = AgentNode::owning_eni(ip);
        assert_eq!(
            delta[owner], SENT,
            "{ip}'s datagrams arrive on the ENI owning it (eni{owner}): rx deltas {delta:?}"
        );
        assert_eq!(delta[1 - owner], 0, "nothing arrives on the other ENI: rx deltas {delta:?}");

        let metrics = node.metrics();
        let ip_text = ip.to_string();
        let pod = format!("default/pod-{container}");
        let counter = |metric: &str, labels: &[(&str, &str)]| {
            let mut all = vec![("pod_ip", ip_text.as_str()), ("pod", pod.as_str())];
            all.extend_from_slice(labels);
            sample(&metrics, metric, &all).unwrap_or_else(|| panic!("no {metric} {all:?} in\n{metrics}"))
        };
        assert_eq!(counter("eni_ipam_datapath_packets_total", &[("direction", "tx")]), SENT);
        assert_eq!(counter("eni_ipam_datapath_packets_total", &[("direction", "rx")]), SENT);
        // 14 Ethernet + 20 IPv4 + 8 UDP + 56 data.
        assert_eq!(counter("eni_ipam_datapath_bytes_total", &[("direction", "tx")]), SENT * 98);
        assert_eq!(counter("eni_ipam_datapath_drops_total", &[("reason", "spoofed_source")]), 0);
    }
    assert!(node.metrics().contains("eni_ipam_datapath_endpoints 2"), "{}", node.metrics());
    assert_eq!(node.pod_link_pins().len(), 2);

    // A retried ADD makes a new veth: same IP, the endpoint follows it, the old link pin goes.
    let pins_before = node.pod_link_pins();
    let again: Ipv4Addr = address_of(&node.cni("ADD", "ctrb").unwrap()).parse().unwrap();
    assert_eq!(again, b, "a retried ADD keeps the IP");
    let pins_after = node.pod_link_pins();
    assert_eq!(pins_after.len(), 2, "{pins_before:?} -> {pins_after:?}");
    assert_ne!(pins_after, pins_before, "the new veth has its own link");
    assert_eq!(udp(&node, "ctrb", 3).received, 3, "traffic flows over the new veth");

    node.del_pod("ctra");
    let metrics = node.metrics();
    assert!(!metrics.contains(&format!("pod_ip=\"{a}\"")), "DEL removes {a} from /metrics:\n{metrics}");
    let endpoints = node.pinned().endpoints().unwrap();
    assert_eq!(endpoints.keys().copied().collect::<Vec<_>>(), [b], "DEL removes the endpoint from the map");
    assert_eq!(node.pod_link_pins().len(), 1, "and its link pin");
    assert_eq!(udp(&node, "ctrb", 3).received, 3, "the other pod is untouched");
}

#[test]
fn agent_sigkill_and_restart_during_a_10ms_ping_loses_nothing_and_reconciles_root() {
    common::require_root();
    let mut node = AgentNode::start("agentrs");
    let a = node.add_pod("ctra");
    let gone = node.add_pod("ctrgone");
    // Something the agent does not own, left in the maps (a previous agent's leftover).
    let stray = Ipv4Addr::new(10, 0, 0, 99);
    let mut pinned = node.pinned();
    let stray_endpoint = EndpointInfo {
        pod_veth_ifindex: 999_999,
        pod_mac: MacAddr([2, 0, 0, 0, 0, 99]),
        eni_ifindex: node.bed.nodes[0].enis[0].ifindex,
        eni_mac: node.bed.nodes[0].enis[0].mac,
        gateway_mac: node.bed.nodes[0].enis[0].gateway_mac,
    };
    pinned.upsert_endpoint(stray, stray_endpoint).unwrap();
    // On restart only ctra still runs: the agent frees ctrgone's IP and must drop its endpoint.
    let live = node.agent.dir.join("live-containers");
    std::fs::write(&live, "ctra\n").unwrap();
    node.agent.extra_args = vec!["--live-containers-file".into(), live.display().to_string()];

    const PINGS: u64 = 300;
    let (_vpc_host, ping) = node.spawn_vpc_echoes("ctra", PINGS);
    let started = Instant::now();
    while pinned.endpoint_counters(a).unwrap().tx_packets < PINGS / 6 {
        assert!(started.elapsed() < Duration::from_secs(10), "the ping never got going through the datapath");
        std::thread::sleep(Duration::from_millis(5));
    }
    node.agent.restart(); // SIGKILL, then start again and wait for healthz
    let at_restart = pinned.endpoint_counters(a).unwrap().tx_packets;
    assert!(at_restart < PINGS, "the restart must happen during the ping ({at_restart} sent already)");

    let summary = ping.join().unwrap();
    assert_eq!((summary.sent, summary.received), (PINGS as u32, PINGS as u32));

    let endpoints = pinned.endpoints().unwrap();
    assert_eq!(endpoints.keys().copied().collect::<Vec<_>>(), [a], "reconciled: {stray} and {gone} removed");
    let log = node.agent_log();
    assert!(log.contains("Adopted"), "the restarted agent adopts the pins:\n{log}");
    assert_eq!(node.pod_link_pins().len(), 1, "{gone}'s veth link is detached");
    let metrics = node.metrics();
    let tx = sample(
        &metrics,
        "eni_ipam_datapath_packets_total",
        &[("pod_ip", &a.to_string()), ("direction", "tx")],
    );
    assert_eq!(tx, Some(PINGS), "counters survive the restart and count every ping:\n{metrics}");
}

#[test]
fn the_datapath_flag_fails_in_one_line_naming_what_is_missing_root() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Agent::configure(dir.path(), &json!({"ips": {}}));
    let not_bpffs = dir.path().join("pins");
    agent.datapath_args =
        vec!["--datapath".into(), "ebpf".into(), "--bpf-pin-dir".into(), not_bpffs.display().to_string()];
    agent.datapath_args.extend(["--service-cidr".into(), "10.100.0.0/16".into()]);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| agent.restart()));
    assert!(outcome.is_err(), "the agent must not start without bpffs under its pin directory");
    let log = std::fs::read_to_string(dir.path().join("agent.log")).unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("eni-ipam-agent: cannot start the eBPF datapath")
            && last.contains("bpffs is not mounted at")
            && last.contains("--datapath=none"),
        "{log}"
    );
    assert!(!Path::new(&not_bpffs).join("maps").exists(), "nothing pinned outside bpffs");
}

/// What of the node namespace an agent may change: links, routes (every table), rules,
/// qdiscs, TC programs per link (TCX links and tc filters, ingress and egress), the
/// neighbour entries that are not a plain ARP cache, and nft tables.
#[derive(Debug, PartialEq, Eq)]
struct NodeView {
    links: BTreeSet<String>,
    routes: BTreeSet<String>,
    rules: BTreeSet<String>,
    qdiscs: BTreeSet<String>,
    tc_programs: BTreeMap<String, usize>,
    pinned_or_managed_neighbours: BTreeSet<String>,
    nft_tables: BTreeSet<String>,
}

impl NodeView {
    fn of(node: &Netns) -> Self {
        let json = |args: &[&str]| -> Vec<Value> {
            let out = node.ip(args);
            serde_json::from_slice(&out.stdout).unwrap_or_default()
        };
        let texts = |items: Vec<Value>| items.iter().map(Value::to_string).collect::<BTreeSet<_>>();
        let links: BTreeSet<String> = json(&["-j", "link", "show"])
            .iter()
            .filter_map(|l| l["ifname"].as_str().map(str::to_owned))
            .collect();
        let qdiscs = node.command("tc").args(["-j", "qdisc", "show"]).output().expect("run tc");
        let qdiscs: Vec<Value> = serde_json::from_slice(&qdiscs.stdout).expect("tc -j qdisc show");
        let qdiscs = qdiscs
            .iter()
            .map(|q| format!("{} {} {}", q["dev"], q["kind"], q["handle"]))
            .collect::<BTreeSet<_>>();
        let names: Vec<String> = links.iter().cloned().collect();
        let tc_programs = node.run(move || {
            names
                .into_iter()
                .map(|name| {
                    let ids = eni_ipam_datapath::tcx_attached_programs(&name).expect("query TCX programs");
                    let filters = eni_ipam_datapath::tc_filter_count(&name).expect("query tc filters");
                    (name, ids.len() + filters)
                })
                .collect()
        });
        let neighbours = json(&["-j", "neigh", "show", "nud", "all"])
            .into_iter()
            .filter(|n| {
                n.get("managed").is_some()
                    || n["state"].as_array().is_some_and(|s| s.iter().any(|s| s == "PERMANENT"))
            })
            .map(|n| format!("{} {} {}", n["dst"], n["dev"], n["lladdr"]))
            .collect();
        let nft = node.command("nft").args(["list", "tables"]).output().expect("run nft");
        assert!(nft.status.success(), "nft list tables: {}", String::from_utf8_lossy(&nft.stderr));
        let nft_tables = String::from_utf8_lossy(&nft.stdout).lines().map(str::to_owned).collect();
        Self {
            nft_tables,
            links,
            routes: texts(json(&["-j", "route", "show", "table", "all"])),
            rules: texts(json(&["-j", "rule", "show"])),
            qdiscs,
            tc_programs,
            pinned_or_managed_neighbours: neighbours,
        }
    }
}

#[test]
fn uninstall_leaves_the_node_as_before_the_agent_and_sigterm_alone_keeps_everything_root() {
    common::require_root();
    let mut node = AgentNode::prepare("agentun");
    let before = NodeView::of(&node.bed.nodes[0].ns);
    // What the chart's install step puts on a host, next to another CNI's file that must stay.
    let host = tempfile::tempdir().unwrap();
    let (conf_dir, bin_dir) = (host.path().join("net.d"), host.path().join("bin"));
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::create_dir_all(&bin_dir).unwrap();
    let ours = json!({"cniVersion": "1.0.0", "name": "eni-ipam", "plugins": [{"type": "eni-ipam-cni"}, {"type": "portmap"}]});
    std::fs::write(conf_dir.join("05-eni-ipam.conflist"), ours.to_string()).unwrap();
    let theirs =
        json!({"cniVersion": "0.4.0", "name": "aws-cni", "plugins": [{"type": "aws-cni"}]}).to_string();
    std::fs::write(conf_dir.join("10-aws.conflist"), &theirs).unwrap();
    std::fs::copy(common::PLUGIN, bin_dir.join("eni-ipam-cni")).unwrap();
    let paths = vec![
        format!("--cni-conf-dir={}", conf_dir.display()),
        format!("--cni-bin-dir={}", bin_dir.display()),
        "--cni-conf-file=05-eni-ipam.conflist".to_owned(),
    ];
    node.agent.extra_args = paths.clone();
    node.agent.restart();
    let a = node.add_pod("ctra");
    let b = node.add_pod("ctrb");
    assert_ne!(AgentNode::owning_eni(a), AgentNode::owning_eni(b), "one pod on each ENI");

    let installed = NodeView::of(&node.bed.nodes[0].ns);
    assert_eq!(installed.links.len(), before.links.len() + 2, "two pod veths: {installed:#?}");
    assert_eq!(
        installed.tc_programs.values().sum::<usize>(),
        8,
        "both ENIs and both veths, at ingress and egress: {installed:#?}"
    );
    assert!(installed.routes.len() > before.routes.len(), "the pods' /32 routes");
    assert!(
        installed.rules.iter().filter(|r| r.contains("\"protocol\":\"225\"")).count() == 5,
        "the marked rule and both rules of each pod: {installed:#?}"
    );
    assert!(installed.nft_tables.contains("table ip eni_ipam"), "{installed:#?}");
    assert!(
        installed.pinned_or_managed_neighbours.len() > before.pinned_or_managed_neighbours.len(),
        "ENI 1's gateway is a managed neighbour: {installed:#?}"
    );

    // SIGTERM without the uninstall mark (a restart, an upgrade): nothing goes, no packet is lost.
    const PINGS: u64 = 200;
    let (_vpc_host, ping) = node.spawn_vpc_echoes("ctra", PINGS);
    std::thread::sleep(Duration::from_millis(300));
    let status = node.agent.terminate();
    assert!(status.success(), "a terminated agent exits cleanly: {status}\n{}", node.agent_log());
    assert!(node.bed.nodes[0].pins.path().join("programs").exists(), "the pins stay");
    assert!(
        conf_dir.join("05-eni-ipam.conflist").exists() && node.agent.state.exists(),
        "the CNI conf and state stay"
    );
    assert_eq!(NodeView::of(&node.bed.nodes[0].ns).tc_programs, installed.tc_programs);
    node.agent.restart();
    let summary = ping.join().unwrap();
    assert_eq!((summary.sent, summary.received), (PINGS as u32, PINGS as u32));

    // The node leaves the cluster: stop the agent, then uninstall (twice).
    assert!(node.agent.terminate().success());
    let uninstall = || {
        let mut command = node.bed.nodes[0].ns.command(common::AGENT);
        command
            .arg("uninstall")
            .arg(format!("--bpf-pin-dir={}", node.bed.nodes[0].pins.path().display()))
            .arg(format!("--state-file={}", node.agent.state.display()))
            .arg(format!("--socket={}", node.agent.socket.display()))
            .args(&paths);
        let out = command.output().expect("run eni-ipam-agent uninstall");
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "uninstall failed: {log}");
        log
    };
    let first = uninstall();
    assert!(first.contains("removed pod veth") && first.contains("eBPF datapath"), "{first}");
    let after = NodeView::of(&node.bed.nodes[0].ns);
    assert_eq!(after, before, "the node namespace is as it was before the agent");
    assert!(!node.bed.nodes[0].pins.path().exists(), "no pin left under the agent's pin directory");
    let confs: Vec<String> = std::fs::read_dir(&conf_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(confs, ["10-aws.conflist"], "only the other CNI's configuration stays");
    assert_eq!(std::fs::read_to_string(conf_dir.join("10-aws.conflist")).unwrap(), theirs);
    assert_eq!(std::fs::read_dir(&bin_dir).unwrap().count(), 0, "the plugin binary is gone");
    assert!(
        !node.agent.state.exists() && !node.agent.socket.exists(),
        "the agent's state and socket are gone"
    );

    let second = uninstall();
    assert!(second.contains("nothing of eni-ipam's was left"), "{second}");
    assert_eq!(NodeView::of(&node.bed.nodes[0].ns), before);
}
