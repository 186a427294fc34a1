//! Performance of the eBPF datapath in one run (needs root, clang, git, bpftool, iperf3):
//! (a) per-packet cost of each program with `bpftool prog run pinned ... repeat N`, the
//!     programs of this build against a baseline built from git in the same run (default:
//!     13b8e45, the datapath before issue 29), both fed the same frames and the same map
//!     entries, as a ratio;
//! (b) iperf3 throughput pod to pod across two nodes, eBPF fast path vs kernel policy routing
//!     (`ip rule from <pod ip> lookup <table per ENI>`), interleaved, as a ratio.
//!
//! `cargo run --release -p eni-ipam-datapath --example perf [-- --seconds 3 --runs 3 --repeat 20000 --invocations 200 --baseline 13b8e45]`

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
};

use aya::{
    EbpfLoader,
    maps::{HashMap, Map, MapData},
    programs::SchedClassifier,
};
use eni_ipam_datapath::{
    MacAddr,
    abi::{EndpointKey, EndpointValue, NAT_MARK, VethOwner},
};
use eni_ipam_netns_testbed::{Netns, PinDir, PodSpec, Testbed, frames, traffic};

mod c_layout {
    #![allow(non_upper_case_globals, dead_code)]
    include!(concat!(env!("OUT_DIR"), "/c_layout.rs"));
}

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 20);
const UNKNOWN: Ipv4Addr = Ipv4Addr::new(10, 0, 9, 9);
const TC_ACT_OK: u64 = 0;
const TC_ACT_SHOT: u64 = 2;
const TC_ACT_REDIRECT: u64 = 7;
const TTL: u8 = 255;
/// Ports of the flow `nat_learn` records as NATed in the runs (B:NAT_PORT -> A:CLIENT_PORT
/// leaves, so A:CLIENT_PORT -> B:NAT_PORT is a reply).
const CLIENT_PORT: u16 = 40000;
const NAT_PORT: u16 = 8080;

/// One row of the per-packet table.
struct Case {
    what: &'static str,
    program: &'static str,
    frame: Vec<u8>,
    ifindex: u32,
    mark: u32,
    /// Verdict of this build's program and of the baseline's (None: the baseline has no such
    /// program).
    verdicts: (u64, Option<u64>),
}

fn main() {
    let seconds = arg("--seconds", 3);
    let runs = arg("--runs", 3);
    let repeat = arg("--repeat", 20_000);
    let invocations = arg("--invocations", 200);
    let baseline_rev = text_arg("--baseline", "13b8e45");
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

    let baseline_pins = PinDir::new("perf-baseline");
    let baseline = Baseline::build(&baseline_rev, bed.nodes[0].pins.path(), baseline_pins.path());
    println!(
        "== per-packet cost, bpftool prog run pinned ...: this build vs {baseline_rev} (built from git in this run)"
    );
    let cases = cases(&bed);
    println!("| case | verdict (this build / {baseline_rev}) | this build ns | {baseline_rev} ns | ratio |");
    println!("|---|---|---:|---:|---:|");
    let node0 = &bed.nodes[0];
    for case in &cases {
        let ours = find_pin(&node0.pins.path().join("programs").join(case.program));
        let mut programs = vec![(ours, case.verdicts.0)];
        programs.extend(case.verdicts.1.map(|verdict| (baseline.program(case.program), verdict)));
        let measured = costs(&node0.ns, &programs, case, invocations, repeat);
        let new_ns = measured[0];
        let old_ns = measured.get(1).copied();
        let old_verdict = case.verdicts.1.map_or("-", verdict_name);
        let ratio = old_ns.map_or("-".to_owned(), |old| format!("{:.2}", new_ns as f64 / old.max(1) as f64));
        println!(
            "| {} | {} / {} | {new_ns} | {} | {ratio} |",
            case.what,
            verdict_name(case.verdicts.0),
            old_verdict,
            old_ns.map_or("-".to_owned(), |n| n.to_string()),
        );
    }
    println!(
        "(each cell: median over {invocations} invocations, this build's and the baseline's alternating; \
         repeat {} per invocation when the program forwards (it decrements the TTL of the reused frame), {repeat} otherwise)",
        TTL - 1
    );
    drop(baseline);

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
    println!("eBPF fast path:                  runs {} Gbit/s", show(&ebpf));
    println!("kernel policy routing by source: runs {} Gbit/s", show(&kernel));
    let (ebpf, kernel) = (median(ebpf), median(kernel));
    println!(
        "median: eBPF {ebpf:.2} Gbit/s, kernel {kernel:.2} Gbit/s, ratio eBPF / kernel {:.3}",
        ebpf / kernel
    );
}

fn cases(bed: &Testbed) -> Vec<Case> {
    let (a, node0) = (&bed.pods[0], &bed.nodes[0]);
    let veth_mac = node0.ns.link(&a.veth).1;
    let eni1 = &node0.enis[1];
    let pod = (a.endpoint.pod_mac, veth_mac);
    let vpc = (eni1.gateway_mac, eni1.mac);
    let from_pod = |what, frame, verdicts| Case {
        what,
        program: "from_pod",
        frame,
        ifindex: a.endpoint.pod_veth_ifindex,
        mark: 0,
        verdicts,
    };
    let from_eni = |what, frame, verdicts| Case {
        what,
        program: "from_eni",
        frame,
        ifindex: eni1.ifindex,
        mark: 0,
        verdicts,
    };
    let nat_learn = |what, frame, mark| Case {
        what,
        program: "nat_learn",
        frame,
        ifindex: a.endpoint.pod_veth_ifindex,
        mark,
        verdicts: (TC_ACT_OK, None),
    };
    let udp = |macs, src, dst| frames::udp(macs, (src, 4000), (dst, 4000), TTL, 22);
    let nat_reply = frames::udp(pod, (POD_A, CLIENT_PORT), (POD_B, NAT_PORT), TTL, 22);
    let nat_request =
        frames::udp((veth_mac, a.endpoint.pod_mac), (POD_B, NAT_PORT), (POD_A, CLIENT_PORT), TTL, 22);
    let redirect = (TC_ACT_REDIRECT, Some(TC_ACT_REDIRECT));
    let stack = (TC_ACT_OK, Some(TC_ACT_OK));
    vec![
        // First, so that the NAT reply rows below find their flow.
        nat_learn("nat_learn: NAT-marked UDP, flow recorded", nat_request.clone(), NAT_MARK),
        nat_learn("nat_learn: unmarked packet (the common case)", nat_request, 0),
        from_pod("from_pod: UDP to another node, out of the ENI", udp(pod, POD_A, POD_B), redirect),
        from_pod(
            "from_pod: TCP to another node, out of the ENI",
            frames::tcp(pod, (POD_A, 4000), (POD_B, 80), TTL, 10),
            redirect,
        ),
        from_pod("from_pod: UDP to a pod on the same node", udp(pod, POD_A, POD_A2), redirect),
        from_pod("from_pod: reply of a NATed flow (stack / redirect)", nat_reply, redirect_or_stack()),
        from_pod(
            "from_pod: ICMP to another node (stack / redirect)",
            icmp(pod, POD_A, POD_B),
            redirect_or_stack(),
        ),
        from_pod(
            "from_pod: spoofed source, dropped and counted",
            udp(pod, UNKNOWN, POD_B),
            (TC_ACT_SHOT, Some(TC_ACT_SHOT)),
        ),
        from_pod("from_pod: ARP from the pod's own IP", frames::arp_request(pod.0, POD_A, POD_B), stack),
        from_eni("from_eni: UDP to a local pod", udp(vpc, POD_B, POD_A), redirect),
        from_eni("from_eni: not for a pod, to the stack", udp(vpc, POD_B, UNKNOWN), stack),
    ]
}

/// This build sends the frame to the stack where the baseline forwarded it.
fn redirect_or_stack() -> (u64, Option<u64>) {
    (TC_ACT_OK, Some(TC_ACT_REDIRECT))
}

fn icmp(macs: (MacAddr, MacAddr), src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = frames::ethernet(macs.1, macs.0, frames::ETH_P_IP);
    f.extend_from_slice(&frames::ipv4_header(src, dst, 1, TTL, 30));
    f.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
    f.resize(64, 0);
    f
}

fn verdict_name(verdict: u64) -> &'static str {
    match verdict {
        TC_ACT_OK => "stack",
        TC_ACT_SHOT => "drop",
        TC_ACT_REDIRECT => "redirect",
        _ => "?",
    }
}

/// The datapath's programs as they were at a git revision, loaded and pinned with their own
/// maps, which hold the same endpoints as the running datapath's.
struct Baseline {
    pins: PathBuf,
}

impl Baseline {
    fn build(rev: &str, ours: &Path, pins: &Path) -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let scratch = tempfile::tempdir().expect("a temp folder for the baseline sources");
        let src = scratch.path();
        for file in ["bpf/eni_ipam.bpf.c", "bpf/eni_ipam.h"] {
            let output = Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["show", &format!("{rev}:{file}")])
                .output()
                .expect("run git");
            assert!(
                output.status.success(),
                "git show {rev}:{file}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            std::fs::write(src.join(Path::new(file).file_name().unwrap()), output.stdout).unwrap();
        }
        // The same flags as datapath/build.rs.
        let object = src.join("eni_ipam.bpf.o");
        let arch_include = format!("-I/usr/include/{}-linux-gnu", std::env::consts::ARCH);
        let status = Command::new(std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned()))
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", &arch_include, "-c"])
            .arg(src.join("eni_ipam.bpf.c"))
            .arg("-o")
            .arg(&object)
            .status()
            .expect("run clang");
        assert!(status.success(), "clang failed on the {rev} sources");
        std::fs::create_dir_all(pins.join("maps")).unwrap();
        std::fs::create_dir_all(pins.join("programs")).unwrap();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.join("maps"))
            .load_file(&object)
            .expect("load the baseline object");
        for name in ["from_pod", "from_eni"] {
            let program: &mut SchedClassifier =
                ebpf.program_mut(name).expect("baseline program").try_into().expect("a TC program");
            program.load().expect("the verifier accepts the baseline");
            program.pin(pins.join("programs").join(name)).expect("pin the baseline program");
        }
        copy_map::<EndpointKey, EndpointValue>(&mut ebpf, ours, "endpoints");
        copy_map::<u32, VethOwner>(&mut ebpf, ours, "pod_veths");
        Self { pins: pins.to_owned() }
    }

    fn program(&self, name: &str) -> PathBuf {
        self.pins.join("programs").join(name)
    }
}

/// Copies every entry of our pinned map `name` into the baseline's map of the same name.
fn copy_map<K: aya::Pod, V: aya::Pod>(ebpf: &mut aya::Ebpf, ours: &Path, name: &str) {
    let from = MapData::from_pin(find_pin(&ours.join("maps").join(name))).expect("open our pinned map");
    let from: HashMap<_, K, V> = HashMap::try_from(Map::HashMap(from)).expect("a hash map");
    let mut to: HashMap<_, K, V> =
        HashMap::try_from(ebpf.map_mut(name).expect("baseline map")).expect("a hash map");
    for entry in from.iter() {
        let (key, value) = entry.expect("read our map");
        to.insert(key, value, 0).expect("fill the baseline map");
    }
}

/// `path`, or the file of the same name one directory level deeper (versioned pin layouts).
fn find_pin(path: &Path) -> PathBuf {
    if path.exists() {
        return path.to_owned();
    }
    let (dir, name) = (path.parent().unwrap(), path.file_name().unwrap());
    std::fs::read_dir(dir)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no pin {} (nor one level deeper)", path.display()))
}

fn arg(name: &str, default: u32) -> u32 {
    text_arg(name, &default.to_string()).parse().unwrap_or_else(|_| panic!("{name} takes a number"))
}

fn text_arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Average ns per run of each pinned program over the case's frame (with the skb's device
/// and mark set): the median over `invocations` invocations, the programs alternating so that
/// the machine's load weighs on each alike. A program that forwards decrements the TTL of the
/// frame, which the test run reuses across repeats: it runs TTL-1 repeats per invocation.
fn costs(ns: &Netns, programs: &[(PathBuf, u64)], case: &Case, invocations: u32, repeat: u32) -> Vec<u64> {
    let dir = tempfile::tempdir().expect("a temp folder for the frame");
    let (data, ctx) = (dir.path().join("frame"), dir.path().join("ctx"));
    std::fs::write(&data, &case.frame).unwrap();
    let mut skb = vec![0u8; c_layout::SIZEOF___sk_buff];
    skb[c_layout::OFFSETOF___sk_buff_ifindex..][..4].copy_from_slice(&case.ifindex.to_ne_bytes());
    skb[c_layout::OFFSETOF___sk_buff_mark..][..4].copy_from_slice(&case.mark.to_ne_bytes());
    std::fs::write(&ctx, skb).unwrap();
    let mut durations = vec![Vec::new(); programs.len()];
    for _ in 0..invocations {
        for ((program, verdict), samples) in programs.iter().zip(&mut durations) {
            let repeat = if *verdict == TC_ACT_REDIRECT { u32::from(TTL - 1) } else { repeat };
            samples.push(bpftool_prog_run(ns, program, &data, &ctx, repeat, *verdict));
        }
    }
    durations
        .into_iter()
        .map(|mut samples| {
            samples.sort_unstable();
            samples[samples.len() / 2]
        })
        .collect()
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
