//! A child process of the bed (operator, agent, device plugin, webhook): its
//! stderr goes to a log file, SIGKILL on drop (as a crash would, also when a
//! test panics).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running binary.
pub struct Daemon {
    /// What it is, for messages.
    pub name: String,
    /// Where its stderr goes.
    pub log: PathBuf,
    child: Child,
}

impl Daemon {
    /// Spawns `command` with stderr (and stdout) appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Self {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {} for the log of {name}: {e}", log.display()));
        let out = file.try_clone().expect("clone the log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({command:?}): {e}"));
        Self { name: name.to_owned(), log: log.to_owned(), child }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The last `lines` lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The folder holding the workspace's binaries: `ENI_IPAM_BIN_DIR`, else the
/// profile folder of the running executable (`target/<profile>`, also for a
/// test binary in `target/<profile>/deps`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("ENI_IPAM_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    let mut dir = exe.parent().expect("an executable has a folder").to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// The path of one of the workspace's binaries; panics with what to do when it is not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace --bins` (scripts/test and scripts/local-cluster do), \
         or point ENI_IPAM_BIN_DIR at the folder holding it",
        path.display()
    );
    path
}
