//! Agent restart: the handle is dropped and the pins adopted by a new one during a
//! continuous UDP echo (10 ms interval, the fast path) without losing a packet (needs root).

use eni_ipam_netns_testbed as testbed;

use std::{net::Ipv4Addr, time::Duration};

use eni_ipam_datapath::Origin;
use testbed::{PodSpec, Testbed, echo};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const PINGS: u32 = 300;

#[test]
fn restarting_the_agent_loses_no_packet() {
    let mut bed = Testbed::new(
        "restart",
        2,
        &[PodSpec { node: 0, eni: 1, ip: POD_A }, PodSpec { node: 1, eni: 0, ip: POD_B }],
    );
    assert_eq!(bed.start_datapath(0).origin(), Origin::Loaded);
    assert_eq!(bed.start_datapath(1).origin(), Origin::Loaded);

    let server = echo::EchoServer::udp(&bed.pods[1].ns, POD_B);
    let echoes =
        echo::spawn_udp_echo_client(&bed.pods[0].ns, server.addr, PINGS, 56, Duration::from_millis(10));
    // Restart while the echoes run: wait until a sixth of it went through.
    let mut polls = 0;
    while bed.datapath(0).endpoint_counters(POD_A).unwrap().tx_packets < u64::from(PINGS / 6) {
        polls += 1;
        assert!(polls < 1000, "the echoes never got going through the datapath");
        std::thread::sleep(Duration::from_millis(5));
    }
    for node in 0..2 {
        bed.nodes[node].datapath = None; // the agent exits
        let restarted = bed.start_datapath(node); // and starts again
        assert_eq!(restarted.origin(), Origin::Adopted);
    }
    let forwarded_at_restart = bed.datapath(0).endpoint_counters(POD_A).unwrap().tx_packets;
    assert!(forwarded_at_restart < u64::from(PINGS), "the restart must happen during the echoes");

    let summary = echoes.join().unwrap();
    assert_eq!((summary.sent, summary.received), (PINGS, PINGS));
    // Counters survive the restart: pinned per-CPU map, not reset on adopt.
    let a = bed.datapath(0).endpoint_counters(POD_A).unwrap();
    assert!(a.tx_packets >= u64::from(PINGS), "pod A counters after restart {a:?}");
}
