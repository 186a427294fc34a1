//! Taking the datapath off the node for good (`eni-ipam-agent uninstall`): every TCX link pin
//! is removed (which detaches the link), every recorded netlink filter deleted, and the
//! `clsact` qdiscs the datapath added deleted when no filter of anyone is left on them; then
//! the program and map pins of every build, then the pin directory. Only the layout
//! [`crate::Datapath`] creates is touched; anything else found under the pin directory is
//! left in place and reported. Running it again finds nothing and succeeds.

use std::path::{Path, PathBuf};

use aya::programs::{SchedClassifier, TcAttachType};
use tracing::info;

use crate::{
    DatapathError,
    attach::{self, pin_error},
    datapath::interface_name,
    hook::{self, Target},
    pins::{PinLayout, SUBDIRS, remove_pin_tree},
    tc_netlink,
};

/// What [`remove_pins`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinsRemoved {
    /// ENIs the datapath was attached to, by name as found before detaching (an ENI whose
    /// index names no link any more is left out).
    pub eni_links: Vec<String>,
    /// Pod veths (host side) whose hooks were detached, by interface index.
    pub pod_veths: Vec<u32>,
    /// Pins and records removed (links, filters, qdisc records, program and map directories).
    pub pins: Vec<PathBuf>,
    /// Entries under the pin directory that are not the datapath's, left in place.
    pub foreign: Vec<PathBuf>,
}

/// Detaches and unpins everything the datapath pinned or attached under `pin_dir`, in the
/// calling thread's network namespace. A missing directory is success (already removed, or
/// never installed).
pub fn remove_pins(pin_dir: &Path) -> Result<PinsRemoved, DatapathError> {
    let mut removed = PinsRemoved::default();
    if !pin_dir.exists() {
        return Ok(removed);
    }
    let pins = PinLayout::new(pin_dir);
    let mut attachments = hook::records(&pins.links());
    attachments.extend(hook::records(&pins.filters()));
    for (hook, ifindex, path) in attachments {
        match hook.target {
            Target::Eni => removed.eni_links.extend(interface_name(ifindex).ok()),
            Target::Pod => removed.pod_veths.push(ifindex),
        }
        // Links first: once they are gone no packet runs the programs, whose pins go next.
        attach::detach(&pins, hook, ifindex)?;
        removed.pins.push(path);
    }
    removed.eni_links.sort();
    removed.eni_links.dedup();
    removed.pod_veths.sort_unstable();
    removed.pod_veths.dedup();
    for marker in list(&pins.clsact())? {
        if let Some(ifindex) = marker.file_name().and_then(|n| n.to_str()).and_then(|n| n.parse().ok()) {
            attach::remove_clsact_if_unused(&pins, ifindex)?;
        }
        remove_pin_tree(&marker)?;
        removed.pins.push(marker);
    }
    for sub in SUBDIRS {
        let dir = pin_dir.join(sub);
        for path in list(&dir)? {
            remove_pin_tree(&path)?;
            removed.pins.push(path);
        }
        remove_pin_tree(&dir)?;
    }
    let left: Vec<PathBuf> = std::fs::read_dir(pin_dir)
        .map_err(|source| pin_error(pin_dir, "list the pin directory", source))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    if left.is_empty() {
        remove_pin_tree(pin_dir)?;
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

/// Ids of the programs attached to TC ingress and egress of `interface` as TCX links
/// (anyone's), in the calling thread's network namespace: what is left to check after an
/// uninstall.
pub fn tcx_attached_programs(interface: &str) -> Result<Vec<u32>, DatapathError> {
    let mut ids = tcx_programs(interface, TcAttachType::Ingress)?;
    ids.extend(tcx_programs(interface, TcAttachType::Egress)?);
    Ok(ids)
}

/// Ids of the programs attached to `interface` as TCX links (anyone's) at ingress or egress.
pub fn tcx_programs(interface: &str, direction: TcAttachType) -> Result<Vec<u32>, DatapathError> {
    let (_, programs) = SchedClassifier::query_tcx(interface, direction).map_err(|source| {
        DatapathError::Query { interface: interface.to_owned(), source: Box::new(source) }
    })?;
    Ok(programs.iter().map(|p| p.id()).collect())
}

/// Number of `tc` filters (anyone's) on the `clsact` qdisc of `interface`, ingress and
/// egress; 0 when it has no `clsact` qdisc. What is left to check after an uninstall in
/// netlink mode.
pub fn tc_filter_count(interface: &str) -> Result<usize, DatapathError> {
    let query = |source: std::io::Error| DatapathError::Query {
        interface: interface.to_owned(),
        source: Box::new(aya::programs::tc::TcError::IoError(source).into()),
    };
    let ifindex = interface_index(interface).map_err(query)?;
    tc_netlink::clsact_filter_count(ifindex).map_err(query)
}

fn interface_index(interface: &str) -> std::io::Result<u32> {
    let name = std::ffi::CString::new(interface).map_err(std::io::Error::other)?;
    // SAFETY: a NUL-terminated name.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()),
        ifindex => Ok(ifindex),
    }
}

/// Entries of `dir`; none if it does not exist.
fn list(dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut paths = entries
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| pin_error(dir, "list pins", source))?;
            paths.sort();
            Ok(paths)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(pin_error(dir, "list pins", source)),
    }
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
        for sub in SUBDIRS {
            std::fs::create_dir_all(pins.join(sub)).unwrap();
        }
        std::fs::write(pins.join("links/pod-4242"), b"").unwrap();
        std::fs::write(pins.join("links/eni-1"), b"").unwrap();
        std::fs::create_dir_all(pins.join("programs/0123456789abcdef")).unwrap();
        std::fs::write(pins.join("programs/0123456789abcdef/from_pod"), b"").unwrap();
        std::fs::write(pins.join("programs/from_pod"), b"").unwrap(); // before versioned pins
        std::fs::create_dir_all(pins.join("maps/fedcba9876543210")).unwrap();
        std::fs::write(pins.join("maps/fedcba9876543210/endpoints"), b"").unwrap();
        std::fs::write(pins.join("someone-elses"), b"").unwrap();
        let removed = remove_pins(&pins).unwrap();
        assert_eq!(removed.pod_veths, [4242]);
        assert_eq!(removed.eni_links, ["lo"], "ifindex 1 is the loopback here");
        assert_eq!(removed.pins.len(), 5, "{:?}", removed.pins);
        assert_eq!(removed.foreign, [pins.join("someone-elses")]);
        assert!(pins.join("someone-elses").exists() && !pins.join("maps").exists());
        std::fs::remove_file(pins.join("someone-elses")).unwrap();
        assert_eq!(remove_pins(&pins).unwrap().foreign, Vec::<PathBuf>::new());
        assert!(!pins.exists(), "an emptied pin directory is removed");
        assert_eq!(remove_pins(&pins).unwrap(), PinsRemoved::default(), "twice is fine");
    }
}
