//! A small blocking HTTP/1.1 client for the agent socket. The plugin is a
//! short-lived process: no async runtime, one request per connection, every
//! read and write bounded by the configured timeout.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use eni_ipam_api::ApiError;

/// Why a call to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentCallError {
    /// Could not connect, write or read in time.
    #[error(
        "the eni-ipam agent at {socket} is unreachable ({what}: {source}); check that the eni-ipam-agent pod on this node is running"
    )]
    Unreachable { socket: String, what: &'static str, source: std::io::Error },
    /// The agent answered something that is not HTTP.
    #[error("the eni-ipam agent at {socket} sent an unreadable answer: {reason}")]
    Garbled { socket: String, reason: String },
    /// The agent answered with an error.
    #[error("{message}")]
    Refused { status: u16, message: String },
}

/// Calls the agent on its unix socket.
#[derive(Clone, Debug)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

/// A successful answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status (2xx).
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl AgentClient {
    /// A client for `socket`, each call bounded by `timeout` overall.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self { socket: socket.into(), timeout }
    }

    /// Sends one request; non-2xx answers become [`AgentCallError::Refused`] with the agent's message.
    pub fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer, AgentCallError> {
        let socket = self.socket.display().to_string();
        let deadline = Instant::now() + self.timeout;
        let unreachable = |what, source| AgentCallError::Unreachable { socket: socket.clone(), what, source };
        let mut stream = UnixStream::connect(&self.socket).map_err(|e| unreachable("connect", e))?;
        stream.set_write_timeout(Some(self.timeout)).map_err(|e| unreachable("set timeout", e))?;
        let body = body.unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: eni-ipam-agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .and_then(|_| stream.write_all(body))
            .map_err(|e| unreachable("send", e))?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let timeout = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", self.timeout),
                );
                return Err(unreachable("wait for the answer", timeout));
            }
            stream.set_read_timeout(Some(left)).map_err(|e| unreachable("set timeout", e))?;
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    let timeout = std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {:?}", self.timeout),
                    );
                    return Err(unreachable("wait for the answer", timeout));
                }
                Err(e) => return Err(unreachable("read the answer", e)),
            }
        }
        if !raw.windows(4).any(|w| w == b"\r\n\r\n") {
            // The agent died or restarted while serving us: whether it acted is not known, so the
            // runtime must retry (ADD is idempotent per container, DEL too).
            let closed = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("connection closed after {} bytes, before a full answer", raw.len()),
            );
            return Err(unreachable("read the answer", closed));
        }
        let (status, body) = parse_response(&raw)
            .map_err(|reason| AgentCallError::Garbled { socket: socket.clone(), reason })?;
        if (200..300).contains(&status) {
            return Ok(Answer { status, body });
        }
        let message = serde_json::from_slice::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
        Err(AgentCallError::Refused { status, message })
    }
}

/// Splits an HTTP/1.1 response into status and (de-chunked) body.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &raw[split + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (503, b"abcde".to_vec()));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"HTTP/1.1 xx\r\n\r\n").is_err());
    }

    #[test]
    fn missing_socket_is_unreachable_and_names_the_socket() {
        let client = AgentClient::new("/nonexistent/eni-ipam.sock", Duration::from_secs(1));
        let err = client.call("GET", "/v1/healthz", None).unwrap_err();
        assert!(matches!(err, AgentCallError::Unreachable { .. }));
        assert!(err.to_string().contains("/nonexistent/eni-ipam.sock"), "{err}");
    }

    #[test]
    fn a_silent_agent_is_reported_after_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silent.sock");
        // Accepts but never answers (kept in scope so connections stay open).
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let client = AgentClient::new(&path, Duration::from_millis(300));
        let err = client.call("GET", "/v1/healthz", None).unwrap_err();
        assert!(err.to_string().contains("no answer within 300ms"), "{err}");
        drop(listener);
    }
}
