//! The two ways of attaching (needs root): netlink filters outlive the agent, switching
//! `--tc-attach` between restarts loses no packet (once the `clsact` qdiscs exist: adding
//! one deactivates the device's queues for a moment), and the uninstall leaves neither
//! filter nor `clsact` qdisc behind, but keeps a qdisc that still holds someone else's filter.

use eni_ipam_netns_testbed as testbed;

use std::{net::Ipv4Addr, time::Duration};

use aya::programs::TcAttachType;
use eni_ipam_datapath::{AttachMode, Origin, remove_pins, tc_filter_count, tcx_programs};
use testbed::{PodSpec, Testbed, echo};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const PINGS: u32 = 400;

/// (TCX programs, tc filters) at TC ingress and egress of `dev` on node `node`.
fn hooks(bed: &Testbed, node: usize, dev: &str) -> (usize, usize) {
    bed.nodes[node].ns.run(|| {
        let tcx = [TcAttachType::Ingress, TcAttachType::Egress]
            .into_iter()
            .map(|direction| tcx_programs(dev, direction).unwrap().len())
            .sum();
        (tcx, tc_filter_count(dev).unwrap())
    })
}

fn has_clsact(bed: &Testbed, node: usize, dev: &str) -> bool {
    let output = bed.nodes[node].ns.command("tc").args(["qdisc", "show", "dev", dev]).output().unwrap();
    String::from_utf8_lossy(&output.stdout).contains("clsact")
}

#[test]
fn switching_attach_modes_loses_no_packet_and_uninstall_leaves_nothing() {
    testbed::require_root_and_bpffs();
    assert!(eni_ipam_datapath::tcx_supported(), "this test needs a kernel with TCX (>= 6.6)");
    let mut bed = Testbed::new(
        "modes",
        2,
        &[PodSpec { node: 0, eni: 1, ip: POD_A }, PodSpec { node: 1, eni: 0, ip: POD_B }],
    );
    bed.attach_mode = AttachMode::Netlink;
    bed.start_datapath(0);
    bed.start_datapath(1);
    let eni = bed.nodes[0].enis[1].name.clone();
    let veth = bed.pods[0].veth.clone();
    // nat_learn at egress, from_eni / from_pod at ingress.
    assert_eq!((hooks(&bed, 0, &eni), hooks(&bed, 0, &veth)), ((0, 2), (0, 2)), "tc filters only");

    // UDP echoes: the fast path, which the programs (however attached) forward.
    let server = echo::EchoServer::udp(&bed.pods[1].ns, POD_B);
    let interval = Duration::from_millis(10);
    let echoes = echo::spawn_udp_echo_client(&bed.pods[0].ns, server.addr, PINGS, 56, interval);
    std::thread::sleep(Duration::from_millis(300));
    // Restart both agents with --tc-attach=tcx, netlink, tcx, netlink during the ping.
    for mode in [AttachMode::Tcx, AttachMode::Netlink, AttachMode::Tcx, AttachMode::Netlink] {
        bed.attach_mode = mode;
        for node in 0..2 {
            bed.nodes[node].datapath = None;
            let datapath = bed.start_datapath(node);
            assert_eq!((datapath.origin(), datapath.attach_mode()), (Origin::Adopted, mode));
        }
        let expected = if mode == AttachMode::Tcx { (2, 0) } else { (0, 2) };
        assert_eq!((hooks(&bed, 0, &eni), hooks(&bed, 0, &veth)), (expected, expected), "{mode}");
        assert!(has_clsact(&bed, 0, &eni), "{mode}: the clsact qdisc stays");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The agents exit: the filters stay and keep forwarding.
    bed.nodes[0].datapath = None;
    bed.nodes[1].datapath = None;
    let summary = echoes.join().unwrap();
    assert_eq!((summary.sent, summary.received), (PINGS, PINGS), "echoes lost while switching modes");
    let after = echo::udp_echo_client(&bed.pods[0].ns, server.addr, 5, 56, interval);
    assert_eq!(after.received, 5, "filters forward without the agent");

    // Someone else's filter on the other ENI of node 0 keeps its qdisc.
    let other_eni = bed.nodes[0].enis[0].name.clone();
    let tc = |args: &[&str]| assert!(bed.nodes[0].ns.succeeds("tc", args), "tc {args:?}");
    tc(&["filter", "add", "dev", &other_eni, "ingress", "prio", "7", "bpf", "bytecode", "1,6 0 0 0,"]);
    assert_eq!(hooks(&bed, 0, &other_eni), (0, 3), "ours and theirs");

    for node in 0..2 {
        let pins = bed.nodes[node].pins.path().to_owned();
        let removed = bed.nodes[node].ns.run(move || remove_pins(&pins).unwrap());
        assert!(removed.foreign.is_empty(), "{removed:?}");
        assert!(!bed.nodes[node].pins.path().exists());
    }
    assert_eq!((hooks(&bed, 0, &eni), hooks(&bed, 0, &veth)), ((0, 0), (0, 0)));
    assert!(!has_clsact(&bed, 0, &eni) && !has_clsact(&bed, 0, &veth), "our empty qdiscs are deleted");
    assert_eq!(hooks(&bed, 0, &other_eni), (0, 1), "their filter stays");
    assert!(has_clsact(&bed, 0, &other_eni), "a qdisc with their filter stays");
}
