//! Network namespaces and bpffs pin directories owned by one test, deleted on drop
//! (also when the test panics).

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// Fails loudly (never skips) when the test bed cannot run here.
pub fn require_root_and_bpffs() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "the datapath test bed needs root (namespaces, veths, eBPF): run the tests as root");
    if let Err(missing) = eni_ipam_datapath::probe(Path::new("/sys/fs/bpf")) {
        panic!("{missing}; scripts/test mounts bpffs and installs the tools");
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): run scripts/install-test-tools"));
    assert!(
        output.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A named network namespace (`ip netns add`), deleted on drop with every link in it.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn create(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1");
        ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
        ns.sysctl("net.ipv4.conf.all.rp_filter", "0");
        ns.sysctl("net.ipv4.conf.default.rp_filter", "0");
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Makes `ip` an address of this namespace (on `lo`): it answers ARP for it on every link
    /// and takes packets to it as its own, as the VPC router does for a subnet's gateway.
    pub fn own_address(&self, ip: impl std::fmt::Display) {
        self.ip(&["addr", "replace", &format!("{ip}/32"), "dev", "lo"]);
    }

    /// A veth pair, both ends up: `name` here, `peer` in `peer_ns`.
    pub fn veth_into(&self, name: &str, peer: &str, peer_ns: &Netns) {
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_ns.name()]);
        self.ip(&["link", "set", name, "up"]);
        peer_ns.ip(&["link", "set", peer, "up"]);
    }

    /// `ip -n <ns> ...`'s output as text.
    pub fn ip_text(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ip(args).stdout).into_owned()
    }

    /// Whether `program ARGS` run inside the namespace succeeds.
    pub fn succeeds(&self, program: &str, args: &[&str]) -> bool {
        self.command(program).args(args).output().expect("run a command in the namespace").status.success()
    }

    /// Runs a command inside the namespace with `nsenter --net` (keeps the host's bpffs).
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", self.path().display())).arg("--").arg(program);
        command
    }

    /// A static (permanent) neighbour entry: `ip` is at `mac` on link `dev`.
    pub fn permanent_neighbour(&self, ip: &str, mac: eni_ipam_datapath::MacAddr, dev: &str) {
        self.ip(&["neigh", "replace", ip, "lladdr", &mac.to_string(), "dev", dev, "nud", "permanent"]);
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        let status = self.command("sysctl").args(["-qw", &format!("{key}={value}")]).status().unwrap();
        assert!(status.success(), "sysctl {key}={value} in {} failed", self.name);
    }

    /// Runs `f` on a thread that has entered this namespace (the datapath attaches by
    /// ifindex in the calling thread's namespace; sockets are created in it).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.path(), f)
    }

    /// Like [`Netns::run`] on a detached thread.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = self.path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// (ifindex, MAC) of a link in this namespace.
    pub fn link(&self, name: &str) -> (u32, eni_ipam_datapath::MacAddr) {
        let text = self.ip_text(&["-o", "link", "show", "dev", name]);
        let ifindex = text.split(':').next().and_then(|i| i.trim().parse().ok());
        let mac =
            text.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).and_then(|m| m.parse().ok());
        match (ifindex, mac) {
            (Some(ifindex), Some(mac)) => (ifindex, mac),
            _ => panic!("cannot parse ifindex/MAC of {name} in {}: {text}", self.name),
        }
    }

    /// Packets received by a link in this namespace (its rx_packets statistic).
    pub fn rx_packets(&self, name: &str) -> u64 {
        let text = self.ip_text(&["-s", "-o", "link", "show", "dev", name]);
        let mut segments = text.split('\\').map(str::trim);
        segments.find(|s| s.starts_with("RX:"));
        segments
            .next()
            .and_then(|numbers| numbers.split_whitespace().nth(1))
            .and_then(|packets| packets.parse().ok())
            .unwrap_or_else(|| panic!("cannot parse rx packets of {name} in {}: {text}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Runs `f` on a thread that has entered the network namespace at `path` (sockets made
/// there stay in it).
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                enter(path);
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn enter(path: &Path) {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    // SAFETY: setns on a valid netns fd affects only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {}: {}", path.display(), std::io::Error::last_os_error());
}

/// A pin directory of one test under /sys/fs/bpf, removed on drop.
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn new(name: &str) -> Self {
        let path = PathBuf::from(format!("/sys/fs/bpf/eni-ipam-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
