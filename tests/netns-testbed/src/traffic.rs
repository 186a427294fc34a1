//! Traffic between pods: ping through nsenter, a paced TCP stream in Rust, iperf3.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
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

impl PingSummary {
    /// Panics with ping's output unless all `count` requests were sent and answered.
    pub fn assert_all_answered(&self, count: u32) {
        let expected = (u64::from(count), u64::from(count));
        assert_eq!((self.transmitted, self.received), expected, "{}", self.output);
    }
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

/// What a [`spawn_tcp_stream`] run saw.
#[derive(Debug)]
pub struct StreamSummary {
    pub bytes_sent: u64,
    /// Bytes the server received, each checked against the pattern sent.
    pub bytes_received: u64,
    /// Segments the client's kernel retransmitted (`tcpi_total_retrans`), lost or not (a
    /// tail loss probe after a late ACK retransmits too).
    pub retransmits: u32,
    /// Retransmissions the server reported as duplicates (D-SACK, `tcpi_dsack_dups`): the
    /// original had arrived, nothing was lost.
    pub duplicates: u32,
}

impl StreamSummary {
    /// Retransmissions of segments that did not arrive the first time.
    pub fn lost(&self) -> u32 {
        self.retransmits.saturating_sub(self.duplicates)
    }
}

/// A TCP stream from `client` to a server in `server` lasting `duration`: 16 KiB every
/// 10 ms, paced so that it spans whatever the test does meanwhile. Join the handle for the
/// summary; an error (reset, timeout, corrupted byte) panics the thread.
pub fn spawn_tcp_stream(
    client: &Netns,
    server: &Netns,
    server_ip: Ipv4Addr,
    duration: Duration,
) -> std::thread::JoinHandle<StreamSummary> {
    let listener = server.run(|| TcpListener::bind((server_ip, 0)).expect("bind stream server in pod"));
    let addr: SocketAddr = listener.local_addr().unwrap();
    let receiver = server.spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let mut received = 0u64;
        loop {
            let n = match stream.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => read.expect("stream server read (connection broken?)"),
            };
            if n == 0 {
                return received;
            }
            for (i, byte) in buf[..n].iter().enumerate() {
                assert_eq!(*byte, pattern(received + i as u64), "byte {} of the stream", received + i as u64);
            }
            received += n as u64;
        }
    });
    client.spawn(move || {
        let mut stream =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect to stream server");
        stream.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            let chunk: Vec<u8> = (sent..sent + 16 * 1024).map(pattern).collect();
            stream.write_all(&chunk).expect("stream client write (connection broken?)");
            sent += chunk.len() as u64;
            std::thread::sleep(Duration::from_millis(10));
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let received = receiver.join().expect("stream server");
        // Read after the server saw the end: every ACK (and D-SACK) is in.
        let (retransmits, duplicates) = retransmissions(&stream);
        StreamSummary { bytes_sent: sent, bytes_received: received, retransmits, duplicates }
    })
}

fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// (`tcpi_total_retrans`, `tcpi_dsack_dups`) of a connection: offsets 100 and 216 of the
/// kernel's `struct tcp_info` (appended-only ABI; `tcpi_dsack_dups` since Linux 4.19), which
/// the libc crate's shorter struct does not reach.
fn retransmissions(stream: &TcpStream) -> (u32, u32) {
    use std::os::fd::AsRawFd;
    let mut info = [0u8; 232];
    let mut len = info.len() as libc::socklen_t;
    // SAFETY: getsockopt(TCP_INFO) writes at most `len` bytes into the buffer we own.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "getsockopt(TCP_INFO): {}", std::io::Error::last_os_error());
    assert!(len as usize >= 220, "TCP_INFO too short ({len} bytes): kernel before 4.19?");
    let field = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap());
    (field(100), field(216))
}
