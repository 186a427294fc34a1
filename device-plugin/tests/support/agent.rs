//! A fake eni-ipam agent: `GET /v1/healthz` on a unix socket, whose answer the
//! test changes, and which the test can stop and start again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use eni_ipam_api::agent_api::{HEALTHZ_PATH, HealthzResponse};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

/// What the fake agent answers.
#[derive(Clone, Debug)]
pub enum Answer {
    /// The contract's JSON.
    Health(HealthzResponse),
    /// Any body, served as `application/json` with status 200.
    Raw(String),
}

impl Answer {
    /// The agent's numbers: IPs handed out and pod IPs reachable in total.
    /// The pool (`available`) is kept smaller than `capacity`, as a warm pool
    /// is, so a test passes only if the plugin counts from `capacity`.
    pub fn numbers(allocated: u32, capacity: u32) -> Self {
        let available = (allocated + 4).min(capacity).max(allocated);
        Answer::Health(HealthzResponse::new(allocated, available, capacity))
    }
}

/// The fake agent.
pub struct FakeAgent {
    path: PathBuf,
    answer: Arc<Mutex<Answer>>,
    server: Option<JoinHandle<()>>,
}

impl FakeAgent {
    /// Serves `answer` on `path`.
    pub fn start(path: &Path, answer: Answer) -> Self {
        let mut agent = Self { path: path.to_owned(), answer: Arc::new(Mutex::new(answer)), server: None };
        agent.restart();
        agent
    }

    /// Answers `answer` from now on.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    /// Stops serving and removes the socket, as a crashed agent's restart would.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// Serves again on the same path.
    pub fn restart(&mut self) {
        self.stop();
        let listener = UnixListener::bind(&self.path).expect("bind the fake agent's socket");
        let router = Router::new().route(HEALTHZ_PATH, get(healthz)).with_state(self.answer.clone());
        self.server = Some(tokio::spawn(async move {
            axum::serve(listener, router).await.expect("fake agent serves");
        }));
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn healthz(State(answer): State<Arc<Mutex<Answer>>>) -> Response {
    let answer = answer.lock().unwrap().clone();
    match answer {
        Answer::Health(health) => axum::Json(health).into_response(),
        Answer::Raw(body) => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    }
}
