//! How every eni-ipam binary starts and stops: one TLS provider for the
//! process, logs on stderr as text or JSON, the async runtime, and the
//! signals that ask it to stop. Each `main` only parses its flags and wires.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The format `init` chose, so the last words of the process come out in it.
static CHOSEN_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line a event for people (coloured on a terminal).
    #[default]
    Text,
    /// One JSON object a line (timestamp, level, target, fields), for log
    /// pipelines such as CloudWatch, SLS, Loki or Elasticsearch.
    Json,
}

/// The logging flag every binary takes.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct LogArgs {
    /// Log format on stderr: `text` or `json` (one object a line). The level
    /// and per-module filters come from RUST_LOG (e.g. `info`,
    /// `info,eni_ipam_operator=debug`).
    #[arg(long, value_enum, env = "ENI_IPAM_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Why the process was asked to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: kubelet stopping the pod.
    Terminate,
    /// SIGINT: Ctrl-C.
    Interrupt,
}

/// Installs the ring TLS provider (every rustls client and server of the
/// process uses it) and the logger. `default_filter` applies when RUST_LOG
/// is unset. Call once, first thing in `main`.
pub fn init(format: LogFormat, default_filter: &str) {
    let _ = CHOSEN_FORMAT.set(format);
    // A second install (a test harness) keeps the first provider: that is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
}

/// Builds the multi-threaded runtime and runs `work` on it. An error ends
/// the process with status 1 and one line on stderr (no backtrace: most are
/// configuration mistakes): `NAME: cause: cause ...` in text, one JSON
/// error event in json, so a log pipeline keeps it.
pub fn run_to_exit<F>(name: &str, work: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))
        .and_then(|runtime| runtime.block_on(work));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match CHOSEN_FORMAT.get() {
                Some(LogFormat::Json) => tracing::error!(process = name, "{error:#}"),
                _ => eprintln!("{name}: {error:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives. If SIGTERM cannot be watched
/// (never seen on Linux), only Ctrl-C stops the process gracefully.
pub async fn stop_requested() -> StopSignal {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(terminate) => terminate,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGTERM; only Ctrl-C stops gracefully");
            let _ = tokio::signal::ctrl_c().await;
            return StopSignal::Interrupt;
        }
    };
    tokio::select! {
        _ = terminate.recv() => StopSignal::Terminate,
        _ = tokio::signal::ctrl_c() => StopSignal::Interrupt,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn the_log_format_flag_takes_text_or_json_and_names_the_choices_otherwise() {
        assert_eq!(Flags::try_parse_from(["x"]).unwrap().log.log_format, LogFormat::Text);
        assert_eq!(
            Flags::try_parse_from(["x", "--log-format", "json"]).unwrap().log.log_format,
            LogFormat::Json
        );
        let error =
            Flags::try_parse_from(["x", "--log-format", "yaml"]).err().expect("yaml is refused").to_string();
        assert!(error.contains("text") && error.contains("json"), "{error}");
    }
}
