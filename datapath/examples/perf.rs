//! Performance of the eBPF datapath in one run (needs root):
//! (a) iperf3 throughput pod to pod across two nodes, eBPF path vs kernel policy routing by
//!     source (`ip rule from <pod ip> lookup <table per ENI>`, the peers' way), as a ratio;
//! (b) per-packet cost of each program with `bpftool prog run pinned ... repeat N`.
//!
//! `cargo run --release -p eni-ipam-datapath --example perf [-- --seconds 3 --runs 3 --repeat 1000000]`

use std::{net::Ipv4Addr, path::Path};

use eni_ipam_datapath::MacAddr;
use eni_ipam_netns_testbed::{Netns, PodSpec, Testbed, traffic};

mod c_layout {
    #![allow(non_upper_case_globals, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));
}

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const TC_ACT_OK: u64 = 0;
const TC_ACT_SHOT: u64 = 2;
const TC_ACT_REDIRECT: u64 = 7;
const TTL: u8 = 255;

#[derive(Clone, Copy)]
enum Mode {
    /// `repeat TTL-1` (every run forwards), `invocations` times; the median is reported.
    Forward { invocations: u32 },
    /// One invocation with `repeat N` (the frame is not modified).
    Repeat(u32),
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Forward { invocations } => {
                write!(f, "median of {invocations} x repeat {}", TTL - 1)
            }
            Mode::Repeat(n) => write!(f, "repeat {n}"),
        }
    }
}

fn main() {
    let seconds = arg("--seconds", 3);
    let runs = arg("--runs", 3);
    let repeat = arg("--repeat", 1_000_000);
    let invocations = arg("--invocations", 200);
    let mut bed = Testbed::new(
        "perf",
        2,
        &[
            PodSpec { node: 0, eni: 1, ip: POD_A },
            PodSpec { node: 0, eni: 0, ip: POD_A2 },
            PodSpec { node: 1, eni: 0, ip: POD_B },
        ],
    );
    bed.start_datapath(0);
    bed.start_datapath(1);

    println!("== per-packet cost of each program, bpftool prog run pinned ... (64-byte UDP/IPv4 frame)");
    let a = &bed.pods[0];
    let node0 = &bed.nodes[0];
    let veth_a_mac = node0.ns.link(&a.veth).1;
    let from_pod = node0.pins.path().join("programs/from_pod");
    let from_eni = node0.pins.path().join("programs/from_eni");
    let eni1 = &node0.enis[1];
    let unknown = Ipv4Addr::new(10, 0, 9, 9);
    // Forwarding rewrites the frame in place (TTL) and the test run reuses it across
    // repeats, so forwarding cases run TTL-1 repeats per invocation, many invocations.
    let forward = Mode::Forward { invocations };
    let once = Mode::Repeat(repeat);
    let cases = [
        (
            "from_pod: to another node, out of the ENI",
            &from_pod,
            (a.endpoint.pod_mac, veth_a_mac),
            (POD_A, POD_B),
            a.endpoint.pod_veth_ifindex,
            TC_ACT_REDIRECT,
            forward,
        ),
        (
            "from_pod: to a pod on the same node",
            &from_pod,
            (a.endpoint.pod_mac, veth_a_mac),
            (POD_A, POD_A2),
            a.endpoint.pod_veth_ifindex,
            TC_ACT_REDIRECT,
            forward,
        ),
        (
            "from_pod: spoofed source, dropped and counted",
            &from_pod,
            (a.endpoint.pod_mac, veth_a_mac),
            (unknown, POD_B),
            a.endpoint.pod_veth_ifindex,
            TC_ACT_SHOT,
            once,
        ),
        (
            "from_eni: to a local pod",
            &from_eni,
            (eni1.gateway_mac, eni1.mac),
            (POD_B, POD_A),
            eni1.ifindex,
            TC_ACT_REDIRECT,
            forward,
        ),
        (
            "from_eni: not for a pod, passed to the node",
            &from_eni,
            (eni1.gateway_mac, eni1.mac),
            (POD_B, unknown),
            eni1.ifindex,
            TC_ACT_OK,
            once,
        ),
    ];
    for (what, program, (src_mac, dst_mac), (src, dst), ifindex, verdict, mode) in cases {
        let frame = frame(src_mac, dst_mac, src, dst);
        let ns = cost(&node0.ns, program, &frame, ifindex, verdict, mode);
        println!("{what:<48} {ns:>5} ns/packet ({mode})");
    }

    println!(
        "== iperf3 pod {POD_A} (node 0, ENI 1) -> pod {POD_B} (node 1, ENI 0), {runs} x {seconds} s each, interleaved"
    );
    for node in 0..2 {
        bed.install_kernel_routing(node);
    }
    let (mut ebpf, mut kernel) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (attached, results) in [(true, &mut ebpf), (false, &mut kernel)] {
            for node in 0..2 {
                bed.set_ebpf_attached(node, attached);
            }
            let ping = traffic::ping(&bed.pods[0].ns, POD_B, 3, "0.01", None);
            assert_eq!(ping.received, 3, "no connectivity (eBPF attached: {attached}): {}", ping.output);
            results.push(traffic::iperf3(&bed.pods[0].ns, &bed.pods[2].ns, POD_B, seconds));
        }
    }
    let show = |v: &[f64]| v.iter().map(|g| format!("{g:.2}")).collect::<Vec<_>>().join(" ");
    println!("eBPF datapath:                   runs {} Gbit/s", show(&ebpf));
    println!("kernel policy routing by source: runs {} Gbit/s", show(&kernel));
    let (ebpf, kernel) = (median(ebpf), median(kernel));
    println!(
        "median: eBPF {ebpf:.2} Gbit/s, kernel {kernel:.2} Gbit/s, ratio eBPF / kernel {:.3}",
        ebpf / kernel
    );
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Average ns per run of a pinned program over `frame`, with the skb's ingress device set.
fn cost(ns: &Netns, program: &Path, frame: &[u8], ifindex: u32, verdict: u64, mode: Mode) -> u64 {
    let dir = std::env::temp_dir().join(format!("eni-ipam-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (data, ctx) = (dir.join("frame"), dir.join("ctx"));
    std::fs::write(&data, frame).unwrap();
    let mut skb = vec![0u8; c_layout::SIZEOF___sk_buff];
    skb[c_layout::OFFSETOF___sk_buff_ifindex..][..4].copy_from_slice(&ifindex.to_ne_bytes());
    std::fs::write(&ctx, skb).unwrap();
    let (invocations, repeat) = match mode {
        Mode::Forward { invocations } => (invocations, u32::from(TTL - 1)),
        Mode::Repeat(repeat) => (1, repeat),
    };
    let mut durations: Vec<u64> =
        (0..invocations).map(|_| bpftool_prog_run(ns, program, &data, &ctx, repeat, verdict)).collect();
    let _ = std::fs::remove_dir_all(&dir);
    durations.sort_unstable();
    durations[durations.len() / 2]
}

fn bpftool_prog_run(ns: &Netns, program: &Path, data: &Path, ctx: &Path, repeat: u32, verdict: u64) -> u64 {
    let output = ns
        .command("bpftool")
        .args(["prog", "run", "pinned"])
        .arg(program)
        .arg("data_in")
        .arg(data)
        .arg("ctx_in")
        .arg(ctx)
        .args(["repeat", &repeat.to_string()])
        .output()
        .expect("run bpftool (scripts/install-test-tools)");
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bpftool prog run failed: {text}");
    let number_after = |key: &str| -> Option<u64> {
        let rest = &text[text.find(key)? + key.len()..];
        rest.trim_start_matches([':', ' '])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    let returned = number_after("Return value").expect("bpftool prints the return value");
    assert_eq!(returned, verdict, "{} returned {returned}, expected {verdict}: {text}", program.display());
    number_after("duration (average)")
        .unwrap_or_else(|| panic!("no average duration in bpftool output: {text}"))
}

/// Ethernet + IPv4 (valid checksum) + UDP, 64 bytes.
fn frame(src_mac: MacAddr, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&[0x08, 0x00]);
    let total_len: u16 = 64 - 14;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[8] = TTL;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(folded as u16)).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 30, 0, 0]);
    f.resize(64, 0);
    f
}
