//! The traffic of the matrix: echo servers (TCP and UDP on one port) in a namespace, and
//! clients that count what does not come back. Sockets are made on a thread inside the
//! namespace and keep it; the servers stop when dropped.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use eni_ipam_netns_testbed::netns::run_in;

/// How long a client waits for a connection or an answer.
pub const PATIENCE: Duration = Duration::from_millis(1500);

/// A TCP and UDP echo server on one address and port of a namespace (a UDP server bound
/// to the address answers from it, whatever other addresses the namespace has).
pub struct Echo {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Echo {
    /// Starts one on `ip:port` in the network namespace at `netns`.
    pub fn start(netns: &Path, ip: Ipv4Addr, port: u16) -> Self {
        let (tcp, udp) = run_in(netns, || {
            let tcp = TcpListener::bind((ip, port)).expect("bind the TCP echo server");
            let udp = UdpSocket::bind((ip, port)).expect("bind the UDP echo server");
            (tcp, udp)
        });
        tcp.set_nonblocking(true).expect("non-blocking listener");
        udp.set_read_timeout(Some(Duration::from_millis(100))).expect("UDP read timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let tcp_stop = stop.clone();
        let tcp_thread = std::thread::spawn(move || {
            while !tcp_stop.load(Ordering::Relaxed) {
                match tcp.accept() {
                    Ok((stream, _)) => {
                        std::thread::spawn(move || eni_ipam_netns_testbed::echo::echo_stream(stream));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let udp_stop = stop.clone();
        let udp_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !udp_stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = eni_ipam_netns_testbed::echo::recv_from(&udp, &mut buf) {
                    let _ = udp.send_to(&buf[..n], from);
                }
            }
        });
        Self { stop, threads: vec![tcp_thread, udp_thread] }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A TCP connection from `source` (any address when `None`) to `to`, made in the thread's
/// namespace, with [`PATIENCE`] to connect.
pub fn connect_from(source: Option<Ipv4Addr>, to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(&SocketAddr::V4(to), PATIENCE);
    };
    let sockaddr = |a: SocketAddrV4| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket; every pointer below is to a live local of the right size.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Owned from here: closed on every return.
        let stream = TcpStream::from_raw_fd(fd);
        let from = sockaddr(SocketAddrV4::new(source, 0));
        if libc::bind(fd, (&from as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // On Linux the send timeout bounds a blocking connect.
        let timeout = libc::timeval {
            tv_sec: PATIENCE.as_secs() as libc::time_t,
            tv_usec: PATIENCE.subsec_micros() as libc::suseconds_t,
        };
        let size = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size,
        );
        let dst = sockaddr(to);
        if libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// One TCP exchange: connect, send a line, read it back whole. An error says which step failed.
pub fn tcp_exchange(source: Option<Ipv4Addr>, to: SocketAddrV4, round: u32) -> Result<(), String> {
    let mut stream = connect_from(source, to).map_err(|e| format!("connect {to}: {e}"))?;
    stream.set_read_timeout(Some(PATIENCE)).map_err(|e| e.to_string())?;
    let payload = format!("eni-ipam matrix round {round:06}\n").repeat(8);
    stream.write_all(payload.as_bytes()).map_err(|e| format!("send to {to}: {e}"))?;
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).map_err(|e| format!("echo from {to}: {e}"))?;
    if back != payload.as_bytes() {
        return Err(format!("{to} echoed other bytes"));
    }
    Ok(())
}

/// One UDP datagram from `source` (any address when `None`) to `to` and its echo; false if
/// it did not come back (from `to`).
pub fn udp_exchange(source: Option<Ipv4Addr>, to: SocketAddrV4, round: u32) -> bool {
    let Ok(socket) = UdpSocket::bind((source.unwrap_or(Ipv4Addr::UNSPECIFIED), 0)) else { return false };
    let _ = socket.set_read_timeout(Some(PATIENCE));
    let payload = format!("eni-ipam matrix datagram {round:06}");
    if socket.send_to(payload.as_bytes(), to).is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    match eni_ipam_netns_testbed::echo::recv_from(&socket, &mut buf) {
        Ok((n, from)) => from == SocketAddr::V4(to) && &buf[..n] == payload.as_bytes(),
        Err(_) => false,
    }
}
