//! Helpers for the agent's integration tests: run the real agent binary on a
//! private socket and state file, run the real plugin as a runtime does, and
//! network namespaces that are removed even when a test panics.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const AGENT: &str = env!("CARGO_BIN_EXE_eni-ipam-agent");
pub const PLUGIN: &str = env!("CARGO_BIN_EXE_eni-ipam-cni");

/// Fails loudly (never skips) when the test cannot do what it must.
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid =
        status.lines().find(|l| l.starts_with("Uid:")).unwrap().split_whitespace().nth(1).unwrap().to_owned();
    assert_eq!(uid, "0", "this test creates network namespaces and veth pairs: run it as root");
}

/// A pool file of `count` IPs from `first` upwards, one ENI, subnet `cidr`, gateway `gateway`.
pub fn pool_json(first: [u8; 4], count: u32, cidr: &str, gateway: &str) -> Value {
    let start = u32::from_be_bytes(first);
    let ips: serde_json::Map<String, Value> = (0..count)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(start + i).to_string();
            (ip, json!({"eni": "eni-test", "mac": "0a:00:00:00:00:01", "subnetCidr": cidr, "gateway": gateway}))
        })
        .collect();
    json!({"ips": ips})
}

/// A running agent on a private socket, state file and pool file.
pub struct Agent {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: PathBuf,
    /// Extra flags for the next (re)start.
    pub extra_args: Vec<String>,
    /// Datapath flags (default `--datapath none --node-routing=false`: the host's bpffs, rules
    /// and nft tables are left alone when the agent runs in the test's own namespace).
    pub datapath_args: Vec<String>,
    /// Network namespace the agent runs in (through `nsenter --net`, which keeps bpffs);
    /// `None` for the test's own.
    pub netns: Option<PathBuf>,
    /// `--metrics-addr` (default a free loopback port).
    pub metrics_addr: String,
    child: Option<Child>,
}

impl Agent {
    pub fn start(dir: &Path, pool: &Value) -> Self {
        let mut agent = Self::configure(dir, pool);
        agent.restart();
        agent
    }

    /// An agent on private files in `dir`, not started yet (set the fields, then `restart`).
    pub fn configure(dir: &Path, pool: &Value) -> Self {
        std::fs::write(dir.join("pool.json"), pool.to_string()).unwrap();
        Self {
            dir: dir.to_owned(),
            socket: dir.join("agent.sock"),
            state: dir.join("state.json"),
            extra_args: Vec::new(),
            datapath_args: vec!["--datapath".into(), "none".into(), "--node-routing=false".into()],
            netns: None,
            metrics_addr: "127.0.0.1:0".into(),
            child: None,
        }
    }

    /// Starts (again) on the same files and waits until healthz answers.
    pub fn restart(&mut self) {
        self.kill();
        let mut command = match &self.netns {
            Some(netns) => {
                let mut nsenter = Command::new("nsenter");
                nsenter.arg(format!("--net={}", netns.display())).arg("--").arg(AGENT);
                nsenter
            }
            None => Command::new(AGENT),
        };
        let child = command
            .args(["--node-name", "node-test", "--metrics-addr", &self.metrics_addr])
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-file")
            .arg(&self.state)
            .arg("--pool-file")
            .arg(self.dir.join("pool.json"))
            .args(&self.datapath_args)
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("agent.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.healthz().is_some() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "agent exited with {status}: {}",
                    std::fs::read_to_string(self.dir.join("agent.log")).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "agent did not answer healthz within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as kubelet stops a container; waits for the exit and returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the agent is running");
        // SAFETY: kill has no memory preconditions; the pid is our own child, not yet reaped.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the agent did not exit within 20 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn healthz(&self) -> Option<Value> {
        let client =
            eni_ipam_agent::cni::agent_client::AgentClient::new(&self.socket, Duration::from_secs(5));
        let answer = client.call("GET", "/v1/healthz", None).ok()?;
        serde_json::from_slice(&answer.body).ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One plugin run: exit success and the parsed stdout.
#[derive(Debug)]
pub struct PluginRun {
    pub ok: bool,
    pub stdout: Option<Value>,
    pub raw: String,
}

/// Runs the plugin as a runtime does: `CNI_*` env, config on stdin, optionally inside `node_netns`.
pub fn run_plugin(
    command: &str,
    container: &str,
    netns: impl AsRef<OsStr>,
    if_name: &str,
    config: &Value,
    node_netns: Option<&str>,
    cni_path: &str,
) -> PluginRun {
    run_cni(PLUGIN, command, container, netns, if_name, config, node_netns, cni_path)
}

/// Runs any CNI plugin binary (a reference plugin, or ours) the same way.
#[allow(clippy::too_many_arguments)]
pub fn run_cni(
    binary: &str,
    command: &str,
    container: &str,
    netns: impl AsRef<OsStr>,
    if_name: &str,
    config: &Value,
    node_netns: Option<&str>,
    cni_path: &str,
) -> PluginRun {
    let mut cmd = match node_netns {
        Some(node) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/var/run/netns/{node}")).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let out = {
        let mut child = cmd
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", if_name)
            .env("CNI_PATH", cni_path)
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=pod-{container}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(config.to_string().as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    PluginRun { ok: out.status.success(), stdout: serde_json::from_str(raw.trim()).ok(), raw }
}

/// Every allocation the agent on `socket` holds (`GET /v1/ipam`).
pub fn allocations(socket: &Path) -> Vec<Value> {
    let client = eni_ipam_agent::cni::agent_client::AgentClient::new(socket, Duration::from_secs(5));
    let answer = client.call("GET", "/v1/ipam", None).expect("GET /v1/ipam");
    let mut list: Value = serde_json::from_slice(&answer.body).expect("an allocation list");
    match list["allocations"].take() {
        Value::Array(all) => all,
        other => panic!("not an allocation list: {other}"),
    }
}

/// The IP without the prefix.
pub fn address_of(result: &Value) -> String {
    result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned()
}
pub mod agent_node;
pub mod libcni;

/// A child process killed and reaped when dropped (a panicking test leaves none behind).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `probe` every 50 ms until it answers, for at most 20 s (then fails naming `what`).
pub async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
