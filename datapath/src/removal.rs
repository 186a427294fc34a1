//! Taking the datapath off the node for good (`eni-ipam-agent uninstall`): every link pin is
//! removed, which detaches its TCX link, then the program and map pins, then the pin
//! directory. Only the layout [`crate::Datapath`] creates is touched; anything else found
//! under the pin directory is left in place and reported. Running it again finds nothing
//! and succeeds.

use std::path::{Path, PathBuf};

use aya::programs::{SchedClassifier, TcAttachType};
use tracing::info;

use crate::DatapathError;
use crate::datapath::interface_name;
use crate::hook::Hook;

/// The sub-directories [`crate::Datapath::load_or_adopt`] creates under the pin directory.
const PIN_SUBDIRS: [&str; 3] = ["links", "programs", "maps"];

/// What [`remove_pins`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinsRemoved {
    /// ENIs the datapath was attached to, by name as found before detaching (an ENI whose
    /// index names no link any more is left out).
    pub eni_links: Vec<String>,
    /// Pod veths (host side) whose link was detached, by interface index.
    pub pod_veths: Vec<u32>,
    /// Pins removed (links, programs, maps).
    pub pins: Vec<PathBuf>,
    /// Entries under the pin directory that are not the datapath's, left in place.
    pub foreign: Vec<PathBuf>,
}

/// Detaches and unpins everything the datapath pinned under `pin_dir`. A missing directory
/// is success (already removed, or never installed).
pub fn remove_pins(pin_dir: &Path) -> Result<PinsRemoved, DatapathError> {
    let mut removed = PinsRemoved::default();
    if !pin_dir.exists() {
        return Ok(removed);
    }
    removed.eni_links =
        Hook::Eni.pinned_links(pin_dir).into_iter().filter_map(|i| interface_name(i).ok()).collect();
    removed.pod_veths = Hook::Pod.pinned_links(pin_dir);
    // Links first: once they are gone no packet runs the programs, whose pins go next.
    for sub in PIN_SUBDIRS {
        let dir = pin_dir.join(sub);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(pin_error(&dir, "list pins", source)),
        };
        for entry in entries {
            let path = entry.map_err(|source| pin_error(&dir, "list pins", source))?.path();
            remove_file(&path)?;
            removed.pins.push(path);
        }
        remove_dir(&dir)?;
    }
    let left: Vec<PathBuf> = std::fs::read_dir(pin_dir)
        .map_err(|source| pin_error(pin_dir, "list the pin directory", source))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    if left.is_empty() {
        remove_dir(pin_dir)?;
    }
    removed.foreign = left;
    info!(
        pin_dir = %pin_dir.display(),
        pins = removed.pins.len(),
        enis = ?removed.eni_links,
        foreign = ?removed.foreign,
        "datapath removed"
    );
    Ok(removed)
}

/// Ids of the programs attached to TC ingress of `interface` as TCX links (anyone's), in the
/// calling thread's network namespace: what is left to check after an uninstall.
pub fn tcx_ingress_programs(interface: &str) -> Result<Vec<u32>, DatapathError> {
    let (_, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Ingress).map_err(|source| {
        DatapathError::Query { interface: interface.to_owned(), source: Box::new(source) }
    })?;
    Ok(programs.iter().map(|p| p.id()).collect())
}

fn remove_file(path: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(pin_error(path, "unpin", source)),
    }
}

fn remove_dir(path: &Path) -> Result<(), DatapathError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(pin_error(path, "remove the directory", source)),
    }
}

fn pin_error(path: &Path, action: &'static str, source: std::io::Error) -> DatapathError {
    DatapathError::Pin { pin: path.to_owned(), action, source: Box::new(source) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_pin_directory_is_already_removed() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("eni-ipam");
        assert_eq!(remove_pins(&gone).unwrap(), PinsRemoved::default());
    }

    #[test]
    fn the_datapath_layout_goes_and_foreign_entries_stay() {
        // Plain files stand in for pins: the removal only unlinks, as on bpffs.
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("eni-ipam");
        for sub in PIN_SUBDIRS {
            std::fs::create_dir_all(pins.join(sub)).unwrap();
        }
        std::fs::write(pins.join("links/pod-4242"), b"").unwrap();
        std::fs::write(pins.join("links/eni-1"), b"").unwrap();
        std::fs::write(pins.join("programs/from_pod"), b"").unwrap();
        std::fs::write(pins.join("maps/endpoints"), b"").unwrap();
        std::fs::write(pins.join("someone-elses"), b"").unwrap();
        let removed = remove_pins(&pins).unwrap();
        assert_eq!(removed.pod_veths, [4242]);
        assert_eq!(removed.eni_links, ["lo"], "ifindex 1 is the loopback here");
        assert_eq!(removed.pins.len(), 4);
        assert_eq!(removed.foreign, [pins.join("someone-elses")]);
        assert!(pins.join("someone-elses").exists() && !pins.join("maps").exists());
        std::fs::remove_file(pins.join("someone-elses")).unwrap();
        assert_eq!(remove_pins(&pins).unwrap().foreign, Vec::<PathBuf>::new());
        assert!(!pins.exists(), "an emptied pin directory is removed");
        assert_eq!(remove_pins(&pins).unwrap(), PinsRemoved::default(), "twice is fine");
    }
}
