//! A runtime's side of CNI through libcni: the Go driver in `tests/libcni/driver.go`,
//! built by the test against Debian's golang-github-appc-cni-dev (libcni 1.1.2, GOPATH
//! mode, offline), run inside the node's network namespace as containerd would run it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::PLUGIN;

const DRIVER_SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/libcni/driver.go");
const LIBCNI: &str = "/usr/share/gocode/src/github.com/containernetworking/cni/libcni";

/// The built driver and what every run needs.
pub struct Libcni {
    binary: PathBuf,
    cache: PathBuf,
    conflists: PathBuf,
    /// Network namespace the driver (and so the plugins) run in.
    pub node_netns: PathBuf,
    /// `CNI_PATH`: our plugin's folder, then Debian's reference plugins.
    pub cni_path: String,
}

/// One driver run: libcni's answer.
#[derive(Debug)]
pub struct Answer {
    pub ok: bool,
    pub result: Value,
    /// `{code, msg, details}` for a plugin's error, `{text}` for libcni's own.
    pub error: Value,
}

impl Answer {
    /// The error as one line, for assertion messages and `contains` checks.
    pub fn error_text(&self) -> String {
        self.error.to_string()
    }
}

impl Libcni {
    /// Builds the driver into `dir` (fails loudly, naming the packages, when Go or libcni
    /// is missing).
    pub fn build(dir: &Path, node_netns: PathBuf) -> Self {
        assert!(
            Path::new(LIBCNI).exists(),
            "{LIBCNI} missing: apt-get install golang-go golang-github-appc-cni-dev (scripts/install-test-tools does)"
        );
        let binary = dir.join("libcni-driver");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(DRIVER_SOURCE)
            .env("GOPATH", "/usr/share/gocode")
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "-mod=")
            .env("GOCACHE", dir.join("go-cache"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run go ({e}): apt-get install golang-go"));
        assert!(
            out.status.success(),
            "go build of the libcni driver: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let plugin_dir = Path::new(PLUGIN).parent().unwrap().display().to_string();
        let cache = dir.join("libcni-cache");
        let conflists = dir.join("conflists");
        std::fs::create_dir_all(&conflists).unwrap();
        Self { binary, cache, conflists, node_netns, cni_path: format!("{plugin_dir}:/usr/lib/cni") }
    }

    /// Runs `op` on `conflist` for one container interface, as the runtime would.
    pub fn run(&self, op: &str, conflist: &Value, container: &str, netns: &Path, if_name: &str) -> Answer {
        self.run_with(op, conflist, container, netns, if_name, &[])
    }

    /// [`Libcni::run`] with extra driver flags (`-port-mappings JSON`).
    pub fn run_with(
        &self,
        op: &str,
        conflist: &Value,
        container: &str,
        netns: &Path,
        if_name: &str,
        extra: &[&str],
    ) -> Answer {
        let file =
            self.conflists.join(format!("{}-{op}-{container}.conflist", conflist["name"].as_str().unwrap()));
        std::fs::write(&file, conflist.to_string()).unwrap();
        let out = Command::new("nsenter")
            .arg(format!("--net={}", self.node_netns.display()))
            .arg("--")
            .arg(&self.binary)
            .arg("-conflist")
            .arg(&file)
            .args(["-container", container, "-ifname", if_name, "-pod", &format!("default/pod-{container}")])
            .arg("-netns")
            .arg(netns)
            .arg("-cache")
            .arg(&self.cache)
            .args(["-path", &self.cni_path])
            .args(extra)
            .arg(op)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout);
        let parsed: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| {
            panic!(
                "libcni driver {op}: not JSON ({e}): {line}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        Answer { ok: parsed["ok"] == true, result: parsed["result"].clone(), error: parsed["error"].clone() }
    }
}
