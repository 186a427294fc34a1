//! TCP and UDP echo servers in a namespace and their clients, reporting failures instead of
//! panicking, so that a test can assert that a flow does not work (a NATed reply that skipped
//! conntrack) as well as that it does.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::Netns;

const POLL: Duration = Duration::from_millis(20);

/// An echo server bound in a namespace, serving until dropped.
pub struct EchoServer {
    /// Where it listens (a free port of the address it was started on).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// A TCP echo server at `ip` in `ns`: echoes every byte of every connection back.
    pub fn tcp(ns: &Netns, ip: Ipv4Addr) -> Self {
        let listener = ns.run(|| TcpListener::bind((ip, 0)).expect("bind a TCP echo server"));
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        Self::serve(ns, addr, move |stop| {
            let mut connections = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => connections.push(std::thread::spawn(move || echo_stream(stream))),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                    // A signal to the process (the bed's daemons come and go) is no error.
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("TCP echo server accept: {e}"),
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        })
    }

    /// A UDP echo server at `ip` in `ns`: sends every datagram back to its sender.
    pub fn udp(ns: &Netns, ip: Ipv4Addr) -> Self {
        let socket = ns.run(|| UdpSocket::bind((ip, 0)).expect("bind a UDP echo server"));
        socket.set_read_timeout(Some(POLL)).unwrap();
        let addr = socket.local_addr().unwrap();
        Self::serve(ns, addr, move |stop| {
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                match recv_from(&socket, &mut buf) {
                    Ok((n, from)) => {
                        let _ = socket.send_to(&buf[..n], from);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("UDP echo server receive: {e}"),
                }
            }
        })
    }

    fn serve(ns: &Netns, addr: SocketAddr, f: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = ns.spawn(move || f(flag));
        Self { addr, stop, thread: Some(thread) }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `recv_from`, again when a signal interrupts it: a socket with a read timeout is not
/// restarted by the kernel (socket(7)), and the bed's daemons exiting signal the process.
pub fn recv_from(socket: &UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        match socket.recv_from(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Sends back what comes in on `stream` until the peer closes it (or 10 s of silence).
pub fn echo_stream(mut stream: TcpStream) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if n == 0 || stream.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Connects from `client` to `to` (which may be a virtual address the node NATs to an echo
/// server), sends `bytes` and checks that the same bytes come back, all within `timeout`.
pub fn tcp_echo_client(
    client: &Netns,
    to: SocketAddr,
    bytes: usize,
    timeout: Duration,
) -> Result<(), String> {
    let payload: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
    client.run(move || {
        let mut stream =
            TcpStream::connect_timeout(&to, timeout).map_err(|e| format!("connect to {to}: {e}"))?;
        stream.set_read_timeout(Some(timeout)).unwrap();
        let mut reader = stream.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let written =
                stream.write_all(&payload).and_then(|()| stream.shutdown(std::net::Shutdown::Write));
            (written, payload)
        });
        let mut echoed = Vec::new();
        let read = reader.read_to_end(&mut echoed);
        let (written, payload) = writer.join().unwrap();
        written.map_err(|e| format!("send to {to}: {e}"))?;
        read.map_err(|e| format!("read the echo from {to} ({} of {bytes} bytes back): {e}", echoed.len()))?;
        if echoed != payload {
            return Err(format!("{to} echoed {} bytes, not the {bytes} sent", echoed.len()));
        }
        Ok(())
    })
}

/// What a UDP echo exchange saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpSummary {
    pub sent: u32,
    pub received: u32,
}

/// Sends `count` datagrams of `payload` bytes (at least 4: a sequence number) from `client`
/// to `to`, one every `interval`; each waits up to 1 s for its own echo.
pub fn udp_echo_client(
    client: &Netns,
    to: SocketAddr,
    count: u32,
    payload: usize,
    interval: Duration,
) -> UdpSummary {
    client.run(move || udp_exchange(to, count, payload, interval))
}

/// Like [`udp_echo_client`] on a thread of its own, for traffic that runs during a test step.
pub fn spawn_udp_echo_client(
    client: &Netns,
    to: SocketAddr,
    count: u32,
    payload: usize,
    interval: Duration,
) -> JoinHandle<UdpSummary> {
    client.spawn(move || udp_exchange(to, count, payload, interval))
}

fn udp_exchange(to: SocketAddr, count: u32, payload: usize, interval: Duration) -> UdpSummary {
    assert!(payload >= 4, "the payload carries a 4-byte sequence number");
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind a UDP client");
    let mut summary = UdpSummary { sent: 0, received: 0 };
    let mut datagram: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; payload.max(64 * 1024)];
    for seq in 0..count {
        let started = Instant::now();
        datagram[..4].copy_from_slice(&seq.to_be_bytes());
        socket.send_to(&datagram, to).expect("send a datagram");
        summary.sent += 1;
        let deadline = started + Duration::from_secs(1);
        while let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) {
            socket.set_read_timeout(Some(left)).unwrap();
            match recv_from(&socket, &mut buf) {
                Ok((n, from)) if from == to && buf[..n] == datagram[..] => {
                    summary.received += 1;
                    break;
                }
                Ok(_) => {} // a late echo of an earlier datagram, or someone else
                Err(_) => break,
            }
        }
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    summary
}
