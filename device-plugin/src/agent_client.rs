//! Reads the node's IP numbers from the agent: `GET /v1/healthz` over the
//! agent's unix socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eni_ipam_api::agent_api::{HEALTHZ_PATH, HealthzResponse, IpamHealth};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Answers larger than this are not a healthz answer.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Why the agent's numbers could not be read. Every variant names the socket.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Nothing listens on the socket (agent down or not started yet).
    #[error(
        "cannot connect to the eni-ipam agent at {socket}: {source}; is the agent running on this node and \
         is --agent-socket the path it listens on?"
    )]
    Connect { socket: PathBuf, source: std::io::Error },
    /// The agent took longer than the timeout to answer.
    #[error(
        "the eni-ipam agent at {socket} did not answer GET {HEALTHZ_PATH} within {after:?}; check the agent's logs"
    )]
    Timeout { socket: PathBuf, after: Duration },
    /// The HTTP exchange failed midway.
    #[error("GET {HEALTHZ_PATH} to the eni-ipam agent at {socket} failed: {message}; check the agent's logs")]
    Http { socket: PathBuf, message: String },
    /// The agent answered with an error status.
    #[error("the eni-ipam agent at {socket} answered GET {HEALTHZ_PATH} with {status}: {body}")]
    Status { socket: PathBuf, status: StatusCode, body: String },
    /// The answer is not the healthz JSON of `eni_ipam_api::HealthzResponse`.
    #[error(
        "the eni-ipam agent at {socket} answered GET {HEALTHZ_PATH} with JSON this device plugin cannot read \
         ({source}); are the agent and device plugin images the same release? answer began: {start}"
    )]
    Malformed { socket: PathBuf, source: serde_json::Error, start: String },
}

impl AgentError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::Connect { .. } => "unreachable",
            AgentError::Timeout { .. } => "timeout",
            AgentError::Http { .. } | AgentError::Status { .. } => "error",
            AgentError::Malformed { .. } => "malformed",
        }
    }
}

/// Client of the agent's `GET /v1/healthz`.
#[derive(Clone, Debug)]
pub struct AgentClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AgentClient {
    /// A client of the agent listening on `socket`; a whole exchange (connect,
    /// request, answer) is bounded by `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Self { socket: socket.into(), timeout }
    }

    /// The socket this client dials.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The agent's pool numbers.
    pub async fn healthz(&self) -> Result<IpamHealth, AgentError> {
        match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(answer) => answer,
            Err(_) => Err(AgentError::Timeout { socket: self.socket.clone(), after: self.timeout }),
        }
    }

    async fn exchange(&self) -> Result<IpamHealth, AgentError> {
        let socket = &self.socket;
        let http = |message: String| AgentError::Http { socket: socket.clone(), message };
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| AgentError::Connect { socket: socket.clone(), source })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        // The connection task ends when the exchange is done and `sender` is dropped.
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "agent connection closed with an error");
            }
        });
        let request = Request::get(HEALTHZ_PATH)
            .header(header::HOST, "eni-ipam-agent")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| http(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| http(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(AgentError::Status {
                socket: socket.clone(),
                status,
                body: String::from_utf8_lossy(&body).chars().take(200).collect(),
            });
        }
        serde_json::from_slice::<HealthzResponse>(&body).map(|answer| answer.ipam).map_err(|source| {
            AgentError::Malformed {
                socket: socket.clone(),
                source,
                start: String::from_utf8_lossy(&body).chars().take(120).collect(),
            }
        })
    }
}
