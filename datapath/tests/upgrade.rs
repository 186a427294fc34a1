//! Agent upgrade: datapath N (this build) is replaced by N+1 (the same programs compiled with
//! `ENI_IPAM_UPGRADE_TEST`: another object and another map layout) during a 10 ms ping (ICMP:
//! the node's stack, by the nodes' policy routing), 10 ms UDP echoes and a TCP stream (the
//! fast path) between pods on two nodes, then rolled back to N; in both attach modes (needs
//! root).

use eni_ipam_netns_testbed as testbed;

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, time::Duration};

use aya::programs::TcAttachType;
use eni_ipam_datapath::{AttachMode, CURRENT, DatapathObject, Origin, UPGRADE_TEST_NEXT};
use testbed::{PodSpec, Testbed, echo, traffic};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const PINGS: u32 = 400;

#[test]
fn upgrading_over_tcx_loses_no_packet() {
    testbed::require_root_and_bpffs();
    assert!(eni_ipam_datapath::tcx_supported(), "this test needs a kernel with TCX (>= 6.6)");
    upgrade_during_traffic("upgrade-tcx", AttachMode::Tcx);
}

#[test]
fn upgrading_over_netlink_loses_no_packet() {
    upgrade_during_traffic("upgrade-nl", AttachMode::Netlink);
}

fn upgrade_during_traffic(tag: &str, mode: AttachMode) {
    let mut bed = Testbed::new(
        tag,
        2,
        &[PodSpec { node: 0, eni: 1, ip: POD_A }, PodSpec { node: 1, eni: 0, ip: POD_B }],
    );
    bed.attach_mode = mode;
    for node in 0..2 {
        let datapath = bed.start_datapath(node);
        assert_eq!((datapath.origin(), datapath.attach_mode()), (Origin::Loaded, mode));
    }
    let old_ids = bed.datapath(0).program_ids().unwrap();
    assert_eq!(attached_ids(&bed, 0, mode), expected(&bed, 0, &old_ids), "N attached");

    bed.install_kernel_routing(0);
    bed.install_kernel_routing(1);
    let ping = traffic::spawn_ping(&bed.pods[0].ns, POD_B, PINGS, "0.01", None);
    let server = echo::EchoServer::udp(&bed.pods[1].ns, POD_B);
    let echoes =
        echo::spawn_udp_echo_client(&bed.pods[0].ns, server.addr, PINGS, 56, Duration::from_millis(10));
    let stream = traffic::spawn_tcp_stream(&bed.pods[0].ns, &bed.pods[1].ns, POD_B, Duration::from_secs(3));
    wait_for_packets(&mut bed, u64::from(PINGS / 5));

    // N+1 replaces N on both nodes: the agent exits, the new one starts.
    for node in 0..2 {
        bed.nodes[node].datapath = None;
        let datapath = bed.start_datapath_from(node, &UPGRADE_TEST_NEXT);
        assert_eq!(datapath.origin(), Origin::Upgrading);
        assert_eq!(datapath.program_ids().unwrap().len(), old_ids.len());
        assert_only(bed.nodes[node].pins.path(), &UPGRADE_TEST_NEXT);
        assert!(
            bed.nodes[node]
                .pins
                .path()
                .join("maps")
                .join(UPGRADE_TEST_NEXT.layout)
                .join("upgrade_test")
                .exists()
        );
    }
    let new_ids = bed.datapath(0).program_ids().unwrap();
    for (program, id) in &new_ids {
        assert_ne!(old_ids[program], *id, "{program}: N+1 is a newly loaded program");
    }
    for node in 0..2 {
        let ids = bed.datapath(node).program_ids().unwrap();
        assert_eq!(attached_ids(&bed, node, mode), expected(&bed, node, &ids), "N+1 attached on node {node}");
    }
    // The new maps (a new layout) count what N+1 forwards.
    let mut polls = 0;
    while bed.datapath(0).endpoint_counters(POD_A).unwrap().tx_packets < 20 {
        polls += 1;
        assert!(polls < 400, "N+1 forwards nothing from pod A");
        std::thread::sleep(Duration::from_millis(5));
    }

    // And back to N (a rollback is an upgrade too).
    for node in 0..2 {
        bed.nodes[node].datapath = None;
        assert_eq!(bed.start_datapath_from(node, &CURRENT).origin(), Origin::Upgrading);
        assert_only(bed.nodes[node].pins.path(), &CURRENT);
    }
    let back_ids = bed.datapath(0).program_ids().unwrap();
    assert_eq!(attached_ids(&bed, 0, mode), expected(&bed, 0, &back_ids), "N attached again");
    assert!(!echoes.is_finished(), "the rollback must happen during the echoes");

    let summary = traffic::summary(ping.wait_with_output().unwrap());
    summary.assert_all_answered(PINGS);
    let echoed = echoes.join().unwrap();
    assert_eq!((echoed.sent, echoed.received), (PINGS, PINGS), "UDP echoes lost over the fast path");
    let stream = stream.join().expect("the TCP stream broke");
    assert_eq!(stream.bytes_received, stream.bytes_sent, "{stream:?}");
    assert!(stream.bytes_sent > 3 * 100 * 16 * 1024 / 2, "the stream ran through the upgrade: {stream:?}");
    assert_eq!(stream.lost(), 0, "a segment of the stream was lost: {stream:?}");

    // The next agent start adopts.
    bed.nodes[0].datapath = None;
    assert_eq!(bed.start_datapath(0).origin(), Origin::Adopted);
}

/// Waits until the datapath of node 0 forwarded `packets` from pod A.
fn wait_for_packets(bed: &mut Testbed, packets: u64) {
    let mut polls = 0;
    while bed.datapath(0).endpoint_counters(POD_A).unwrap().tx_packets < packets {
        polls += 1;
        assert!(polls < 1000, "the ping never got going through the datapath");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The only program and map directories are `object`'s.
fn assert_only(pins: &Path, object: &DatapathObject) {
    for (sub, name) in [("programs", object.version), ("maps", object.layout)] {
        let found: Vec<String> = std::fs::read_dir(pins.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(found, [name], "{sub}/ of {}", pins.display());
    }
}

/// Program ids attached at TC ingress of node `node`'s ENIs and pod veths, by interface.
fn attached_ids(bed: &Testbed, node: usize, mode: AttachMode) -> BTreeMap<String, Vec<u32>> {
    let n = &bed.nodes[node];
    interfaces(bed, node)
        .into_iter()
        .map(|(name, _)| {
            let ids = match mode {
                AttachMode::Tcx => {
                    n.ns.run(|| eni_ipam_datapath::tcx_programs(&name, TcAttachType::Ingress).unwrap())
                }
                _ => filter_program_ids(&n.ns, &name),
            };
            (name, ids)
        })
        .collect()
}

/// What [`attached_ids`] must be: `from_eni` on ENIs, `from_pod` on pod veths.
fn expected(bed: &Testbed, node: usize, ids: &BTreeMap<&str, u32>) -> BTreeMap<String, Vec<u32>> {
    interfaces(bed, node).into_iter().map(|(name, program)| (name, vec![ids[program]])).collect()
}

fn interfaces(bed: &Testbed, node: usize) -> Vec<(String, &'static str)> {
    let enis = bed.nodes[node].enis.iter().map(|e| (e.name.clone(), "from_eni"));
    let veths = bed.pods.iter().filter(|p| p.node == node).map(|p| (p.veth.clone(), "from_pod"));
    enis.chain(veths).collect()
}

/// Ids of the BPF programs of the `tc` filters at ingress of `dev` (`tc filter show`).
fn filter_program_ids(ns: &testbed::Netns, dev: &str) -> Vec<u32> {
    let output = ns.command("tc").args(["filter", "show", "dev", dev, "ingress"]).output().unwrap();
    assert!(output.status.success(), "tc filter show dev {dev}: {output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "id")
        .map(|w| w[1].parse().expect("program id"))
        .collect()
}

/// Releases before versioned pins left `programs/<program>` and `maps/<map>` (flat) and
/// TCX links under `links/`: a new agent takes them over like any other build's.
#[test]
fn flat_pins_of_earlier_releases_are_taken_over_without_loss() {
    testbed::require_root_and_bpffs();
    let mut bed = Testbed::new(
        "upgrade-flat",
        2,
        &[PodSpec { node: 0, eni: 1, ip: POD_A }, PodSpec { node: 1, eni: 0, ip: POD_B }],
    );
    bed.attach_mode = AttachMode::Tcx;
    for node in 0..2 {
        bed.start_datapath(node);
    }
    // Rearrange node 0's pins the way an earlier release laid them out (bpffs renames pins).
    bed.nodes[0].datapath = None;
    let pins = bed.nodes[0].pins.path().to_owned();
    for (sub, version) in [("programs", CURRENT.version), ("maps", CURRENT.layout)] {
        for entry in std::fs::read_dir(pins.join(sub).join(version)).unwrap() {
            let entry = entry.unwrap();
            std::fs::rename(entry.path(), pins.join(sub).join(entry.file_name())).unwrap();
        }
        std::fs::remove_dir(pins.join(sub).join(version)).unwrap();
    }
    assert!(pins.join("programs/from_pod").exists() && pins.join("maps/endpoints").exists());

    bed.install_kernel_routing(0);
    bed.install_kernel_routing(1);
    let ping = traffic::spawn_ping(&bed.pods[0].ns, POD_B, 200, "0.01", None);
    std::thread::sleep(Duration::from_millis(500));
    let datapath = bed.start_datapath(0);
    assert_eq!(datapath.origin(), Origin::Upgrading);
    let ids = datapath.program_ids().unwrap();
    assert_only(&pins, &CURRENT);
    assert_eq!(attached_ids(&bed, 0, AttachMode::Tcx), expected(&bed, 0, &ids));
    traffic::summary(ping.wait_with_output().unwrap()).assert_all_answered(200);
}
