//! Starts the emulator binary on a free loopback port and stops it on drop.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

/// A running emulator.
pub struct Emulator {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Emulator {
    /// Starts the binary with `seed` (JSON) and extra flags.
    pub fn start(seed: &Value, flags: &[&str]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("temp dir");
        let seed_path = dir.path().join("seed.json");
        std::fs::write(&seed_path, seed.to_string()).expect("writing the seed");
        let mut child = Command::new(env!("CARGO_BIN_EXE_eni-ipam-aliyun-emulator"))
            .args(["--listen", "127.0.0.1:0", "--seed"])
            .arg(&seed_path)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting eni-ipam-aliyun-emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout piped"))
            .read_line(&mut line)
            .expect("reading stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("the emulator did not start; it printed '{line}'"))
            .to_owned();
        Self { child, addr, _dir: dir }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The state dump.
    pub async fn dump(&self) -> Value {
        reqwest::get(format!("{}/_emulator/state", self.url()))
            .await
            .expect("dump")
            .json()
            .await
            .expect("dump JSON")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One vSwitch `pods` in cn-hangzhou-h and `instances` of `instance_type`.
pub fn seed(instance_type: &str, instances: u32, detached_enis: u32) -> Value {
    let mut seed = serde_json::json!({
        "vswitches": [{"name": "pods", "zone": "cn-hangzhou-h", "cidr": "172.16.0.0/16"}],
        "instances": [{"vswitch": "pods", "instance_type": instance_type, "count": instances}],
    });
    if detached_enis > 0 {
        seed["enis"] = serde_json::json!([{"vswitch": "pods", "count": detached_enis}]);
    }
    seed
}

/// An Alibaba provider on `emulator` with no client-side limiter (the
/// emulator's quotas and answers are what the tests look at), retrying by `retry`.
pub fn alibaba_provider(
    emulator: &Emulator,
    credentials: eni_ipam_cloud::alibaba::CredentialSource,
    signature: eni_ipam_cloud::alibaba::SignatureVersion,
    retry: eni_ipam_cloud::RetryPolicy,
) -> eni_ipam_cloud::alibaba::AlibabaProvider {
    use eni_ipam_cloud::alibaba::{AlibabaConfig, AlibabaProvider};
    use eni_ipam_cloud::{CallGuard, CloudProfile};
    let guard = CallGuard::new(CloudProfile::alibaba(), std::collections::BTreeMap::new(), retry);
    let mut config = AlibabaConfig::new("cn-hangzhou", credentials).with_endpoint(emulator.url());
    config.signature = signature;
    config.attach_timeout = std::time::Duration::from_secs(10);
    AlibabaProvider::new(config, std::sync::Arc::new(guard)).expect("provider")
}

/// The tools venv's Python, which holds Alibaba's official SDK
/// (scripts/install-test-tools puts it there).
pub fn tools_python() -> PathBuf {
    let home = std::env::var("ENI_TOOLS_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/eni-ipam"));
    let python = home.join("venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-tools (it installs Alibaba's Python SDK into that venv)",
        python.display()
    );
    python
}
