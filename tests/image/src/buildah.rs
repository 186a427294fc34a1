//! buildah in a private store (a temporary folder, removed on drop, also when a
//! test panics): an image loaded from an OCI archive, commands run inside it with
//! chroot isolation (the OCI runtime isolation does not work on these machines),
//! its root filesystem read from the host.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A buildah store of its own, so tests never touch the machine's images.
pub struct Store {
    dir: tempfile::TempDir,
}

impl Store {
    /// An empty store in a temporary folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new().prefix("eni-ipam-buildah").tempdir().expect("a temporary folder"),
        }
    }

    fn buildah(&self, args: &[&str]) -> Output {
        let root = self.dir.path().join("storage");
        let runroot = self.dir.path().join("run");
        Command::new("buildah")
            .args(["--root".as_ref(), root.as_os_str(), "--runroot".as_ref(), runroot.as_os_str()])
            .args(["--storage-driver", "vfs"])
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run buildah ({e}): run scripts/install-test-tools (it installs buildah)")
            })
    }

    fn buildah_ok(&self, args: &[&str]) -> String {
        let output = self.buildah(args);
        assert!(
            output.status.success(),
            "`buildah {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A working container from the image in `archive` (`oci-archive:` transport).
    pub fn container_from(&self, archive: &Path) -> Container<'_> {
        let source = format!("oci-archive:{}", archive.display());
        let id = self.buildah_ok(&["from", "--quiet", &source]);
        Container { store: self, id, mounted: false }
    }
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// A working container of a [`Store`], removed on drop.
pub struct Container<'a> {
    store: &'a Store,
    id: String,
    mounted: bool,
}

impl Container<'_> {
    /// Runs `argv` inside the container (chroot isolation), with host folders
    /// bind-mounted as `(host, in the container)`; its exit status and output.
    pub fn run(&self, mounts: &[(&Path, &str)], argv: &[&str]) -> Output {
        let volumes: Vec<String> =
            mounts.iter().map(|(host, inside)| format!("--volume={}:{inside}", host.display())).collect();
        let mut args = vec!["run", "--isolation", "chroot"];
        args.extend(volumes.iter().map(String::as_str));
        args.push(&self.id);
        args.push("--");
        args.extend(argv);
        self.store.buildah(&args)
    }

    /// The container's root filesystem, as a folder on the host.
    pub fn root(&mut self) -> PathBuf {
        let path = self.store.buildah_ok(&["mount", &self.id]);
        self.mounted = true;
        PathBuf::from(path)
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if self.mounted {
            let _ = self.store.buildah(&["umount", &self.id]);
        }
        let _ = self.store.buildah(&["rm", &self.id]);
    }
}
