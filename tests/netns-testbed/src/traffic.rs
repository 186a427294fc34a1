//! Traffic between pods: ping through nsenter, a TCP echo in Rust, iperf3.

use std::{
    net::Ipv4Addr,
    process::{Child, Output, Stdio},
    time::Duration,
};

use super::Netns;

/// Result of a `ping` run.
#[derive(Debug)]
pub struct PingSummary {
    pub transmitted: u64,
    pub received: u64,
    pub output: String,
}

/// Pings `dst` from `ns` (`-c count -i interval_s`, optional `-I source`), waiting for it.
pub fn ping(
    ns: &Netns,
    dst: Ipv4Addr,
    count: u32,
    interval_s: &str,
    source: Option<Ipv4Addr>,
) -> PingSummary {
    summary(spawn_ping(ns, dst, count, interval_s, source).wait_with_output().expect("wait for ping"))
}

pub fn spawn_ping(
    ns: &Netns,
    dst: Ipv4Addr,
    count: u32,
    interval_s: &str,
    source: Option<Ipv4Addr>,
) -> Child {
    let mut command = ns.command("ping");
    command.args(["-n", "-q", "-c", &count.to_string(), "-i", interval_s, "-W", "1"]);
    if let Some(source) = source {
        command.args(["-I", &source.to_string()]);
    }
    command
        .arg(dst.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ping (install iputils-ping: scripts/install-test-tools)")
}

pub fn summary(output: Output) -> PingSummary {
    let text =
        String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let number_before = |word: &str| {
        text.lines()
            .find(|l| l.contains("packets transmitted"))
            .and_then(|line| {
                let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
                words.iter().position(|w| *w == word).and_then(|i| words.get(i.checked_sub(1)?)?.parse().ok())
            })
            .unwrap_or(0)
    };
    PingSummary { transmitted: number_before("packets"), received: number_before("received"), output: text }
}

/// Sends `bytes` over TCP from `client` to an echo server in `server` and checks every byte
/// comes back.
pub fn tcp_echo(client: &Netns, server: &Netns, server_ip: Ipv4Addr, bytes: usize) {
    let server = crate::echo::EchoServer::tcp(server, server_ip);
    if let Err(error) = crate::echo::tcp_echo_client(client, server.addr, bytes, Duration::from_secs(10)) {
        panic!("TCP echo: {error}");
    }
}

/// Runs iperf3 for `seconds` from `client` to a one-shot server in `server`; returns Gbit/s.
pub fn iperf3(client: &Netns, server: &Netns, server_ip: Ipv4Addr, seconds: u32) -> f64 {
    let mut daemon = server
        .command("iperf3")
        .args(["-s", "-1", "-B", &server_ip.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn iperf3 server (scripts/install-test-tools)");
    let mut result = None;
    for _ in 0..50 {
        let output = client
            .command("iperf3")
            .args(["-c", &server_ip.to_string(), "-t", &seconds.to_string(), "-J"])
            .output()
            .expect("run iperf3 client");
        // iperf3 3.12 with -J exits 0 even when the server is not listening yet.
        let json = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() && json.contains("\"sum_received\"") {
            result = Some(json);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
    let json = result.expect("iperf3 client never connected");
    let key = "\"bits_per_second\":";
    let sum_received = json
        .rfind("\"sum_received\"")
        .unwrap_or_else(|| panic!("iperf3 JSON has no sum_received: {}", &json[..json.len().min(2000)]));
    let rest = &json[sum_received..];
    let start = rest.find(key).expect("bits_per_second") + key.len();
    let number: String = rest[start..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '+')
        .collect();
    number.parse::<f64>().expect("parse bits_per_second") / 1e9
}
