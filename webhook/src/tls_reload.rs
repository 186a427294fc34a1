//! The serving certificate, loaded from `--tls-cert-file` / `--tls-key-file`
//! and reloaded when the files change, without a restart: cert-manager and
//! Secret volume updates rotate them under a running pod.
//!
//! The files are re-read every interval and compared by content rather than by
//! mtime: a Secret volume swaps a `..data` symlink (the files' own mtimes may
//! not move), and two writes within one mtime tick would be missed. Reading
//! two small PEM files a second costs nothing measurable. Only new
//! connections see a new certificate; open ones keep theirs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
use thiserror::Error;

use crate::metrics::WebhookMetrics;

/// How often the files are checked.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// Where the serving certificate and its key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate that could not be loaded.
#[derive(Debug, Error)]
pub enum TlsLoadError {
    #[error("reading the TLS {what} {path}: {source}; point {flag} at a PEM file the webhook can read")]
    Read {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the TLS certificate {cert} or key {key} is not usable ({source}); give a PEM certificate chain and \
         its PEM private key (PKCS#8, PKCS#1 or SEC1)"
    )]
    Invalid {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The PEM bytes last loaded into the server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LoadedPem {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl CertificateFiles {
    async fn read(&self) -> Result<LoadedPem, TlsLoadError> {
        let read = |what, flag, path: &Path| {
            let path = path.to_path_buf();
            async move {
                tokio::fs::read(&path).await.map_err(|source| TlsLoadError::Read { what, flag, path, source })
            }
        };
        let cert = read("certificate", "--tls-cert-file", &self.cert).await?;
        let key = read("private key", "--tls-key-file", &self.key).await?;
        Ok(LoadedPem { cert, key })
    }

    fn invalid(&self, source: std::io::Error) -> TlsLoadError {
        TlsLoadError::Invalid { cert: self.cert.clone(), key: self.key.clone(), source }
    }
}

/// The live server configuration and what keeps it fresh.
#[derive(Debug, Clone)]
pub struct ReloadingCertificate {
    config: RustlsConfig,
    files: CertificateFiles,
    loaded: LoadedPem,
}

impl ReloadingCertificate {
    /// Loads the files once; a failure here stops the webhook at start.
    pub async fn load(files: CertificateFiles) -> Result<Self, TlsLoadError> {
        let loaded = files.read().await?;
        let config = RustlsConfig::from_pem(loaded.cert.clone(), loaded.key.clone())
            .await
            .map_err(|source| files.invalid(source))?;
        Ok(Self { config, files, loaded })
    }

    /// The configuration to serve with; reloads swap what it holds.
    pub fn config(&self) -> RustlsConfig {
        self.config.clone()
    }

    /// Checks the files every `interval` for as long as the task runs.
    pub fn spawn_reloader(
        self,
        interval: Duration,
        metrics: Arc<WebhookMetrics>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.reload_forever(interval, metrics))
    }

    async fn reload_forever(mut self, interval: Duration, metrics: Arc<WebhookMetrics>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A rotation writes the cert and the key one after the other; the
        // half-done pair fails to load and is retried on the next tick. Each
        // distinct failure is logged once, not every second.
        let mut last_failed: Option<LoadedPem> = None;
        loop {
            ticks.tick().await;
            let current = match self.files.read().await {
                Ok(current) => current,
                Err(error) => {
                    if last_failed.is_some() {
                        continue;
                    }
                    tracing::warn!(%error, "cannot read the TLS files; still serving the previous certificate");
                    metrics.count_tls_reload(false);
                    last_failed = Some(LoadedPem { cert: Vec::new(), key: Vec::new() });
                    continue;
                }
            };
            if current == self.loaded {
                last_failed = None;
                continue;
            }
            if last_failed.as_ref() == Some(&current) {
                continue;
            }
            match self.config.reload_from_pem(current.cert.clone(), current.key.clone()).await {
                Ok(()) => {
                    tracing::info!(cert = %self.files.cert.display(), "reloaded the TLS certificate from disk");
                    metrics.count_tls_reload(true);
                    self.loaded = current;
                    last_failed = None;
                }
                Err(source) => {
                    let error = self.files.invalid(source);
                    tracing::warn!(%error, "new TLS files do not load; still serving the previous certificate");
                    metrics.count_tls_reload(false);
                    last_failed = Some(current);
                }
            }
        }
    }
}
