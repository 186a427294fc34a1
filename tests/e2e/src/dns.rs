//! DNS in the bed: a dnsmasq server (Debian's binary) in a pod's network namespace, behind a
//! ClusterIP Service as CoreDNS is, and a client that asks it for an A record over UDP or
//! TCP with a query built by hand (RFC 1035).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::daemon::Daemon;

/// The cluster's DNS domain.
pub const DOMAIN: &str = "cluster.local";

/// A query for the A record of `name`, with id `id`, recursion desired.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The A records of an answer to query `id`; an error names what is wrong with it.
pub fn answers(id: u16, message: &[u8]) -> Result<Vec<Ipv4Addr>, String> {
    if message.len() < 12 {
        return Err(format!("a DNS answer of {} bytes", message.len()));
    }
    if u16::from_be_bytes([message[0], message[1]]) != id {
        return Err("an answer to another query".into());
    }
    let rcode = message[3] & 0x0f;
    if rcode != 0 {
        return Err(format!("rcode {rcode}"));
    }
    let count = |i: usize| u16::from_be_bytes([message[i], message[i + 1]]) as usize;
    let (questions, records) = (count(4), count(6));
    let mut at = 12;
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *message.get(at)? as usize;
            if len == 0 {
                return Some(at + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            at += 1 + len;
        }
    };
    for _ in 0..questions {
        at = skip_name(at).ok_or("a truncated question")? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..records {
        at = skip_name(at).ok_or("a truncated record")?;
        let header = message.get(at..at + 10).ok_or("a truncated record")?;
        let (kind, len) =
            (u16::from_be_bytes([header[0], header[1]]), u16::from_be_bytes([header[8], header[9]]));
        let data = message.get(at + 10..at + 10 + len as usize).ok_or("a truncated record")?;
        if kind == 1 && data.len() == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len as usize;
    }
    Ok(found)
}

/// Asks `server` for `name` over UDP (call inside the client's namespace).
pub fn resolve_udp(server: SocketAddr, name: &str, id: u16) -> Result<Vec<Ipv4Addr>, String> {
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    socket.send_to(&query(id, name), server).map_err(|e| format!("send to {server}: {e}"))?;
    let mut buf = [0u8; 512];
    let (n, _) = eni_ipam_netns_testbed::echo::recv_from(&socket, &mut buf)
        .map_err(|e| format!("no answer from {server}: {e}"))?;
    answers(id, &buf[..n])
}

/// Asks `server` for `name` over TCP (length-prefixed messages).
pub fn resolve_tcp(server: SocketAddr, name: &str, id: u16) -> Result<Vec<Ipv4Addr>, String> {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(2))
        .map_err(|e| format!("connect {server}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).map_err(|e| e.to_string())?;
    let q = query(id, name);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    stream.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).map_err(|e| format!("no answer from {server}: {e}"))?;
    let mut message = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut message).map_err(|e| e.to_string())?;
    answers(id, &message)
}

/// dnsmasq serving `records` (name, address) on port 53 of the pod namespace at `netns`,
/// answering nothing else (no upstream, no /etc/hosts); logs to `log`.
pub fn dnsmasq(netns: &Path, records: &[(String, Ipv4Addr)], log: &Path) -> Daemon {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", netns.display()))
        .args(["--", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts"])
        .args(["--port=53", "--user=root", "--pid-file", "--log-queries", "--log-facility=-"]);
    for (name, ip) in records {
        command.arg(format!("--host-record={name},{ip}"));
    }
    Daemon::spawn("dnsmasq", command, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_encoded_and_an_answer_decoded() {
        let q = query(0x1234, "web.default.svc.cluster.local.");
        assert_eq!(&q[..4], &[0x12, 0x34, 0x01, 0x00]);
        assert_eq!(&q[12..16], b"\x03web");
        assert_eq!(&q[q.len() - 5..], &[0, 0, 1, 0, 1]);
        // The answer dnsmasq gives: the question echoed, one A record by a name pointer.
        let mut a = q.clone();
        a[2] = 0x85;
        a[3] = 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 10, 100, 0, 10]);
        assert_eq!(answers(0x1234, &a), Ok(vec![Ipv4Addr::new(10, 100, 0, 10)]));
        assert!(answers(0x9999, &a).is_err(), "another id");
        let mut nx = q.clone();
        nx[3] = 0x83;
        assert_eq!(answers(0x1234, &nx), Err("rcode 3".into()));
        assert!(answers(0x1234, &a[..a.len() - 2]).is_err(), "truncated");
        assert!(answers(0x1234, &[0; 5]).is_err());
    }
}
