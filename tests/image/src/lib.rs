//! Test support for the container image `scripts/build-image` writes: running
//! the script, a private buildah store to run the image's binaries in, and a
//! reader of ELF linkage (is the CNI plugin static?).
//!
//! The tools come from `scripts/install-test-tools`; a missing one fails the
//! test that needs it with the fix in the message: these tests never skip.

pub mod buildah;
pub mod elf;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use buildah::{Container, Store};
pub use elf::{Linkage, linkage};

/// The repository's root, from this crate's folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What cargo sets for a running test and a nested cargo would take for the
/// user's own settings: ring's build script reruns when CARGO_MANIFEST_DIR
/// changes, which rebuilt half the image's binaries on every suite run.
fn set_by_cargo_for_this_test(name: &str) -> bool {
    ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || ["CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"].contains(&name)
}

/// `scripts/build-image ARGS`, run from the repository root in the environment
/// the suite was started with (so its cargo builds are the ones scripts/test made).
pub fn build_image_script(args: &[&str]) -> Output {
    let script = repo_root().join("scripts/build-image");
    let mut command = Command::new(&script);
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_this_test) {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()))
}

/// What `scripts/build-image ARGS` printed on stdout, failing the test when it fails.
pub fn build_image_stdout(args: &[&str]) -> String {
    let output = build_image_script(args);
    assert!(
        output.status.success(),
        "scripts/build-image {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Fails loudly (never skips) unless the test runs as root, which mmdebstrap and buildah need.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "building and running the image needs root (mmdebstrap, buildah): run the tests as root"
    );
}

/// The image names in the archive's index (`org.opencontainers.image.ref.name`).
pub fn archive_ref_names(archive: &Path) -> Vec<String> {
    let output = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg("index.json")
        .output()
        .unwrap_or_else(|e| panic!("cannot run tar: {e}"));
    assert!(
        output.status.success(),
        "{} has no index.json: {}",
        archive.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let index: serde_json::Value = serde_json::from_slice(&output.stdout).expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str().map(str::to_owned))
        .collect()
}
